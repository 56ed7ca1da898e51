"""Export a spec or a trained candidate: ONNX (checked against PyTorch with onnxruntime), ``torch.export``.

    model, spec = load_network(source)                  # a spec, a zoo name's spec, or a trained run folder
    report = export_onnx(model, "e3d-s.onnx")           # writes the file, checks it, returns an ExportReport
    onnx_latency("e3d-s.onnx", threads=1)               # median ms of one clip through onnxruntime

ONNX is written by PyTorch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``): it exports
every zoo network as it is (opset 17, BN folded into the convs by constant folding) without the extra
``onnxscript`` dependency the ``torch.export``-based exporter needs; PyTorch 2.13 marks it deprecated, which is
why the call silences that one warning. The graph has one input ``clip`` ``(batch, 3, frames, size, size)``
with a dynamic batch axis and one output ``logits`` ``(batch, num_classes)``. :func:`export_program` writes
the same network as a ``torch.export`` program (``.pt2``, loadable with ``torch.export.load``) for
PyTorch-side deployment.

A trained candidate is read from what :mod:`pipeline.train` leaves behind, without importing Ray or MLflow:
the candidate folder (``spec.json``, ``result.json`` whose ``checkpoint`` names the final checkpoint), a Ray
Train run folder (``checkpoint_*`` sub-folders), a checkpoint folder, or the checkpoint's ``state.pt`` itself
(a ``torch.save`` dict with ``model``, ``spec``, ``dropout``: see ``pipeline/train/loop.py``).

Nothing here is imported by the rest of :mod:`e3d`: ``onnx`` and ``onnxruntime`` (the ``export`` extra) are
imported when a function needs them.
"""
from __future__ import annotations

import io
import json
import os
import statistics
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .model import VideoNet, build_model
from .spec import ArchSpec, SpecError, load_spec

DEFAULT_OPSET = 17
STATE_FILE = "state.pt"     # pipeline.train.loop.STATE_FILE
RESULT_FILE = "result.json"  # pipeline.train.trainer.RESULT_FILE
CHECK_TOLERANCE = 1e-4
INPUT_NAME, OUTPUT_NAME = "clip", "logits"


class ExportError(ValueError):
    """Bad export input (no such run folder, no checkpoint, ...); the message says which."""


