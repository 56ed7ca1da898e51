"""How many Train workers, CPUs and GPUs each candidate gets, and how many candidates train at once.

The plan is derived from the cluster's resources (``ray.cluster_resources()`` and ``ray.nodes()``) and
always leaves CPU for Ray Data: a lazy Ray Data pipeline whose decode tasks never get a CPU deadlocks the
run (measured on 2 CPUs with 2 one-CPU train workers, DESIGN.md "Stack facts").

CPU-only cluster with ``C`` CPUs:
  * a candidate needs at least 2 CPUs (one for its train worker, one for its data tasks), so at most
    ``C // 2`` candidates train at once (and never more than asked for);
  * each candidate's share ``C // concurrent`` is split into ``data_cpus = max(1, share // 4)`` for
    decoding (PyAV decodes ~30 clips/s per core; a CPU trains a few clips/s) and the rest for training;
  * one worker per candidate (intra-op threads beat gloo all-reduce on one machine), unless its CPUs do
    not fit on the largest node: then one worker per node-sized chunk.
  * a 1-CPU cluster: the worker reserves no CPU and data gets the one CPU (slow, but no deadlock).

Cluster with ``G`` GPUs:
  * a candidate needs at least one GPU: at most ``G`` candidates at once;
  * each candidate gets ``G // concurrent`` workers with one GPU each and one CPU per worker to drive it;
    the rest of its CPU share goes to data (decoding is the bottleneck of GPU training).

Train nodes (``train_resource``): ``cluster.yaml``'s train node type carries a custom resource,
:data:`TRAIN_RESOURCE` (``train_gpu``), one unit per GPU. When the cluster has it (or ``train_resource``
names another), every Train worker also asks for one unit, so the workers land on the train nodes and
nowhere else. A cluster with the resource but no GPU (the simulated cluster of ``tests/cluster/``, where it
stands in for the GPU) is planned like a GPU cluster whose "GPUs" are those units: ``U`` units give
``min(candidates, U)`` candidates at once, ``U // concurrent`` workers each, each worker with one unit and
the CPUs of its train node less one (left to Ray Data), torch threads to match.

Autoscaling (:func:`autoscaled_training`): before it plans, the main job asks the autoscaler for the train
units it wants (``ray.autoscaler.sdk.request_resources``), waits (bounded) for the train nodes to join, and
releases the request after training, so the train node type can have ``min_workers: 0``.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

# cluster.yaml's train nodes carry this resource, one unit per GPU: Train workers ask for one unit each
TRAIN_RESOURCE = "train_gpu"
AUTO = "auto"
NONE_NAMES = ("", "none", "off")


@dataclass(frozen=True)
class ClusterSnapshot:
    """The cluster's resources: totals, and each alive node's resources (``node_resources``)."""

    cpus: float
    gpus: float
    max_node_cpus: float
    nodes: int
    resources: Mapping[str, float] = field(default_factory=dict)
    node_resources: tuple[Mapping[str, float], ...] = ()

    @classmethod
    def current(cls) -> "ClusterSnapshot":
        """The running Ray cluster (``ray.init`` must have been called)."""
        import ray

        total = ray.cluster_resources()
        alive = [n for n in ray.nodes() if n.get("Alive", n.get("alive", False))]
        per_node = tuple(dict(n.get("Resources", {})) for n in alive)
        node_cpus = [float(r.get("CPU", 0.0)) for r in per_node] or [total.get("CPU", 0.0)]
        return cls(cpus=float(total.get("CPU", 0.0)), gpus=float(total.get("GPU", 0.0)),
                   max_node_cpus=max(node_cpus), nodes=max(1, len(alive)), resources=dict(total),
                   node_resources=per_node)

    @classmethod
    def of(cls, resources: Mapping[str, float], node_cpus: Sequence[float] | None = None,
           nodes: Sequence[Mapping[str, float]] | None = None) -> "ClusterSnapshot":
        """A snapshot from a ``cluster_resources()``-like mapping (for planning without a cluster); ``nodes``:
        each node's resources (their sums are the totals when ``resources`` is empty)."""
        if nodes:
            nodes = tuple(dict(n) for n in nodes)
            totals: dict[str, float] = {}
            for n in nodes:
                for k, v in n.items():
                    totals[k] = totals.get(k, 0.0) + float(v)
            resources = dict(resources) or totals
            node_cpus = [float(n.get("CPU", 0.0)) for n in nodes]
        cpus = float(resources.get("CPU", 0.0))
        node_cpus = list(node_cpus) if node_cpus else [cpus]
        return cls(cpus=cpus, gpus=float(resources.get("GPU", 0.0)), max_node_cpus=max(node_cpus),
                   nodes=len(node_cpus), resources=dict(resources), node_resources=tuple(nodes or ()))

    def has(self, resource: str) -> bool:
        return float(self.resources.get(resource, 0.0)) > 0

    def cpus_per_unit(self, resource: str) -> float:
        """CPUs per unit of ``resource`` on the nodes that hold it (the smallest such node's ratio)."""
        ratios = [float(n.get("CPU", 0.0)) / float(n[resource]) for n in self.node_resources
                  if float(n.get(resource, 0.0)) > 0]
        if ratios:
            return min(ratios)
        units = float(self.resources.get(resource, 0.0))
        return self.max_node_cpus / units if units else 0.0


