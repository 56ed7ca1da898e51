"""Faults a long run meets, without Ray (seconds): a full disk at each kind of write (one line, exit status 28,
the same command resumes), corrupt state files (reported, set aside, the job goes on from the last good state),
and the smaller input errors of issue 23."""
from __future__ import annotations

import errno
import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from e3d.search_io import read_outcome, write_outcome  # noqa: E402
from e3d.statefile import CorruptFile, read_json, set_aside, write_json  # noqa: E402
from e3d.strategy import Budget, Clip, SearchRequest, get_strategy  # noqa: E402
from pipeline import faults  # noqa: E402
from pipeline.faults import OUT_OF_SPACE_EXIT, check_free_space, exits_on_out_of_space, out_of_space  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def enospc(path: str = "/data/out/x") -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


def load_job(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"job_{name}", ROOT / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- recognising a full disk --------------------------------------------------------------------------------
def test_out_of_space_is_found_in_causes_ray_texts_and_sqlite_errors():
    assert out_of_space(enospc("/a/b")).path == "/a/b"
    assert out_of_space(OSError(errno.EDQUOT, "Disk quota exceeded", "/q")).detail == "disk quota exceeded"
    try:
        try:
            raise enospc("/deep/file")
        except OSError as inner:
            raise RuntimeError("trial failed") from inner
    except RuntimeError as outer:
        assert out_of_space(outer).path == "/deep/file"
    # what Ray Train / Tune pass on: the worker's traceback as text
    text = ("TrainingFailedError: worker 0:\n  ...\n"
            "OSError: [Errno 28] No space left on device: '/out/train/r/epoch_0002'")
    assert out_of_space(text).path == "/out/train/r/epoch_0002"
    # MLflow's SQLite store: sqlalchemy wraps sqlite3's error, MLflow wraps sqlalchemy's
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException

    wrapped = sqlalchemy.exc.OperationalError("INSERT INTO metrics ...", {}, sqlite3.OperationalError(
        "database or disk is full"))
    fault = out_of_space(MlflowException(str(wrapped)))
    assert fault is not None and "MLflow" in fault.detail and fault.path is None
    assert out_of_space(ValueError("no such file")) is None and out_of_space(OSError(errno.EACCES, "x")) is None


def test_a_job_main_prints_one_line_and_exits_28(capsys):
    @exits_on_out_of_space
    def main() -> int:
        raise RuntimeError("wrapped") from enospc("/data/out/search/population.parquet")

    assert main() == OUT_OF_SPACE_EXIT == 28
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "out of disk space writing /data/out/search/population.parquet" in err[0]
    assert "run the same command again" in err[0]

    @exits_on_out_of_space
    def other() -> int:
        raise KeyError("not a disk fault")

    with pytest.raises(KeyError):
        other()


def test_free_space_is_checked_before_long_work(tmp_path, monkeypatch):
    lines: list[str] = []
    assert check_free_space(tmp_path, 1, "nothing", say=lines.append) and not lines
    usage = type("Usage", (), {"free": 5_000_000, "total": 10**9, "used": 0})
    monkeypatch.setattr(faults.shutil, "disk_usage", lambda _p: usage)
    assert not check_free_space(tmp_path / "not" / "yet", 3e9, "training 2 candidates", say=lines.append)
    assert len(lines) == 1 and "5.0 MB free" in lines[0] and "3.0 GB" in lines[0] and "28" in lines[0]


# -- state files ----------------------------------------------------------------------------------------------
def test_state_json_carries_a_checksum_and_corrupt_ones_are_named(tmp_path):
    path = tmp_path / "job.json"
    write_json(path, {"parent_run_id": "abc", "steps": (1, 2)})
    assert read_json(path) == {"parent_run_id": "abc", "steps": [1, 2]}
    assert read_json(tmp_path / "absent.json") is None
    path.write_text(path.read_text().replace("abc", "abd"))  # a flipped character
    with pytest.raises(CorruptFile, match="checksum mismatch"):
        read_json(path)
    path.write_text(path.read_text()[:10])  # a copy cut short
    with pytest.raises(CorruptFile, match="not JSON") as err:
        read_json(path)
    assert err.value.path == path
    moved = set_aside(path)
    assert not path.exists() and moved.name.startswith("job.json.corrupt-") and moved.read_text()


def test_a_full_disk_while_writing_state_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "job.json"
    write_json(path, {"round": 1})

    def full(*_a, **_k):
        raise enospc(str(path))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        write_json(path, {"round": 2})
    assert read_json(path) == {"round": 1} and sorted(p.name for p in tmp_path.iterdir()) == ["job.json"]


def small_outcome():
    request = SearchRequest(budget=Budget(flops=0.08e9, layers=41), clip=Clip(8, 56), options={"samples": 12})
    return get_strategy("random").search(request)


@pytest.mark.parametrize("damage", ["outcome", "population"])
def test_a_corrupt_outcome_is_set_aside_and_redone(tmp_path, damage):
    write_outcome(tmp_path, small_outcome())
    victim = tmp_path / ("outcome.json" if damage == "outcome" else "population.parquet")
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])  # truncated by a sync cut short
    lines: list[str] = []
    assert read_outcome(tmp_path, say=lines.append) is None  # not trusted: the search is redone
    assert len(lines) == 1 and str(victim) in lines[0] and "set aside" in lines[0]
    kept = sorted(p.name.split(".corrupt-")[0] for p in tmp_path.glob("*.corrupt-*"))
    assert kept == sorted({"outcome.json", victim.name})
    write_outcome(tmp_path, small_outcome())
    assert read_outcome(tmp_path) is not None


