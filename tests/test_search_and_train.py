"""The main job end to end (quick mode): search -> candidates -> training -> MLflow; a rerun resumes."""
import json

import pytest

ray = pytest.importorskip("ray")

from pipeline.search_and_train import JobConfig, quick, run_job  # noqa: E402


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    out = tmp_path_factory.mktemp("job")
    first = run_job(quick(JobConfig(out_dir=str(out))), verbose=False)
    yield out, first
    ray.shutdown()


def test_summary_and_outputs(job):
    out, result = job
    summary = json.loads((out / "summary.json").read_text())
    assert [c["name"] for c in summary["candidates"]] == ["cand1"]
    assert summary["ignored_files"] == [] and summary["placement"]["autoscale"]["outcome"] in ("off", "no-autoscaler")
    cand = result.candidates[0]
    assert cand.ok and cand.epochs == 1 and 0 <= cand.mv_top1 <= 100
    assert cand.flops <= 0.03e9 and cand.stentr > 0
    for name in ("best.json", "population.parquet", "history.parquet", "progress.png", "outcome.json"):
        assert (out / "search" / name).is_file()
    assert "cand1" in (out / "summary.txt").read_text()


def test_mlflow_layout(job):
    import mlflow

    out, result = job
    mlflow.set_tracking_uri(result.tracking_uri)
    runs = mlflow.search_runs(experiment_names=["e3d-search-and-train"])
    parent = runs[runs["tags.mlflow.runName"] == "search_and_train"]
    children = runs[runs["tags.mlflow.parentRunId"] == result.parent_run_id]
    assert len(parent) == 1 and set(runs["status"]) == {"FINISHED"}
    assert len(children) == 2  # the search and the one candidate
    cand = children[children["tags.mlflow.runName"] == "cand1"].iloc[0]
    assert float(cand["params.stentr"]) > 0 and cand["params.kernels"].count("-") == 4
    search = children[children["tags.mlflow.runName"] == "search-evolution"].iloc[0]
    assert search["params.strategy"] == "evolution" and float(search["metrics.best_score"]) > 0
    assert search["params.kernels"].count("-") == 4 and "params.gflops" in search  # the candidates' names
    exp = mlflow.get_experiment_by_name("e3d-search-and-train")
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"  # the UI opens on the runs


def test_rerun_resumes_instead_of_redoing(job):
    out, first = job
    again = run_job(quick(JobConfig(out_dir=str(out))), verbose=False)
    assert again.parent_run_id == first.parent_run_id  # same MLflow job run
    assert again.search_summary["resumed"]  # the finished search was read back, not run again
    assert again.best_spec == first.best_spec
    # the finished candidate was read back from its final checkpoint, not trained again (its epoch timings match)
    assert again.candidates[0].history == first.candidates[0].history
