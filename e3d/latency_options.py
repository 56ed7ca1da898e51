"""The latency options shared by `e3d latency`, `e3d export` and the search's budget, without torch.

Parsing ``--budget-latency 25ms`` and declaring the table's options (device, backend, threads, ...) must not
import what measuring needs: ``e3d --help`` and every job's ``--help`` build these options.
:mod:`e3d.latency` (the table, the measurer; torch) re-exports everything here.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import time
from dataclasses import dataclass, fields
from pathlib import Path

BACKENDS = ("torch", "onnxruntime")
DEVICES = ("cpu", "cuda")
STATS = {"median": statistics.median, "min": min}
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}

_UNITS = {"ms": 1.0, "s": 1000.0, "us": 1e-3, "µs": 1e-3}


def parse_latency(text: str) -> float:
    """``25ms`` -> 25.0, ``0.025s`` -> 25.0, ``2500us`` -> 2.5, ``25`` -> 25.0 (milliseconds)."""
    t = str(text).strip().lower()
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(ms|s|us|µs)?", t)
    if not m:
        raise argparse.ArgumentTypeError(f"expected a latency like 25ms, 0.025s or 2500us, got {text!r}")
    value = float(m.group(1)) * _UNITS[m.group(2) or "ms"]
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value


def default_cache_dir() -> Path:
    return Path(os.environ.get("E3D_LATENCY_CACHE") or Path.home() / ".cache" / "e3d" / "latency")


def add_latency_arguments(parser: argparse.ArgumentParser, *, budget: bool = True) -> None:
    """``--budget-latency``, ``--latency-device``, ``--latency-backend``, ``--latency-threads``,
    ``--latency-resource``, ``--latency-cache``, ``--latency-predictor``, ``--latency-runs``, ``--latency-stat``,
    ``--latency-clock``."""
    g = parser.add_argument_group("latency")
    if budget:
        g.add_argument("--budget-latency", type=parse_latency, metavar="MS",
                       help="predicted latency budget of one clip (batch 1), e.g. 25ms, 0.1s")
    g.add_argument("--latency-device", choices=DEVICES, default="cpu", help="device the table is measured on")
    g.add_argument("--latency-backend", choices=BACKENDS, default="torch",
                   help="PyTorch eager in-process, or the blocks exported to ONNX and run by onnxruntime")
    g.add_argument("--latency-threads", type=int, default=1, help="torch/onnxruntime intra-op threads (default 1)")
    g.add_argument("--latency-resource", metavar="NAME",
                   help="measure as a Ray task on a node offering the custom resource NAME")
    g.add_argument("--latency-cache", metavar="DIR", help=f"table cache folder (default {default_cache_dir()})")
    g.add_argument("--latency-predictor", choices=("measure", "estimate"), default="measure",
                   help="blocks the table lacks: measure them (exact; default) or estimate them with the per-op "
                        "model fitted on the table (never measures: for long searches)")
    g.add_argument("--latency-runs", type=int, default=10, help="timed runs per block (default 10)")
    g.add_argument("--latency-stat", choices=tuple(STATS), default="median",
                   help="of the timed runs: median (default) or min (the least disturbed, on a busy machine)")
    g.add_argument("--latency-clock", choices=tuple(CLOCKS), default="wall",
                   help="wall (default) or cpu: this thread's CPU time (threads 1), which time the process spends "
                        "descheduled on a shared CPU does not inflate")


@dataclass(frozen=True)
class LatencySettings:
    """The latency table's options (:func:`add_latency_arguments`, without the budget), built once from the
    command line and handed down whole (picklable, for Ray): :func:`e3d.latency.open_table` reads them."""

    latency_device: str = "cpu"
    latency_backend: str = "torch"
    latency_threads: int = 1
    latency_resource: str | None = None
    latency_cache: str | None = None
    latency_predictor: str = "measure"
    latency_runs: int = 10
    latency_stat: str = "median"
    latency_clock: str = "wall"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "LatencySettings":
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})
