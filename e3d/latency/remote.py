"""A node picked by a resource (``--latency-resource NAME``): what runs on it (:func:`remote_task`), a table
built there (:func:`build_on_resource`), and the table the latency settings describe (:func:`open_table`,
here because it may build one there).

The pipeline runs :func:`remote_task` as a Ray task (:mod:`pipeline.latency`); the transport to it is
:func:`e3d.latency.measure.remote_call`, which the :class:`~e3d.latency.measure.Measurer` uses.
"""
from __future__ import annotations

import os
import platform
from typing import TYPE_CHECKING, Any, Sequence

from ..spec import ArchSpec
from .blocks import key_to_str
from .measure import Measurer, measure_blocks, remote_names
from .table import LatencyTable

if TYPE_CHECKING:
    from ..latency_options import LatencySettings


def remote_task(op: str, specs: list[dict], settings: dict[str, Any]) -> Any:
    """What runs on the chosen node: ``names`` (device, backend), ``fill`` (block entries) or ``measure``."""
    m = Measurer(**{k: v for k, v in settings.items() if k != "resource"})
    if op == "names":
        return m.device_name, m.backend_name, platform.node()
    specs_ = [ArchSpec.from_dict(s) for s in specs]
    if op == "fill":
        return {key_to_str(k): v for k, v in measure_blocks(specs_, m).items()}
    return [m.network_ms(s) for s in specs_]


def build_on_resource(specs: Sequence[ArchSpec], resource: str, *, device: str = "cpu", backend: str = "torch",
                      threads: int | None = 1, warmup: int = 3, runs: int = 10, calibrate: int = 3,
                      cache_dir: str | os.PathLike | None = None, on_missing: str = "measure", clock: str = "wall",
                      stat: str = "median") -> LatencyTable:
    """``--latency-resource NAME``: the cached table of a Ray node offering the custom resource ``NAME``,
    with the blocks of ``specs`` measured there (one Ray task) and the overhead calibrated there on the first
    ``calibrate`` specs when the table has no calibration yet. Later lazy fills also run there.

    Uses the running Ray session (``ray.init(address=...)`` first; a local one is started if none is).
    """
    if not specs:
        raise ValueError("build_on_resource needs at least one spec (it sets the clip size)")
    table = LatencyTable.open(specs[0].frames, specs[0].size, device=device, backend=backend, threads=threads,
                              warmup=warmup, runs=runs, cache_dir=cache_dir, on_missing=on_missing,
                              resource=resource, clock=clock, stat=stat)
    table.fill(specs)
    if calibrate and not table.calibration:
        table.calibrate(specs[:calibrate])
        table.calibration["node"] = remote_names(table.measurer)[2]
        table.save()
    return table


# -- the table the options describe (declared in e3d.latency_options, without torch) --------------------------
def open_table(settings: "LatencySettings", frames: int, size: int,
               seed_specs: Sequence[ArchSpec] = ()) -> LatencyTable:
    """The table ``settings`` describe (:class:`e3d.latency_options.LatencySettings`, built once from the
    command line), for clips of ``frames x size^2``; ``seed_specs`` are measured first (an ``estimate`` table
    needs some measured blocks to fit its model)."""
    s = settings
    kwargs = dict(device=s.latency_device, backend=s.latency_backend, threads=s.latency_threads,
                  runs=s.latency_runs, cache_dir=s.latency_cache, on_missing=s.latency_predictor,
                  clock=s.latency_clock, stat=s.latency_stat)
    if s.latency_resource:
        return build_on_resource(list(seed_specs), s.latency_resource, **kwargs) if seed_specs else \
            LatencyTable.open(frames, size, resource=s.latency_resource, **kwargs)
    table = LatencyTable.open(frames, size, **kwargs)
    if seed_specs:
        table.fill(seed_specs)
    return table
