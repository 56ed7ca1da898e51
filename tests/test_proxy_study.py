"""The proxy/accuracy correlation study (pipeline.proxy_study, jobs/proxy_study.py).

Statistics and sampling without Ray (seconds); one end-to-end study on synthetic H.264 videos with Ray:
1 sampled model + the winners of a HomoEntr search and a random draw (3 models, one at a time on 2 CPUs), 1 epoch
at 4x32^2, then the same call again (resume: nothing retrained) and a call with other settings (refused).
"""
import csv
import json
import math
import sys

import pytest

from conftest import REPO
from e3d.stats import binned_kendall, bootstrap_ci, kendall, spearman, top_k_hit_rate
from pipeline.proxy_study import StudyConfig, StudyError, correlate, epoch_budgets, sample_specs

sys.path.insert(0, str(REPO / "jobs"))
REQUIRED_KEYS = {"kendall_tau", "kendall_ci", "spearman_rho", "spearman_ci", "binned_kendall_tau"}


# -- settings, sampling, statistics (no Ray) -------------------------------------------------------------
@pytest.mark.parametrize("kwargs, field", [({"models": 0}, "models"), ({"gflops": (0.5, 0.1)}, "gflops"),
                                          ({"scores": ("zen", "nope")}, "scores"), ({"zoo": ("E3D-XL",)}, "zoo"),
                                          ({"search_scores": ("naswot",)}, "search_scores"),
                                          ({"init": "xavier"}, "init"), ({"naswot_batch": 1}, "naswot_batch")])
def test_config_errors_name_the_setting(kwargs, field):
    with pytest.raises(StudyError) as err:
        StudyConfig(**kwargs)
    assert err.value.field == field


def test_default_flops_range_scales_the_s_budget_to_the_clip():
    lo, hi = StudyConfig(clip_frames=13, clip_size=160).gflops_range
    assert (lo, hi) == (0.19, 1.9)
    assert StudyConfig(clip_frames=8, clip_size=112).gflops_range[1] == pytest.approx(1.9 * 8 / 13 * 0.49, abs=1e-4)


def test_sampling_is_stratified_by_flops_distinct_and_seeded():
    from e3d.cost import cost

    kw = dict(frames=8, size=56, gflops=(0.01, 0.1), seed=3, max_layers=41)
    specs = sample_specs(8, **kw)
    flops = [cost(s).flops / 1e9 for s in specs]
    edges = [0.01 * 10 ** (i / 8) for i in range(9)]
    assert all(edges[i] <= f <= edges[i + 1] for i, f in enumerate(flops))  # one model per log-spaced band
    assert len({s.key() for s in specs}) == 8
    assert len({s.kernel_pattern for s in specs}) > 1 and len({s.depths for s in specs}) > 1
    assert len({s.widths for s in specs}) == 8
    assert [s.to_dict() for s in sample_specs(8, **kw)] == [s.to_dict() for s in specs]
    assert [s.key() for s in sample_specs(8, **(kw | {"seed": 4}))] != [s.key() for s in specs]


def test_rank_statistics_and_intervals():
    x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    assert kendall(x, x) == pytest.approx(1.0) and spearman(x, x[::-1]) == pytest.approx(-1.0)
    assert math.isnan(kendall(x, [3.0] * 8))  # constant accuracy: undefined, not 0
    y = [2.0, 1.0, 4.0, 3.0, 6.0, 5.0, 8.0, 7.0]
    tau = kendall(x, y)
    lo, hi = bootstrap_ci(x, y, kendall, n_boot=300, seed=0)
    assert lo <= tau <= hi and hi - lo > 0.05
    assert top_k_hit_rate([5, 4, 3, 2, 1], [10, 9, 8, 7, 6], 2) == 1.0
    assert top_k_hit_rate([1, 2, 3, 4, 5], [10, 9, 8, 7, 6], 2) == 0.0
    assert top_k_hit_rate([5, 4, 3, 2, 1], [10, 9, 9, 7, 6], 2) == 1.0  # a tie with the 2nd best counts


def test_vectorised_statistics_equal_scipy():
    import numpy as np

    from e3d.stats import kendall_rows, spearman_rows

    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, (40, 9)).astype(float)  # many ties
    y = rng.integers(0, 4, (40, 9)).astype(float)
    x[0], y[1] = 2.0, 3.0  # constant rows: undefined
    for rows, one in ((kendall_rows, kendall), (spearman_rows, spearman)):
        got = rows(x, y)
        want = np.array([one(a, b) for a, b in zip(x, y)])
        assert np.allclose(got, want, equal_nan=True), (rows.__name__, got - want)
    assert np.isnan(kendall_rows(x, y)[:2]).all()


