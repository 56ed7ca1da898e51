"""End to end on a real Ray cluster launcher round trip, on this machine over 127.0.0.1 only:
`ray up -y cluster/local.yaml`, `ray submit cluster/local.yaml jobs/search_and_train.py -- --quick
--out DIR`, `ray down -y`, with sshd and the cluster's Ray always stopped afterwards.

Marked `cluster` (excluded from the default run): `make test-cluster`. Needs root (apt-get for
openssh-server if missing, a dedicated user, sshd); takes a few minutes. scripts/local_cluster.sh does
the work; docs/cluster.md explains the set-up. E3D_CLUSTER_JOB=path submits another script instead
(for debugging the harness).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]  # the checkout this test runs from (CI: a fresh clone)
SCRIPT = REPO / "scripts" / "local_cluster.sh"
JOB = Path(os.environ.get("E3D_CLUSTER_JOB", REPO / "jobs" / "search_and_train.py"))
LC_DIR = Path("/tmp/e3d-lc")
LC_USER = "e3dray"


def sh(*args: str, timeout: float) -> subprocess.CompletedProcess:
    t0 = time.monotonic()
    proc = subprocess.run([str(SCRIPT), *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout)
    print(f"--- local_cluster.sh {' '.join(args)}: rc={proc.returncode} in {time.monotonic() - t0:.1f}s")
    return proc


def tail(proc: subprocess.CompletedProcess, n: int = 60) -> str:
    lines = [ln for ln in proc.stdout.splitlines() if "VVINFO" not in ln]
    return "\n".join(lines[-n:])


def user_pids() -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "-u", LC_USER], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.fixture
def local_cluster():
    """sshd on 127.0.0.1 + the cluster user; `ray up`; always `ray down` and teardown afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root (apt-get openssh-server, a dedicated user, sshd on 127.0.0.1)")
    if shutil.which("apt-get") is None and not Path("/usr/sbin/sshd").exists():
        pytest.skip("no sshd and no apt-get to install openssh-server")
    if not (REPO / ".venv" / "bin" / "python").exists():
        pytest.skip(f"{REPO}/.venv missing: the cluster node runs the checkout's venv (make venv)")
    try:
        setup = sh("setup", timeout=900)
        rc = setup.returncode
        assert rc == 0, f"setup failed:\n{tail(setup)}"
        up = sh("up", timeout=900)
        rc = up.returncode
        assert rc == 0, f"ray up failed:\n{tail(up)}"
        yield
    finally:
        down = sh("down", timeout=400)
        if down.returncode != 0:
            print(f"ray down failed (teardown still runs):\n{tail(down, 20)}")
        td = sh("teardown", timeout=120)
        print(tail(td, 10))
        # cleaned up even on failure: no sshd of ours, no process of the cluster user left
        assert not (LC_DIR / "sshd.pid").exists()
        for _ in range(50):
            if not user_pids():
                break
            time.sleep(0.2)
        assert user_pids() == [], f"{LC_USER} processes left: {user_pids()}"
        assert not (LC_DIR / "id_ed25519").exists()


def test_ray_up_submit_down_over_loopback(local_cluster):
    assert JOB.exists(), f"{JOB} missing"
    out = Path(sh("outdir", timeout=30).stdout.strip().splitlines()[-1])
    t0 = time.monotonic()
    # --verbose: the job's console shows Ray's own log lines (quiet by default), "Connecting to existing ..." among them
    job = sh("submit", str(JOB), "--quick", "--verbose", "--out", str(out), timeout=1900)
    elapsed = time.monotonic() - t0
    log, rc = job.stdout, job.returncode
    if out.exists():
        (out / "submit.log").write_text(log)
    assert rc == 0, f"ray submit exited {rc} after {elapsed:.0f}s (output kept in {out}):\n{tail(job)}"
    # it ran on the cluster's Ray (127.0.0.1:6390), not on a fresh local instance
    assert "Connecting to existing Ray cluster at address: 127.0.0.1:6390" in log, tail(job)
    print("\n".join(ln for ln in log.splitlines()[-25:] if "VVINFO" not in ln))

    summary_path = out / "summary.json"
    produced = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert summary_path.exists(), f"no summary.json in {out}: {produced}\n{tail(job)}"
    summary = json.loads(summary_path.read_text())
    if JOB.name == "search_and_train.py":  # its summary; a debugging stand-in (E3D_CLUSTER_JOB) may write less
        assert summary["candidates"], summary
        for cand in summary["candidates"]:
            assert cand["error"] is None, cand
            assert cand["mv_top1"] is not None, cand
        assert summary.get("best") and summary.get("search"), summary
        # MLflow: the job's runs (parent, search, each candidate) in its SQLite store, all finished
        db = out / "mlruns" / "mlflow.db"
        assert db.exists(), produced
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            statuses = [row[0] for row in con.execute("SELECT status FROM runs")]
        assert len(statuses) >= 2 + len(summary["candidates"]) and set(statuses) == {"FINISHED"}, statuses
    print(f"job OK in {elapsed:.0f}s; {len(produced)} files in {out}")
    shutil.rmtree(out, ignore_errors=True)
