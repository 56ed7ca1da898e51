"""Latency as a budget: a per-block latency table measured on the target device, and a predictor.

    table = LatencyTable.open(13, 160, device="cpu", threads=1)      # cached under ~/.cache/e3d/latency/
    table.predict(spec)          # ms: sum of the blocks' measured latencies + a per-network overhead
    table.measure(spec)          # ms: the whole network, end to end, on the same device
    table.calibrate(specs)       # fit the overhead term from end-to-end measurements
    filter_by_latency(specs, table, 25.0)

A network is decomposed into *blocks* (:func:`network_blocks`): the stem, every inverted-bottleneck block
(keyed by family, cin, bottleneck, cout, kernel, stride, frames, input size and whether it has SE), the head
conv and the classifier. Inside a stage, blocks 1.. share their key (two keys: with and without SE), so a
stage costs at most three measurements whatever its depth. (That is the ``e3d`` and ``x3d`` families; other
families are keyed per stage, or as a whole network when they build another shape.) Each block is measured in
isolation on the target (batch 1, ``warmup`` calls, then the median, or ``stat="min"`` the fastest, of
``runs`` timed calls; ``clock="cpu"`` times this thread's CPU time) by a :class:`Measurer`:

- ``device="cpu", backend="torch"``: PyTorch eager in this process, ``torch.set_num_threads(threads)``
  while measuring (restored afterwards);
- ``device="cpu", backend="onnxruntime"``: the block exported to ONNX and run by an onnxruntime session with
  ``intra_op_num_threads=threads``;
- ``device="cuda"``: PyTorch on the GPU; each sample is a loop of ``inner`` calls between CUDA events
  (launches pipeline in a network, so per-call synchronisation would over-count), divided by ``inner``.

The table is a JSON file per (device name, backend, threads, input clip, torch version) in ``cache_dir``
(``$E3D_LATENCY_CACHE`` or ``~/.cache/e3d/latency``). A search reaches block configurations no table holds
yet; what :meth:`LatencyTable.predict` does with them is ``on_missing``:

- ``"measure"`` (default): build the spec once, measure its missing blocks, memoise them (and save the file):
  exact, a few hundred ms per new spec on this CPU, free for every later spec that reuses the blocks;
- ``"estimate"``: a per-op linear model (:class:`OpModel`: MACs per kind of conv, elements written, those in
  tensors over 32 MiB again, constants per block kind; :data:`FEATURES`) fitted by non-negative least squares
  on the relative error of the measured entries: microseconds per spec, never measures e3d/x3d blocks (what a
  500k-iteration search needs); ``benchmarks/latency_bench.py`` reports its error;
- ``"error"``: raise :class:`KeyError`.

The per-network overhead (``overhead_ms``: what the end-to-end call costs beyond its blocks: the top-level
module calls, cache effects between blocks) is fitted by :meth:`LatencyTable.calibrate` as the median of
``measured - sum of blocks`` over a few specs. ``--latency-resource NAME``: :func:`build_on_resource` runs
the table build on a node offering the custom resource ``NAME`` and caches the result under that node's device
name; the pipeline runs it there as a Ray task (:mod:`pipeline.latency`, found through the entry-point group
``e3d.remote_measure``: this module never imports Ray).

``docs/latency-and-export.md`` has the design choices and the numbers measured on this machine.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from .cost import ceil_div, has_se
from .latency_options import BACKENDS, CLOCKS, DEVICES, STATS, add_latency_arguments, default_cache_dir, parse_latency
from .spec import ArchSpec

FORMAT = 2  # 2: keys are JSON lists (1: '/'-joined, e3d/x3d only)
ON_MISSING = ("measure", "estimate", "error")
KINDS = ("stem", "block", "head", "classifier")

# A block key: a tuple whose first item is its kind (see network_blocks for the fields of each kind).
Key = tuple


# -- the blocks of a network ------------------------------------------------------------------------------
# Families whose blocks the table keys one by one (tests/test_latency.py checks the keys against the built
# modules). Any other family is keyed per stage when its network has VideoNet's shape (stem, stages, head,
# classifier), else as a whole network: still exact, just less sharing between specs.
BLOCKWISE = ("e3d", "x3d")


def _layout(spec: ArchSpec) -> str:
    """``blocks``, ``stages`` or ``network``: how finely the table can key ``spec``'s network."""
    if spec.family in BLOCKWISE and not getattr(spec, "extra", ()) and not any(
            getattr(s, "extra", ()) for s in spec.stages):
        return "blocks"
    try:
        from .families import Family, get_family

        if type(get_family(spec.family)).build is Family.build:
            return "stages"
    except (ImportError, KeyError):
        pass
    return "network"


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _walk(spec: ArchSpec) -> Iterator[tuple[Key, tuple, tuple[int, ...]]]:
    """``(key, path to the module in the built network, input shape)`` for every block, in order."""
    fam, t, layout = spec.family, spec.frames, _layout(spec)
    if layout == "network":
        yield ("network", fam, _json(spec.replace(name="-").to_dict())), (), (1, 3, t, spec.size, spec.size)
        return
    st = spec.stem
    if layout == "blocks":
        stem_key: Key = ("stem", fam, st.out, st.kernel[0], st.kernel[1], st.stride[1], t, spec.size)
    else:
        stem_key = ("family_stem", fam, _json(spec.to_dict()["stem"]), _json(dict(getattr(spec, "extra", ()))), t,
                    spec.size)
    yield stem_key, ("stem",), (1, 3, t, spec.size, spec.size)
    h, cin = ceil_div(spec.size, st.stride[1]), st.out
    for i, s in enumerate(spec.stages):
        if layout == "blocks":
            kt, k, b = s.kernel[0], s.kernel[1], s.bottleneck
            for j in range(s.layers):
                stride = s.stride[1] if j == 0 else 1
                yield (("block", fam, cin, b, s.out, kt, k, stride, t, h, int(has_se(j))), ("stages", i, j),
                       (1, cin, t, h, h))
                h, cin = ceil_div(h, stride), s.out
        else:
            stage = spec.to_dict()["stages"][i]
            yield ("stage", fam, cin, _json(stage), t, h), ("stages", i), (1, cin, t, h, h)
            h, cin = ceil_div(h, s.stride[1]), s.out
    yield ("head", cin, spec.head.out, t, h), ("head",), (1, cin, t, h, h)
    yield (("classifier", spec.head.out, spec.hidden, spec.num_classes, t, h), ("classifier",),
           (1, spec.head.out, t, h, h))


