"""Ray Tune over the search's hyper-parameters (pipeline.search.tune_search) on a 2-CPU local Ray."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from e3d.evolution import SearchConfig
from pipeline.search import run_distributed_search
from pipeline.search.tune_search import TUNED, TuneSettings, island_kwargs, trial_config, tune_search

BASE = SearchConfig.from_preset("S", seed=1)
SMALL = dict(iterations=6000, population_sizes=(16, 32), islands=(1, 2), migration_intervals=(1, 2),
             migration_sizes=(1, 4), chunk_iterations=(500, 1000))


def test_trial_config_normalises_weights_and_keeps_the_budget():
    params = {"population_size": 64, "p_kernel": 1.0, "p_width": 3.0, "p_bottleneck": 0.0, "p_depth": 4.0,
              "islands": 4, "migration_interval": 2, "migration_size": 8, "chunk_iterations": 2500}
    c = trial_config(BASE, params, 12345)
    assert c.population_size == 64 and c.iterations == 12345 and c.seed == BASE.seed
    assert c.space_settings.mutation_probs == (0.125, 0.375, 0.0, 0.5)
    assert island_kwargs(params) == {"actors": 4, "chunk_iterations": 2500, "migration_interval": 2,
                                     "migration_size": 8}
    assert island_kwargs(params | {"population_size": 2})["actors"] == 2  # never more islands than members
    assert set(TuneSettings().param_space()) == set(TUNED)


def test_resources_never_ask_for_more_than_the_cluster():
    local = TuneSettings()
    assert local.trial_bundles(4) == [{"CPU": 1.0}] and local.concurrency(2) == 2
    assert TuneSettings(trial_cpus=0.5).concurrency(2) == 4
    assert TuneSettings(max_concurrent_trials=1).concurrency(2) == 1
    actors = TuneSettings(trial_backend="ray", trial_cpus=0.5, actor_cpus=0.25, islands=(1, 2, 4))
    assert actors.trial_bundles(2) == [{"CPU": 0.5}, {"CPU": 0.25}, {"CPU": 0.25}]
    assert actors.concurrency(2) == 1 and actors.concurrency(4.5) == 3
    with pytest.raises(ValueError, match="never start"):  # 1 + 4 x 0.5 CPUs on 2 CPUs: would hang forever
        TuneSettings(trial_backend="ray", islands=(1, 4)).concurrency(2)
    with pytest.raises(ValueError):
        TuneSettings(population_sizes=(2,), islands=(4,))


def test_tune_trials_asha_mlflow_and_winning_settings(ray_cluster, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from pipeline.tracking import PARENT_TAG, Tracking

    tracking = Tracking.local(tmp_path / "runs", "test-tune")
    # one trial at a time: ASHA's decisions then depend on the (deterministic) scores only
    settings = TuneSettings(num_samples=5, seed=3, grace_period=1000, max_concurrent_trials=1, **SMALL)
    outcome = tune_search(BASE, settings, out_dir=tmp_path / "tune", tracking=tracking)

    assert len(outcome.trials) == 5 and not any(t["error"] for t in outcome.trials)
    finished = [t for t in outcome.trials if not t["stopped_early"]]
    stopped = [t for t in outcome.trials if t["stopped_early"]]
    assert finished and stopped, [(t["best_score"], t["iterations"]) for t in outcome.trials]
    assert all(t["iterations"] == 6000 for t in finished) and all(t["iterations"] < 6000 for t in stopped)
    assert outcome.best_score == max(t["best_score"] for t in outcome.trials)

    # the winner's settings are saved, and rerunning them reproduces the trial's score exactly
    saved = json.loads(Path(outcome.files["best_settings"]).read_text())
    assert saved["best_score"] == outcome.best_score and saved["hyperparameters"] == outcome.best_params
    assert saved["island_settings"] == island_kwargs(outcome.best_params)
    assert "jobs/search.py --config" in saved["command"]
    assert f"--actors {saved['island_settings']['actors']}" in saved["command"]
    full = SearchConfig.from_dict(json.loads(Path(outcome.files["best_config"]).read_text()))
    assert full == trial_config(BASE, outcome.best_params, BASE.iterations)  # the winner at full length
    assert Path(outcome.files["trials"]).read_text().count("\n") == 6
    rerun = run_distributed_search(trial_config(BASE, outcome.best_params, 6000), out_dir=tmp_path / "rerun",
                                   backend="local", **island_kwargs(outcome.best_params))
    assert rerun.best_score == outcome.best_score

    # every trial is an MLflow run under the tuning run; stopped ones are marked
    client = MlflowClient(tracking.tracking_uri)
    parent = client.get_run(outcome.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics["best_score"] == outcome.best_score
    assert parent.data.params["best.population_size"] == str(outcome.best_params["population_size"])
    for t in outcome.trials:
        run = client.get_run(t["mlflow_run_id"])
        assert run.data.tags[PARENT_TAG] == outcome.parent_run_id
        assert run.data.tags["e3d.trial_id"] == t["trial_id"]
        assert run.data.params["population_size"] == str(t["params"]["population_size"])
        assert run.data.params["islands.actors"] == str(island_kwargs(t["params"])["actors"])
        history = client.get_metric_history(run.info.run_id, "best_score")
        assert max(m.value for m in history) == t["best_score"]
        if t["stopped_early"]:
            assert run.info.status == "KILLED" and run.data.tags["e3d.stopped_by"] == "ASHA"
        else:
            assert run.info.status == "FINISHED"
            assert "search/best.json" in {a.path for a in client.list_artifacts(run.info.run_id, "search")}


@pytest.mark.slow  # Tune trials that start island actors (~15 s idle); `make test-slow`, run by CI
def test_tune_with_island_actors_inside_trials_does_not_deadlock(ray_cluster, tmp_path):
    """Trials of 0.5 CPU whose 2 islands are 0.5-CPU actors in the trial's placement group, on 2 CPUs."""
    settings = TuneSettings(num_samples=2, seed=0, trial_backend="ray", trial_cpus=0.5, actor_cpus=0.5,
                            **(SMALL | {"islands": (2,)}))
    assert settings.concurrency(2) == 1
    outcome = tune_search(BASE, settings, out_dir=tmp_path / "tune-actors", tracking=None)
    assert len(outcome.trials) == 2 and all(t["best_score"] is not None for t in outcome.trials)
    rerun = run_distributed_search(trial_config(BASE, outcome.best_params, 6000), out_dir=tmp_path / "rerun",
                                   backend="local", **island_kwargs(outcome.best_params))
    assert rerun.best_score == outcome.best_score  # actors in a trial: still the same search
