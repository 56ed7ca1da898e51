"""``--strategy parsec`` through the main job in quick mode (synthetic data, Ray Train, MLflow), and the search
resumed from its Ray Train checkpoint."""
import json
from dataclasses import replace

import pytest

ray = pytest.importorskip("ray")

from pipeline.search_and_train import JobConfig, demo_request, quick, run_job  # noqa: E402


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    out = tmp_path_factory.mktemp("parsec-job")
    config = quick(JobConfig(out_dir=str(out), strategy="parsec", request=demo_request("parsec")))
    result = run_job(config, verbose=False)
    yield out, config, result
    ray.shutdown()


@pytest.mark.slow  # the supernet strategy's job end to end (a supernet and a candidate: two Ray Train runs, ~60 s idle); `make test-slow`, run by CI
def test_job_trains_the_most_probable_two_stream_net(job):
    out, config, result = job
    summary = json.loads((out / "summary.json").read_text())
    assert [c["name"] for c in summary["candidates"]] == ["cand1"]
    cand = result.candidates[0]
    assert cand.ok and cand.epochs == 1 and 0 <= cand.mv_top1 <= 100
    assert cand.spec["family"] == "twostream" and len(cand.spec["fusion"]) == 4
    outcome = result.outcome
    assert outcome.strategy == "parsec" and outcome.score_name == "log_prob"
    scores = [c.score for c in outcome.candidates]
    assert len(scores) == 3 == len({c.spec.key() for c in outcome.candidates})  # top_k = K = 3 in quick mode
    assert scores == sorted(scores, reverse=True) and all(s < 0 for s in scores)
    assert cand.spec == outcome.best.spec.replace(name="cand1").to_dict()
    assert [h["arch_updates"] for h in outcome.history] == [0, 1]  # first 25 % of the epochs: weights only
    assert outcome.history[-1]["total_iterations"] == 2 * outcome.history[0]["steps"]
    probs = json.loads((out / "search" / "distribution.json").read_text())
    assert all(sum(v["probs"]) == pytest.approx(1.0, abs=1e-4) for k, v in probs.items() if not k.startswith("_"))
    assert outcome.cpu_s > 0 and outcome.extra["t_max_gflops"] == pytest.approx(0.03)


@pytest.mark.slow  # the supernet strategy's job end to end (a supernet and a candidate: two Ray Train runs, ~60 s idle); `make test-slow`, run by CI
def test_mlflow_search_run_has_the_per_step_metrics(job):
    import mlflow

    out, _, result = job
    mlflow.set_tracking_uri(result.tracking_uri)
    runs = mlflow.search_runs(experiment_names=["e3d-search-and-train"])
    search = runs[runs["tags.mlflow.runName"] == "search-parsec"].iloc[0]
    client = mlflow.tracking.MlflowClient()
    steps = result.outcome.history[-1]["total_iterations"]
    for key in ("entropy", "expected_gflops", "sampled_gflops", "data_nll", "cost_term", "loss"):
        history = client.get_metric_history(search["run_id"], key)
        assert sorted(m.step for m in history) == list(range(1, steps + 1)), key
    assert [m.step for m in client.get_metric_history(search["run_id"], "epoch_mode_gflops")] == [1, 2]
    assert "parsec/distribution.json" in [a.path for a in client.list_artifacts(search["run_id"], "parsec")]
    assert search["params.strategy"] == "parsec" and search["params.family"] == "twostream"


@pytest.mark.slow  # a third Ray Train run
def test_search_resumes_from_its_checkpoint(job):
    """Asked for one more epoch, the finished search continues from its last checkpoint (weights and alpha)."""
    from e3d.strategy import SearchContext, get_strategy
    from pipeline.context import RayTrainer
    from pipeline.search_and_train import load_data

    out, config, result = job
    request = config.search_request(str(out / "search"), 2)
    request = replace(request, options=dict(request.options) | {"epochs": 3})
    dataset = load_data(config.data, out, seed=config.seed)
    again = get_strategy("parsec").search(request, SearchContext(dataset=dataset, clip=config.clip,
                                                                 recipe=config.recipe, trainer=RayTrainer()))
    first = result.outcome.history
    assert [h["epoch"] for h in again.history] == [1, 2, 3]
    assert again.history[:2] == first  # not trained again
    assert again.history[2]["session_start_epoch"] == 2


@pytest.mark.slow
def test_two_workers_draw_the_same_architectures_and_agree(tmp_path):
    """Two Ray Train workers (gloo): summed log-likelihoods and gradients keep alpha and the weights identical on
    both workers (the loop measures their spread every epoch)."""
    from e3d.strategy import Budget, Clip, SearchContext, SearchRequest, get_strategy
    from pipeline.context import RayTrainer
    from pipeline.train.data import TensorSource

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        source = TensorSource.synthetic(num_classes=2, n_train=16, n_val=4, frames=8, size=40)
        request = SearchRequest(budget=Budget(flops=0.03e9), clip=Clip(8, 40), num_classes=2, out_dir=str(tmp_path),
                                options={"epochs": 2, "samples": 3, "batch_size": 4, "workers": 2,
                                         "expected_draws": 4})
        outcome = get_strategy("parsec").search(request, SearchContext(dataset=source, trainer=RayTrainer()))
    finally:
        ray.shutdown()
    assert outcome.settings["plan"]["num_workers"] == 2
    assert [h["steps"] for h in outcome.history] == [2, 2]  # 16 clips / 2 workers / batch 4
    assert outcome.history[-1]["arch_updates"] == 1
    assert all(h["alpha_spread"] == 0.0 and h["weights_spread"] == 0.0 for h in outcome.history)
