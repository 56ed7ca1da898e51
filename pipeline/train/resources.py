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
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence


@dataclass(frozen=True)
class ClusterSnapshot:
    cpus: float
    gpus: float
    max_node_cpus: float
    nodes: int

    @classmethod
    def current(cls) -> "ClusterSnapshot":
        """The running Ray cluster (``ray.init`` must have been called)."""
        import ray

        total = ray.cluster_resources()
        alive = [n for n in ray.nodes() if n.get("Alive", n.get("alive", False))]
        node_cpus = [float(n.get("Resources", {}).get("CPU", 0.0)) for n in alive] or [total.get("CPU", 0.0)]
        return cls(cpus=float(total.get("CPU", 0.0)), gpus=float(total.get("GPU", 0.0)),
                   max_node_cpus=max(node_cpus), nodes=max(1, len(alive)))

    @classmethod
    def of(cls, resources: Mapping[str, float], node_cpus: Sequence[float] | None = None) -> "ClusterSnapshot":
        """A snapshot from a ``cluster_resources()``-like mapping (for planning without a cluster)."""
        cpus = float(resources.get("CPU", 0.0))
        node_cpus = list(node_cpus) if node_cpus else [cpus]
        return cls(cpus=cpus, gpus=float(resources.get("GPU", 0.0)), max_node_cpus=max(node_cpus),
                   nodes=len(node_cpus))


@dataclass(frozen=True)
class ResourcePlan:
    """Resources of one candidate's training run, and how many such runs go at once."""

    num_workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    data_cpus: float
    concurrent: int
    torch_threads: int

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0

    @property
    def cpus_per_candidate(self) -> float:
        return self.num_workers * self.cpus_per_worker + self.data_cpus

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"use_gpu": self.use_gpu}

    def params(self) -> dict[str, Any]:
        return {f"resources.{k}": v for k, v in self.to_dict().items()}

    def describe(self) -> str:
        dev = f"{self.gpus_per_worker:g} GPU + " if self.use_gpu else ""
        return (f"{self.concurrent} candidate(s) at once; each: {self.num_workers} worker(s) x "
                f"({dev}{self.cpus_per_worker:g} CPU, {self.torch_threads} torch threads), "
                f"{self.data_cpus:g} CPU for Ray Data")


def plan_resources(num_candidates: int = 1, *, cluster: ClusterSnapshot | None = None,
                   max_concurrent: int | None = None, workers: int | None = None,
                   data_cpus: float | None = None) -> ResourcePlan:
    """Plan workers/CPUs/GPUs per candidate (see the module docstring for the policy).

    ``workers`` and ``data_cpus`` override the policy's choice per candidate; ``max_concurrent`` caps the
    number of candidates training at once.
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

    if gpus >= 1:
        concurrent = max(1, min(want, gpus))
        n = workers or max(1, gpus // concurrent)
        share = cpus // concurrent
        cpw = 1.0 if share >= n + 1 else 0.0
        data = float(data_cpus) if data_cpus is not None else float(max(1, share - int(n * cpw)))
        return ResourcePlan(num_workers=n, cpus_per_worker=cpw, gpus_per_worker=1.0, data_cpus=data,
                            concurrent=concurrent, torch_threads=max(1, int(cpw)))

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