# -- the search checkpoint: a full disk mid-round, a corrupt last round ------------------------------------------
def _search(tmp_path, **kw):
    from e3d.evolution import SearchConfig
    from pipeline.search import run_distributed_search

    config = SearchConfig.from_preset("S", population_size=16, iterations=1200, seed=1)
    return run_distributed_search(config, out_dir=tmp_path, backend="local", actors=2, chunk_iterations=200,
                                  migration_interval=1, migration_size=1, **kw)


def _members(result):
    return [(i.genome, i.score, i.flops, i.params, i.layers) for i in result.population]


class DriverDied(Exception):
    """Raised between rounds, as if the driver's process had died."""


def die_at(round_no):
    def on_round(info):
        if info.round == round_no:
            raise DriverDied(round_no)
    return on_round


def test_search_checkpoint_full_disk_then_resume_equals_uninterrupted(tmp_path, monkeypatch):
    from pipeline.search import checkpoint as ck
    from pipeline.search import run_distributed_search

    reference = _search(tmp_path / "ref")
    real, calls = ck.pq.write_table, []

    def write_table(table, where, **kw):  # the disk fills up in a later round's checkpoint
        calls.append(where)
        if len(calls) == 7:
            raise enospc(str(where))
        return real(table, where, **kw)

    monkeypatch.setattr(ck.pq, "write_table", write_table)
    with pytest.raises(OSError) as err:
        _search(tmp_path / "run")
    assert out_of_space(err.value) is not None
    monkeypatch.setattr(ck.pq, "write_table", real)
    cdir = tmp_path / "run" / "checkpoint"
    assert not [p for p in cdir.iterdir() if ".tmp-" in p.name]  # no half-written temporaries
    assert ck.load_checkpoint(*ck.resolve_fs(tmp_path / "run")).round >= 1  # the last committed round, intact
    resumed = run_distributed_search(None, out_dir=tmp_path / "run", resume=True, backend="local")
    assert _members(resumed) == _members(reference)


