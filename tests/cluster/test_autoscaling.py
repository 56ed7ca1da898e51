"""The job and the autoscaler, on Ray's fake multi-node provider (what ``ray.cluster_utils.AutoscalingCluster``
starts), its node types taken from ``cluster.yaml`` and scaled to this machine: a CPU-less head, the search
type (``min_workers`` 1) and the train type (``min_workers`` 0; its GPU replaced by ``train_gpu`` alone).
The quick job asks the autoscaler for the train node when it reaches training and releases it after: the
train node is absent while the job searches (its second island gets a second search node from the
autoscaler), appears for training (its Train workers run there) and goes away after
``idle_timeout_minutes``. All on 127.0.0.1; marked ``cluster`` (``make test-cluster``)."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

ray = pytest.importorskip("ray")
yaml = pytest.importorskip("yaml")

from sim import SimCluster  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TRAIN, SEARCH = "train_gpu", "search_cpu"
MB = 1024 * 1024


def fake_config(path: Path = REPO / "cluster.yaml", idle_minutes: float = 0.1) -> dict:
    """``cluster.yaml``'s node types for the fake provider: a search node gets 1 CPU, a train node 2; a
    resource counted per CPU (``search_cpu``) follows the CPUs, one counted per GPU (``train_gpu``) stays;
    GPUs are dropped (this machine has none: ``train_gpu`` is what the job pins to); at most two search nodes
    (the job's two islands) and one train node."""
    aws = yaml.safe_load(path.read_text())
    head = aws["head_node_type"]
    types = {"ray.head.default": {"resources": dict(aws["available_node_types"][head]["resources"]),
                                  "node_config": {}, "max_workers": 0}}
    for name, t in aws["available_node_types"].items():
        if name == head:
            continue
        res = dict(t["resources"])
        gpus = res.pop("GPU", 0)
        cpus = 2 if gpus else 1
        scaled = {k: (cpus if v == res.get("CPU") else v) for k, v in res.items()}
        types[name] = {"resources": scaled | {"CPU": cpus, "object_store_memory": 100 * MB}, "node_config": {},
                       "min_workers": t["min_workers"], "max_workers": min(1 if gpus else 2, t["max_workers"])}
    return {"cluster_name": "e3d-fake", "max_workers": len(types) - 1, "idle_timeout_minutes": idle_minutes,
            "upscaling_speed": 1.0, "head_node_type": "ray.head.default", "available_node_types": types,
            "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                         "disable_launch_config_check": True},
            "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [],
            "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
            "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
            "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": []}


def _bounded(predicate, timeout: float, what: str, poll: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"no {what} within {timeout:.0f} s")


def units(name: str) -> float:
    return float(ray.cluster_resources().get(name, 0.0))


def test_fake_config_follows_cluster_yaml():
    cfg = fake_config()
    types = cfg["available_node_types"]
    assert types["train"]["min_workers"] == 0 and types["train"]["resources"][TRAIN] == 1
    assert "GPU" not in types["train"]["resources"]
    assert types["search"]["min_workers"] >= 1 and types["search"]["resources"][SEARCH] == 1
    assert types["ray.head.default"]["resources"]["CPU"] == 0


def test_train_node_appears_for_training_and_goes_away_after(tmp_path):
    from pipeline.search_and_train import JobConfig, quick, run_job

    t0 = time.monotonic()
    with SimCluster(head_cpus=0, autoscaling_config=fake_config()) as sim:
        sim.connect()
        _bounded(lambda: units(SEARCH) >= 1, 300, "search node (min_workers 1)")
        print(f"\n[autoscale] head up in {sim.started_s:.1f} s, search node in {time.monotonic() - t0:.1f} s")
        assert units(TRAIN) == 0, "the train node must not run before the job asks for it"
        out = tmp_path / "job"
        timeline: list[tuple[float, float]] = []
        box: dict = {}

        def job():
            try:
                box["result"] = run_job(quick(JobConfig(out_dir=str(out))), verbose=True)
            except BaseException as exc:  # noqa: BLE001 - reported below
                box["error"] = exc
            box["ended"] = time.monotonic()

        runner = threading.Thread(target=job, daemon=True)
        j0 = time.monotonic()
        runner.start()
        train_nodes: set[str] = set()  # every node that carried train_gpu while the job ran
        while runner.is_alive() and time.monotonic() - j0 < 1200:
            timeline.append((time.time(), units(TRAIN)))
            train_nodes |= {n["NodeID"] for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get(TRAIN)}
            time.sleep(1.0)
        runner.join(timeout=5)
        assert not runner.is_alive(), "the job did not finish in time"
        assert "error" not in box, box.get("error")
        result = box["result"]
        job_s = time.monotonic() - j0
        assert result.candidates[0].ok, result.candidates[0].error
        up = [t for t, n in timeline if n >= 1]
        assert up, "the train node never appeared"
        searched_at = (out / "search" / "outcome.json").stat().st_mtime
        assert min(up) > searched_at, "the train node came up before the search ended"
        # the Train workers ran on the train node the autoscaler started
        workers = sim.actors("RayTrainWorker")
        assert workers and {w["node_id"] for w in workers} <= train_nodes, (workers, train_nodes)
        try:
            _bounded(lambda: units(TRAIN) == 0, 300, "train node removal after the job")
        except TimeoutError as exc:  # name what keeps it busy: an actor alive there is never idle
            tenants = [a for a in sim.actors() if a["state"] == "ALIVE" and a["node_id"] in train_nodes]
            raise AssertionError(f"{exc}; alive on the train node: {tenants}") from None
        gone_s = time.monotonic() - box["ended"]
        autoscale = json.loads((out / "summary.json").read_text())["placement"]["autoscale"]
        assert autoscale["outcome"] == "scaled" and autoscale["resource"] == TRAIN, autoscale
        print(f"[autoscale] job {job_s:.1f} s; train node up {min(up) - searched_at:.1f} s after the search ended, "
              f"for {max(up) - min(up):.0f} s; gone {gone_s:.1f} s after the job (idle_timeout 0.1 min)")
    assert sim.leftovers() == []
