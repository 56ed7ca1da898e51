"""The ``twostream`` family: a sparse and a dense stream of E3D blocks with searchable fusion blocks
(Auto-TSNet, "Searching for Two-Stream Models in Multivariate Space for Video Recognition", supplement §2).

The network reads one clip of ``T_D = input.frames`` frames (one decode). The sparse stream takes every
``alpha``-th frame (``T_S = ceil(T_D / alpha)``), the dense stream all of them, with fewer channels::

    x (B, 3, T_D, H, W)
     ├─ [:, :, ::alpha] ─ sparse stem ─ stage 0 ─ (+) ─ stage 1 ─ (+) ─ ... ─ (+) ─────────┐
     │                                              ↑               ↑            ↑          concat ─ head ─ FC
     └─────────────────── dense stem ── stage 0 ─ fuse 0 ─ stage 1 ─ fuse 1 ... ─┴─ pool ──┘
     (each dense stage feeds the next one and its fusion block; "pool": mean over alpha frames)

After sparse/dense stage ``i`` the fusion block ``fusion[i]`` maps the dense map ``[C_D, T_D, r, r]`` to
``[C_S, T_S, r, r]`` and adds it to the sparse map; its operation is one of

    tconv    time-strided convolution: depthwise 5x1x1 conv, temporal stride alpha; point-wise conv C_D -> C_S; BN
    tsample  time-strided sampling: every alpha-th frame; point-wise conv C_D -> C_S; BN
    t2c      time-to-channel: [C_D, T_D] -> [alpha * C_D, T_S] (time zero-padded to alpha * T_S); point-wise
             conv alpha * C_D -> C_S; BN
    skip     no fusion

The head (1x1x1 conv + BN + ReLU) reads the sparse map concatenated with the dense map averaged over each
window of ``alpha`` frames, so both streams always reach the classifier (SlowFast's concatenation, before the
X3D head conv rather than after the pool). Every stage is the E3D family's (:func:`e3d.families.e3d.create_stage`);
both streams use the same strides, so fusion maps line up spatially.

Spec (``docs/parsec.md``): ``input``, ``stem``, ``stages``, ``head``, ``classifier`` are the sparse stream's
(the head as above); family fields:

    "alpha":  4                                                      dense frames per sparse frame
    "dense":  {"stem": {"kernel": [1, 3, 3], "out": 8},              stride: the sparse stem's
               "stages": [{"kernel": .., "out": .., "bottleneck": .., "layers": ..}, ...]}   strides: the sparse stages'
    "fusion": ["tconv", "skip", "t2c", "tsample"]                    one per stage

Cost and entropy below count exactly what :func:`create_twostream` builds (``tests/test_family_twostream.py``).
The entropy score of the two streams (a choice of ours, ``docs/parsec.md``) is E3D's sum over every conv of
the plain network, both streams (each at its own frame count), the fusion convs and the head:
``1/2 sum_l ln(C_l kvol_l D_l) + ln(C_head)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ..cost import Cost, ceil_div
from ..spec import SpecError, StageSpec
from ..family import Family, register_family
from .e3d import create_stage, create_stem, log_kernel, stage_cost, stage_entropy

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..spec import ArchSpec, ConvSpec

FUSION_OPS = ("tconv", "tsample", "t2c", "skip")
TCONV_KERNEL = 5  # the time-strided convolution's temporal kernel (supplement §2: 5 x 1^2)


@dataclass(frozen=True)
class DenseStream:
    """The dense stream of a spec, parsed: stem width and kernel, and its stages (strides: the sparse ones)."""

    stem_kernel: tuple[int, int, int]
    stem_out: int
    stages: tuple[StageSpec, ...]


@dataclass(frozen=True)
class TwoStreamView:
    """What the cost, score and builder read from a ``twostream`` spec, parsed once per spec."""

    alpha: int
    dense: DenseStream
    fusion: tuple[str, ...]


def sparse_frames(frames: int, alpha: int) -> int:
    """``T_S``: frames ``0, alpha, 2 alpha, ...`` of a ``frames``-frame clip."""
    return ceil_div(frames, alpha)


def view(spec: "ArchSpec") -> TwoStreamView:
    """The family fields of ``spec`` (cached by value)."""
    return _view(spec.extra, tuple(s.stride for s in spec.stages), spec.stem.stride)


@lru_cache(maxsize=4096)
def _view(extra: Any, strides: tuple, stem_stride: tuple) -> TwoStreamView:
    from ..spec import thaw  # noqa: PLC0415

    fields = {k: thaw(v) for k, v in extra}
    dense = fields.get("dense") or {}
    stem = dense.get("stem") or {}
    stages = tuple(StageSpec(kernel=tuple(d["kernel"]), out=d["out"], bottleneck=d["bottleneck"], layers=d["layers"],
                             stride=tuple(strides[i]) if i < len(strides) else (1, 1, 1))
                   for i, d in enumerate(dense.get("stages") or []))
    return TwoStreamView(alpha=fields.get("alpha", 1),
                         dense=DenseStream(tuple(stem.get("kernel", (1, 3, 3))), stem.get("out", 0), stages),
                         fusion=tuple(fields.get("fusion") or ()))


def fusion_cost(op: str, c_dense: int, c_sparse: int, alpha: int, t_sparse: int, r: int) -> tuple[int, int, int]:
    """``(flops, params, conv layers)`` of one fusion block at a ``t_sparse x r x r`` output."""
    vox = t_sparse * r * r
    if op == "skip":
        return 0, 0, 0
    cin = alpha * c_dense if op == "t2c" else c_dense
    flops, params, layers = cin * c_sparse * vox, cin * c_sparse + 2 * c_sparse, 1
    if op == "tconv":
        flops, params, layers = flops + c_dense * TCONV_KERNEL * vox, params + c_dense * TCONV_KERNEL, 2
    return flops, params, layers


def network_cost(*, frames: int, size: int, alpha: int, stem: "ConvSpec", dense_stem: tuple[tuple[int, int, int], int],
                 stages: "tuple[StageSpec, ...]", dense_stages: "tuple[StageSpec, ...]", fusion: tuple[str, ...],
                 head: int, hidden: int, num_classes: int) -> Cost:
    """FLOPs, params and conv layers of a two-stream network from its parts (what :meth:`TwoStreamFamily.cost`
    reads from a spec; a search space calls it without building specs). Both stems share ``stem.stride``."""
    t_d, t_s = frames, sparse_frames(frames, alpha)
    size = ceil_div(size, stem.stride[1])
    flops = params = 0
    for kernel, out, t in ((stem.kernel, stem.out, t_s), (dense_stem[0], dense_stem[1], t_d)):
        kvol = kernel[0] * kernel[1] * kernel[2]
        flops += 3 * out * kvol * t * size * size
        params += 3 * out * kvol + 2 * out
    layers = 2
    c_s, c_d = stem.out, dense_stem[1]
    for sparse, dense, op in zip(stages, dense_stages, fusion):
        f, p, size_out = stage_cost(sparse, c_s, t_s, size)
        f2, p2, _ = stage_cost(dense, c_d, t_d, size)
        size, c_s, c_d = size_out, sparse.out, dense.out
        f3, p3, l3 = fusion_cost(op, c_d, c_s, alpha, t_s, size)
        flops, params = flops + f + f2 + f3, params + p + p2 + p3
        layers += 3 * (sparse.layers + dense.layers) + l3
    cin = c_s + c_d
    flops += cin * head * t_s * size * size + head * hidden + hidden * num_classes
    params += cin * head + 2 * head + (head + 1) * hidden + (hidden + 1) * num_classes
    return Cost(flops=flops, params=params, layers=layers + 1)


def fusion_entropy(op: str, c_dense: int, alpha: int) -> float:
    """``sum ln(C kvol D)`` of a fusion block's convs (spatial kernels 1: no refinement)."""
    if op == "skip":
        return 0.0
    if op == "t2c":
        return math.log(alpha * c_dense)
    return math.log(c_dense) + (math.log(TCONV_KERNEL) if op == "tconv" else 0.0)  # tconv: depthwise, C = 1