def network_blocks(spec: ArchSpec) -> list[tuple[Key, int]]:
    """``[(key, count), ...]``: the distinct blocks of ``spec``'s network and how often each occurs, in order.

    Keys of the ``e3d`` and ``x3d`` families: ``("stem", family, out, kt, k, stride, T, H)``; ``("block",
    family, cin, bottleneck, cout, kt, k, stride, T, H_in, se)``; ``("head", cin, out, T, H)``;
    ``("classifier", cin, hidden, classes, T, H)``, ``H`` the spatial size entering the block (a strided
    'same' conv maps it to ``ceil(H / stride)``). Other families: ``("family_stem", family, stem JSON, extra
    JSON, T, H)`` and one ``("stage", family, cin, stage JSON, T, H_in)`` per stage, or one ``("network", family,
    spec JSON)`` when the family builds another shape of network.
    """
    merged: dict[Key, int] = {}  # two stages can share a key (same widths and size, e.g. E3D-S's 3rd and 4th)
    for key, _, _ in _walk(spec):
        merged[key] = merged.get(key, 0) + 1
    return list(merged.items())


def _modules(spec: ArchSpec, model: nn.Module) -> Iterator[tuple[Key, nn.Module, tuple[int, ...]]]:
    """``(key, submodule, input shape)`` for every block of the built network, in order (batch 1)."""
    for key, path, shape in _walk(spec):
        module = model
        for step in path:
            module = module[step] if isinstance(step, int) else getattr(module, step)
        yield key, module, shape


def key_to_str(key: Key) -> str:
    return _json(list(key))


def key_from_str(text: str) -> Key:
    return tuple(json.loads(text))


