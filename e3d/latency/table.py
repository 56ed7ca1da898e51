"""The latency table: measured per-block latencies on one device, cached as a JSON file, and the network
latency predicted from them (:class:`LatencyTable`, :func:`filter_by_latency`).
"""
from __future__ import annotations

import contextlib
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from ..latency_options import default_cache_dir
from ..spec import ArchSpec
from .blocks import FORMAT, Key, key_from_str, key_to_str, network_blocks
from .measure import Measurer, measure_blocks, remote_call, slug
from .opmodel import OpModel, estimable

ON_MISSING = ("measure", "estimate", "error")


def cache_file_name(device_name: str, backend_name: str, threads: int | None, frames: int, size: int) -> str:
    return (f"{device_name}-{slug(backend_name)}-t{threads or 'default'}-{frames}x{size}"
            f"-torch{slug(torch.__version__)}.json")


@dataclass
class LatencyTable:
    """Measured per-block latencies (ms) on one device, and the network latency predicted from them."""

    measurer: Measurer = field(default_factory=Measurer)
    entries: dict[Key, float] = field(default_factory=dict)
    overhead_ms: float = 0.0
    path: Path | None = None
    on_missing: str = "measure"
    device_name: str = ""
    backend_name: str = ""
    calibration: dict[str, Any] = field(default_factory=dict)
    measure_s: float = 0.0       # time spent measuring blocks in this process
    measured: int = 0            # blocks measured in this process
    _model: OpModel | None = field(default=None, repr=False)
    _model_size: int = field(default=-1, repr=False)
    _estimates: dict[Key, float] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.on_missing not in ON_MISSING:
            raise ValueError(f"on_missing: expected one of {', '.join(ON_MISSING)}, got {self.on_missing!r}")
        self.device_name = self.device_name or self.measurer.device_name
        self.backend_name = self.backend_name or self.measurer.backend_name
        if self.path is not None:
            self.path = Path(self.path)

    # -- construction / files ------------------------------------------------------------------------
    @classmethod
    def open(cls, frames: int, size: int, *, device: str = "cpu", backend: str = "torch", threads: int | None = 1,
             warmup: int = 3, runs: int = 10, cache_dir: str | os.PathLike | None = None,
             on_missing: str = "measure", resource: str | None = None, clock: str = "wall",
             stat: str = "median") -> "LatencyTable":
        """The cached table for this device, backend, threads and clip (empty if none yet); with ``resource``,
        the device is the one of a Ray node offering that resource, and every measurement runs there.
        ``clock``/``stat`` (see :class:`Measurer`) apply to what is measured from now on."""
        m = Measurer(device=device, backend=backend, threads=threads, warmup=warmup, runs=runs, resource=resource,
                     clock=clock, stat=stat)
        path = Path(cache_dir or default_cache_dir()) / cache_file_name(m.device_name, m.backend_name, threads,
                                                                         frames, size)
        if path.is_file():
            try:
                return cls.load(path, measurer=m, on_missing=on_missing)
            except (ValueError, KeyError):  # an older format or a damaged file: measure again, overwrite it
                pass
        return cls(measurer=m, path=path, on_missing=on_missing)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "device": self.device_name, "backend": self.backend_name,
                "torch": torch.__version__, "measurer": self.measurer.settings(), "overhead_ms": self.overhead_ms,
                "calibration": self.calibration,
                "entries": {key_to_str(k): v for k, v in sorted(self.entries.items(), key=str)}}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, measurer: Measurer | None = None, **kwargs: Any) -> "LatencyTable":
        """A table from :meth:`to_dict`'s form; ``measurer`` defaults to the settings it was measured with."""
        if data.get("format") != FORMAT:
            raise ValueError(f"latency table format {data.get('format')!r} is not {FORMAT}")
        if measurer is None:
            names = {f for f in Measurer.__dataclass_fields__}
            measurer = Measurer(**{k: v for k, v in (data.get("measurer") or {}).items() if k in names})
        return cls(measurer=measurer, entries={key_from_str(k): float(v) for k, v in data["entries"].items()},
                   overhead_ms=float(data.get("overhead_ms", 0.0)), device_name=data["device"],
                   backend_name=data["backend"], calibration=dict(data.get("calibration") or {}), **kwargs)

    @classmethod
    def load(cls, path: str | os.PathLike, **kwargs: Any) -> "LatencyTable":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not a latency table ({exc.msg})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{path}: latency table format {data.get('format') if isinstance(data, dict) else None!r}"
                             f" is not {FORMAT}")
        return cls.from_dict(data, path=path, **kwargs)

    def merge(self, other: "LatencyTable") -> None:
        """Add ``other``'s entries that this table lacks (its own measurements win)."""
        for k, v in other.entries.items():
            self.entries.setdefault(k, v)

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the table (atomically; entries another process saved meanwhile are kept)."""
        path = Path(path or self.path or "")
        if not str(path):
            raise ValueError("latency table: no path to save to")
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            with contextlib.suppress(ValueError, KeyError, OSError):
                self.merge(LatencyTable.load(path, measurer=self.measurer))
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(self.to_dict(), f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
        return path

    # -- measuring -----------------------------------------------------------------------------------
    def missing(self, spec: ArchSpec) -> list[Key]:
        return [k for k, _ in network_blocks(spec) if k not in self.entries]

    def fill(self, specs: ArchSpec | Iterable[ArchSpec], *, save: bool = True) -> int:
        """Measure the blocks of ``specs`` the table lacks (one model build per spec that needs one, on the
        measurer's device); returns how many were measured. Saves the file when it has a path."""
        todo = [s for s in ([specs] if isinstance(specs, ArchSpec) else specs) if self.missing(s)]
        if not todo:
            return 0
        t0 = time.perf_counter()
        if self.measurer.resource:
            new = {k: v for k, v in remote_call(self.measurer, "fill", todo).items() if k not in self.entries}
        else:
            new = measure_blocks(todo, self.measurer, skip=self.entries)
        self.entries.update(new)
        self.measure_s += time.perf_counter() - t0
        self.measured += len(new)
        if new and save and self.path is not None:
            self.save()
        return len(new)

    def measure(self, spec: ArchSpec) -> float:
        """End-to-end latency (ms) of ``spec``'s network on this table's device."""
        return self.measurer.network_ms(spec)

    def calibrate(self, specs: Sequence[ArchSpec], *, measured: Sequence[float] | None = None,
                  save: bool = True) -> float:
        """Set ``overhead_ms`` to the median of (end-to-end - sum of blocks) over ``specs``; returns it."""
        specs = list(specs)
        if not specs:
            raise ValueError("calibrate needs at least one spec")
        measured = list(measured) if measured is not None else [self.measure(s) for s in specs]
        residuals = [m - self.blocks_ms(s) for s, m in zip(specs, measured)]
        self.overhead_ms = statistics.median(residuals)
        self.calibration = {"specs": len(specs), "residuals_ms": [round(r, 4) for r in residuals],
                            "measured_ms": [round(m, 4) for m in measured]}
        if save and self.path is not None:
            self.save()
        return self.overhead_ms

    # -- predicting ----------------------------------------------------------------------------------
    def model(self) -> OpModel:
        """The per-op model fitted on the current entries (refitted when entries were added)."""
        if self._model is None or self._model_size != len(self.entries):
            self._model, self._model_size = OpModel.fit(self.entries), len(self.entries)
            self._estimates = {}
        return self._model

    def entry(self, key: Key) -> float:
        v = self.entries.get(key)
        if v is not None:
            return v
        if self.on_missing == "estimate" and estimable(key):
            model = self.model()
            v = self._estimates.get(key)
            if v is None:
                v = self._estimates[key] = model.ms(key)
            return v
        raise KeyError(f"latency table {self.device_name}: no entry for block {key_to_str(key)}")

    def breakdown(self, spec: ArchSpec) -> list[tuple[Key, int, float]]:
        """``[(key, count, ms per block), ...]`` for ``spec`` (missing blocks handled per ``on_missing``;
        ``estimate`` measures the blocks its model has no features for: other families' stages)."""
        missing = self.missing(spec)
        if missing and (self.on_missing == "measure" or (self.on_missing == "estimate" and not all(
                estimable(k) for k in missing))):
            self.fill(spec)
        return [(k, n, self.entry(k)) for k, n in network_blocks(spec)]

    def blocks_ms(self, spec: ArchSpec) -> float:
        return sum(n * ms for _, n, ms in self.breakdown(spec))

    def predict(self, spec: ArchSpec) -> float:
        """Predicted end-to-end latency (ms): the sum of the blocks' latencies + ``overhead_ms``."""
        return self.blocks_ms(spec) + self.overhead_ms

    __call__ = predict

    def over_budget(self, spec: ArchSpec, budget_ms: float) -> str | None:
        """None if ``spec`` is predicted within ``budget_ms``, else a message saying by how much."""
        ms = self.predict(spec)
        if ms <= budget_ms:
            return None
        return (f"exceeds the latency budget: {ms:.2f} ms > {budget_ms:.2f} ms (by {ms - budget_ms:.2f} ms, "
                f"{100 * (ms / budget_ms - 1):.1f}%) on {self.device_name}")


def filter_by_latency(specs: Iterable[ArchSpec], table: LatencyTable | Callable[[ArchSpec], float],
                      budget_ms: float) -> list[ArchSpec]:
    """The specs whose predicted latency is within ``budget_ms`` (order kept)."""
    predict = table.predict if isinstance(table, LatencyTable) else table
    return [s for s in specs if predict(s) <= budget_ms]