def _check_kernel(kernel: Any, where: str) -> tuple[int, int, int]:
    if not isinstance(kernel, (list, tuple)) or len(kernel) != 3 or not all(
            isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in kernel):
        raise SpecError(f"{where}: expected a list of 3 positive integers [t, h, w], got {kernel!r}")
    if kernel[1] != kernel[2]:
        raise SpecError(f"{where}: height and width must be equal (square kernels), got {list(kernel)}")
    if any(k % 2 == 0 for k in kernel):
        raise SpecError(f"{where}: sizes must be odd for 'same' padding, got {list(kernel)}")
    return tuple(kernel)  # type: ignore[return-value]


def _positive(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(f"{where}: expected a positive integer, got {value!r}")
    return value


def _mapping(value: Any, where: str, allowed: tuple[str, ...], required: tuple[str, ...]) -> dict:
    if not isinstance(value, dict):
        raise SpecError(f"{where}: expected an object, got {type(value).__name__} {value!r}")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise SpecError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(allowed)})")
    missing = [k for k in required if k not in value]
    if missing:
        raise SpecError(f"{where}: missing required key {missing[0]!r}")
    return value


class TwoStreamFamily(Family):
    name = "twostream"
    description = ("Auto-TSNet two-stream net: sparse + dense streams of E3D blocks, searchable fusion blocks "
                   "(tconv / tsample / t2c / skip)")
    arch_fields = ("alpha", "dense", "fusion")

    # -- spec ------------------------------------------------------------------------------------------
    def validate(self, spec: "ArchSpec", where: str) -> None:
        n = len(spec.stages)
        for key in self.arch_fields:
            if spec.get(key) is None:
                raise SpecError(f"{where}.{key}: a twostream spec needs {key!r}")
        _positive(spec.get("alpha"), f"{where}.alpha")
        dense = _mapping(spec.get("dense"), f"{where}.dense", ("stem", "stages"), ("stem", "stages"))
        stem = _mapping(dense["stem"], f"{where}.dense.stem", ("kernel", "out"), ("kernel", "out"))
        kt = _check_kernel(stem["kernel"], f"{where}.dense.stem.kernel")[0]
        _positive(stem["out"], f"{where}.dense.stem.out")
        if kt > spec.frames:
            raise SpecError(f"{where}.dense.stem.kernel: temporal size {kt} exceeds input frames {spec.frames}")
        stages = dense["stages"]
        if not isinstance(stages, list) or len(stages) != n:
            raise SpecError(f"{where}.dense.stages: expected a list of {n} stages (one per sparse stage), "
                            f"got {stages!r}")
        for i, d in enumerate(stages):
            w = f"{where}.dense.stages[{i}]"
            _mapping(d, w, ("kernel", "out", "bottleneck", "layers"), ("kernel", "out", "bottleneck", "layers"))
            kt = _check_kernel(d["kernel"], f"{w}.kernel")[0]
            for key in ("out", "bottleneck", "layers"):
                _positive(d[key], f"{w}.{key}")
            if kt > spec.frames:
                raise SpecError(f"{w}.kernel: temporal size {kt} exceeds input frames {spec.frames}")
        fusion = spec.get("fusion")
        if not isinstance(fusion, list) or len(fusion) != n:
            raise SpecError(f"{where}.fusion: expected a list of {n} fusion operations (one per stage), "
                            f"got {fusion!r}")
        for i, op in enumerate(fusion):
            if op not in FUSION_OPS:
                raise SpecError(f"{where}.fusion[{i}]: expected one of {', '.join(FUSION_OPS)}, got {op!r}")

    # -- cost ------------------------------------------------------------------------------------------
    def cost(self, spec: "ArchSpec") -> Cost:
        v = view(spec)
        return network_cost(frames=spec.frames, size=spec.size, alpha=v.alpha, stem=spec.stem,
                            dense_stem=(v.dense.stem_kernel, v.dense.stem_out), stages=spec.stages,
                            dense_stages=v.dense.stages, fusion=v.fusion, head=spec.head.out, hidden=spec.hidden,
                            num_classes=spec.num_classes)

    # -- entropy score ---------------------------------------------------------------------------------
    def entropy(self, spec: "ArchSpec", refine: bool) -> float:
        v = view(spec)
        t_d, t_s = spec.frames, sparse_frames(spec.frames, v.alpha)
        r = spec.size // spec.stem.stride[1]
        total = 2 * math.log(3) + log_kernel(spec.stem.kernel, t_s, r, refine) + \
            log_kernel(v.dense.stem_kernel, t_d, r, refine)
        c_s, c_d = spec.stem.out, v.dense.stem_out
        for sparse, dense, op in zip(spec.stages, v.dense.stages, v.fusion):
            r //= sparse.stride[1]
            total += stage_entropy(sparse, c_s, t_s, r, refine) + stage_entropy(dense, c_d, t_d, r, refine)
            c_s, c_d = sparse.out, dense.out
            total += fusion_entropy(op, c_d, v.alpha)
        total += math.log(c_s + c_d)  # head: 1x1x1 conv over both streams
        return 0.5 * total + math.log(spec.head.out)

    # -- torch -----------------------------------------------------------------------------------------
    def build(self, spec: "ArchSpec", *, dropout: float = 0.5) -> "nn.Module":
        return create_twostream(spec, dropout=dropout)