# -- measuring --------------------------------------------------------------------------------------------
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")


@contextlib.contextmanager
def torch_threads(n: int | None):
    """``torch.set_num_threads(n)`` for the block, restored afterwards (``None``: leave it)."""
    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class Measurer:
    """Times a module on the target: batch 1, ``warmup`` calls, median of ``runs`` timed calls (ms).

    ``resource``: measure on a Ray node offering that custom resource instead of in this process (see
    :func:`build_on_resource`); the settings travel with the task.
    """

    device: str = "cpu"
    backend: str = "torch"
    threads: int | None = 1
    warmup: int = 3
    runs: int = 10
    inner: int = 10  # cuda: calls per timed sample
    resource: str | None = None
    stat: str = "median"  # or "min": the least-disturbed run
    clock: str = "wall"   # or "cpu": this thread's CPU time (threads=1 on a CPU shared with other work)

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"--latency-device: expected one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"--latency-backend: expected one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--latency-threads: must be >= 1, got {self.threads}")
        if self.clock not in CLOCKS:
            raise ValueError(f"--latency-clock: expected one of {', '.join(CLOCKS)}, got {self.clock!r}")
        if self.clock == "cpu" and (self.device != "cpu" or self.threads != 1):
            raise ValueError("--latency-clock cpu (this thread's CPU time) needs --latency-device cpu and "
                             "--latency-threads 1")
        if self.stat not in STATS:
            raise ValueError(f"--latency-stat: expected one of {', '.join(STATS)}, got {self.stat!r}")
        if self.runs < 1 or self.warmup < 0 or self.inner < 1:
            raise ValueError(f"--latency-runs: runs and inner must be >= 1 and warmup >= 0, got "
                             f"{self.runs}/{self.inner}/{self.warmup}")

    def _check_device(self) -> None:
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--latency-device cuda: torch sees no CUDA device here")

    @property
    def device_name(self) -> str:
        """e.g. ``cpu-amd-epyc`` or ``cuda-nvidia-h200``: the device part of the cache key."""
        if self.resource:
            return _remote_names(self)[0]
        if self.device == "cuda":
            self._check_device()
            return "cuda-" + _slug(torch.cuda.get_device_name(torch.cuda.current_device()))
        return "cpu-" + _slug(cpu_name())

    @property
    def backend_name(self) -> str:
        if self.resource:
            return _remote_names(self)[1]
        if self.backend == "onnxruntime":
            import onnxruntime

            return f"onnxruntime{onnxruntime.__version__}"
        return "torch"

    @property
    def local(self) -> "Measurer":
        """The same settings, measuring in this process (what runs on the remote node)."""
        return Measurer(**{k: v for k, v in self.settings().items() if k != "resource"})

    def settings(self) -> dict[str, Any]:
        return {"device": self.device, "backend": self.backend, "threads": self.threads, "warmup": self.warmup,
                "runs": self.runs, "inner": self.inner, "resource": self.resource, "stat": self.stat,
                "clock": self.clock}

    def module_ms(self, module: nn.Module, shape: Sequence[int]) -> float:
        """Median latency (ms) of ``module`` (put in eval mode) on a random input of ``shape``."""
        if self.resource:
            raise ValueError("a Measurer with a Ray resource measures specs (network_ms, LatencyTable.fill), "
                             "not modules")
        self._check_device()
        module = module.eval()
        x = torch.randn(*shape)
        if self.backend == "onnxruntime":
            return self._ort_ms(module, x)
        if self.device == "cuda":
            return self._cuda_ms(module, x)
        with torch_threads(self.threads), torch.inference_mode():
            for _ in range(self.warmup):
                module(x)
            clock, times = CLOCKS[self.clock], []
            for _ in range(self.runs):
                t0 = clock()
                module(x)
                times.append(clock() - t0)
        return 1000 * STATS[self.stat](times)

    def _cuda_ms(self, module: nn.Module, x: torch.Tensor) -> float:
        dev = torch.device("cuda")
        module, x = module.to(dev), x.to(dev)
        try:
            with torch.inference_mode():
                for _ in range(max(1, self.warmup)):
                    module(x)
                torch.cuda.synchronize()
                times = []
                for _ in range(self.runs):
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    for _ in range(self.inner):
                        module(x)
                    end.record()
                    end.synchronize()
                    times.append(start.elapsed_time(end) / self.inner)
        finally:
            module.to("cpu")
        return STATS[self.stat](times)

    def _ort_ms(self, module: nn.Module, x: torch.Tensor) -> float:
        from .export import onnx_bytes, onnx_latency

        data = onnx_bytes(module, x, dynamic_batch=False)
        return onnx_latency(data, threads=self.threads, warmup=self.warmup, runs=self.runs, device=self.device,
                            stat=self.stat, clock=self.clock)

    def network_ms(self, spec: ArchSpec, model: nn.Module | None = None) -> float:
        """End-to-end latency (ms) of ``spec``'s whole network, batch 1."""
        if self.resource:
            return _remote_call(self, "measure", [spec])[0]
        from .model import build_model

        model = model if model is not None else build_model(spec)
        return self.module_ms(model, (1, 3, spec.frames, spec.size, spec.size))