# -- sources ----------------------------------------------------------------------------------------------
def _latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest ``checkpoint_*`` folder holding a ``state.pt`` under a Ray Train run folder."""
    found = [p.parent for p in run_dir.glob(f"checkpoint_*/{STATE_FILE}")]
    return max(found, key=lambda p: (p.stat().st_mtime, p.name)) if found else None


def find_checkpoint(path: str | os.PathLike) -> Path:
    """The ``state.pt`` of a trained candidate given any of the folders training writes (see module doc)."""
    path = Path(path)
    if path.is_file():
        if path.name == STATE_FILE:
            return path
        raise ExportError(f"{path}: expected a run folder or a {STATE_FILE} checkpoint file")
    if not path.is_dir():
        raise ExportError(f"{path}: no such file or folder")
    if (path / STATE_FILE).is_file():
        return path / STATE_FILE
    result = path / RESULT_FILE
    if result.is_file():
        try:
            data = json.loads(result.read_text())
        except json.JSONDecodeError as exc:
            raise ExportError(f"{result}: not valid JSON ({exc.msg})") from None
        for key in ("checkpoint", "run_dir"):
            where = data.get(key)
            if where and Path(where).is_dir():
                ckpt = Path(where) / STATE_FILE if (Path(where) / STATE_FILE).is_file() else _latest_checkpoint(
                    Path(where))
                if ckpt is not None:
                    return ckpt if ckpt.name == STATE_FILE else ckpt / STATE_FILE
        if data.get("error"):
            raise ExportError(f"{path}: the candidate failed to train ({str(data['error']).splitlines()[0]})")
        raise ExportError(f"{path}: {RESULT_FILE} names no checkpoint that exists "
                          f"(checkpoint={data.get('checkpoint')!r}, run_dir={data.get('run_dir')!r})")
    latest = _latest_checkpoint(path)
    if latest is None:
        raise ExportError(f"{path}: no {STATE_FILE}, {RESULT_FILE} or checkpoint_*/{STATE_FILE} in this folder")
    return latest / STATE_FILE


def load_trained(path: str | os.PathLike) -> tuple[VideoNet, ArchSpec]:
    """The trained network (eval mode, CPU) and its spec, from a run/candidate/checkpoint folder or file."""
    ckpt = find_checkpoint(path)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or "model" not in state or "spec" not in state:
        raise ExportError(f"{ckpt}: not a training checkpoint (expected a dict with 'model' and 'spec')")
    spec = ArchSpec.from_dict(state["spec"], where=f"{ckpt}:spec")
    model = build_model(spec, dropout=float(state.get("dropout", 0.5)))
    model.load_state_dict(state["model"])
    return model.eval(), spec


def load_network(source: ArchSpec | str | os.PathLike, *, frames: int | None = None,
                 size: int | None = None) -> tuple[VideoNet, ArchSpec]:
    """``(model in eval mode, spec)`` for a spec, a spec JSON file or a trained run folder; ``frames`` /
    ``size`` override the clip the spec describes (a network runs at any clip size; FLOPs/latency change)."""
    if isinstance(source, ArchSpec):
        spec = source
        model = None
    elif Path(source).is_dir() or Path(source).name == STATE_FILE:
        model, spec = load_trained(source)
    else:
        spec = load_spec(source)
        model = None
    if frames or size:
        spec = spec.with_input(frames, size)
        if model is not None:
            model.spec = spec
    return (model if model is not None else build_model(spec).eval()), spec


def randomize_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """Trained-like random weights, in place: BN statistics and affine pairs away from (0, 1), every residual
    branch's last BN small but non-zero, linear layers at unit gain; logits stay O(1) even for E3D-L.

    The builder's initial weights zero each branch's last BN (each block starts as its shortcut) and give
    BN the identity statistics, so a check with them would not see most of the graph; checks use these.
    """
    from .model import InvertedBottleneck

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm3d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.2 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.in_features ** 0.5)
        for m in model.modules():
            if isinstance(m, InvertedBottleneck):
                bn = m.project[1]
                bn.weight.copy_(0.05 + 0.2 * torch.rand(bn.num_features, generator=g))
    return model


def example_input(spec: ArchSpec, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """A reproducible random clip ``(batch, 3, frames, size, size)``."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, spec.frames, spec.size, spec.size, generator=g)


# -- ONNX -------------------------------------------------------------------------------------------------
def onnx_bytes(module: nn.Module, example: torch.Tensor, *, opset: int = DEFAULT_OPSET,
               dynamic_batch: bool = True) -> bytes:
    """The ONNX model of ``module`` (in eval mode) traced on ``example``, as bytes."""
    module = module.eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        with torch.no_grad():
            torch.onnx.export(module, (example,), buf, dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True,
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
                              if dynamic_batch else None)
    return buf.getvalue()


