"""Measuring: a :class:`Measurer` times a module or a whole network on the target (PyTorch eager,
onnxruntime or CUDA), and :func:`measure_blocks` times the distinct blocks of specs.

A measurer with a ``resource`` measures on a node offering it instead: the transport to that node
(:func:`remote_call`, found through the entry-point group ``e3d.remote_measure``) is here because the
measurer uses it; what runs on the node is :mod:`e3d.latency.remote`.
"""
from __future__ import annotations

import contextlib
import platform
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from ..latency_options import BACKENDS, CLOCKS, DEVICES, STATS
from ..spec import ArchSpec
from .blocks import Key, block_modules, key_from_str, network_blocks


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def slug(text: str) -> str:
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
            return remote_names(self)[0]
        if self.device == "cuda":
            self._check_device()
            return "cuda-" + slug(torch.cuda.get_device_name(torch.cuda.current_device()))
        return "cpu-" + slug(cpu_name())

    @property
    def backend_name(self) -> str:
        if self.resource:
            return remote_names(self)[1]
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
        from ..export import onnx_bytes, onnx_latency

        data = onnx_bytes(module, x, dynamic_batch=False)
        return onnx_latency(data, threads=self.threads, warmup=self.warmup, runs=self.runs, device=self.device,
                            stat=self.stat, clock=self.clock)

    def network_ms(self, spec: ArchSpec, model: nn.Module | None = None) -> float:
        """End-to-end latency (ms) of ``spec``'s whole network, batch 1."""
        if self.resource:
            return remote_call(self, "measure", [spec])[0]
        from ..model import build_model

        model = model if model is not None else build_model(spec)
        return self.module_ms(model, (1, 3, spec.frames, spec.size, spec.size))


def measure_blocks(specs: Iterable[ArchSpec], measurer: Measurer,
                   skip: dict[Key, float] | None = None) -> dict[Key, float]:
    """Measure every block of ``specs`` not in ``skip``, each distinct key once (one model build per spec)."""
    from ..model import build_model

    out: dict[Key, float] = {}
    skip = skip or {}
    for spec in specs:
        if all(k in skip or k in out for k, _ in network_blocks(spec)):
            continue
        model = build_model(spec).eval()
        for key, module, shape in block_modules(spec, model):
            if key not in skip and key not in out:
                out[key] = measurer.module_ms(module, shape)
    return out


# -- the transport to a node picked by a resource ------------------------------------------------------------
_NAMES: dict[tuple, tuple[str, str, str]] = {}


def remote_call(measurer: Measurer, op: str, specs: Sequence[ArchSpec] = ()) -> Any:
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


def remote_names(measurer: Measurer) -> tuple[str, str, str]:
    key = (measurer.resource, measurer.device, measurer.backend)
    if key not in _NAMES:
        _NAMES[key] = tuple(remote_call(measurer, "names"))  # type: ignore[assignment]
    return _NAMES[key]