def measure_blocks(specs: Iterable[ArchSpec], measurer: Measurer,
                   skip: dict[Key, float] | None = None) -> dict[Key, float]:
    """Measure every block of ``specs`` not in ``skip``, each distinct key once (one model build per spec)."""
    from .model import build_model

    out: dict[Key, float] = {}
    skip = skip or {}
    for spec in specs:
        if all(k in skip or k in out for k, _ in network_blocks(spec)):
            continue
        model = build_model(spec).eval()
        for key, module, shape in _modules(spec, model):
            if key not in skip and key not in out:
                out[key] = measurer.module_ms(module, shape)
    return out


# -- the per-op model (``on_missing="estimate"``) ---------------------------------------------------------
_KERNEL_COLUMNS = ((1, 3), (1, 5), (3, 3))  # depthwise MACs get a column per paper kernel (kt, k), + others
FEATURES = ("stem", "block", "head", "classifier",  # a constant per block kind (module-call overheads)
            "se",                                    # a constant per SE (its two tiny convs)
            "pointwise_macs", "dense_macs", "dw133_macs", "dw155_macs", "dw333_macs", "dw_other_macs",
            "linear_macs", "elements", "large_elements", "input_reads", "strided_pointwise_macs", "se_elements",
            "swish_elements")
_COL = {name: i for i, name in enumerate(FEATURES)}
# glibc serves allocations above 32 MiB (its largest mmap threshold) with fresh pages every time: writing a
# tensor that large costs page faults, ~10x the time per element of a reused buffer (on this CPU a stem of
# 96 channels at 13x80^2, 31.9 MiB per tensor, takes 18 ms; one of 120, 39.9 MiB, 66 ms)
LARGE_TENSOR_BYTES = 32 << 20


def _tensors(key: Key) -> list[int]:
    """Element counts of the tensors one call of the block allocates (conv, BN, activation, pooling,
    products and sums; the SE's pooled vectors are negligible)."""
    kind = key[0]
    if kind == "stem":
        _, fam, out, kt, k, s, t, h = key
        n = out * t * ceil_div(h, s) ** 2
        return [n] * (4 if fam == "x3d" else 3)
    if kind == "block":
        _, fam, cin, b, cout, kt, k, s, t, h, se = key
        vin, vout = t * h * h, t * ceil_div(h, s) ** 2
        out = [b * vin] * 3 + [b * vout] * (3 + se) + [cout * vout] * 3
        if cin != cout:
            out += [cout * vout] * 2
        elif s != 1:
            out += [cin * vout]
        if fam == "x3d":
            out += [cout * vout]
        return out
    if kind == "head":
        _, cin, out_, t, h = key
        return [out_ * t * h * h] * 3
    return []


def estimable(key: Key) -> bool:
    """Whether the per-op model has features for ``key`` (the e3d/x3d blocks, heads and classifiers)."""
    return key[0] in KINDS