def ort_session(model: str | os.PathLike | bytes, *, threads: int | None = 1, device: str = "cpu"):
    """An onnxruntime session (CPU provider; CUDA first when ``device == "cuda"`` and it is available)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ExportError("onnxruntime has no CUDA provider here (install onnxruntime-gpu)")
        providers.insert(0, "CUDAExecutionProvider")
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=opts, providers=providers)


def check_onnx(model_path: str | os.PathLike | bytes, module: nn.Module, example: torch.Tensor, *,
               threads: int | None = 1) -> tuple[float, float]:
    """``(max |onnx - torch|, max |torch|)`` on ``example``, the PyTorch module in eval mode."""
    import numpy as np

    sess = ort_session(model_path, threads=threads)
    got = sess.run(None, {INPUT_NAME: example.numpy()})[0]
    with torch.no_grad():
        ref = module.eval()(example).numpy()
    if got.shape != ref.shape:
        raise AssertionError(f"ONNX output shape {got.shape} differs from PyTorch's {ref.shape}")
    return float(np.abs(got - ref).max()), float(np.abs(ref).max())


@dataclass
class ExportReport:
    """What :func:`export_onnx` did: the file, its check against PyTorch and (optionally) its latency."""

    path: str
    name: str
    input: list[int]            # [batch, 3, frames, size, size] of the check
    opset: int
    bytes: int
    export_s: float
    max_abs_diff: float | None = None
    max_abs_ref: float | None = None
    tolerance: float = CHECK_TOLERANCE
    onnx_ms: float | None = None
    torch_ms: float | None = None
    threads: int | None = None

    @property
    def ok(self) -> bool:
        return self.max_abs_diff is None or self.max_abs_diff <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok}


def export_onnx(spec_or_model: ArchSpec | nn.Module, path: str | os.PathLike, *, frames: int | None = None,
                size: int | None = None, opset: int = DEFAULT_OPSET, check: bool = True,
                tolerance: float = CHECK_TOLERANCE, seed: int = 0, threads: int | None = 1) -> ExportReport:
    """Write ``spec_or_model`` (a spec: built with its initial weights; a ``VideoNet``: as it is) as ONNX.

    ``frames``/``size`` set the clip the graph is traced and checked with (default: the spec's). With
    ``check``, run a seeded random clip through onnxruntime and PyTorch (eval mode) and record the largest
    absolute difference; :attr:`ExportReport.ok` says whether it is within ``tolerance``.
    """
    if isinstance(spec_or_model, ArchSpec):
        model, spec = load_network(spec_or_model, frames=frames, size=size)
    else:
        model = spec_or_model.eval()
        spec = getattr(model, "spec", None)
        if not isinstance(spec, ArchSpec):
            raise ExportError("export_onnx: a module without a .spec needs to be a VideoNet (build_model)")
        if frames or size:
            spec = spec.with_input(frames, size)
    x = example_input(spec, seed=seed)
    t0 = time.perf_counter()
    data = onnx_bytes(model, x, opset=opset)
    export_s = time.perf_counter() - t0
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    report = ExportReport(path=str(path), name=spec.name, input=list(x.shape), opset=opset, bytes=len(data),
                          export_s=export_s, tolerance=tolerance, threads=threads)
    if check:
        report.max_abs_diff, report.max_abs_ref = check_onnx(data, model, x, threads=threads)
    return report


def onnx_latency(model: str | os.PathLike | bytes, *, threads: int | None = 1, warmup: int = 3, runs: int = 10,
                 device: str = "cpu", batch: int = 1, stat: str = "median", clock: str = "wall") -> float:
    """Milliseconds of one forward pass through onnxruntime on a random clip of the graph's shape: the median
    (or, ``stat="min"``, the fastest) of ``runs`` timed runs after ``warmup``. ``clock="cpu"`` times this
    thread's CPU time instead of the wall clock (with ``threads=1`` onnxruntime computes on the calling
    thread), which a CPU shared with other work does not inflate."""
    import numpy as np

    sess = ort_session(model, threads=threads, device=device)
    inp = sess.get_inputs()[0]
    shape = [batch if not isinstance(d, int) else d for d in inp.shape]
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    feed = {inp.name: x}
    for _ in range(warmup):
        sess.run(None, feed)
    timer = time.thread_time if clock == "cpu" else time.perf_counter
    times = []
    for _ in range(runs):
        t0 = timer()
        sess.run(None, feed)
        times.append(timer() - t0)
    return 1000 * (min(times) if stat == "min" else statistics.median(times))


# -- torch.export -----------------------------------------------------------------------------------------
def export_program(spec_or_model: ArchSpec | nn.Module, path: str | os.PathLike, *, frames: int | None = None,
                   size: int | None = None, seed: int = 0) -> tuple[Path, float]:
    """Write the network as a ``torch.export`` program (``.pt2``); returns the path and the largest absolute
    difference between the reloaded program and the module on a random clip."""
    if isinstance(spec_or_model, ArchSpec):
        model, spec = load_network(spec_or_model, frames=frames, size=size)
    else:
        model, spec = spec_or_model.eval(), spec_or_model.spec
        if frames or size:
            spec = spec.with_input(frames, size)
    x = example_input(spec, seed=seed)
    with torch.no_grad():
        program = torch.export.export(model, (x,))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(path))
    loaded = torch.export.load(str(path)).module()
    with torch.no_grad():
        diff = float((loaded(x) - model(x)).abs().max())
    return path, diff


__all__ = ["ExportError", "ExportReport", "export_onnx", "export_program", "check_onnx", "onnx_latency",
           "onnx_bytes", "ort_session", "load_network", "load_trained", "find_checkpoint", "example_input",
           "randomize_weights", "SpecError"]