# -- builders ----------------------------------------------------------------------------------------
def create_fusion(*, op: str, c_dense: int, c_sparse: int, alpha: int) -> "nn.Module | None":
    """The fusion block ``op`` (None for ``skip``): ``(B, C_D, T_D, r, r) -> (B, C_S, ceil(T_D / alpha), r, r)``."""
    from torch import nn  # noqa: PLC0415

    if op not in FUSION_OPS:
        raise ValueError(f"unknown fusion operation {op!r}; choose one of {', '.join(FUSION_OPS)}")
    if op == "skip":
        return None
    cin = alpha * c_dense if op == "t2c" else c_dense
    layers: list[nn.Module] = []
    if op == "tconv":
        layers.append(nn.Conv3d(c_dense, c_dense, (TCONV_KERNEL, 1, 1), stride=(alpha, 1, 1),
                                padding=(TCONV_KERNEL // 2, 0, 0), groups=c_dense, bias=False))
    elif op == "tsample":
        layers.append(_classes()["TimeSample"](alpha))
    else:
        layers.append(_classes()["TimeToChannel"](alpha))
    layers += [nn.Conv3d(cin, c_sparse, 1, bias=False), nn.BatchNorm3d(c_sparse)]
    return nn.Sequential(*layers)


@lru_cache(maxsize=1)
def _classes() -> dict[str, type]:
    """The torch module classes of this family, defined on first use (``import e3d.cost`` stays torch-free)."""
    import torch  # noqa: PLC0415
    import torch.nn.functional as F  # noqa: PLC0415
    from torch import nn  # noqa: PLC0415

    class TimeSample(nn.Module):
        """Every ``alpha``-th frame: ``(B, C, T, H, W) -> (B, C, ceil(T / alpha), H, W)``."""

        def __init__(self, alpha: int):
            super().__init__()
            self.alpha = alpha

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :, ::self.alpha]

    class TimeToChannel(nn.Module):
        """``(B, C, T, H, W) -> (B, alpha * C, ceil(T / alpha), H, W)``: frames ``alpha t .. alpha t + alpha - 1``
        become channels ``c * alpha + a`` of frame ``t`` (time zero-padded at the end to a multiple of alpha)."""

        def __init__(self, alpha: int):
            super().__init__()
            self.alpha = alpha

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, c, t, h, w = x.shape
            a = self.alpha
            ts = -(-t // a)
            if ts * a != t:
                x = F.pad(x, (0, 0, 0, 0, 0, ts * a - t))
            return x.reshape(b, c, ts, a, h, w).transpose(2, 3).reshape(b, c * a, ts, h, w)

    class TemporalMeanPool(nn.Module):
        """Mean over windows of ``alpha`` frames: ``(B, C, T, H, W) -> (B, C, ceil(T / alpha), H, W)`` (the last
        window averages the frames it has)."""

        def __init__(self, alpha: int):
            super().__init__()
            self.alpha = alpha

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.alpha == 1:
                return x
            return F.avg_pool3d(x, (self.alpha, 1, 1), stride=(self.alpha, 1, 1), ceil_mode=True)

    class TwoStreamNet(nn.Module):
        """The network a ``twostream`` spec describes: ``(B, 3, T_D, S, S) -> (B, num_classes)`` logits."""

        def __init__(self, spec: "ArchSpec", dropout: float = 0.5):
            super().__init__()
            from ..blocks import Classifier, conv_bn  # noqa: PLC0415
            from ..network import init_weights  # noqa: PLC0415

            v = view(spec)
            self.spec, self.alpha, self.ops = spec, v.alpha, v.fusion
            self.stem = create_stem(out=spec.stem.out, kernel=spec.stem.kernel, stride=spec.stem.stride)
            self.dense_stem = create_stem(out=v.dense.stem_out, kernel=v.dense.stem_kernel, stride=spec.stem.stride)
            stages, dense, fusions = [], [], []
            c_s, c_d = spec.stem.out, v.dense.stem_out
            for s, d, op in zip(spec.stages, v.dense.stages, v.fusion):
                stages.append(create_stage(cin=c_s, out=s.out, bottleneck=s.bottleneck, layers=s.layers,
                                           kernel=s.kernel, stride=s.stride))
                dense.append(create_stage(cin=c_d, out=d.out, bottleneck=d.bottleneck, layers=d.layers,
                                          kernel=d.kernel, stride=d.stride))
                c_s, c_d = s.out, d.out
                fusions.append(create_fusion(op=op, c_dense=c_d, c_sparse=c_s, alpha=v.alpha) or nn.Identity())
            self.stages, self.dense_stages = nn.ModuleList(stages), nn.ModuleList(dense)
            self.fusions = nn.ModuleList(fusions)
            self.dense_pool = TemporalMeanPool(v.alpha)
            self.head = conv_bn(c_s + c_d, spec.head.out)
            self.classifier = Classifier(spec.head.out, spec.hidden, spec.num_classes, dropout)
            init_weights(self)

        def features(self, x: torch.Tensor) -> torch.Tensor:
            """``(B, 3, T_D, S, S) -> (B, head.out, T_S, S / 32, S / 32)`` (for the default strides)."""
            s, d = self.stem(x[:, :, ::self.alpha]), self.dense_stem(x)
            for stage, dense, fuse, op in zip(self.stages, self.dense_stages, self.fusions, self.ops):
                s, d = stage(s), dense(d)
                if op != "skip":
                    s = s + fuse(d)
            return self.head(torch.cat([s, self.dense_pool(d)], dim=1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(self.features(x))

    return {"TimeSample": TimeSample, "TimeToChannel": TimeToChannel, "TemporalMeanPool": TemporalMeanPool,
            "TwoStreamNet": TwoStreamNet}


def __getattr__(name: str) -> Any:  # ``from e3d.families.twostream import TwoStreamNet`` works too
    classes = _classes() if name in ("TimeSample", "TimeToChannel", "TemporalMeanPool", "TwoStreamNet") else {}
    if name in classes:
        return classes[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def create_twostream(spec: "ArchSpec", *, dropout: float = 0.5) -> "nn.Module":
    """The whole two-stream network of ``spec`` (a ``TwoStreamNet``)."""
    return _classes()["TwoStreamNet"](spec, dropout=dropout)


FAMILY = register_family(TwoStreamFamily())