def test_binned_tau_separates_models_of_equal_flops():
    """A proxy that only tracks FLOPs ranks well globally but not within a FLOPs bin; one that orders models
    of equal FLOPs correctly keeps a high within-bin tau (the paper's argument for STEntr)."""
    flops = [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]
    acc = [10, 12, 14, 16, 20, 22, 24, 26, 30, 32, 34, 36]
    # tracks FLOPs, but orders the models inside each bin the wrong way round
    only_flops = [1.03, 1.02, 1.01, 1.00, 2.03, 2.02, 2.01, 2.00, 3.03, 3.02, 3.01, 3.00]
    both = [a + 0.1 for a in acc]
    assert kendall(only_flops, acc) > 0.4
    assert binned_kendall(only_flops, acc, flops, 3)[0] == pytest.approx(-1.0)
    tau, bins = binned_kendall(both, acc, flops, 3)
    assert tau == pytest.approx(1.0) and [b["n"] for b in bins] == [4, 4, 4]


def test_correlate_reports_every_budget_and_multi_view():
    rows = [{"name": f"m{i}", "gflops": 0.1 * (i % 3 + 1), "p": float(i), "q": float(-i), "val_top1": 10.0 * i,
             "mv_top1": 10.0 * i + (15 if i == 2 else 0), "val_top1_e1": 5.0, "val_top1_e2": float(i),
             "val_top1_e4": 10.0 * i} for i in range(9)]
    corr = correlate(rows, ["p", "q"], epochs=4, n_boot=200)
    assert epoch_budgets(4) == [1, 2, 4] and epoch_budgets(1) == [1] and epoch_budgets(8) == [2, 4, 8]
    p = corr["p"]
    assert REQUIRED_KEYS <= set(p) and p["kendall_tau"] == pytest.approx(1.0) and p["n"] == 9
    assert p["kendall_ci"][0] <= 1.0 <= p["kendall_ci"][1]
    assert corr["q"]["spearman_rho"] == pytest.approx(-1.0) and corr["q"]["top_k_hit_rate"] == 0.0
    assert math.isnan(p["by_epoch"]["1"]["kendall_tau"]) and p["by_epoch"]["4"]["kendall_tau"] == pytest.approx(1.0)
    assert 0.8 < p["multi_view"]["kendall_tau"] < 1.0


def test_job_refuses_bad_input_before_any_work(capsys, tmp_path):
    import proxy_study as job

    for argv, option in ((["--models", "0"], "--models"), (["--zoo", "E3D-XL"], "--zoo"),
                         (["--scores", "stentr,nope"], "--scores"), (["--data", str(tmp_path / "none")], "--data"),
                         (["--gflops", "0.5", "0.1"], "--gflops")):
        with pytest.raises(SystemExit) as exit_:
            job.main(argv + ["--out", str(tmp_path / "out")])
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and option in err, err
    assert not (tmp_path / "out" / "study.json").exists()


# -- the study end to end (Ray) ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    from pipeline.video.formats import load_dataset
    from pipeline.video.synthetic import make_synthetic_dataset

    root = make_synthetic_dataset(tmp_path_factory.mktemp("videos"), num_classes=4, clips_per_class=6, size=32,
                                  frames=16, seed=0)
    return load_dataset(root)


STUDY = dict(models=1, epochs=1, clip_frames=4, clip_size=32, sampling_rate=2, batch_size=4, eval_clips=1,
             eval_crops=1, hflip=False, naswot_batch=4, bootstrap=200, search_scores=("homoentr", "random"),
             search_iterations=20, search_population=4)


