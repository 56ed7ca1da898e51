"""Placement logic without a cluster: the train and search pins, the --out store mirror, the restart count.
(The multi-node runs are tests/cluster/test_sim_cluster.py and test_autoscaling.py: `make test-cluster`.)"""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from pipeline.context import SEARCH_RESOURCE, IslandBackend, search_placement
from pipeline.train.resources import TRAIN_RESOURCE, ClusterSnapshot, plan_resources

# the simulated cluster of tests/cluster: a CPU-less head, two search nodes, a train node
SIM = [{"CPU": 0}, {"CPU": 1, SEARCH_RESOURCE: 1}, {"CPU": 1, SEARCH_RESOURCE: 1}, {"CPU": 2, TRAIN_RESOURCE: 1}]
AWS = [{"CPU": 0}] + [{"CPU": 16, SEARCH_RESOURCE: 16}] * 2 + [{"CPU": 8, "GPU": 1, TRAIN_RESOURCE: 1}] * 2


def test_train_workers_pinned_to_the_train_resource_when_the_cluster_has_it():
    plan = plan_resources(1, cluster=ClusterSnapshot.of({}, nodes=SIM))
    assert plan.train_resource == TRAIN_RESOURCE and not plan.use_gpu
    # one worker per train unit, the train node's CPUs less one (left to Ray Data)
    assert plan.worker_resources == {"CPU": 1.0, TRAIN_RESOURCE: 1.0}
    assert plan.num_workers == 1 and plan.data_cpus >= 1
    assert TRAIN_RESOURCE in plan.describe()
    # without the resource nothing is pinned (the plan of a plain CPU cluster)
    plain = plan_resources(1, cluster=ClusterSnapshot.of({}, nodes=[{"CPU": 4}]))
    assert plain.train_resource is None and set(plain.worker_resources) == {"CPU"}
    # "none" turns the pin off even where the resource exists
    assert plan_resources(1, cluster=ClusterSnapshot.of({}, nodes=SIM), train_resource=None).train_resource is None


def test_gpus_are_used_whenever_the_cluster_has_them_and_the_pin_stays():
    plan = plan_resources(2, cluster=ClusterSnapshot.of({}, nodes=AWS))
    assert plan.use_gpu and plan.concurrent == 2 and plan.num_workers == 1
    assert plan.worker_resources == {"CPU": 1.0, "GPU": 1.0, TRAIN_RESOURCE: 1.0}
    gpus_only = plan_resources(1, cluster=ClusterSnapshot.of({"CPU": 8, "GPU": 2}), train_resource="GPU")
    assert gpus_only.use_gpu and gpus_only.train_resource is None and gpus_only.num_workers == 2


def test_a_named_train_resource_must_exist():
    with pytest.raises(ValueError, match="no resource 'tpu_slice'"):
        plan_resources(1, cluster=ClusterSnapshot.of({}, nodes=SIM), train_resource="tpu_slice")


def test_cpu_training_on_several_train_nodes_runs_candidates_side_by_side():
    nodes = [{"CPU": 4}] + [{"CPU": 8, TRAIN_RESOURCE: 1}] * 3
    plan = plan_resources(3, cluster=ClusterSnapshot.of({}, nodes=nodes))
    assert (plan.concurrent, plan.num_workers, plan.cpus_per_worker, plan.torch_threads) == (3, 1, 7.0, 7)


def test_islands_pinned_to_the_search_resource_when_the_cluster_has_it():
    sim = {"CPU": 4.0, SEARCH_RESOURCE: 2.0, TRAIN_RESOURCE: 1.0}
    assert search_placement(None, "auto", 1.0, sim) == {SEARCH_RESOURCE: 1.0}
    assert search_placement(None, "auto", 0.5, sim) == {SEARCH_RESOURCE: 0.5}
    assert search_placement(None, "auto", 1.0, {"CPU": 2.0}) is None  # a laptop: anywhere
    assert search_placement(None, None, 1.0, sim) is None
    assert search_placement({"big_mem": 1.0}, "auto", 1.0, sim) == {"big_mem": 1.0}  # --actor-resources wins
    with pytest.raises(ValueError, match="no resource 'fast_cpu'"):
        search_placement(None, "fast_cpu", 1.0, sim)
    assert IslandBackend(backend="local", resources=None).placement() is None  # in-process: no Ray asked