def _features(key: Key) -> list[float]:
    """The work of one block in units a CPU or GPU pays for (:data:`FEATURES`): MACs per kind of conv,
    elements written (and those written into tensors too large for the allocator to reuse), constants."""
    kind = key[0]
    row = [0.0] * len(FEATURES)
    row[_COL[kind]] = 1.0
    tensors = _tensors(key)
    row[_COL["elements"]] = float(sum(tensors))
    row[_COL["large_elements"]] = float(sum(n for n in tensors if 4 * n > LARGE_TENSOR_BYTES))
    if kind == "stem":
        _, fam, out, kt, k, s, t, h = key
        vout = t * ceil_div(h, s) ** 2
        row[_COL["dense_macs"]] = 3.0 * out * kt * k * k * vout
        if fam == "x3d":  # X3D's depthwise 5x1x1 temporal conv
            row[_COL["dw_other_macs"]] = 5.0 * out * vout
    elif kind == "block":
        _, fam, cin, b, cout, kt, k, s, t, h, se = key
        vin, vout = t * h * h, t * ceil_div(h, s) ** 2
        row[_COL["pointwise_macs"]] = float(cin * b * vin + b * cout * vout)
        if cin != cout:  # the projection shortcut: a 1x1x1 conv, strided with the block
            row[_COL["pointwise_macs" if s == 1 else "strided_pointwise_macs"]] += float(cin * cout * vout)
        row[_COL["input_reads"]] = float(cin * vin * (2 if (cin != cout or s != 1) else 1))
        dw = f"dw{kt}{k}{k}_macs" if (kt, k) in _KERNEL_COLUMNS else "dw_other_macs"
        row[_COL[dw]] = float(b * kt * k * k * vout)
        row[_COL["se"]] = float(se)
        row[_COL["se_elements"]] = float(se * b * vout)
        row[_COL["swish_elements"]] = float(b * vout if fam == "x3d" else 0)
    elif kind == "head":
        _, cin, out, t, h = key
        row[_COL["pointwise_macs"]] = float(cin * out * t * h * h)
        row[_COL["input_reads"]] = float(cin * t * h * h)
    else:
        _, cin, hidden, classes, t, h = key
        row[_COL["elements"]] = float(cin * t * h * h)  # the global pooling reads the features once
        row[_COL["linear_macs"]] = float(cin * hidden + hidden * classes)
    return row


def _nnls(a: list[list[float]], b: list[float], iterations: int = 3000) -> list[float]:
    """Non-negative least squares by the Lawson-Hanson active-set method (numpy only)."""
    import numpy as np

    A, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    scale = np.maximum(np.abs(A).max(axis=0), 1e-30)  # columns span 1 .. 1e9: normalise them
    A = A / scale
    n = A.shape[1]
    passive = np.zeros(n, dtype=bool)
    x = np.zeros(n)
    for _ in range(iterations):
        w = A.T @ (y - A @ x)
        if passive.all() or (w[~passive] <= 1e-12).all():
            break
        j = int(np.argmax(np.where(passive, -np.inf, w)))
        passive[j] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(A[:, passive], y, rcond=None)[0]
            if (z[passive] > 0).all():
                x = z
                break
            neg = passive & (z <= 0)
            alpha = np.min(x[neg] / np.maximum(x[neg] - z[neg], 1e-30))
            x = x + alpha * (z - x)
            passive &= x > 1e-15
            x[~passive] = 0.0
    return list(x / scale)


@dataclass
class OpModel:
    """``ms(key) = coefficients . features(key)``, fitted on measured blocks (minimising relative error)."""

    coef: list[float]
    fitted_on: int
    median_rel_error: float
    max_rel_error: float

    @classmethod
    def fit(cls, entries: dict[Key, float]) -> "OpModel":
        entries = {k: v for k, v in entries.items() if estimable(k)}
        if len(entries) < 20:
            raise ValueError(f"the per-op latency model needs at least 20 measured blocks, the table has "
                             f"{len(entries)}: measure more specs first (LatencyTable.fill)")
        keys = list(entries)
        rows = [[f / entries[k] for f in _features(k)] for k in keys]  # weight 1/y: relative error
        coef = _nnls(rows, [1.0] * len(keys))
        errs = [abs(sum(c * f for c, f in zip(coef, _features(k))) / entries[k] - 1) for k in keys]
        return cls(coef, len(keys), statistics.median(errs), max(errs))

    def ms(self, key: Key) -> float:
        return sum(c * f for c, f in zip(self.coef, _features(key)))


