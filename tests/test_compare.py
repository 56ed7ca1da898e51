"""The comparison job: arms, the paired bootstrap on constructed data, and one end-to-end run on synthetic clips."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from e3d.stats import bootstrap_mean, paired_bootstrap, resample_means
from pipeline.compare import Arm, ArmError, SearchSettings, arm_request, parse_arm, summarize, verdict, zoo_arm
from pipeline.compare.run import Network
from e3d.strategy import Budget, Clip


# -- statistics -------------------------------------------------------------------------------------------------
def test_arm_better_on_every_video_has_an_interval_above_zero():
    rng = np.random.default_rng(0)
    base = (rng.random((3, 111)) < 0.5).astype(float)
    better = base.copy()
    better[base == 0] = 1.0  # right wherever the baseline is right, and on more videos
    better[:, :5] = 1.0
    base[:, :5] = 0.0
    delta, (lo, hi), p = paired_bootstrap(better, base, n_boot=2000)
    assert delta > 0 and lo > 0 and p == 1.0


def test_identical_arms_have_an_interval_containing_zero():
    x = (np.random.default_rng(1).random((2, 50)) < 0.6).astype(float)
    delta, (lo, hi), p = paired_bootstrap(x, x.copy(), n_boot=2000)
    assert delta == 0 and lo <= 0 <= hi and p == 0.5


def test_pairing_removes_the_videos_shared_difficulty():
    """Two arms that agree on the hard and easy videos but differ on 8 of 100: paired, the difference is
    clear; unpaired intervals of the two means would overlap."""
    rng = np.random.default_rng(2)
    b = (rng.random((3, 100)) < 0.5).astype(float)
    a = b.copy()
    flip = np.flatnonzero(b[0] == 0)[:8]
    a[:, flip] = 1.0
    _, (lo, _), _ = paired_bootstrap(a, b, n_boot=4000)
    (_, (alo, _)), (_, (_, bhi)) = bootstrap_mean(a, n_boot=4000), bootstrap_mean(b, n_boot=4000)
    assert lo > 0 and alo < bhi


def test_bootstrap_mean_is_the_plain_mean_and_its_interval_covers_it():
    x = np.array([[1, 0, 1, 1], [0, 0, 1, 1]], float)
    mean, (lo, hi) = bootstrap_mean(x, n_boot=500)
    assert mean == pytest.approx(5 / 8) and lo <= mean <= hi
    draws = resample_means(x, n_boot=500, seed=3)
    assert draws.shape == (500,) and draws.min() >= 0 and draws.max() <= 1
    assert np.array_equal(draws, resample_means(x, n_boot=500, seed=3))  # seeded


def test_bootstrap_refuses_unpaired_or_empty_input():
    with pytest.raises(ValueError, match="same seeds and videos"):
        paired_bootstrap(np.ones((2, 5)), np.ones((3, 5)))
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_mean(np.zeros((0, 4)))


# -- arms ---------------------------------------------------------------------------------------------------------
def test_arms_parse_with_their_defaults_and_refuse_bad_names():
    assert parse_arm("random") == Arm("random", None) and parse_arm("random").is_baseline
    assert parse_arm("evolution") == Arm("evolution", "stentr")
    assert parse_arm("evolution:params").name == "evolution:params"
    assert parse_arm("dnas").training_free is False and parse_arm("random:stentr").training_free
    assert zoo_arm("X3D-XS").name == "X3D-XS" and zoo_arm("X3D-XS").training_free
    for bad, match in (("nope", "nope"), ("evolution:nope", "unknown score"), ("parsec:stentr", "own criterion")):
        with pytest.raises(ArmError, match=match):
            parse_arm(bad)
    with pytest.raises(ArmError, match="unknown zoo"):
        zoo_arm("X3D-ZZ")


def test_the_random_baseline_is_one_uniform_draw_ranked_by_nothing():
    from e3d.strategy import get_strategy

    settings = SearchSettings(budget=Budget(flops=0.05e9, layers=41), clip=Clip(8, 56), num_classes=6,
                              iterations=300, population=16)
    base = arm_request(parse_arm("random"), settings, seed=4)
    scored = arm_request(parse_arm("random:stentr"), settings, seed=4)
    assert base.options["samples"] == 1 and scored.options["samples"] == 300 and scored.score == "stentr"
    outcome = get_strategy("random").search(base)
    assert len(outcome.candidates) == 1 and outcome.best.flops <= 0.05e9
    assert arm_request(parse_arm("evolution"), settings, 0).options == {"iterations": 300, "population_size": 16}


def _net(arm, seed, preds, labels, **kw):
    return Network(arm=arm, strategy=arm.split(":")[0], score="", seed=seed, name=f"{arm}-s{seed}", epochs=1,
                   predictions={"video_id": list(range(len(preds))), "pred": list(preds), "label": list(labels)}, **kw)


def test_summary_pairs_arms_on_their_common_seeds_and_says_so_in_words():
    labels = [0, 1] * 20
    right, wrong = labels, [1 - y for y in labels]
    nets = [_net("random", s, wrong if s < 2 else right, labels) for s in range(3)]
    nets += [_net("dnas", s, right, labels) for s in range(2)]  # two seeds: paired on seeds 0 and 1
    nets += [_net("evolution:stentr", s, wrong if s < 2 else right, labels) for s in range(3)]
    summary = summarize(nets, ["evolution:stentr", "random", "dnas"], n_boot=1000)
    arms = summary["arms"]
    assert arms["random"]["vs_random"] is None and arms["random"]["mv_top1_mean"] == pytest.approx(100 / 3)
    assert arms["dnas"]["vs_random"]["seeds"] == [0, 1] and arms["dnas"]["vs_random"]["delta"] == pytest.approx(100)
    assert arms["evolution:stentr"]["vs_random"]["delta"] == 0
    words = verdict(summary)
    assert "better than random: dnas" in words and "cannot be told apart from random: evolution:stentr" in words


# -- the job, end to end ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def comparison(tmp_path_factory, ray_cluster):
    from pipeline.compare import CompareConfig, run_comparison
    from pipeline.search_and_train import DataConfig
    from pipeline.train.recipe import Recipe
    from pipeline.video.clip import ClipConfig

    out = tmp_path_factory.mktemp("compare")
    from e3d import zoo
    from e3d.latency import LatencyTable, Measurer

    from e3d.strategy import SearchRequest, get_strategy

    latency = LatencyTable(measurer=Measurer(threads=1, warmup=0, runs=1), path=out.parent / "latency.json")
    sample = SearchRequest(budget=Budget(flops=0.03e9, layers=41), clip=Clip(8, 40), score="flops",
                           options={"samples": 6})
    for spec in [zoo.get("E3D-init-S").with_input(8, 40)] + [c.spec for c in get_strategy("random").search(sample).candidates]:
        latency.fill(spec)  # a real (tiny) table; blocks it lacks are estimated by its per-op model
    config = CompareConfig(
        arms=(parse_arm("evolution:stentr"), parse_arm("random")), out_dir=str(out),
        data=DataConfig(synthetic={"num_classes": 2, "clips_per_class": 6, "frames": 16, "size": 48}),
        clip=ClipConfig(frames=8, size=40, sampling_rate=2, train_scale=(40, 46), hflip=False),
        recipe=Recipe.paper("sthsth").scaled(epochs=1, lr=0.02, batch_size=4, init="torch"),
        budget=Budget(flops=0.03e9, layers=41), iterations=300, population=16, seeds=2, eval_clips=1,
        n_boot=500, latency_table=str(latency.path))
    result = run_comparison(config, verbose=False)
    return config, result, out


@pytest.mark.timeout(1200)  # whichever runs first sets up `comparison`: 610 s beside two xdist workers and a study (load ~20)
def test_comparison_writes_every_output(comparison):
    config, result, out = comparison
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["arm"], r["seed"]) for r in rows] == [("evolution:stentr", "0"), ("evolution:stentr", "1"),
                                                     ("random", "0"), ("random", "1")]
    assert set(rows[0]) >= {"arm", "strategy", "score", "seed", "name", "gflops", "mparams", "search_cpu_s",
                            "search_wall_s", "train_s", "val_top1", "mv_top1"}
    for r in rows:
        assert float(r["gflops"]) <= 0.03 * 1.0001 and 0 <= float(r["mv_top1"]) <= 100 and not r["error"]
        assert float(r["latency_ms"]) > 0
    assert float(rows[0]["search_cpu_s"]) > 0 and rows[2]["score"] == ""
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"evolution:stentr", "random"}
    evo = summary["evolution:stentr"]
    assert evo["n"] == 2 and evo["mv_top1_ci"][0] <= evo["mv_top1_mean"] <= evo["mv_top1_ci"][1]
    assert set(evo["vs_random"]) >= {"delta", "ci", "p_better"} and summary["random"]["vs_random"] is None
    assert evo["latency_ms_mean"] > 0 and evo["search_cpu_s_mean"] > 0
    # the mean over seeds is the mean of the networks' own multi-view accuracies (same videos for all)
    assert evo["mv_top1_mean"] == pytest.approx(np.mean([float(r["mv_top1"]) for r in rows[:2]]))
    table = (out / "table.md").read_text()
    assert "| evolution:stentr | 2 |" in table and "Verdict" in table and (out / "compare.png").stat().st_size > 0
    assert result.verdict in table


@pytest.mark.timeout(1200)
def test_comparison_logs_a_parent_and_a_child_per_network(comparison):
    from mlflow.tracking import MlflowClient

    config, result, out = comparison
    client = MlflowClient(result.tracking_uri)
    children = client.search_runs([client.get_run(result.parent_run_id).info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    names = {r.info.run_name for r in children}
    assert {n.name for n in result.networks} <= names
    assert {f"search-{n.name}" for n in result.networks} <= names


@pytest.mark.timeout(1200)
def test_comparison_resumes_without_redoing_anything(comparison, capsys):
    from pipeline.compare import make_plan, run_comparison

    config, result, out = comparison
    plan = make_plan(config, out)
    assert plan.searches == [] and plan.trainings == [] and plan.trainings_done == 4
    again = run_comparison(config, verbose=True, estimate=False)
    printed = capsys.readouterr().out
    assert "[train]" not in printed and "0 searches to run" in printed
    assert again.summary == result.summary


@pytest.mark.timeout(1200)
def test_plan_estimate_counts_what_is_left(comparison):
    from pipeline.compare import Plan
    from pipeline.compare.estimate import estimate_hours
    from pipeline.search_and_train import load_data

    config, _, out = comparison
    dataset = load_data(config.data, out, seed=0)
    plan = Plan(searches=[(a, 7) for a in config.arms], trainings=[(a, 7) for a in config.arms])
    assert plan.describe().startswith("2 searches to run (2 training-free, 0 training-based")
    hours = estimate_hours(config, plan, dataset)
    assert hours["total_h"] == pytest.approx(hours["searches_h"] + hours["trainings_h"])
    assert hours["trainings_h"] > 0 and "2 searches" in hours["how"] and "2 trainings" in hours["how"]


@pytest.mark.timeout(1200)
def test_a_corrupt_network_record_is_set_aside_and_trained_again(comparison):
    from pipeline.compare import make_plan

    config, _, out = comparison
    record = out / "networks" / "random-s1.json"
    record.write_text(record.read_text()[:100])  # a copy cut short
    plan = make_plan(config, out)
    assert [(a.name, s) for a, s in plan.trainings] == [("random", 1)] and not record.exists()
    assert len(list((out / "networks").glob("random-s1.json.corrupt-*"))) == 1


def test_the_winner_is_the_best_candidate_within_the_budget(tmp_path):
    """A strategy with a soft cost term (PARSEC) may rank a network over the budget first: the comparison trains
    its best one within the budget, or its best one (reported as over) when none fits."""
    from e3d import zoo
    from e3d.search_io import write_outcome
    from e3d.strategy import Candidate, SearchOutcome
    from pipeline.compare import CompareConfig
    from pipeline.compare.run import search_dir, winner
    from pipeline.video.clip import ClipConfig

    big, small = (zoo.get(n).with_input(8, 56) for n in ("E3D-S", "E3D-init-S"))  # 0.17 and 0.047 GFLOPs
    arm = parse_arm("parsec")
    write_outcome(search_dir(tmp_path, arm, 0), SearchOutcome(
        strategy="parsec", score_name="parsec", candidates=[Candidate.of(big, 2.0, source="parsec"),
                                                            Candidate.of(small, 1.0, source="parsec")]))
    config = CompareConfig(arms=(arm,), clip=ClipConfig(frames=8, size=56), budget=Budget(flops=0.1e9))
    spec, outcome, rank = winner(config, tmp_path, arm, 0)
    assert rank == 1 and spec.name == "parsec-s0" and spec.stages == small.stages and outcome.best.spec == big
    tight = CompareConfig(arms=(arm,), clip=ClipConfig(frames=8, size=56), budget=Budget(flops=0.01e9))
    assert winner(tight, tmp_path, arm, 0)[2] == 0  # none fits: the best, flagged when trained
    zoo_spec, none, rank = winner(config, tmp_path, zoo_arm("X3D-XS"), 1)
    assert none is None and rank == -1 and zoo_spec.name == "X3D-XS-s1" and zoo_spec.size == 56
