"""A simulated multi-node Ray cluster on this machine, over 127.0.0.1 only (docs/cluster.md "Simulated").

``SimCluster`` is ``ray.cluster_utils.Cluster`` with the care a shared machine needs:

* its own Ray temp dir (``RAY_TMPDIR``, a short path under /tmp): a plain ``ray.init()`` elsewhere on this
  machine never finds it (``/tmp/ray/ray_current_cluster`` is untouched), and its sockets and logs are its own;
* every node on 127.0.0.1 (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, and the node IP given explicitly),
  every port picked free (GCS, dashboard, dashboard agent, workers);
* cleanup by pid only: the nodes' processes (``Node.kill_all_processes``), then any process left whose
  command line names this cluster's temp dir (e.g. nodes an autoscaler started); never ``ray stop``,
  which would end every Ray on the machine.

Nodes are "kinds" standing in for ``cluster.yaml``'s node types: ``search`` nodes carry ``search_cpu``, the
``train`` node carries the custom train resource (``train_gpu``) in place of a GPU.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from ray_startup import kill_pids, started  # noqa: E402  (tests/ is on sys.path)

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def pids_naming(text: str) -> list[int]:
    """Processes (other than this one) whose command line or environment names ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@contextlib.contextmanager
def loopback_env(root: Path) -> Iterator[None]:
    """Environment for a cluster under ``root``: temp dir, loopback only; restored afterwards."""
    import ray._private.ray_constants as rc

    saved = {k: os.environ.get(k) for k in ("RAY_TMPDIR", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")}
    saved_flag = rc.ENABLE_RAY_CLUSTER
    os.environ["RAY_TMPDIR"] = str(root)
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # subprocesses: node IP 127.0.0.1
    os.environ.pop("RAY_ADDRESS", None)
    rc.ENABLE_RAY_CLUSTER = False  # this process read the variable at import
    try:
        yield
    finally:
        rc.ENABLE_RAY_CLUSTER = saved_flag
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class SimCluster:
    """Head + worker nodes as separate raylets on this machine. Use as a context manager."""

    def __init__(self, *, head_cpus: float = 0, dashboard: bool = True, object_store_mb: int = 100,
                 autoscaling_config: dict | None = None, env: dict[str, str] | None = None):
        self.root = Path(tempfile.mkdtemp(prefix="e3dc-", dir="/tmp"))
        self.temp_dir = self.root / "ray"  # what ray.init() would find under RAY_TMPDIR
        self.temp_dir.mkdir()
        self.head_cpus, self.dashboard, self.object_store = head_cpus, dashboard, object_store_mb * 1024 * 1024
        self.autoscaling_config = autoscaling_config
        self.env = dict(env or {})
        self.cluster: Any = None
        self.kinds: dict[str, str] = {}  # node id -> kind
        self.nodes: dict[str, Any] = {}  # node id -> ray._private.node.Node
        self.dashboard_url: str | None = None
        self.started_s = 0.0
        self._env_cm: Any = None

    # -- life cycle -------------------------------------------------------------------------------------
    def __enter__(self) -> "SimCluster":
        self._env_cm = loopback_env(self.root)
        self._env_cm.__enter__()
        os.environ.update(self.env)
        try:
            self.start()
        except BaseException:
            self.shutdown()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def start(self) -> None:
        from ray.cluster_utils import Cluster

        t0 = time.monotonic()
        self.gcs_port = free_port()
        head: dict[str, Any] = dict(
            num_cpus=self.head_cpus, node_ip_address=LOOPBACK, gcs_server_port=self.gcs_port,
            include_dashboard=self.dashboard, dashboard_host=LOOPBACK, dashboard_port=free_port(),
            dashboard_agent_listen_port=free_port(), min_worker_port=0, max_worker_port=0,
            object_store_memory=self.object_store, temp_dir=str(self.temp_dir), resources={"head": 1})
        if self.autoscaling_config is not None:  # Ray's fake multi-node provider (cluster_utils.AutoscalingCluster)
            from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

            path = self.root / "autoscaling.json"
            cfg = json.loads(json.dumps(self.autoscaling_config))
            cfg["provider"]["gcs_address"] = f"{LOOPBACK}:{self.gcs_port}"
            path.write_text(json.dumps(cfg))
            head["autoscaling_config"] = str(path)
            head["env_vars"] = {"RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID}
            env = {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
                   "AUTOSCALER_METRIC_PORT": str(free_port())}  # the default port may be another Ray's
            os.environ.update(env)
            self.env.update(env)
        self.cluster = Cluster(initialize_head=False)
        started(lambda: self.cluster.add_node(wait=True, **head), "head")
        node = self.cluster.head_node
        self.kinds[node.node_id], self.nodes[node.node_id] = "head", node
        if self.dashboard:
            self.dashboard_url = f"http://{node.webui_url}" if node.webui_url else None
        self.started_s = time.monotonic() - t0

    def add(self, kind: str, num_cpus: float, resources: dict[str, float] | None = None) -> str:
        """A worker node of ``kind``; returns its node id."""
        node = started(lambda: self.cluster.add_node(
            num_cpus=num_cpus, resources=dict(resources or {}), node_ip_address=LOOPBACK,
            object_store_memory=self.object_store, dashboard_agent_listen_port=free_port(),
            min_worker_port=0, max_worker_port=0, temp_dir=str(self.temp_dir)), kind)
        self.kinds[node.node_id], self.nodes[node.node_id] = kind, node
        return node.node_id

    def kill(self, node_id: str) -> float:
        """Kill the node's raylet and everything on it, hard (like a lost machine); returns the time it took."""
        t0 = time.monotonic()
        self.cluster.remove_node(self.nodes.pop(node_id), allow_graceful=False)
        return time.monotonic() - t0

    def connect(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        ray.init(address=self.cluster.address, log_to_driver=False)

    @property
    def address(self) -> str:
        return self.cluster.address

    def shutdown(self) -> None:
        import ray

        with contextlib.suppress(Exception):
            ray.shutdown()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.shutdown()
        kill_pids(pids_naming(str(self.root)))  # anything left of this cluster (autoscaler-started nodes)
        if self._env_cm is not None:
            for k in self.env:
                os.environ.pop(k, None)
            self._env_cm.__exit__(None, None, None)
            self._env_cm = None
        for _ in range(5):  # a process ending just now may still write a file
            shutil.rmtree(self.root, ignore_errors=True)
            if not self.root.exists():
                break
            time.sleep(1.0)

    def leftovers(self) -> list[int]:
        return pids_naming(str(self.root))

    # -- what ran where (Ray's state API) ----------------------------------------------------------------
    def actors(self, class_name: str | None = None) -> list[dict[str, Any]]:
        """Every actor the cluster has seen (alive and dead), from the state API: class, state, node."""
        from ray.util.state import list_actors

        filters = [("class_name", "=", class_name)] if class_name else None
        rows = list_actors(address=self.dashboard_url, filters=filters, detail=True, limit=10_000,
                           raise_on_missing_output=False)
        return [{"class_name": a.class_name, "state": a.state, "node_id": a.node_id, "name": a.name,
                 "kind": self.kinds.get(a.node_id)} for a in rows]


