"""The e3d command line: output format and exit codes."""
import json
import subprocess
import sys

import pytest

from e3d import zoo
from e3d.cli import main


def test_score_zoo_entry(capsys):
    assert main(["score", "--zoo", "E3D-S"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert {"name", "flops", "params", "layers", "stentr", "homoentr"} <= set(row)
    assert row["stentr"] == pytest.approx(202.856, abs=1e-3)
    assert row["flops"] == 1888642048


def test_score_files_one_line_per_spec(tmp_path, capsys):
    path = tmp_path / "two.json"
    path.write_text(json.dumps([zoo.get("E3D-S").to_dict(), zoo.get("X3D-S").to_dict()]))
    assert main(["score", str(path)]) == 0
    names = [json.loads(line)["name"] for line in capsys.readouterr().out.splitlines()]
    assert names == ["E3D-S", "X3D-S"]


def test_zoo_list_and_print(capsys):
    assert main(["zoo"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == zoo.names()
    assert main(["zoo", "E3D-M"]) == 0
    assert json.loads(capsys.readouterr().out)["stages"][4]["bottleneck"] == 464


@pytest.mark.parametrize("argv,fragment", [
    (["score", "missing.json"], "missing.json: no such file"),
    (["score", "--zoo", "E3D-XL"], "no zoo entry named 'E3D-XL'"),
    (["score"], "nothing to score"),
    (["zoo", "nope"], "no zoo entry named 'nope'"),
])
def test_bad_input_exit_2(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


def test_invalid_spec_and_infinite_score(tmp_path, capsys):
    bad = zoo.get("E3D-S").to_dict()
    bad["stages"][0]["kernel"] = [1, 4, 4]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    assert main(["score", str(tmp_path / "bad.json")]) == 2
    assert "stages[0].kernel" in capsys.readouterr().err
    # at 3x96^2 the last stage sees a 3x3x3 feature map with a 3x3x3 kernel: STEntr is infinite
    assert main(["score", "--zoo", "E3D-init-S", "--frames", "3", "--size", "96"]) == 2
    assert "3x3x3 is parallel to kernel 3x3x3" in capsys.readouterr().err


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "e3d.cli", "score", "--zoo", "X3D-M"], capture_output=True,
                         text=True, check=True).stdout
    assert json.loads(out)["name"] == "X3D-M"


def test_summarize_reports_infinite_stentr_when_not_strict():
    from e3d.summary import summarize
    from e3d.scores import InfiniteScoreError

    spec = zoo.get("E3D-init-S").with_input(frames=3, size=96)
    with pytest.raises(InfiniteScoreError):
        summarize(spec)
    row = summarize(spec, strict=False)
    assert row["stentr"] == float("inf") and row["flops"] > 0


def test_search_under_a_latency_budget(tmp_path, capsys):
    """`e3d search --budget-latency`: the table (estimated blocks, seeded by measured ones) bounds the winner.

    The blocks are measured on this machine, so the budget is set from the table itself (a fixed number of ms
    fails on a loaded machine): 1.2x the initial structure's predicted latency, below the unbounded winner's."""
    from e3d.latency import LatencyTable
    from e3d.spec import load_spec
    from e3d.zoo import initial_structure

    cache = tmp_path / "cache"

    def search(budget_ms: float, out: str) -> float:
        args = ["search", "--preset", "S", "--frames", "4", "--size", "48", "--iterations", "300", "--population",
                "16", "--budget-latency", f"{budget_ms}ms", "--latency-predictor", "estimate", "--latency-cache",
                str(cache), "--out", str(tmp_path / out)]
        assert main(args) == 0, capsys.readouterr().err
        table = LatencyTable.open(4, 48, cache_dir=cache, on_missing="estimate")
        return table.predict(load_spec(tmp_path / out / "best.json"))

    unbounded = search(1e6, "free")  # measures the seed blocks into the cache; every later run reads them
    table = LatencyTable.open(4, 48, cache_dir=cache, on_missing="estimate")
    budget = 1.2 * table.predict(initial_structure("S").with_input(4, 48))
    assert unbounded > budget, "the budget must bind for this test to say anything"
    assert search(budget, "bounded") <= budget


def test_strategies_and_scores_listings(capsys):
    assert main(["strategies"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert {ln.split()[0] for ln in lines} >= {"evolution", "random"} and all(len(ln.split()) > 1 for ln in lines)
    assert main(["scores"]) == 0
    names = {ln.split()[0] for ln in capsys.readouterr().out.strip().splitlines()}
    assert {"stentr", "homoentr", "flops", "params", "zen", "maedet", "naswot", "synflow"} <= names
