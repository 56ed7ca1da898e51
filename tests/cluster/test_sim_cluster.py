"""The main job on a simulated multi-node cluster (tests/cluster/sim.py), all on 127.0.0.1:

    head    CPU 0 (as cluster.yaml's): the driver (this process), GCS, dashboard, Train's controller
    search  x2: CPU 1, search_cpu 1          (cluster.yaml's search nodes)
    train   CPU 2, train_gpu 1               (cluster.yaml's train node; train_gpu stands in for the GPU)

and an S3-compatible server (moto) on loopback, so ``--out s3://...`` is exercised for real.

1. placement + S3: the quick job, training two candidates, with ``--out s3://e3d-test/runs/quick``: every island
   actor ran on a search node, every Train worker on the train node and any Tune trial on the head (Ray's
   state API); everything the job wrote is under
   that prefix of the bucket (search checkpoint, Ray Train checkpoints, summaries, MLflow artifacts and a
   snapshot of its store) and nothing outside it; a rerun from an empty working copy finds it all there.
2. node loss: a longer job; a search node is killed mid-search and the train node mid-training (their
   raylets and everything on them), a fresh node of each kind is added: the search ends with exactly the
   result of the same search run without a fault, training resumes from the last registered checkpoint
   (no finished epoch is trained again), and the job summary counts both restarts.

Marked ``cluster`` (``make test-cluster``): several minutes on a 2-core machine.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

ray = pytest.importorskip("ray")
moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")

from sim import SimCluster  # noqa: E402  (tests/cluster is on sys.path: rootdir-relative conftest-less import)

BUCKET, OTHER = "e3d-test", "e3d-other"
SEARCH, TRAIN = "search_cpu", "train_gpu"


def _bounded(predicate, timeout: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"no {what} within {timeout:.0f} s")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 and the usual AWS variables pointing at it (set before the cluster
    starts, so every Ray worker inherits them); the jobs' working copies under a temporary folder."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint, "MLFLOW_S3_ENDPOINT_URL": endpoint, "AWS_EC2_METADATA_DISABLED": "true",
           "E3D_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    client.create_bucket(Bucket=OTHER)
    client.put_object(Bucket=OTHER, Key="keep.txt", Body=b"not the job's")
    try:
        yield client
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def cluster(s3):
    t0 = time.monotonic()
    with SimCluster(head_cpus=0) as sim:
        sim.search_nodes = [sim.add("search", 1, {SEARCH: 1}) for _ in range(2)]
        sim.train_nodes = [sim.add("train", 2, {TRAIN: 1})]
        sim.connect()
        sim.startup_s = time.monotonic() - t0
        print(f"\n[sim] head + 2 search + 1 train up in {sim.startup_s:.1f} s (head {sim.started_s:.1f} s); "
              f"dashboard {sim.dashboard_url}")
        yield sim
        ray.shutdown()
    assert sim.leftovers() == [], "processes of the simulated cluster left running"


def keys(client, bucket: str) -> dict[str, int]:
    """Every object of the bucket: key -> size."""
    out, token = {}, None
    while True:
        kw = {"Bucket": bucket} | ({"ContinuationToken": token} if token else {})
        page = client.list_objects_v2(**kw)
        out |= {o["Key"]: o["Size"] for o in page.get("Contents", [])}
        if not page.get("IsTruncated"):
            return out
        token = page["NextContinuationToken"]


def placement(sim: SimCluster) -> dict[str, list[str | None]]:
    """Node kinds of every island actor, Train worker and Tune trial (a function trainable's actor) the cluster
    has seen, alive or dead (state API)."""
    # an actor without a node never ran: e.g. an island respawned while no search node had room, then replaced
    # (node loss); every node of these tests is added by SimCluster, so a placed actor always has a kind
    return {cls: [a["kind"] for a in sim.actors(cls) if a["node_id"]]
            for cls in ("Island", "RayTrainWorker", "ImplicitFunc")}


# -- 1. placement and outputs on S3 -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3_job(cluster, s3, tmp_path_factory):
    from pipeline.search_and_train import JobConfig, quick, run_job

    cwd = tmp_path_factory.mktemp("cwd")
    cache = Path(os.environ["E3D_CACHE_DIR"])
    uri = f"s3://{BUCKET}/runs/quick"
    base = quick(JobConfig(out_dir=uri))
    config = replace(base, selection=replace(base.selection, top_k=2))  # two candidates
    old = os.getcwd()
    os.chdir(cwd)  # anything written relative to the working directory would show up here
    try:
        t0 = time.monotonic()
        result = run_job(config, verbose=True)
        wall = time.monotonic() - t0
    finally:
        os.chdir(old)
    print(f"[sim] quick job with --out {uri}: {wall:.1f} s")
    return {"result": result, "uri": uri, "cache": cache, "cwd": cwd, "config": config, "wall_s": wall,
            "placement": placement(cluster)}


def test_islands_on_search_nodes_and_train_workers_on_the_train_node(s3_job):
    where = s3_job["placement"]
    assert len(where["Island"]) >= 2 and set(where["Island"]) == {"search"}, where
    assert where["RayTrainWorker"] and set(where["RayTrainWorker"]) == {"train"}, where
    # the train node fits one candidate at a time, so the driver (on the head) trains them one after the other: no
    # Tune trial; a trial, when candidates train at once, asks for the head (test_train_candidates checks that)
    assert set(where["ImplicitFunc"]) <= {"head"}, where
    summary = s3_job["result"].summary()
    assert len(summary["candidates"]) == 2 and all(c["error"] is None for c in summary["candidates"])


def test_everything_the_job_writes_is_under_out_on_s3(s3_job, s3):
    prefix = "runs/quick/"
    got = keys(s3, BUCKET)
    # pyarrow emulates folders on S3 with empty marker objects, also for the folders above --out: those
    # hold nothing; every byte is under the prefix
    outside = {k: n for k, n in got.items() if not k.startswith(prefix)}
    assert got and all(n == 0 and k.endswith("/") and prefix.startswith(k) for k, n in outside.items()), outside
    assert list(keys(s3, OTHER)) == ["keep.txt"]
    rel = [k[len(prefix):] for k in got]
    for must in ("job.json", "summary.json", "summary.txt", "mlruns/mlflow.db", "search/outcome.json",
                 "search/best.json", "search/population.parquet", "search/checkpoint/state.parquet"):
        assert must in rel, (must, sorted(rel))
    assert any(r.startswith("train/train/") and r.endswith("/state.pt") for r in rel)  # Ray Train's checkpoints
    assert any(r.startswith("train/candidates/") and r.endswith("/result.json") for r in rel)
    assert any(r.startswith("mlruns/mlartifacts/") and "/artifacts/" in r for r in rel)  # MLflow's own S3 upload
    summary = json.loads(s3.get_object(Bucket=BUCKET, Key=prefix + "summary.json")["Body"].read())
    assert summary["out_dir"] == s3_job["uri"]
    cand = s3_job["result"].candidates[0]
    assert cand.checkpoint.startswith(f"s3://{BUCKET}/{prefix}train/train/"), cand.checkpoint
    # nothing was written beside the working copy: not in the working directory, not in a "s3:" folder
    assert list(Path(s3_job["cwd"]).iterdir()) == []
    assert not (Path(s3_job["cache"]) / "s3:").exists()
    # the S3 round trip of one checkpoint (upload + download of the candidate's state.pt), against a local copy
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(cand.checkpoint)
    local = pafs.LocalFileSystem()
    scratch = Path(s3_job["cwd"]).parent / "roundtrip"
    scratch.mkdir(exist_ok=True)
    for name, dest_fs, dest in (("s3", fs, f"{path}-copy"), ("local", local, str(scratch))):
        t0 = time.perf_counter()
        pafs.copy_files(path, dest, source_filesystem=fs, destination_filesystem=dest_fs)
        size = sum(i.size for i in fs.get_file_info(pafs.FileSelector(path, recursive=True)) if i.size)
        print(f"[sim] checkpoint {size / 1e6:.2f} MB: download + {'upload' if name == 's3' else 'local write'} "
              f"{time.perf_counter() - t0:.3f} s")
    fs.delete_dir(f"{path}-copy")
    shutil.rmtree(scratch)


RERUN = """
import json, ray
from dataclasses import replace
from pipeline.search_and_train import JobConfig, quick, run_job
ray.init(address={address!r}, log_to_driver=False)
c = quick(JobConfig(out_dir={uri!r}))
r = run_job(replace(c, selection=replace(c.selection, top_k=2)), verbose=False)
print("RESULT " + json.dumps({{"parent": r.parent_run_id, "resumed": bool(r.search_summary.get("resumed")),
                              "best": r.best_spec.to_dict(), "history": r.candidates[0].history}}))
"""


def test_a_rerun_from_an_empty_working_copy_resumes_from_s3(s3_job, cluster):
    """The store holds all the job needs: with its working copy gone, a new driver process (as on a new
    head node) reads the finished search and the finished candidate back from S3 instead of redoing them,
    in the same MLflow runs."""
    from pipeline.outdir import OutDir

    first = s3_job["result"]
    work = OutDir(s3_job["uri"]).local  # the default working copy ($E3D_CACHE_DIR)
    assert (work / "summary.json").is_file()
    shutil.rmtree(work)
    proc = subprocess.run([sys.executable, "-c", RERUN.format(address=cluster.address, uri=s3_job["uri"])],
                          capture_output=True, text=True, timeout=900, env=dict(os.environ))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    again = json.loads(lines[-1][len("RESULT "):])
    assert again["parent"] == first.parent_run_id and again["resumed"]
    assert again["best"] == json.loads(json.dumps(first.best_spec.to_dict()))
    # not trained again: the same epochs, with the first run's timings
    assert json.dumps(again["history"], sort_keys=True) == json.dumps(first.candidates[0].history, sort_keys=True)


# -- 2. node loss ----------------------------------------------------------------------------------------
def _search_round(out: Path) -> tuple[int, int]:
    """(rounds checkpointed, rounds planned) of the island search under ``out``; (0, 0) before the first."""
    from pipeline.search import read_meta, resolve_fs

    with contextlib.suppress(Exception):
        meta = read_meta(*resolve_fs(str(out / "search")))
        if meta:
            return int(meta.get("round", 0)), int(meta.get("rounds", 0))
    return 0, 0


def _registered_epochs(out: Path) -> int:
    """Epochs whose checkpoint Ray Train's controller has registered (its checkpoint manager snapshot)."""
    best = 0
    for snap in (out / "train" / "train").glob("*/checkpoint_manager_snapshot.json"):
        with contextlib.suppress(Exception):
            text = snap.read_text()
            for word in text.replace('"', " ").replace("/", " ").split():
                if word.startswith("epoch_") and word[6:].isdigit():
                    best = max(best, int(word[6:]))
    return best


def test_node_loss_mid_search_and_mid_training_loses_nothing(cluster, tmp_path):
    from e3d.strategies.evolution import search_config
    from pipeline.search import run_distributed_search
    from pipeline.search_and_train import JobConfig, quick, run_job

    out = tmp_path / "job"
    base = quick(JobConfig(out_dir=str(out)))
    epochs = 4
    config = replace(base, request=replace(base.request, options=dict(base.request.options) | {"iterations": 30_000}),
                     recipe=base.recipe.scaled(epochs=epochs), resources=replace(base.resources, max_failures=3))
    os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = "300"  # the new node's workers start slowly here
    box: dict = {}

    def job():
        try:
            box["result"] = run_job(config, verbose=True)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            box["error"] = exc

    t0 = time.monotonic()
    runner = threading.Thread(target=job, daemon=True)
    runner.start()
    try:
        # a search node dies once the search has checkpointed a few rounds; a fresh one joins
        rnd, rounds = _bounded(lambda: _search_round(out)[0] >= 5 and _search_round(out), 600, "search round 5")
        kill_s = time.monotonic()
        cluster.kill(cluster.search_nodes.pop(0))
        assert rnd < rounds - 1, f"the search ended (round {rnd} of {rounds}) before the node was killed"
        cluster.search_nodes.append(cluster.add("search", 1, {SEARCH: 1}))
        _bounded(lambda: _search_round(out)[0] > rnd + 1 or not runner.is_alive(), 600, "search progress")
        search_lost = time.monotonic() - kill_s
        print(f"[sim] search node killed at round {rnd}; the search moved on {search_lost:.1f} s later")
        # the train node dies once Train has registered epoch 1's checkpoint; a fresh one joins
        _bounded(lambda: _registered_epochs(out) >= 1 or not runner.is_alive(), 900, "epoch 1 checkpoint")
        assert runner.is_alive(), box
        kill_t = time.monotonic()
        cluster.kill(cluster.train_nodes.pop(0))
        done_at_kill = _registered_epochs(out)
        cluster.train_nodes.append(cluster.add("train", 2, {TRAIN: 1}))
        _bounded(lambda: _registered_epochs(out) > done_at_kill or not runner.is_alive(), 900, "a new checkpoint")
        train_lost = time.monotonic() - kill_t
        runner.join(timeout=900)
    finally:
        os.environ.pop("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", None)
    assert not runner.is_alive(), "the job did not finish in time"
    assert "error" not in box, box.get("error")
    result = box["result"]
    wall = time.monotonic() - t0
    summary = json.loads((out / "summary.json").read_text())

    # the search: exactly the result of the same search without a fault (in-process islands, same settings)
    outcome = result.outcome
    ref = run_distributed_search(search_config(config.search_request(None, 2)), out_dir=str(tmp_path / "ref"),
                                 backend="local", actors=2, chunk_iterations=config.islands.chunk_iterations)
    assert outcome.best.spec.replace(name="x") == ref.best.replace(name="x")
    assert [c.score for c in outcome.candidates] == [ind.score for ind in ref.population]
    drop = ("wall_s",)
    assert [{k: v for k, v in h.items() if k not in drop} for h in outcome.history] == \
        [{k: v for k, v in h.to_dict().items() if k not in drop} for h in ref.history]
    assert summary["restarts"]["search_islands"] >= 1
    # training: resumed from the last registered checkpoint; no finished epoch trained twice
    cand = result.candidates[0]
    assert cand.ok, cand.error
    assert 1 <= done_at_kill < epochs
    assert [h["epoch"] for h in cand.history] == list(range(1, epochs + 1))
    # the second session starts at the last checkpoint the dead node persisted: the one registered when the test
    # looked (done_at_kill) or a later one that Train registered after the look (the controller polls)
    resumed = max(h["session_start_epoch"] for h in cand.history)
    assert done_at_kill <= resumed < epochs
    assert [h["session_start_epoch"] for h in cand.history] == [0] * resumed + [resumed] * (epochs - resumed)
    assert summary["restarts"]["training_sessions"] == 1
    assert summary["restarts"]["sessions"] == {cand.name: [0, resumed]}
    where = placement(cluster)
    assert set(where["Island"]) == {"search"} and set(where["RayTrainWorker"]) == {"train"}, where
    epoch_s = sorted(h["epoch_time_s"] for h in cand.history)[len(cand.history) // 2]
    print(f"[sim] node-loss job: {wall:.1f} s; search node lost -> next checkpointed round after {search_lost:.1f} s; "
          f"train node lost after epoch {done_at_kill} -> next checkpoint after {train_lost:.1f} s "
          f"(median epoch {epoch_s:.1f} s, so ~{train_lost - epoch_s:.1f} s lost)")
