"""Latency measured on a Ray node: ``--latency-resource NAME`` runs :func:`e3d.latency.remote_task` as a Ray task on a
node offering the custom resource ``NAME``. ``e3d.latency`` finds :func:`measure_on_resource` through the entry-point
group ``e3d.remote_measure`` (setup.cfg), so it never imports Ray."""
from __future__ import annotations

from typing import Any

import ray

from e3d.latency import Measurer, remote_task


def measure_on_resource(measurer: Measurer, op: str, specs: list[dict]) -> Any:
    """``remote_task(op, specs, measurer.settings())`` on a node with ``measurer.resource`` (the running Ray
    session; a local one is started if none is)."""
    if not ray.is_initialized():
        ray.init()
    resource = measurer.resource
    if ray.cluster_resources().get(resource, 0) < 1:
        known = sorted(k for k in ray.cluster_resources() if not k.startswith("node:") and k not in
                       ("CPU", "GPU", "memory", "object_store_memory"))
        raise ValueError(f"--latency-resource {resource}: no Ray node offers this resource "
                         f"(custom resources in the cluster: {', '.join(known) or 'none'})")
    task = ray.remote(remote_task).options(resources={resource: 1}, num_cpus=measurer.threads or 1,
                                           num_gpus=1 if measurer.device == "cuda" else 0)
    return ray.get(task.remote(op, specs, measurer.settings()))