def resolve_train_resource(name: str | None, cluster: ClusterSnapshot) -> str | None:
    """The custom resource each Train worker asks for: ``name`` (``"auto"``: :data:`TRAIN_RESOURCE` when the
    cluster has it; ``None``/``"none"``: no pin; ``"GPU"``: plain GPUs, nothing custom)."""
    if name is None or str(name).lower() in NONE_NAMES:
        return None
    if name == AUTO:
        return TRAIN_RESOURCE if cluster.has(TRAIN_RESOURCE) else None
    if name == "GPU":
        return None
    if not cluster.has(name):
        raise ValueError(f"the Ray cluster has no resource {name!r} for the Train workers "
                         f"(it has {', '.join(sorted(k for k in cluster.resources if not k.startswith('node:')))})")
    return name


@dataclass(frozen=True)
class ResourcePlan:
    """Resources of one candidate's training run, and how many such runs go at once."""

    num_workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    data_cpus: float
    concurrent: int
    torch_threads: int
    train_resource: str | None = None  # custom resource, one unit per worker (the train nodes)

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0

    @property
    def worker_resources(self) -> dict[str, float]:
        """What each Train worker asks Ray for (``ScalingConfig.resources_per_worker``)."""
        res = {"CPU": self.cpus_per_worker}
        if self.use_gpu:
            res["GPU"] = self.gpus_per_worker
        if self.train_resource:
            res[self.train_resource] = 1.0
        return res

    @property
    def cpus_per_candidate(self) -> float:
        return self.num_workers * self.cpus_per_worker + self.data_cpus

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"use_gpu": self.use_gpu}

    def params(self) -> dict[str, Any]:
        return {f"resources.{k}": v for k, v in self.to_dict().items()}

    def describe(self) -> str:
        dev = f"{self.gpus_per_worker:g} GPU + " if self.use_gpu else ""
        dev += f"1 {self.train_resource} + " if self.train_resource else ""
        return (f"{self.concurrent} candidate(s) at once; each: {self.num_workers} worker(s) x "
                f"({dev}{self.cpus_per_worker:g} CPU, {self.torch_threads} torch threads), "
                f"{self.data_cpus:g} CPU for Ray Data")


