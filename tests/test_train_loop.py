"""One candidate on Ray Train (2 CPUs: one worker + Ray Data): learning, checkpoints, MLflow, resume."""
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

ray = pytest.importorskip("ray")
mlflow = pytest.importorskip("mlflow")
import torch  # noqa: E402

from e3d import zoo  # noqa: E402
from pipeline.tracking import PARENT_TAG, Tracking  # noqa: E402
from pipeline.train import Recipe, TensorSource, build_trainer, plan_resources, train_one  # noqa: E402
from pipeline.train.checkpoint import load_state  # noqa: E402

SPEC = zoo.get("E3D-init-S")  # trained at the data's 4 x 32 x 32
RECIPE = Recipe.paper("sthsth").scaled(epochs=2, batch_size=8, lr=0.05)


@pytest.fixture(scope="module")
def source():
    return TensorSource.synthetic(num_classes=4, n_train=64, n_val=16, frames=4, size=32, seed=3)


@pytest.fixture(scope="module")
def first(ray_cluster, source, tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    tracking = Tracking.local(out / "mlruns", "test-train")
    with tracking.run("job") as parent:
        parent_id = parent.info.run_id
    child = tracking.child(parent_id)
    plan = plan_resources(1)
    result = train_one(SPEC, source, recipe=RECIPE, tracking=child, out_dir=out, eval_clips=2, eval_crops=3,
                       run_name="tiny", plan=plan, log_every=4)
    return out, child, parent_id, result


def test_the_same_seed_gives_the_same_training_passes(ray_cluster):
    """Order and noise of every pass over train() come from the seed and the pass's index: two sources with the
    same seed give the same epochs, each epoch differs from the one before, another seed differs. (Read in the
    dataset's order, as training reads it: without preserve_order a loaded machine may reorder blocks.)"""
    def passes(seed, n=2):
        src = TensorSource.synthetic(num_classes=4, n_train=32, n_val=8, frames=2, size=8, seed=3)
        src.seed = seed
        ds = src.train()
        ds.context.execution_options.preserve_order = True  # as Train's ingest (ingest_config) runs it
        return [[b["clip"].tobytes() + b["label"].tobytes() for b in ds.iter_batches(batch_size=8)] for _ in range(n)]

    first, again, other = passes(7), passes(7), passes(8)
    assert first == again
    assert first[0] != first[1] and first != other
    assert sum(len(b) for b in first[0]) > 0


def test_plan_on_two_cpus(ray_cluster):
    plan = plan_resources(2)
    assert plan.num_workers == 1 and plan.cpus_per_worker == 1 and plan.data_cpus == 1 and plan.concurrent == 1


def test_trains_and_learns(first, source):
    out, _, _, r = first
    assert r.ok, r.error
    assert r.epochs == 2 and [h["epoch"] for h in r.history] == [1, 2]
    assert r.train_input == "4x32x32" and r.input == "13x160x160"  # trained at the data's size, spec's own logged
    assert r.trained_spec["classifier"]["num_classes"] == 4
    h0, h1 = r.history
    assert h0["train_samples"] == h1["train_samples"] == 64 and h0["val_samples"] == 16
    assert h0["steps"] == 8
    assert h1["train_loss"] < h0["train_loss"]
    # 4 balanced classes: chance is 25%; a loop that does not learn stays near it
    assert r.best_val_top1 >= 56.25 and r.mv_top1 >= 56.25
    assert r.val_top5 == 100.0  # top-5 of 4 classes
    # schedule: the last iteration is at the end of the cosine
    assert h1["lr"] == pytest.approx(0.05 * RECIPE.lr_factor(2.0), abs=1e-9)
    assert h0["lr"] == pytest.approx(0.05 * RECIPE.lr_factor(1.0))
    # multi-view: every validation video, 2 clips x 3 crops each
    assert r.mv_videos == 16 and r.mv_views_per_video == 6.0


def test_checkpoints(first):
    out, _, _, r = first
    run_dir = Path(r.run_dir)
    kept = sorted(p.name for p in run_dir.iterdir() if p.is_dir())
    assert len(kept) == 2 and kept[0] == "epoch_0002" and kept[1].startswith("final_0002")  # num_to_keep=2
    state = load_state(r.checkpoint)
    assert state["epoch"] == 2 and len(state["history"]) == 2 and state["final"]["mv_videos"] == 16
    assert set(state) >= {"model", "optimizer", "scheduler", "scaler", "spec", "recipe"}
    assert state["scheduler"]["last_epoch"] == 16  # 2 epochs x 8 iterations
    result_file = out / "candidates" / "tiny" / "result.json"
    assert json.loads(result_file.read_text())["mv_top1"] == r.mv_top1


def test_mlflow_child_run(first):
    _, tracking, parent_id, r = first
    client = mlflow.tracking.MlflowClient(tracking.tracking_uri)
    run = client.get_run(r.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.data.tags[PARENT_TAG] == parent_id
    p = run.data.params
    for key in ("flops", "params", "stentr", "homoentr", "kernels", "depths", "widths", "input", "train_input",
                "recipe.epochs", "recipe.peak_lr", "recipe.weight_decay", "recipe.momentum", "resources.num_workers"):
        assert key in p, key
    assert p["input"] == "13x160x160" and p["train_input"] == "4x32x32" and p["kernels"] == SPEC.kernel_pattern
    assert float(p["stentr"]) == pytest.approx(r.stentr, abs=1e-3)
    steps = [m.step for m in client.get_metric_history(r.mlflow_run_id, "val_top1")]
    assert sorted(steps) == [1, 2]
    assert len(client.get_metric_history(r.mlflow_run_id, "train_loss_step")) == 4  # every 4 of 16 iterations
    assert run.data.metrics["mv_top1"] == pytest.approx(r.mv_top1)
    arts = {a.path for a in client.list_artifacts(r.mlflow_run_id)}
    assert {"spec", "plots", "result"} <= arts
    assert {a.path for a in client.list_artifacts(r.mlflow_run_id, "plots")} == {"plots/curves.png"}
    mlflow.set_tracking_uri(tracking.tracking_uri)
    models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    assert [m.source_run_id for m in models] == [r.mlflow_run_id]
    net = mlflow.pytorch.load_model(models[0].model_uri)  # a torch.export program, already in inference mode
    with torch.no_grad():
        assert net(torch.randn(2, 3, 4, 32, 32)).shape == (2, 4)
        assert net(torch.randn(3, 3, 4, 32, 32)).shape == (3, 4)  # pt2 with a dynamic batch dimension
    from pipeline.tracking import register_champion

    assert register_champion(tracking, r.mlflow_run_id, "tiny-model") == 1
    champion = mlflow.pytorch.load_model("models:/tiny-model@champion")
    with torch.no_grad():
        assert champion(torch.randn(1, 3, 4, 32, 32)).shape == (1, 4)


def test_a_finished_candidate_is_read_back_without_starting_ray_train(first, source, tmp_path, monkeypatch):
    """A rerun of a finished candidate (its epochs trained, its multi-view evaluation done) reads the final
    checkpoint back: the same result, and no Ray Train run (~25 CPU-s of process start-ups on 2 cores)."""
    import shutil

    from pipeline.train import trainer

    out, _, _, r1 = first
    copy = tmp_path / "again"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("mlruns"))
    final = max((p for p in (copy / "train" / "tiny").glob("final_*")), key=lambda p: p.name)
    state = load_state(final)

    def no_trainer(**_):
        raise AssertionError("a finished candidate started Ray Train")

    monkeypatch.setattr(trainer, "build_trainer", no_trainer)
    again = train_one(SPEC, source, recipe=RECIPE.scaled(epochs=state["epoch"]), out_dir=copy, eval_clips=2,
                      eval_crops=3, run_name="tiny", plan=plan_resources(1))
    assert again.ok, again.error
    assert Path(again.checkpoint) == final and again.history == state["history"]
    assert again.mv_top1 == state["final"]["mv_top1"] and again.mv_predictions == state["predictions"]
    if state["epoch"] == r1.epochs:
        assert again.mv_top1 == r1.mv_top1 and again.history == r1.history
    # one epoch more is not finished: that rerun needs Ray Train (train_one returns the error it caught)
    more = train_one(SPEC, source, recipe=RECIPE.scaled(epochs=state["epoch"] + 1), out_dir=copy, eval_clips=2,
                     eval_crops=3, run_name="tiny", plan=plan_resources(1))
    assert not more.ok and "started Ray Train" in more.error


def test_build_trainer_sets_corrupt_checkpoints_aside_for_every_loop(first, tmp_path):
    """The supernet searches build their trainers directly: build_trainer itself checks the run's folder, so
    their resume never starts from a corrupt checkpoint either."""
    import shutil

    out, _, _, _ = first
    run = tmp_path / "train" / "tiny"
    shutil.copytree(out / "train" / "tiny", run)
    final = max(run.glob("final_*"), key=lambda p: p.name)
    (final / "state.pt").write_bytes(b"cut short")
    build_trainer(loop_config={}, datasets={}, plan=plan_resources(1), run_name="tiny", storage_path=tmp_path / "train")
    assert not final.exists() and list(run.glob(f"{final.name}.corrupt-*"))
    assert (run / "epoch_0002").exists()  # the good one stays, Ray resumes from it


@pytest.mark.slow  # a second Ray Train run of the module's candidate; `make test-slow`, run by CI
def test_resume_continues_from_last_checkpoint(first, source):
    out, tracking, first_parent, r1 = first
    with tracking.run("job-again") as again:  # a second job run resumes the candidate
        new_parent = again.info.run_id
    more = RECIPE.scaled(epochs=3)
    r2 = train_one(SPEC, source, recipe=more, tracking=tracking.child(new_parent), out_dir=out, eval_clips=2,
                   eval_crops=3, run_name="tiny", plan=plan_resources(1), log_model=False)
    assert r2.ok, r2.error
    assert r2.resumed_from_epoch == 2 and r2.epochs == 3
    assert [h["epoch"] for h in r2.history] == [1, 2, 3]
    assert r2.history[:2] == r1.history  # epochs 1-2 came from the checkpoint, not retrained
    assert r2.history[2]["session_start_epoch"] == 2
    assert r2.mlflow_run_id == r1.mlflow_run_id  # the same MLflow run continues
    client = mlflow.tracking.MlflowClient(tracking.tracking_uri)
    steps = sorted(m.step for m in client.get_metric_history(r2.mlflow_run_id, "val_top1"))
    assert steps == [1, 2, 3]
    run = client.get_run(r2.mlflow_run_id)
    assert run.data.params["recipe.epochs"] == "2" and run.data.tags["changed.recipe.epochs"] == "3"
    assert run.data.tags[PARENT_TAG] == new_parent and run.data.tags["e3d.previous_parent_run"] == first_parent
    assert load_state(r2.checkpoint)["scheduler"]["last_epoch"] == 24


@pytest.mark.slow  # a third Ray Train run; `make test-slow`, run by CI
def test_build_trainer_runs_any_loop_function(ray_cluster, source, tmp_path):
    """The Ray Train plumbing without the candidate loop: what a supernet search reuses with its own loop."""
    def count_rows(config):  # nested: pickled by value to the worker
        import json as _json
        from pathlib import Path as _Path

        import ray.train

        rows = sum(len(b["label"]) for b in ray.train.get_dataset_shard("train").iter_batches(batch_size=16))
        _Path(config["out"]).write_text(_json.dumps({"rows": rows, "world": ray.train.get_context().get_world_size()}))

    out = tmp_path / "rows.json"
    trainer = build_trainer(loop_config={"out": str(out)}, datasets={"train": source.train(), "val": None},
                            plan=plan_resources(1), run_name="custom-loop", storage_path=tmp_path / "train",
                            train_loop_per_worker=count_rows)
    assert trainer.fit().error is None
    assert json.loads(out.read_text()) == {"rows": 64, "world": 1}
