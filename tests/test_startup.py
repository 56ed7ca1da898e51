"""A fast start: listing and choosing strategies, scores and families, and every ``--help``, never import torch
(nor Ray, MLflow, PyAV): the registries know their names without importing what their entries need."""
import subprocess
import sys

import pytest

from conftest import REPO

HEAVY = ("torch", "ray", "mlflow", "av")

# runs `argv` as the named program would (its SystemExit swallowed), then prints the heavy modules it imported
PROBE = """
import runpy, sys
program, argv = sys.argv[1], sys.argv[2:]
sys.argv = [program, *argv]
try:
    if program.endswith(".py"):
        runpy.run_path(program, run_name="__main__")
    else:
        runpy.run_module(program, run_name="__main__", alter_sys=True)
except SystemExit:
    pass
print("HEAVY=" + ",".join(m for m in {heavy!r} if m in sys.modules))
""".format(heavy=HEAVY)


def heavy_imports(program: str, *argv: str) -> list[str]:
    """The heavy modules ``program argv`` leaves in ``sys.modules`` (run in a fresh interpreter)."""
    done = subprocess.run([sys.executable, "-c", PROBE, program, *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("HEAVY=")]
    assert line, f"{program} {' '.join(argv)} did not finish: {done.stderr[-2000:]}"
    return [m for m in line[-1][len("HEAVY="):].split(",") if m]


@pytest.mark.parametrize("argv", [["--help"], ["strategies"], ["scores"], ["families"], ["zoo"],
                                  ["search", "--help"], ["score", "--help"], ["export", "--help"],
                                  ["latency", "--help"], ["predict", "--help"]], ids=" ".join)
def test_e3d_cli_starts_without_torch(argv):
    assert heavy_imports("e3d.cli", *argv) == []


@pytest.mark.parametrize("job", sorted(p.name for p in (REPO / "jobs").glob("*.py")))
def test_job_help_starts_without_torch(job):
    imported = heavy_imports(f"jobs/{job}", "--help")
    assert not {"torch", "ray", "av"} & set(imported), imported


def test_scores_listed_and_looked_up_without_torch():
    """Every score, forward proxies included, is known by name, kind and description before torch is imported;
    evaluating a forward one imports it."""
    code = ("import sys\n"
            "from e3d.scores import FORWARD, get_score, score_names\n"
            "names = score_names(FORWARD)\n"
            "assert {'zen', 'maedet', 'naswot', 'synflow'} <= set(names), names\n"
            "assert get_score('naswot').needs_batch and get_score('zen').description\n"
            "assert 'torch' not in sys.modules\n"
            "from e3d import zoo\n"
            "spec = zoo.make('tiny', (2, 16, None), [((1, 3, 3), 8, 16, 1, 2)], stem=8, head=16)\n"
            "value = get_score('synflow')(spec)\n"
            "assert 'torch' in sys.modules and value == value\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_declared_score_without_its_imports_is_one_clear_error():
    """An install without torch still lists the forward scores; running one says which import is missing."""
    code = ("import sys\n"
            "sys.modules['torch'] = None\n"
            "from e3d import zoo\n"
            "from e3d.scores import get_score, score_names\n"
            "assert 'zen' in score_names()\n"
            "spec = zoo.make('tiny', (2, 16, None), [((1, 3, 3), 8, 16, 1, 2)], stem=8, head=16)\n"
            "try:\n"
            "    get_score('zen')(spec)\n"
            "except ValueError as exc:\n"
            "    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("score 'zen' cannot be loaded from e3d.proxies:zen:"), done.stdout
    assert "torch" in done.stdout
