"""Every option group of the main job is checked before any work: a bad value exits 2 within seconds with
one line naming the option, and nothing is written to --out. The same parser drives the job."""
import subprocess
import sys
import time
from pathlib import Path

import pytest

from e3d import zoo
from e3d.spec import save_specs

REPO = Path(__file__).resolve().parents[1]
JOB = REPO / "jobs" / "search_and_train.py"


def load_job():
    import importlib.util

    spec = importlib.util.spec_from_file_location("search_and_train_job", JOB)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def job():
    return load_job()


BAD = [  # (argv, the option the message must name, a fragment of the message)
    (["--recipe", "kinetics"], "--recipe", "invalid choice"),
    (["--also", "NO-SUCH-NET"], "--also", "neither a spec file nor a zoo entry"),
    (["--data", "/nonexistent/videos"], "--data", "no such file"),
    (["--clip-size", "-3"], "--size/--clip-size", "must be >= 1"),
    (["--epochs", "0"], "--epochs", "must be >= 1"),
    (["--format", "mkv"], "--format", "invalid choice"),
    (["--strategy", "genetic"], "--strategy", "invalid choice"),
    (["--score", "accuracy"], "--score", "invalid choice"),
    (["--score", "naswot"], "--score", "needs real clips"),
    (["--strategy", "random", "--population", "8"], "--population", "does not take it"),
    (["--budget-flops", "0.001G"], "--budget-flops", "initial structure"),
    (["--budget-flops", "-1"], "--budget-flops", "must be positive"),
    (["--max-layers", "4"], "--max-layers", "must be >= 5"),
    (["--max-layers", "7"], "--max-layers", "layers > limit 7"),
    (["--frames", "8", "--size", "64"], "--frames/--size", "infinite"),
    (["--set", "populaton=3"], "--set populaton", "unknown option"),
    (["--max-depth", "0"], "--max-depth", "must be >= 1"),
    (["--kernels", "134"], "--kernels", "odd and square"),
    (["--top-k", "0"], "--top-k", "must be >= 1"),
    (["--distinct-by", "colour"], "--distinct-by", "choose among"),
    (["--train-scale", "40", "30"], "--train-scale", "train_scale"),
    (["--lr", "-0.1"], "--lr", "must be > 0"),
    (["--eval-crops", "2"], "--eval-crops", "invalid choice"),
    (["--max-concurrent", "0"], "--max-concurrent", "must be >= 1"),
    (["--actors", "0"], "--actors", "must be >= 1"),
    (["--actor-resources", "{bad"], "--actor-resources", "not JSON"),
    (["--tracking-uri", "mlruns"], "--tracking-uri", "scheme"),
    (["--tracking-uri", "http://e3d:secret@head:5000"], "--tracking-uri", "MLFLOW_TRACKING_PASSWORD"),
    (["--address", "nowhere"], "--address", "HOST:PORT"),
    (["--num-cpus", "0"], "--num-cpus", "must be >= 1"),
]


@pytest.mark.parametrize("argv,option,fragment", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_option_exits_2_naming_it_and_writes_nothing(job, tmp_path, capsys, argv, option, fragment):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        job.config_from_args(job.build_parser(), job.build_parser().parse_args(argv + ["--out", str(out)]))
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"argument {option}" in err and fragment in err, err
    assert not out.exists()


def test_bad_spec_file_and_unwritable_out(job, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x", "input": {"frames": 8, "size": 56}, "stem": {}, "stages": [], "head": {}}')
    for argv, option in ((["--also", str(bad)], "--also"), (["--initial", str(bad)], "--set"),
                         (["--out", str(bad)], "--out")):
        with pytest.raises(SystemExit):
            job.config_from_args(job.build_parser(), job.build_parser().parse_args(argv))
        err = capsys.readouterr().err
        assert "error: argument" in err and len(err.strip().splitlines()) == 1, err


def test_the_script_itself_exits_2_within_seconds(tmp_path):
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(JOB), "--epochs", "0", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "argument --epochs" in done.stderr
    assert not (tmp_path / "o").exists()
    assert time.perf_counter() - start < 60  # a guard against a hang, not a timing assertion


def test_good_options_build_the_nested_config(job, tmp_path):
    save_specs(zoo.get("X3D-S"), tmp_path / "x3d.json")
    args = job.build_parser().parse_args(["--strategy", "random", "--iterations", "300", "--score", "homoentr",
                                          "--also", "E3D-S", "--also", str(tmp_path / "x3d.json"), "--top-k", "3",
                                          "--epochs", "3", "--actors", "2", "--out", str(tmp_path / "o")])
    config = job.config_from_args(job.build_parser(), args)
    assert config.strategy == "random" and config.request.options["samples"] == 300
    assert config.request.score == "homoentr" and config.request.budget.flops == 0.08e9
    assert (config.clip.frames, config.clip.size) == (8, 56) and config.recipe.epochs == 3
    assert config.selection.top_k == 3 and config.selection.extra == ("E3D-S", str(tmp_path / "x3d.json"))
    assert config.islands.actors == 2 and not (tmp_path / "o").exists()
    preset = job.config_from_args(job.build_parser(), job.build_parser().parse_args(["--preset", "M"]))
    assert (preset.clip.frames, preset.clip.size, preset.request.budget.flops, preset.request.budget.layers) == \
        (16, 224, 4.7e9, 83)


@pytest.mark.parametrize("script", sorted(p.name for p in (REPO / "jobs").glob("*.py")))
def test_every_job_builds_its_parser(script):
    """Each job's option groups combine without clashes (a clash only shows when the parser is built)."""
    done = subprocess.run([sys.executable, str(REPO / "jobs" / script), "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout


def test_select_pareto_spreads_the_trained_candidates_along_the_front():
    """``--select pareto``: the candidates come from the score/FLOPs/params front, its two FLOPs ends included."""
    from e3d.pareto import pareto_front
    from e3d.strategy import Budget, Clip, SearchRequest, get_strategy, top_k_distinct
    from pipeline.search_and_train import JobConfig, Selection, select_candidates

    request = SearchRequest(budget=Budget(flops=0.08e9, layers=41), clip=Clip(8, 56), options={"samples": 80})
    outcome = get_strategy("random").search(request)
    front = top_k_distinct([outcome.candidates[i] for i in pareto_front(outcome.candidates)], 10 ** 6,
                           by=Selection().distinct_by)  # structurally distinct members, as the job keeps them
    chosen = select_candidates(outcome, JobConfig(selection=Selection(top_k=3, select="pareto")))
    keys = {c.spec.key(): c for c in front}
    assert len(chosen) == min(3, len(front)) and all(s.key() in keys for s in chosen)
    flops = sorted(c.flops for c in front)
    picked = sorted(keys[s.key()].flops for s in chosen)
    assert picked[0] == flops[0] and picked[-1] == flops[-1]
    top = select_candidates(outcome, JobConfig(selection=Selection(top_k=1)))
    assert top[0].key() == outcome.candidates[0].spec.key()