def test_options_reach_the_job_config():
    from pipeline.options import _resource_name
    from pipeline.options import islands_from_args

    assert _resource_name("none") is None and _resource_name("auto") == "auto" and _resource_name("GPU") == "GPU"
    with pytest.raises(Exception):
        _resource_name("two words")
    args = SimpleNamespace(actors=None, chunk_iterations=None, migration_interval=None, migration_size=None,
                           cpus_per_actor=1.0, actor_resources=None, max_restarts=3, search_resource=None)
    assert islands_from_args(args).search_resource is None


def test_out_dir_on_a_filesystem_uri_mirrors_the_working_copy(tmp_path):
    """--out as a pyarrow URI: the working copy is pushed to the store and a fresh one pulls it back
    (file:// here; S3 on a loopback server in tests/cluster/test_sim_cluster.py)."""
    import sqlite3

    from pipeline.outdir import OutDir

    store = tmp_path / "store"
    uri = f"file://{store}"
    a = OutDir(uri, cache_dir=str(tmp_path / "cache-a"))
    assert a.remote and a.where("train/train") == f"{uri}/train/train"
    (a.local / "search").mkdir()
    (a.local / "search" / "outcome.json").write_text("{}")
    (a.local / "job.json").write_text(json.dumps({"parent_run_id": "r1"}))
    (a.local / "mlruns").mkdir()
    with sqlite3.connect(a.local / "mlruns" / "mlflow.db") as con:
        con.execute("create table t (x)")
        con.execute("insert into t values (1)")
    assert a.push() == 3 and a.push() == 0  # unchanged files are not sent again
    (store / "search" / "checkpoint").mkdir()
    (store / "search" / "checkpoint" / "state.parquet").write_bytes(b"written by the islands directly")
    b = OutDir(uri, cache_dir=str(tmp_path / "cache-b"))
    assert b.pull() == 3
    assert json.loads((b.local / "job.json").read_text()) == {"parent_run_id": "r1"}
    assert not (b.local / "search" / "checkpoint").exists()  # read in place by the search, never copied
    with sqlite3.connect(b.local / "mlruns" / "mlflow.db") as con:
        assert con.execute("select x from t").fetchall() == [(1,)]
    local = OutDir(str(tmp_path / "plain"))
    assert not local.remote and local.push() == 0 and local.where("search") == str(tmp_path / "plain" / "search")


def test_restarts_count_islands_and_resumed_training_sessions():
    from pipeline.search_and_train import restarts

    outcome = SimpleNamespace(extra={"restarts": 1})
    history = [{"epoch": 1, "session_start_epoch": 0}, {"epoch": 2, "session_start_epoch": 0},
               {"epoch": 3, "session_start_epoch": 2}, {"epoch": 4, "session_start_epoch": 2}]
    results = [SimpleNamespace(name="cand1", history=history), SimpleNamespace(name="cand2", history=history[:2])]
    got = restarts(outcome, results)
    assert got == {"search_islands": 1, "training_sessions": 1, "sessions": {"cand1": [0, 2], "cand2": [0]}}


def test_a_read_only_monitor_is_no_autoscaler(monkeypatch):
    """A plain ``ray.init()`` head runs a monitor with Ray's read-only provider: it reports, but can launch
    nothing, so the job must not wait for it (it cost a minute per local job before)."""
    from pipeline.train import resources

    monkeypatch.setattr(resources, "_autoscaler_v2_groups", lambda: None)
    local = {"autoscaler_report": {"active_nodes": {"node_ab12": 1}, "pending_launches": {},
                                   "node_type_mapping": {"ab12": "node_ab12"}}}
    configured = {"autoscaler_report": {"active_nodes": {"ray.head.default": 1}, "pending_launches": {},
                                        "node_type_mapping": {"ab12": "ray.head.default", "cd34": "train_gpu"}}}
    for status, expected in ((None, False), ({}, False), (local, False), (configured, True)):
        monkeypatch.setattr(resources, "autoscaler_status", lambda s=status: s)
        assert resources.has_autoscaler() is expected, status


def test_local_ray_has_no_autoscaler():
    """The real thing: a local Ray instance's monitor, once it has reported."""
    import time

    import ray

    from pipeline.train.resources import autoscaler_status, has_autoscaler

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        deadline = time.monotonic() + 30
        while not (autoscaler_status() or {}).get("autoscaler_report") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert (autoscaler_status() or {}).get("autoscaler_report"), "the monitor never reported"
        assert not has_autoscaler()
    finally:
        ray.shutdown()
