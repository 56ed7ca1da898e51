"""The ``dnas`` strategy: option checks, the main job end to end in quick mode, resume after a kill mid-search (slow)."""
import json
from dataclasses import replace

import pytest

from e3d.strategy import Budget, Clip, RequestError, SearchContext, SearchRequest, get_strategy
from pipeline.context import RayTrainer

QUICK = get_strategy("dnas").quick_options


@pytest.mark.parametrize("options,field,message", [
    ({"epoch": 3}, "options.epoch", "unknown option 'epoch'"),
    ({"epochs": 0}, "options.epochs", "integer >= 1"),
    ({"epochs": 2, "warmup_epochs": 3}, "options.warmup_epochs", "exceeds epochs"),
    ({"split": [0.7, 0.5]}, "options.split", "summing to at most 1"),
    ({"max_stack": [1, 2]}, "options.max_stack", "list of 6"),
    ({"search_channels": False, "search_ops": False, "search_depth": False}, "options.search_channels",
     "nothing to search"),
    ({"path_score": "max"}, "options.path_score", "'log' or 'sum'"),
    ({"lam": -1}, "options.lam", "non-negative")])
def test_bad_options_are_named(options, field, message):
    request = SearchRequest(budget=Budget(flops=1e9), clip=Clip(8, 56), options=options)
    with pytest.raises(RequestError, match=message) as err:
        get_strategy("dnas").check(request)
    assert err.value.field == field


def test_check_refuses_too_few_frames_and_needs_data():
    strategy = get_strategy("dnas")
    with pytest.raises(RequestError) as err:
        strategy.check(SearchRequest(budget=Budget(flops=1e9), clip=Clip(2, 56)))
    assert err.value.field == "clip"
    strategy.check(SearchRequest(budget=Budget(flops=1e9), clip=Clip(8, 40), options=QUICK))
    with pytest.raises(ValueError, match="needs the job's data"):
        strategy.search(SearchRequest(budget=Budget(flops=1e9), clip=Clip(8, 40), options=QUICK), SearchContext())
    assert strategy.needs == ("data", "training") and strategy.cli_options == {}


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    ray = pytest.importorskip("ray")
    from pipeline.options import TrainResources
    from pipeline.search_and_train import JobConfig, demo_request, quick, run_job

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    out = tmp_path_factory.mktemp("dnas-job")
    # train_resource=None: no wait for an autoscaler's train node on this local cluster (61 s otherwise)
    config = JobConfig(out_dir=str(out), strategy="dnas", request=demo_request("dnas"),
                       resources=TrainResources(train_resource=None))
    result = run_job(quick(config), verbose=False)
    yield out, result
    ray.shutdown()


@pytest.mark.slow  # the supernet strategy's job end to end (a supernet and a candidate: two Ray Train runs, ~60 s idle); `make test-slow`, run by CI
def test_job_runs_dnas_end_to_end(job):
    """``jobs/search_and_train.py --strategy dnas --quick``: supernet search -> derived r2plus1d spec -> training."""
    out, result = job
    summary = json.loads((out / "summary.json").read_text())
    assert summary["search"]["strategy"] == "dnas" and summary["search"]["epochs"] == QUICK["epochs"]
    cand = result.candidates[0]
    assert cand.ok and cand.epochs == 1 and 0 <= cand.mv_top1 <= 100
    assert result.best_spec.family == "r2plus1d" and cand.flops == result.outcome.best.flops
    history = result.outcome.history
    assert [h["phase"] for h in history] == ["warmup", "search"]
    assert history[0]["arch_steps"] == 0 and history[1]["arch_steps"] > 0  # the warm-up trains weights only
    import pyarrow.parquet as pq

    saved = pq.read_table(out / "search" / "history.parquet").to_pylist()  # every epoch keeps every column
    assert saved[1]["arch_loss"] > 0 and saved[1]["derived_widths"] and "alpha_json" in saved[0]
    assert result.outcome.cpu_s > 0 and (out / "search" / "arch_weights.png").is_file()
    weights = json.loads((out / "search" / "arch_weights.json").read_text())
    assert weights["ops"] == [1, 2, 4, 0]