def test_a_corrupt_last_search_round_falls_back_to_the_round_before(tmp_path, capsys):
    from pipeline.search import checkpoint as ck
    from pipeline.search import run_distributed_search

    reference = _search(tmp_path / "ref")
    run = tmp_path / "run"
    with pytest.raises(DriverDied):
        _search(run, on_round=die_at(3))  # 3 rounds: rounds 1 and 2 committed
    state = run / "checkpoint" / "state.parquet"
    state.write_bytes(state.read_bytes()[:100])  # truncated
    meta = ck.read_meta(*ck.resolve_fs(run))
    assert meta["round"] == 1 and "does not read back" in capsys.readouterr().err
    assert list((run / "checkpoint").glob("state.parquet.corrupt-*"))  # kept for a look
    resumed = run_distributed_search(None, out_dir=run, resume=True, backend="local")
    assert _members(resumed) == _members(reference)


# -- training checkpoints -------------------------------------------------------------------------------------
def _fake_run(run: Path, epochs: int) -> None:
    """A Ray Train run folder as the loop and Ray leave it: one checkpoint per epoch and the snapshot."""
    from pipeline.train.checkpoint import SNAPSHOT_FILE, _snapshot_json, read_meta, save_state

    import torch

    names = []
    for e in range(1, epochs + 1):
        folder = run / f"epoch_{e:04d}"
        folder.mkdir(parents=True)
        save_state(folder, {"epoch": e, "weights": torch.full((64,), float(e)), "history": []},
                   {"epoch": e, "is_final": 0})
        names.append((folder.name, read_meta(folder)))
    (run / SNAPSHOT_FILE).write_text(_snapshot_json(names))


def _latest(run: Path) -> str:
    from ray.train.v2._internal.execution.checkpoint.checkpoint_manager import _CheckpointManagerState

    from pipeline.train.checkpoint import SNAPSHOT_FILE

    state = _CheckpointManagerState.parse_raw((run / SNAPSHOT_FILE).read_text())
    return state.latest_checkpoint_result.checkpoint_dir_name


def test_a_truncated_checkpoint_is_set_aside_and_the_previous_one_resumed(tmp_path):
    import pyarrow.fs as pafs

    from pipeline.train.checkpoint import CorruptCheckpoint, load_state, repair_run, verify_checkpoint

    run = tmp_path / "cand1-abc"
    _fake_run(run, 2)
    assert repair_run(pafs.LocalFileSystem(), str(run)) == [] and _latest(run) == "epoch_0002"
    state = run / "epoch_0002" / "state.pt"
    state.write_bytes(state.read_bytes()[:200])
    assert "state.pt has 200 bytes" in verify_checkpoint(run / "epoch_0002")
    with pytest.raises(CorruptCheckpoint, match="epoch_0002"):
        load_state(run / "epoch_0002")
    lines: list[str] = []
    moved = repair_run(pafs.LocalFileSystem(), str(run), say=lines.append)
    assert len(moved) == 2 and all(".corrupt-" in m for m in moved)  # the folder and the old snapshot, kept
    assert _latest(run) == "epoch_0001" and load_state(run / "epoch_0001")["epoch"] == 1
    assert any("resuming from epoch_0001" in line for line in lines)


def test_an_empty_snapshot_left_by_a_full_disk_is_rebuilt(tmp_path):
    import pyarrow.fs as pafs

    from pipeline.train.checkpoint import SNAPSHOT_FILE, repair_run

    run = tmp_path / "cand2-abc"
    _fake_run(run, 3)
    (run / SNAPSHOT_FILE).write_text("")  # what Ray's in-place write leaves when the disk fills
    lines: list[str] = []
    repair_run(pafs.LocalFileSystem(), str(run), say=lines.append)
    assert _latest(run) == "epoch_0003" and "empty" in lines[0]
    assert len(list(run.glob(f"{SNAPSHOT_FILE}.corrupt-*"))) == 1


def test_a_checkpoint_without_checksum_is_checked_as_an_archive(tmp_path):
    import torch

    from pipeline.train.checkpoint import verify_checkpoint

    torch.save({"epoch": 1}, tmp_path / "state.pt")
    (tmp_path / "meta.json").write_text(json.dumps({"epoch": 1, "metrics": {}}))
    assert verify_checkpoint(tmp_path) is None
    (tmp_path / "state.pt").write_bytes((tmp_path / "state.pt").read_bytes()[:-30])
    assert "not a complete archive" in verify_checkpoint(tmp_path)