# -- the table --------------------------------------------------------------------------------------------
def cache_file_name(device_name: str, backend_name: str, threads: int | None, frames: int, size: int) -> str:
    return (f"{device_name}-{_slug(backend_name)}-t{threads or 'default'}-{frames}x{size}"
            f"-torch{_slug(torch.__version__)}.json")


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
            new = {k: v for k, v in _remote_call(self.measurer, "fill", todo).items() if k not in self.entries}
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


# -- a node picked by a resource --------------------------------------------------------------------------
def remote_task(op: str, specs: list[dict], settings: dict[str, Any]) -> Any:
    """What runs on the chosen node: ``names`` (device, backend), ``fill`` (block entries) or ``measure``."""
    m = Measurer(**{k: v for k, v in settings.items() if k != "resource"})
    if op == "names":
        return m.device_name, m.backend_name, platform.node()
    specs_ = [ArchSpec.from_dict(s) for s in specs]
    if op == "fill":
        return {key_to_str(k): v for k, v in measure_blocks(specs_, m).items()}
    return [m.network_ms(s) for s in specs_]


_NAMES: dict[tuple, tuple[str, str, str]] = {}


def _remote_call(measurer: Measurer, op: str, specs: Sequence[ArchSpec] = ()) -> Any:
    """Run ``op`` (:func:`remote_task`) on a node offering ``measurer.resource``, by the function registered in the
    entry-point group ``e3d.remote_measure`` (setup.cfg: :func:`pipeline.latency.measure_on_resource`, a Ray task)."""
    from importlib.metadata import entry_points  # noqa: PLC0415 - only when measuring elsewhere

    runners = entry_points(group="e3d.remote_measure")
    if not runners:
        raise ValueError(f"--latency-resource {measurer.resource}: nothing measures on a remote node (install the "
                         f"pipeline: pip install -e '.[ray]', which registers e3d.remote_measure)")
    out = next(iter(runners)).load()(measurer, op, [s.to_dict() for s in specs])
    if op == "fill":
        return {key_from_str(k): float(v) for k, v in out.items()}
    return out


def _remote_names(measurer: Measurer) -> tuple[str, str, str]:
    key = (measurer.resource, measurer.device, measurer.backend)
    if key not in _NAMES:
        _NAMES[key] = tuple(_remote_call(measurer, "names"))  # type: ignore[assignment]
    return _NAMES[key]


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
        table.calibration["node"] = _remote_names(table.measurer)[2]
        table.save()
    return table


# -- command-line options (declared in e3d.latency_options, without torch) ---------------------------------
def table_from_args(args: argparse.Namespace, frames: int, size: int,
                    seed_specs: Sequence[ArchSpec] = ()) -> LatencyTable:
    """The table the latency options describe, for clips of ``frames x size^2``; ``seed_specs`` are measured
    first (an ``estimate`` table needs some measured blocks to fit its model)."""
    kwargs = dict(device=args.latency_device, backend=args.latency_backend, threads=args.latency_threads,
                  runs=args.latency_runs, cache_dir=args.latency_cache, on_missing=args.latency_predictor,
                  clock=getattr(args, "latency_clock", "wall"), stat=getattr(args, "latency_stat", "median"))
    if args.latency_resource:
        return build_on_resource(list(seed_specs), args.latency_resource, **kwargs) if seed_specs else \
            LatencyTable.open(frames, size, resource=args.latency_resource, **kwargs)
    table = LatencyTable.open(frames, size, **kwargs)
    if seed_specs:
        table.fill(seed_specs)
    return table


__all__ = ["LatencyTable", "Measurer", "OpModel", "network_blocks", "measure_blocks", "filter_by_latency",
           "build_on_resource", "parse_latency", "default_cache_dir", "cache_file_name", "key_to_str", "key_from_str",
           "add_latency_arguments", "table_from_args"]
