"""jobs/parsec_experiments.py and jobs/fusion_variants.py: parse, check, build the settings, call one function of
pipeline (pipeline.parsec.experiments, pipeline.fusion.compare); no Ray here, the library calls are stand-ins."""
from __future__ import annotations

import ast
import importlib.util
import types
from dataclasses import asdict
from pathlib import Path

import pytest

from pipeline.parsec import experiments
from pipeline.parsec.experiments import BandComparisonSettings, Table1Settings

REPO = Path(__file__).resolve().parents[1]


def load_job(name: str):
    spec = importlib.util.spec_from_file_location(f"job_{name}", REPO / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def parsec_job():
    return load_job("parsec_experiments")


@pytest.fixture(scope="module")
def fusion_job():
    return load_job("fusion_variants")


@pytest.fixture
def videos(tmp_path):
    """A folder-per-class dataset index of 3 classes (the files are never decoded here)."""
    for split in ("train", "val"):
        for label in ("a", "b", "c"):
            (tmp_path / "videos" / split / label).mkdir(parents=True)
            for k in range(2):
                (tmp_path / "videos" / split / label / f"{label}{k}.mp4").write_bytes(b"")
    return str(tmp_path / "videos")


def no_work(args):
    raise AssertionError("the checks let the command line through: the job was about to start Ray")


# -- the library takes values ----------------------------------------------------------------------------------
@pytest.mark.parametrize("module", ["pipeline/parsec/experiments.py", "pipeline/fusion/compare.py"])
def test_library_modules_parse_no_command_line(module):
    tree = ast.parse((REPO / module).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "argparse" not in imported and "sys" not in imported
    assert "__main__" not in (REPO / module).read_text()
    assert "main" not in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}


def test_settings_are_frozen_and_record_as_given():
    s = Table1Settings(out="o", betas=[0, 0.1])
    assert s.betas == (0.0, 0.1) and asdict(s)["betas"] == (0.0, 0.1)
    with pytest.raises(AttributeError):
        s.epochs = 3  # type: ignore[misc]
    assert s.search_options(0.1) == {"epochs": 8, "samples": 13, "beta": 0.1, "batch_size": 4, "arch_lr": 0.05,
                                     "lr": 0.02, "t_max": 0.03e9, "t_min": 0.0285e9}
    c = BandComparisonSettings(data="d", out="o")
    request = c.search_request(6, "o/search-parsec")
    assert request.budget.flops == 0.06e9 and request.num_classes == 6 and request.out_dir == "o/search-parsec"
    assert (request.clip.frames, request.clip.size, request.clip.sampling_rate) == (8, 56, 4)


# -- jobs/parsec_experiments.py ---------------------------------------------------------------------------------
# the defaults of `python -m pipeline.parsec.experiments` before it became a job (the Ray options apart)
OLD_TABLE1 = {"betas": (0.0, 0.05, 0.1, 0.2), "epochs": 8, "samples": 13, "batch_size": 4, "lr": 0.02, "arch_lr": 0.05,
              "t_min": 28500000.0, "t_max": 30000000.0, "frames": 8, "size": 40, "sampling_rate": 4, "classes": 4,
              "clips_per_class": 24, "seed": 0, "data_seed": 0}
OLD_COMPARE = {"t_max": 60000000.0, "t_min": 54000000.0, "beta": 0.1, "search_epochs": 10, "samples": 13,
               "arch_lr": 0.015, "train_epochs": 8, "batch_size": 8, "lr": 0.02, "band": 6, "evo_iterations": 20000,
               "evo_population": 64, "frames": 8, "size": 56, "sampling_rate": 4, "eval_clips": 2, "seed": 0}


def test_table1_defaults_are_unchanged(parsec_job, tmp_path):
    parser = parsec_job.build_parser()
    args = parser.parse_args(["table1", "--out", str(tmp_path / "t1")])
    settings = parsec_job.table1_settings(parser.commands["table1"], args)
    assert asdict(settings) == {"out": str(tmp_path / "t1"), **OLD_TABLE1}
    assert args.num_cpus == 2 and args.address is None
    assert not (tmp_path / "t1").exists()


def test_compare_defaults_are_unchanged(parsec_job, tmp_path, videos):
    parser = parsec_job.build_parser()
    args = parser.parse_args(["compare", "--data", videos, "--out", str(tmp_path / "c"), "--t-max", "0.06G"])
    settings = parsec_job.compare_settings(parser.commands["compare"], args)
    assert asdict(settings) == {"data": videos, "out": str(tmp_path / "c"), **OLD_COMPARE}
    assert args.num_cpus == 2 and not (tmp_path / "c").exists()


BAD = [  # (argv after --out, the option the one-line error names, a fragment of it)
    (["table1", "--t-min", "0.031G"], "--t-min", "t_min < t_max"),
    (["table1", "--t-max", "-1"], "--t-max", "must be positive"),
    (["table1", "--betas", "0", "-0.1"], "--betas", "beta -0.1"),
    (["table1", "--betas", "0.1", "0.10"], "--betas", "given twice"),
    (["table1", "--epochs", "0"], "--epochs", "must be >= 1"),
    (["table1", "--classes", "9"], "--classes", "2 to 8"),
    (["table1", "--clips-per-class", "1"], "--clips-per-class", "at least 2"),
    (["table1", "--lr", "0"], "--lr", "must be > 0"),
    (["compare", "--data", "/nonexistent/videos"], "--data", "no such file"),
    (["compare", "--data", "VIDEOS", "--beta", "-1"], "--beta", "must be a number >= 0"),
    (["compare", "--data", "VIDEOS", "--band", "0"], "--band", "must be >= 1"),
    (["compare", "--data", "VIDEOS", "--evo-iterations", "2.5"], "--evo-iterations", "whole number"),
]


@pytest.mark.parametrize("argv,option,fragment", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_parsec_job_bad_option_exits_2_naming_it(parsec_job, tmp_path, videos, capsys, monkeypatch, argv, option,
                                                 fragment):
    monkeypatch.setattr(parsec_job, "init_ray", no_work)  # a check that lets a bad value through fails, runs nothing
    out = tmp_path / "out"
    argv = [videos if a == "VIDEOS" else a for a in argv]
    with pytest.raises(SystemExit) as exc:
        parsec_job.main(argv[:1] + ["--out", str(out)] + argv[1:])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1, err
    assert f" {argv[0]}: error: argument {option}" in err and fragment in err, err
    assert not out.exists()


def test_parsec_job_calls_one_library_function(parsec_job, tmp_path, videos, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(parsec_job, "init_ray", lambda args: calls.append(("ray", args.num_cpus)))
    monkeypatch.setattr(experiments, "table1", lambda settings: calls.append(("table1", settings)) or {})
    assert parsec_job.main(["table1", "--out", str(tmp_path / "t"), "--betas", "0", "0.2", "--seed", "1"]) == 0
    assert calls == [("ray", 2), ("table1", Table1Settings(out=str(tmp_path / "t"), betas=(0.0, 0.2), seed=1))]
    assert f"results: {tmp_path / 't' / 'table1.md'}" in capsys.readouterr().out

    rows = [{"name": "parsec", "error": None}, {"name": "band-00", "error": "worker died"}]
    monkeypatch.setattr(experiments, "compare", lambda settings: calls.append(("compare", settings)) or {"rows": rows})
    assert parsec_job.main(["compare", "--data", videos, "--out", str(tmp_path / "c"), "--address", "auto"]) == 1
    assert calls[-1] == ("compare", BandComparisonSettings(data=videos, out=str(tmp_path / "c")))
    assert "error: training failed for band-00" in capsys.readouterr().err


# -- jobs/fusion_variants.py ------------------------------------------------------------------------------------
def test_fusion_job_builds_the_main_jobs_config_for_fusion(fusion_job, tmp_path):
    parser = fusion_job.build_parser()
    args = parser.parse_args(["--out", str(tmp_path / "f"), "--epochs", "3"])
    config = fusion_job.config_from_args(parser, args)
    assert config.strategy == "fusion" and config.recipe.epochs == 3 and config.out_dir == str(tmp_path / "f")
    assert parser.parse_args([]).out == "outputs/fusion_variants"
    assert not (tmp_path / "f").exists()


@pytest.mark.parametrize("argv,option", [(["--strategy", "random"], "--strategy"), (["--top-k", "3"], "--top-k"),
                                         (["--epochs", "0"], "--epochs")])
def test_fusion_job_bad_option_exits_2_naming_it(fusion_job, tmp_path, capsys, monkeypatch, argv, option):
    monkeypatch.setattr(fusion_job, "init_ray", no_work)
    with pytest.raises(SystemExit) as exc:
        fusion_job.main(["--out", str(tmp_path / "f")] + argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and f": error: argument {option}" in err, err
    assert not (tmp_path / "f").exists()


def test_fusion_job_calls_run_comparison_once(fusion_job, tmp_path, monkeypatch, capsys):
    import pipeline.fusion.compare as fusion_compare

    calls = []
    failed = [{"name": "cand1", "error": None}, {"name": "S", "error": "out of memory"}]
    monkeypatch.setattr(fusion_job, "init_ray", lambda args: calls.append("ray"))
    monkeypatch.setattr(fusion_compare, "run_comparison", lambda config: calls.append(config) or types.SimpleNamespace(
        rows=failed, out_dir=config.out_dir))
    assert fusion_job.main(["--out", str(tmp_path / "f"), "--quick"]) == 1
    assert calls[0] == "ray" and calls[1].strategy == "fusion" and len(calls) == 2
    captured = capsys.readouterr()
    assert f"results: {tmp_path / 'f' / 'fusion_comparison.md'}" in captured.out
    assert "error: training failed for S" in captured.err