# -- the jobs end to end, in process: outcome and MLflow writes on a full disk -----------------------------------
SEARCH_ARGS = ["--strategy", "random", "--iterations", "12", "--budget-flops", "0.08G", "--frames", "8",
               "--size", "56", "--max-layers", "41"]


def test_search_job_full_disk_at_the_outcome_then_resumes(tmp_path, monkeypatch, capsys):
    import e3d.search_io as sio

    job = load_job("search")
    out = tmp_path / "out"
    real = sio.write_json

    def full(path, *a, **k):
        raise enospc(str(path))

    monkeypatch.setattr(sio, "write_json", full)
    assert job.main(SEARCH_ARGS + ["--out", str(out), "--no-mlflow"]) == 28
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"writing {out / 'outcome.json'}" in err[0]
    monkeypatch.setattr(sio, "write_json", real)
    assert job.main(SEARCH_ARGS + ["--out", str(out), "--no-mlflow"]) == 0
    assert read_outcome(out) is not None


def test_search_job_full_mlflow_store_is_one_line_and_28(tmp_path, monkeypatch, capsys):
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    job = load_job("search")

    def full(*_a, **_k):
        cause = sqlalchemy.exc.OperationalError("INSERT INTO params", {}, sqlite3.OperationalError(
            "database or disk is full"))
        raise MlflowException(f"(sqlite3.OperationalError) {cause}")

    monkeypatch.setattr(SqlAlchemyStore, "log_batch", full)  # every params/metrics write of the store
    assert job.main(SEARCH_ARGS + ["--out", str(tmp_path / "out")]) == 28
    err = [line for line in capsys.readouterr().err.splitlines() if "mlflow.store.db.utils" not in line]
    assert len(err) == 1 and "database or disk is full (the MLflow store)" in err[0], err  # MLflow's own INFO aside