def plan_resources(num_candidates: int = 1, *, cluster: ClusterSnapshot | None = None,
                   max_concurrent: int | None = None, workers: int | None = None,
                   data_cpus: float | None = None, train_resource: str | None = AUTO) -> ResourcePlan:
    """Plan workers/CPUs/GPUs per candidate (see the module docstring for the policy).

    ``workers`` and ``data_cpus`` override the policy's choice per candidate; ``max_concurrent`` caps the
    number of candidates training at once; ``train_resource``: the custom resource that marks the train
    nodes (:func:`resolve_train_resource`; default: :data:`TRAIN_RESOURCE` when the cluster has it).
    """
    if num_candidates < 1:
        raise ValueError(f"num_candidates must be >= 1, got {num_candidates}")
    if max_concurrent is not None and max_concurrent < 1:
        raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent}")
    cluster = cluster or ClusterSnapshot.current()
    cpus, gpus = int(cluster.cpus), int(cluster.gpus)
    want = min(num_candidates, max_concurrent or num_candidates)
    if cpus < 1:
        raise RuntimeError(f"the Ray cluster has no CPU ({cluster}); Ray Data needs at least one")

    pin = resolve_train_resource(train_resource, cluster)
    if gpus >= 1:
        concurrent = max(1, min(want, gpus))
        n = workers or max(1, gpus // concurrent)
        share = cpus // concurrent
        cpw = 1.0 if share >= n + 1 else 0.0
        data = float(data_cpus) if data_cpus is not None else float(max(1, share - int(n * cpw)))
        return ResourcePlan(num_workers=n, cpus_per_worker=cpw, gpus_per_worker=1.0, data_cpus=data,
                            concurrent=concurrent, torch_threads=max(1, int(cpw)), train_resource=pin)
    if pin is not None:  # CPU training pinned to the train nodes: their units stand in for GPUs
        units = int(float(cluster.resources.get(pin, 0.0)))
        concurrent = max(1, min(want, units))
        n = workers or max(1, units // concurrent)
        per_unit = cluster.cpus_per_unit(pin)
        cpw = float(max(1, int(per_unit) - 1)) if per_unit >= 2 else float(int(per_unit))
        share = cpus // concurrent
        data = float(data_cpus) if data_cpus is not None else float(max(1, share - int(n * cpw)))
        return ResourcePlan(num_workers=n, cpus_per_worker=cpw, gpus_per_worker=0.0, data_cpus=data,
                            concurrent=concurrent, torch_threads=max(1, int(cpw)), train_resource=pin)

    if cpus < 2:  # one CPU: the worker reserves none so data tasks can run
        return ResourcePlan(num_workers=workers or 1, cpus_per_worker=0.0, gpus_per_worker=0.0,
                            data_cpus=float(cpus), concurrent=1, torch_threads=1)
    concurrent = max(1, min(want, cpus // 2))
    share = cpus // concurrent
    data = float(data_cpus) if data_cpus is not None else float(max(1, share // 4))
    train_cpus = max(1, int(share - data))
    n = workers or max(1, math.ceil(train_cpus / max(1.0, cluster.max_node_cpus)))
    cpw = max(1, train_cpus // n)
    if n * cpw + data > share:
        raise ValueError(f"{n} workers x {cpw} CPU + {data:g} data CPUs do not fit a {share}-CPU share of "
                         f"a {cpus}-CPU cluster; lower workers or data_cpus")
    return ResourcePlan(num_workers=n, cpus_per_worker=float(cpw), gpus_per_worker=0.0, data_cpus=data,
                        concurrent=concurrent, torch_threads=cpw)


# -- autoscaling ---------------------------------------------------------------------------------------
@dataclass
class Autoscale:
    """What :func:`autoscaled_training` asked the autoscaler for and found. ``outcome``: ``"off"`` (no train
    resource), ``"no-autoscaler"``, ``"present"`` (enough units before asking), ``"scaled"`` (they came),
    ``"partial"``/``"infeasible"`` (nothing more was being launched after ``grace_s``), ``"timeout"``."""

    resource: str | None
    units: int
    outcome: str
    found: float = 0.0
    waited_s: float = 0.0
    requested: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def autoscaler_status() -> dict[str, Any] | None:
    """The autoscaler's last report (written to the GCS by the head's monitor), or None."""
    try:
        from ray._private import ray_constants
        from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_initialized

        if not _internal_kv_initialized():
            return None
        raw = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
    except Exception:  # an old or odd cluster: behave as without an autoscaler
        return None
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _autoscaler_v2_groups() -> list[Any] | None:
    try:
        import ray._private.state

        config = ray._private.state.state.get_cluster_config()
    except Exception:
        return None
    return list(config.node_group_configs) if config is not None and config.node_group_configs else None


def has_autoscaler() -> bool:
    """Whether the cluster runs an autoscaler that can add nodes (``ray up`` clusters and Ray's fake multi-node
    cluster do; a plain ``ray.init()`` or ``ray start`` without ``--autoscaling-config`` does not: its head's
    monitor runs Ray's read-only provider, which reports the nodes but launches none)."""
    status = autoscaler_status()
    report = (status or {}).get("autoscaler_report")
    if report and not _read_only(report):
        return True
    return _autoscaler_v2_groups() is not None


def _read_only(report: dict[str, Any]) -> bool:
    """Whether an autoscaler report comes from the read-only provider: it names every node's type
    ``node_<node id>`` (``ray.autoscaler._private.util.format_readonly_node_type``)."""
    mapping = report.get("node_type_mapping") or {}
    return bool(mapping) and all(kind == f"node_{node}" for node, kind in mapping.items())


def _launching() -> bool:
    """Whether the autoscaler reports nodes being launched or set up."""
    report = (autoscaler_status() or {}).get("autoscaler_report") or {}
    return bool(report.get("pending_launches")) or bool(report.get("pending_nodes"))


def _units(resource: str) -> float:
    import ray

    return float(ray.cluster_resources().get(resource, 0.0))


def pin_job_actors_to_driver_node() -> None:
    """Create Ray Data's stats actor here, in the driver, so that it lives on the driver's node.

    The actor is detached and pinned to the node of whichever process first runs a dataset; in the main job
    that is a Train worker on a train node, and an actor alive on a node keeps the autoscaler from ever
    seeing it idle: the (GPU) train node would stay up after the job, for as long as the cluster does
    (issue 23). Created first from the driver (on the head under ``ray submit``), it stays off the train
    nodes. An existing actor is reused wherever it lives. A Ray without this private helper changes nothing.
    """
    try:
        from ray.data._internal.stats import get_or_create_stats_actor
    except ImportError:
        return
    get_or_create_stats_actor()


@contextlib.contextmanager
def autoscaled_training(units: int, *, train_resource: str | None = AUTO, timeout_s: float = 900.0,
                        grace_s: float = 60.0, poll_s: float = 1.0,
                        say: Callable[[str], Any] = print) -> Iterator[Autoscale]:
    """Ask the autoscaler for ``units`` train units for the duration of the block; release them after.

    The resource is ``train_resource`` (``"auto"``: :data:`TRAIN_RESOURCE`, unless the cluster already has
    plain GPUs and no such resource; ``"GPU"``: GPUs). With an autoscaler, ``request_resources`` asks for
    ``units`` bundles of one unit each and the call waits, at most ``timeout_s``, until the cluster has them;
    it stops waiting early when for ``grace_s`` the autoscaler launches nothing (no node type has the
    resource, or ``max_workers`` is reached) and goes on with what is there. Without an autoscaler nothing is
    asked. The request is withdrawn when the block ends, however it ends (an idle train node is then removed
    after ``idle_timeout_minutes``); a driver killed hard leaves it in place until the next
    ``request_resources`` call (docs/cluster.md)."""
    import ray

    if train_resource is None or str(train_resource).lower() in NONE_NAMES:
        yield Autoscale(None, units, "off")
        return
    resource = train_resource
    if resource == AUTO:
        totals = ray.cluster_resources()
        resource = "GPU" if totals.get("GPU", 0) > 0 and totals.get(TRAIN_RESOURCE, 0) <= 0 else TRAIN_RESOURCE
    units = max(1, int(units))
    info = Autoscale(resource, units, "present", found=_units(resource))
    if not has_autoscaler():
        info.outcome = "no-autoscaler" if info.found < units else "present"
        yield info
        return
    from ray.autoscaler.sdk import request_resources

    pin_job_actors_to_driver_node()
    request_resources(bundles=[{resource: 1.0}] * units)  # also keeps present train nodes from idling away
    info.requested = True
    try:
        t0 = last_busy = time.monotonic()
        if info.found < units:
            say(f"[autoscale] asked for {units} x {resource}; the cluster has {info.found:g}: waiting for the "
                f"autoscaler (at most {timeout_s:.0f} s)")
        while True:
            info.found = _units(resource)
            now = time.monotonic()
            info.waited_s = now - t0
            if info.found >= units:
                info.outcome = "present" if info.waited_s < poll_s else "scaled"
                break
            if info.waited_s > timeout_s:
                info.outcome = "timeout"
                break
            if _launching():
                last_busy = now
            elif now - last_busy > grace_s:
                info.outcome = "partial" if info.found > 0 else "infeasible"
                break
            time.sleep(poll_s)
        if info.outcome != "present":
            say(f"[autoscale] {info.outcome} after {info.waited_s:.0f} s: {info.found:g} x {resource} present")
        yield info
    finally:
        with contextlib.suppress(Exception):
            request_resources(bundles=[])
