"""The quiet console: only the project's own lines come through from Ray workers."""
import logging

from pipeline.quiet import own_lines_only


def test_only_the_projects_own_lines_pass():
    lines = ["[train] cand1 epoch 1/15: train_loss=0.7 val_top1=50", "Checkpoint successfully created at: x",
             "Reporting training result 1: TrainingReport(...)", "[search] best 89.7", "Traceback (most recent call",
             "✔️  Dataset train execution finished", "[2026-12-01 09:19:27,897 E 14862] core_worker.cc: Actor",
             "[autoscale] asked for 1 x train_gpu"]
    assert own_lines_only(lines) == [lines[0], lines[3], lines[7]]


def test_lines_printed_while_a_bar_is_drawn_go_above_it():
    import io

    from e3d.progress import Progress, suspended

    screen = io.StringIO()
    bar = Progress(10, enabled=True, stream=screen, min_interval=0)
    bar.update(3)
    with suspended():
        screen.write("[train] cand1 epoch 3/10\n")
    bar.update(1)
    bar.close()
    # the bar's text is blanked before the line, and drawn again after it
    before, after = screen.getvalue().split("[train] cand1 epoch 3/10\n")
    assert before.endswith("\r") and "3/10" in before and before.rstrip("\r").endswith(" ")
    assert after.startswith("\r") and "3/10" in after and "4/10" in after and after.endswith("\n")
    written = len(screen.getvalue())
    with suspended():  # no bar on screen any more: nothing cleared or redrawn
        pass
    assert len(screen.getvalue()) == written


def test_epoch_bar_counts_each_candidates_epochs_once():
    """Tune reports (one per epoch, a final one repeating the last epoch, a resumed trial starting at its
    checkpoint's epoch) advance the bar by the epochs finished since the trial's last report."""
    import io
    from types import SimpleNamespace

    from pipeline.train.progress import EpochProgress

    screen = io.StringIO()
    cb = EpochProgress(["cand1", "cand2"], 4, enabled=True, stream=screen)
    cb.bar.min_interval = 0
    t1, t2 = SimpleNamespace(config={"candidate": 0}), SimpleNamespace(config={"candidate": 1})
    for e in (1, 2):
        cb.on_trial_result(0, [], t1, {"epoch": e})
    cb.on_trial_result(0, [], t2, {"epoch": 3})  # resumed from a checkpoint at epoch 2
    cb.on_trial_result(0, [], t1, {"epoch": 2, "mv_top1": 50.0})  # the final report repeats the epoch
    cb.on_trial_result(0, [], t2, {"loss": 1.0})  # no epoch: ignored
    assert cb.bar.done == 5 and cb.bar.fields == {"cand1": "2/4", "cand2": "3/4"}
    cb.on_trial_complete(0, [], t1)
    assert cb.bar.fields == {"cand2": "3/4"}
    import pickle

    again = pickle.loads(pickle.dumps(cb))  # Tune saves its callbacks with the experiment state
    assert again.reached == cb.reached and again.bar.done == 5 and again.bar.stream is not screen
    cb.on_experiment_end([])
    assert "5/8" in screen.getvalue() and "epoch/s" in screen.getvalue() and screen.getvalue().endswith("\n")
    assert "2/8" not in screen.getvalue().split("1/8")[0]  # the first report counts once


def test_ui_hint_opens_the_experiment_on_its_runs(tmp_path, monkeypatch):
    """MLflow 3's UI starts in GenAI mode; the printed page has workflowType=machine_learning and the id."""
    from pipeline.tracking import Tracking, ui_hint, ui_url

    tracking = Tracking.local(tmp_path / "mlruns", "e3d-hint")
    with tracking.run("job"):
        pass
    experiment_id = tracking.client().get_experiment_by_name("e3d-hint").experiment_id
    hint = ui_hint(tracking)
    assert f"mlflow ui --backend-store-uri {tracking.tracking_uri}" in hint
    assert f"then open http://127.0.0.1:5000/#/experiments/{experiment_id}?workflowType=machine_learning" in hint
    assert ui_url(tracking.tracking_uri, "no-such-experiment") == "http://127.0.0.1:5000"
    # a tracking server is its own UI (the client is stubbed: no request leaves this machine)
    from types import SimpleNamespace

    import mlflow.tracking

    monkeypatch.setattr(mlflow.tracking, "MlflowClient",
                        lambda uri: SimpleNamespace(get_experiment_by_name=lambda name: SimpleNamespace(experiment_id="7")))
    server = Tracking("http://127.0.0.1:8080/", "x")
    assert ui_hint(server) == "  open http://127.0.0.1:8080/#/experiments/7?workflowType=machine_learning"


def test_slow_bars_show_seconds_per_item():
    import io

    from e3d.progress import Progress

    bar = Progress(30, enabled=True, stream=io.StringIO(), unit="epoch")
    bar.start -= 20.0  # two epochs in 20 s
    bar.update(2)
    assert "10.0 s/epoch" in bar.line() and "0 epoch/s" not in bar.line()


def test_quiet_driver_keeps_ray_data_quiet_after_its_import():
    """Importing ray.data configures its loggers; the quiet console must set the levels after that import."""
    import subprocess
    import sys

    code = ("import logging; from pipeline.quiet import quiet_driver; quiet_driver(); import ray.data; "
            "print(logging.getLogger('ray.data').getEffectiveLevel())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(logging.ERROR)