# -- the smaller ones -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv,option,words", [
    (["--budget-flops", "inf"], "--budget-flops", "finite"),
    (["--budget-flops", "1e30"], "--budget-flops", "at most"),
    (["--budget-params", "nan"], "--budget-params", "positive"),
    (["--clip-frames", "1"], "--clip-frames", "exceeds input frames 1"),
    (["--frames", "1"], "--frames", "exceeds input frames 1"),
])
def test_search_inputs_name_the_option_typed(argv, option, words, tmp_path, capsys):
    job = load_job("search")
    with pytest.raises(SystemExit) as exit_info:
        job.main(argv + ["--out", str(tmp_path / "o"), "--no-mlflow"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1
    assert f"argument {option}:" in err and words in err, err
    assert "--set" not in err


@pytest.mark.parametrize("argv,option", [(["--samples", "0"], "--samples"), (["--budget", "0"], "--budget"),
                                         (["--reduction-factor", "1"], "--reduction-factor"),
                                         (["--populations", "2", "--islands", "4"], "--populations/--islands")])
def test_tune_search_inputs_name_the_option(argv, option, tmp_path, capsys):
    job = load_job("tune_search")
    with pytest.raises(SystemExit) as exit_info:
        job.main(argv + ["--out", str(tmp_path / "t")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and f"argument {option}:" in err, err


def test_csv_without_a_label_column_says_so(tmp_path):
    from pipeline.video.formats import DatasetError, load_dataset

    (tmp_path / "a.mp4").write_bytes(b"")
    (tmp_path / "labels.csv").write_text("path,klass\na.mp4,x\n")
    with pytest.raises(DatasetError, match="no 'label' column"):
        load_dataset(tmp_path / "labels.csv")


def test_prepared_names_keep_the_extension_when_stems_collide(tmp_path):
    from pipeline.video.formats import load_dataset
    from pipeline.video.prepare import plan

    for cls in ("left", "right"):
        for name in ("a.avi", "a.webm", "b.mp4", "c.avi"):
            (tmp_path / cls / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / cls / name).write_bytes(b"")
    outputs = sorted(Path(r["output"]).name for r in plan(load_dataset(tmp_path, "folder", val_fraction=0.0)))
    assert outputs == sorted(["a.avi.mp4", "a.webm.mp4", "b.mp4", "c.mp4"] * 2)


def test_a_hung_encoder_is_killed_at_the_wall_clock_bound(tmp_path):
    from pipeline.video.prepare import run_bounded

    assert run_bounded(time.sleep, (60,), 0.5) == ("timeout", None)  # an FFmpeg call that never returns
    assert run_bounded(sum, ([1, 2],), 60) == ("ok", 3)


@pytest.mark.slow  # the prepare job in a subprocess with its own Ray session (~15 s idle); `make test-slow`, run by CI
def test_prepare_job_console_shows_its_own_lines_only(tmp_path):
    """Ray Data's INFO and WARNING lines stay in Ray's log files, as for the other jobs (--verbose shows them)."""
    import subprocess
    import sys

    from pipeline.video.synthetic import make_synthetic_dataset

    make_synthetic_dataset(tmp_path / "src", num_classes=2, clips_per_class=1, frames=8, size=32, seed=0)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, str(ROOT / "jobs" / "prepare_data.py"), str(tmp_path / "src"), "--out",
                           str(tmp_path / "dst"), "--short-side", "32", "--num-cpus", "1"],
                          capture_output=True, text=True, env=env, timeout=600)
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 0, done.stderr
    assert lines[0].startswith("2 videos") and lines[-1] == "labels and splits: preserved"
    assert not [line for line in lines if " INFO " in line or " WARNING " in line or "Dataset" in line], lines


def test_corrupt_job_study_and_prepare_records_are_set_aside(tmp_path):
    from pipeline.proxy_study.state import read_json as _read_json
    from pipeline.search_and_train import read_job_state
    from pipeline.video.prepare.records import load_records as _load_records

    job = tmp_path / "job.json"
    write_json(job, {"parent_run_id": "r1"})
    assert read_job_state(job) == {"parent_run_id": "r1"}
    job.write_text("")  # emptied by a crash
    lines: list[str] = []
    assert read_job_state(job, say=lines.append) == {} and "job.json is corrupt" in lines[0]
    study = tmp_path / "scores.json"
    study.write_text('{"E3D-S": {"stentr": 202.8')
    assert _read_json(study, {}) == {} and list(tmp_path.glob("scores.json.corrupt-*"))
    records = tmp_path / "dst" / ".prepare" / "records"
    records.mkdir(parents=True)
    (records / "good.json").write_text(json.dumps({"source": "/v/a.mp4", "status": "ok"}))
    (records / "bad.json").write_text('{"source": "/v/b.m')
    said: list[str] = []
    assert list(_load_records(tmp_path / "dst", said.append)) == ["/v/a.mp4"]
    assert "1 corrupt record(s)" in said[0] and list(records.glob("bad.json.corrupt-*"))


@pytest.mark.parametrize("stop, status", [(SystemExit(0), "KILLED"), (KeyboardInterrupt(), "KILLED"),
                                          (RuntimeError("boom"), "FAILED")])
def test_a_stopped_run_ends_killed_and_a_failed_one_failed(tmp_path, stop, status):
    """How Ray Tune ends a trial ASHA stops (``SystemExit`` at its next report) is a stop, not a failure: the
    trial's own run says KILLED, so no later write can turn the driver's KILLED into FAILED."""
    from mlflow.tracking import MlflowClient

    from pipeline.tracking import Tracking

    tracking = Tracking.local(tmp_path, "faults")
    with pytest.raises(type(stop)), tracking.run("stopped") as run:
        raise stop
    assert MlflowClient(tracking.tracking_uri).get_run(run.info.run_id).info.status == status