@pytest.mark.timeout(1200)  # 6.5 min measured with a load average of 35
def test_study_end_to_end_and_resume(ray_cluster, videos, tmp_path):
    from pipeline.proxy_study import check_study, run_study
    from pipeline.tracking import Tracking

    config = StudyConfig(**STUDY)
    models = check_study(config, videos)
    tracking = Tracking.local(tmp_path / "mlruns", "proxy-study-test")
    out = tmp_path / "study"
    first = run_study(config, videos, out, tracking=tracking, models=models)
    proxies = config.score_list
    assert {"zen", "maedet", "naswot", "synflow", "stentr", "homoentr", "flops", "params"} <= set(proxies)

    with open(out / "models.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 and {r["source"] for r in rows} == {"sample", "search:homoentr", "search:random"}
    assert {"name", "gflops", "mparams", "val_top1", "mv_top1", *proxies} <= set(rows[0])
    for r in rows:
        assert not r["error"], r
        # sampled models are drawn with a finite STEntr; a HomoEntr search winner may have an infinite one
        finite = [p for p in proxies if r[p] != ""]
        assert set(proxies) - set(finite) <= ({"stentr"} if r["source"] != "sample" else set()), r
        assert all(math.isfinite(float(r[p])) for p in finite), r
        assert 0 <= float(r["val_top1"]) <= 100 and 0 <= float(r["mv_top1"]) <= 100
        assert 0 < float(r["gflops"]) <= config.gflops_range[1] * 1.0001
    corr = json.loads((out / "correlations.json").read_text())
    assert set(corr) == set(proxies)
    for p, c in corr.items():
        # the HomoEntr winner's STEntr may be infinite: that model is left out of stentr's correlations only
        assert REQUIRED_KEYS <= set(c) and (c["n"] == 3 if p != "stentr" else c["n"] >= 2), p
        for est, ci in ((c["kendall_tau"], c["kendall_ci"]), (c["spearman_rho"], c["spearman_ci"])):
            if est is not None and ci[0] is not None:
                assert ci[0] - 1e-9 <= est <= ci[1] + 1e-9, (p, est, ci)
        assert set(c["by_epoch"]) == {"1"} and "multi_view" in c
    for name in ["table.md", "scatter.png", "tau_vs_epochs.png", "searches.csv", *[f"scatter_{p}.png" for p in proxies]]:
        assert (out / name).is_file(), name
    with open(out / "searches.csv") as fh:
        searches = list(csv.DictReader(fh))
    assert [s["search"] for s in searches] == ["homoentr", "random"] and all(float(s["cpu_s"]) >= 0 for s in searches)

    # MLflow: the parent holds the analysis, one child run per model carries its proxies
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking.tracking_uri)
    parent = client.get_run(first.parent_run_id)
    assert "kendall_tau.stentr" in parent.data.metrics or corr["stentr"]["kendall_tau"] is None
    assert parent.data.metrics["models"] == 3
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{first.parent_run_id}'")
    assert len(children) == 3 and all("proxy.zen" in ch.data.metrics for ch in children)
    artifacts = {a.path for a in client.list_artifacts(first.parent_run_id, "proxy_study")}
    assert "proxy_study/correlations.json" in artifacts and "proxy_study/models.csv" in artifacts

    # the same study again: nothing is trained, nothing rescored, the same rows
    scores_before = (out / "scores.json").read_text()
    again = run_study(config, videos, out, tracking=tracking)
    assert again.trained == [] and sorted(again.reused) == sorted(r["name"] for r in rows)
    assert again.parent_run_id == first.parent_run_id
    assert (out / "scores.json").read_text() == scores_before
    with open(out / "models.csv") as fh:
        assert list(csv.DictReader(fh)) == rows

    # other settings on the same --out are refused before any work
    with pytest.raises(StudyError) as err:
        run_study(StudyConfig(**(STUDY | {"models": 3})), videos, out)
    assert err.value.field == "out" and "models" in err.value.message


def test_low_fidelity_baseline_is_a_predictor_beside_the_proxies():
    """Accuracy after a network's first epoch(s) comes from its own training history, and is correlated with
    the final accuracy like any zero-cost proxy (no extra training)."""
    from pipeline.proxy_study import Model, low_fidelity_names, model_rows, sample_specs
    from pipeline.train.report import CandidateResult

    assert low_fidelity_names(1) == [] and low_fidelity_names(8) == ["top1_after_1ep", "top1_after_2ep"]
    specs = sample_specs(4, frames=8, size=56, gflops=(0.02, 0.06), seed=0)
    models = [Model(f"m{i}", "sample", s) for i, s in enumerate(specs)]
    first = [10.0, 20.0, 30.0, 40.0]
    results = {m.name: CandidateResult(name=m.name, run_name=m.name, spec={}, trained_spec={}, epochs=4,
                                       val_top1=f * 2, mv_top1=f * 2,
                                       history=[{"epoch": e, "val_top1": f + e - 1} for e in range(1, 5)])
               for m, f in zip(models, first)}
    rows = model_rows(models, {}, results, ["params"], 4)
    assert [r["top1_after_1ep"] for r in rows] == first and [r["top1_after_2ep"] for r in rows] == [11, 21, 31, 41]
    corr = correlate(rows, ["params"] + low_fidelity_names(4), epochs=4, n_boot=200)
    assert corr["top1_after_1ep"]["kendall_tau"] == pytest.approx(1.0)
