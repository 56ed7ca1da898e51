"""cluster.yaml's MLflow server behind MLflow's basic-auth app, on the simulated cluster (tests/cluster/sim.py).

``cluster/mlflow_server.sh`` (what cluster.yaml runs on the head) creates the credentials and starts the server
on the "head's private address" (127.0.0.1 here). The credentials reach the job and its Ray workers the way
they do on the cluster: as ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` in the environment the
nodes' raylets start with (``~/.bashrc`` sources the secrets file there). Checked: the files are the cluster
user's alone (0600 in 0700 folders); a request without credentials, or with a wrong password, is refused (401);
the quick job's runs are logged, the Train worker's epoch metrics included (from the train node); the password
is in no MLflow param, tag or metric name, no console line, ``summary.json`` or any other file under ``--out``.
Marked ``cluster`` (``make test-cluster``)."""
from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

ray = pytest.importorskip("ray")
pytest.importorskip("flask_wtf")  # mlflow[auth]

from sim import LOOPBACK, SimCluster, free_port  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "cluster" / "mlflow_server.sh"
SEARCH, TRAIN = "search_cpu", "train_gpu"


def read_env(path: Path) -> dict[str, str]:
    """``export NAME=VALUE`` lines."""
    pairs = (line.removeprefix("export ").split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k: v for k, v in pairs}


def status(url: str, auth: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        return urllib.request.urlopen(request, timeout=30).status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def server(tmp_path):
    env = dict(os.environ, E3D_SECRETS=str(tmp_path / "secrets"), E3D_MLFLOW_HOME=str(tmp_path / "mlflow"),
               MLFLOW=str(Path(sys.executable).with_name("mlflow")), E3D_MLFLOW_WORKERS="1")
    env.pop("MLFLOW_TRACKING_USERNAME", None)
    env.pop("MLFLOW_TRACKING_PASSWORD", None)
    port = free_port()

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=300)

    made = run("credentials")
    assert made.returncode == 0, made.stderr
    refused = run("start", "0.0.0.0", str(port))
    assert refused.returncode != 0 and "every address" in refused.stderr
    started = run("start", LOOPBACK, str(port))
    assert started.returncode == 0, started.stdout + started.stderr + (tmp_path / "mlflow" / "server.log").read_text()
    try:
        yield {"url": f"http://{LOOPBACK}:{port}", "secrets": tmp_path / "secrets", "home": tmp_path / "mlflow",
               "output": made.stdout + made.stderr + started.stdout + started.stderr}
    finally:
        run("stop")


def test_mlflow_server_needs_a_login_and_the_job_logs_with_it(server, tmp_path, monkeypatch, capfd):
    from mlflow.tracking import MlflowClient

    from pipeline.search_and_train import JobConfig, quick, run_job

    secrets = server["secrets"] / "mlflow.env"
    for path, mode in ((server["secrets"], 0o700), (secrets, 0o600), (server["home"], 0o700),
                       (server["home"] / "server.env", 0o600)):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
    creds = read_env(secrets)
    user, password = creds["MLFLOW_TRACKING_USERNAME"], creds["MLFLOW_TRACKING_PASSWORD"]
    assert len(password) >= 32
    api = f"{server['url']}/api/2.0/mlflow/experiments/search?max_results=1"
    assert status(api) == 401, "a request without credentials must be refused"
    assert status(api, (user, password + "x")) == 401, "a wrong password must be refused"
    assert status(api, (user, password)) == 200
    with pytest.raises(Exception, match="401|Unauthorized|credentials"):
        MlflowClient(server["url"]).search_experiments()  # MLflow's own client, no credentials

    # as on the cluster: the credentials are in the environment every node (and so every worker) starts with
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    monkeypatch.setenv("E3D_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "job"
    with SimCluster(head_cpus=0) as sim:
        sim.add("search", 2, {SEARCH: 2})  # the quick job's two islands
        sim.add("train", 2, {TRAIN: 1})
        sim.connect()
        result = run_job(quick(JobConfig(out_dir=str(out), tracking_uri=server["url"], experiment="e3d-auth")),
                         verbose=True)
        ray.shutdown()
    assert sim.leftovers() == []
    assert result.candidates[0].ok, result.candidates[0].error

    client = MlflowClient(server["url"])
    experiment = client.get_experiment_by_name("e3d-auth")
    runs = client.search_runs([experiment.experiment_id])
    parent = [r for r in runs if r.info.run_id == result.parent_run_id]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == result.parent_run_id]
    assert parent and len(children) >= 2, [r.info.run_name for r in runs]  # the search and the candidate
    assert any("session_start_epoch" in r.data.metrics for r in children), \
        "the Train worker (train node) logged no epoch metrics"
    assert any(k.endswith("_mv_top1") for k in parent[0].data.metrics)

    console = capfd.readouterr()
    assert password not in console.out + console.err + server["output"]
    for r in runs:
        logged = " ".join(f"{k}={v}" for d in (r.data.params, r.data.tags) for k, v in d.items())
        assert password not in logged + " ".join(r.data.metrics), r.info.run_name
    files = [p for p in out.rglob("*") if p.is_file()]
    assert (out / "summary.json") in files
    leaked = [p for p in files if password.encode() in p.read_bytes()]
    assert not leaked, leaked
    assert password not in (server["home"] / "server.log").read_text()