@pytest.mark.slow  # the supernet strategy's job end to end (a supernet and a candidate: two Ray Train runs, ~60 s idle); `make test-slow`, run by CI
def test_job_logs_the_architecture_per_epoch_to_mlflow(job):
    import mlflow
    from mlflow.tracking import MlflowClient

    out, result = job
    mlflow.set_tracking_uri(result.tracking_uri)
    runs = mlflow.search_runs(experiment_names=["e3d-search-and-train"])
    search = runs[runs["tags.mlflow.runName"] == "search-dnas"].iloc[0]
    assert search["params.strategy"] == "dnas" and search["params.family"] == "r2plus1d"
    client = MlflowClient(result.tracking_uri)
    names = set(client.get_run(search["run_id"]).data.metrics)
    assert {"alpha.s3.l1.d1", "alpha.s3.l1.d2", "alpha.s3.l1.skip"} <= names and any(n.startswith("beta.s2.") for n in names)
    for metric in ("expected_gflops", "derived_gflops", "train_loss", "alpha.s3.l1.d4"):
        steps = [m.step for m in client.get_metric_history(search["run_id"], metric)]
        assert steps == [1, 2], metric
    assert [m.step for m in client.get_metric_history(search["run_id"], "arch_loss")] == [2]
    heatmaps = [a.path for a in client.list_artifacts(search["run_id"], "arch")]
    assert heatmaps == ["arch/epoch_0001.png", "arch/epoch_0002.png"]


@pytest.mark.slow  # two Ray Train runs (~1 min idle); tests/test_dnas_loop.py checks the checkpoint round trip fast
def test_search_resumes_after_a_kill(tmp_path, ray_cluster):
    """A worker dies mid-search (no automatic restart): the search fails; called again with the same out_dir it
    continues from the last epoch's checkpoint instead of starting over."""
    from pipeline.train import TensorSource
    from pipeline.train.callbacks import KillWorkerOnce

    source = TensorSource.synthetic(num_classes=2, n_train=12, n_val=2, frames=4, size=24, seed=1)
    options = QUICK | {"epochs": 3, "max_failures": 0, "max_stack": [0, 1, 0, 1, 0, 1]}
    request = SearchRequest(budget=Budget(flops=1e9), clip=Clip(4, 24), options=options, out_dir=str(tmp_path),
                            num_classes=2)
    kill = KillWorkerOnce(epoch=2, marker=str(tmp_path / "killed"), delay_s=4.0)
    strategy = get_strategy("dnas")
    with pytest.raises(RuntimeError, match="resume"):
        strategy.search(request, SearchContext(dataset=source, trainer=RayTrainer(), callbacks=[kill]))
    assert (tmp_path / "killed").exists()
    outcome = strategy.search(request, SearchContext(dataset=source, trainer=RayTrainer(), callbacks=[kill]))
    history = outcome.history
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert [h["session_start_epoch"] for h in history] == [0, 0, 2]  # epochs 1-2 came from the killed session
    assert outcome.best.spec.family == "r2plus1d" and outcome.extra["epochs"] == 3
    # a finished search called once more is not trained again: the last checkpoint is read back
    again = strategy.search(replace(request, options=options | {"top_k": 1}),
                            SearchContext(dataset=source, trainer=RayTrainer()))
    assert json.dumps(again.history) == json.dumps(history) and again.best.spec == outcome.best.spec


@pytest.mark.slow  # a 4-CPU Ray and two Train workers
def test_two_ddp_workers_search_together(tmp_path):
    """DDP over gloo: the weight part is split equally, the architecture part unevenly; the workers agree on every
    architecture step (no hang), and the epoch's counts are summed over both."""
    ray = pytest.importorskip("ray")
    from pipeline.train import TensorSource

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        source = TensorSource.synthetic(num_classes=2, n_train=20, n_val=2, frames=4, size=24, seed=2)
        options = QUICK | {"epochs": 2, "workers": 2, "split": [0.5, 0.5, 0.0], "max_stack": [0, 1, 0, 1, 0, 1]}
        request = SearchRequest(budget=Budget(flops=1e9), clip=Clip(4, 24), options=options, out_dir=str(tmp_path),
                                num_classes=2)
        outcome = get_strategy("dnas").search(request, SearchContext(dataset=source, trainer=RayTrainer()))
    finally:
        ray.shutdown()
    warm, search = outcome.history
    assert outcome.settings["plan"]["num_workers"] == 2
    assert warm["train_samples"] == search["train_samples"] == 10  # 5 + 5: both workers' steps counted
    assert search["arch_steps"] >= 1 and search["cpu_s"] > 0
