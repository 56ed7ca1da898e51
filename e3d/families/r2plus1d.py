"""The ``r2plus1d`` family: (2+1)D networks with temporally dilated stack layers (Zhou et al., ACML 2021).

The differentiable video NAS of ``docs/dnas.md`` searches this family (:mod:`e3d.dnas`). Every layer is the
paper's *basic operation* (Fig. 1): a ``1 x k x k`` spatial conv and a ``kt x 1 x 1`` temporal conv whose
dilation is 1, 2 or 4 (Table 2)::

    basic op (cin -> out, stride s, dilation d):
        x ─ Conv 1xkxk cin->mid (stride 1,s,s) ─ BN ─ ReLU ─ Conv kt x1x1 mid->out (dilation d) ─ BN ─ ...

    stem:   basic op 3 -> stem.out (d = 1, mid = stem.out), ReLU                  (fixed, not searched)
    stage:  head layer:  basic op cin -> out, the stage's stride, d = 1, ReLU    (the searched width)
            stack layer: x ─┬─ basic op out -> out, stride 1, dilation d ─┐
                            └─────────────── identity ──────────────────┴─ + ─ ReLU
    head:   1x1x1 conv -> head.out, BN, ReLU; classifier as every family (pool, fc, ReLU, dropout, fc)

Spec fields: a stage's ``kernel`` is ``[kt, k, k]`` (temporal, spatial sizes of every basic op of the stage),
``out`` its width, ``bottleneck`` the width ``mid`` between the spatial and the temporal conv of each op,
``layers`` = 1 (the head layer) + the number of stack layers, and the family field ``dilations`` lists the
temporal dilation of each stack layer (``len == layers - 1``; absent: all 1, i.e. plain R(2+1)D). The stem's
``kernel`` ``[kt, k, k]`` and ``stride`` make its basic op (mid = out).

Entropy terms (E3D's ``1/2 ln(C kt k k D)`` per conv): the spatial conv of an op adds ``ln(cin k^2 D)``, the
temporal conv ``ln(mid kt)``. ``D`` (STEntr's refinement factor; 1 for HomoEntr) is computed once per op for its
receptive field, the dense kernel ``[d (kt - 1) + 1, k, k]``: dilation widens the window the op sees in time
without adding weights, so it enters the factor and not the volume. The temporal conv alone has spatial kernel
1, hence ``D = 1`` by E3D's rule. ``docs/dnas.md`` says why.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

from ..cost import ceil_div
from ..scores import refinement
from ..spec import SpecError
from ..family import Family, register_family

if TYPE_CHECKING:
    from torch import nn

    from ..spec import ArchSpec, StageSpec

Triple = tuple[int, int, int]
CONVS_PER_OP = 2


# -- counting ------------------------------------------------------------------------------------------
def receptive_kernel(kernel: Triple, dilation: int) -> Triple:
    """The dense kernel whose window a dilated (2+1)D op covers: ``[d (kt - 1) + 1, k, k]``."""
    kt, k, _ = kernel
    return (dilation * (kt - 1) + 1, k, k)


def op_cost(cin: int, mid: int, out: int, kernel: Triple, frames: int, size_out: int) -> tuple[int, int]:
    """``(MACs, params)`` of one basic op (two convs + two BN) producing ``out x frames x size_out^2``.
    Dilation and padding change neither."""
    kt, k, _ = kernel
    vox = frames * size_out * size_out
    flops = (cin * mid * k * k + mid * out * kt) * vox
    params = cin * mid * k * k + mid * out * kt + 2 * (mid + out)
    return flops, params


def op_entropy(cin: int, mid: int, kernel: Triple, dilation: int, frames: int, r: int, refine: bool) -> float:
    """``ln(cin k^2 D) + ln(mid kt)``: the two convs' terms (before the score's factor 1/2)."""
    kt, k, _ = kernel
    factor = refinement(frames, r, receptive_kernel(kernel, dilation)) if refine else 1.0
    return math.log(cin * k * k * factor) + math.log(mid * kt)


def stage_dilations(stage: "StageSpec") -> list[int]:
    """The stack layers' dilations (all 1 when the spec leaves them out)."""
    dil = stage.get("dilations")
    return [1] * (stage.layers - 1) if dil is None else [int(d) for d in dil]


# -- torch ---------------------------------------------------------------------------------------------
def create_basic_op(*, cin: int, mid: int, out: int, kernel: Triple, stride: int = 1, dilation: int = 1,
                    last_act: bool = True) -> "nn.Sequential":
    """The basic operation: ``(B, cin, T, H, W) -> (B, out, T, ceil(H / s), ceil(W / s))``.

    ``Conv 1xkxk (stride s) -> BN -> ReLU -> Conv kt x1x1 (dilation d, 'same' padding d * (kt // 2)) -> BN
    [-> ReLU]``."""
    from torch import nn  # noqa: PLC0415

    kt, k, _ = kernel
    layers: list[nn.Module] = [
        nn.Conv3d(cin, mid, (1, k, k), stride=(1, stride, stride), padding=(0, k // 2, k // 2), bias=False),
        nn.BatchNorm3d(mid), nn.ReLU(),
        nn.Conv3d(mid, out, (kt, 1, 1), padding=(dilation * (kt // 2), 0, 0), dilation=(dilation, 1, 1), bias=False),
        nn.BatchNorm3d(out)]
    if last_act:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _make_residual_class():
    from torch import nn  # noqa: PLC0415

    class DilatedResidual(nn.Module):
        """A stack layer: ``relu(x + op(x))`` with ``op`` a stride-1 basic op, shape-preserving."""

        def __init__(self, op: nn.Module):
            super().__init__()
            self.op = op

        def forward(self, x):
            return (x + self.op(x)).relu()

    DilatedResidual.__module__, DilatedResidual.__qualname__ = __name__, "DilatedResidual"
    return DilatedResidual


def __getattr__(name: str):
    """``DilatedResidual`` is made on first use (torch stays out of ``import e3d``) and then lives here, so
    pickle finds it as ``e3d.families.r2plus1d.DilatedResidual``."""
    if name == "DilatedResidual":
        cls = globals()["DilatedResidual"] = _make_residual_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def residual_class():
    """The stack-layer module class."""
    return __getattr__("DilatedResidual") if "DilatedResidual" not in globals() else globals()["DilatedResidual"]


def create_stack_layer(*, width: int, mid: int, kernel: Triple, dilation: int) -> "nn.Module":
    """``relu(x + basic_op(x))``: ``(B, width, T, H, W) -> (B, width, T, H, W)``."""
    return residual_class()(create_basic_op(cin=width, mid=mid, out=width, kernel=kernel, dilation=dilation,
                                            last_act=False))


def create_stage(*, cin: int, out: int, mid: int, kernel: Triple, stride: int,
                 dilations: Sequence[int]) -> "nn.Sequential":
    """Head layer then one stack layer per dilation: ``(B, cin, T, H, W) -> (B, out, T, ceil(H/s), ceil(W/s))``."""
    from torch import nn  # noqa: PLC0415

    return nn.Sequential(create_basic_op(cin=cin, mid=mid, out=out, kernel=kernel, stride=stride),
                         *[create_stack_layer(width=out, mid=mid, kernel=kernel, dilation=d) for d in dilations])


def zero_init_stack_layers(model: "nn.Module") -> None:
    """Zero the last BN of every stack layer: each starts as its identity path (as E3D's blocks do)."""
    from torch import nn  # noqa: PLC0415

    cls = residual_class()
    for m in model.modules():
        if isinstance(m, cls):
            nn.init.zeros_(m.op[-1].weight)


# -- the family ----------------------------------------------------------------------------------------
class R2Plus1DFamily(Family):
    name = "r2plus1d"
    description = "(2+1)D basic ops with temporal dilation 1/2/4 (Zhou et al. 2021's DNAS search space)"
    stage_fields = ("dilations",)

    def validate(self, spec: "ArchSpec", where: str) -> None:
        for i, stage in enumerate(spec.stages):
            dil = stage.get("dilations")
            if dil is None:
                continue
            w = f"{where}.stages[{i}].dilations"
            if not isinstance(dil, list) or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dil):
                raise SpecError(f"{w}: expected a list of positive integers (one temporal dilation per stack "
                                f"layer), got {dil!r}")
            if len(dil) != stage.layers - 1:
                raise SpecError(f"{w}: {len(dil)} dilations for {stage.layers} layers; a stage has one head layer "
                                f"and layers - 1 = {stage.layers - 1} stack layers")

    def layers_per_block(self) -> int:
        return CONVS_PER_OP

    def stem_cost(self, spec: "ArchSpec", size_out: int) -> tuple[int, int, int]:
        c = spec.stem.out
        flops, params = op_cost(3, c, c, spec.stem.kernel, spec.frames, size_out)
        return flops, params, CONVS_PER_OP

    def stage_cost(self, stage: "StageSpec", cin: int, frames: int, size_in: int) -> tuple[int, int, int]:
        size_out = ceil_div(size_in, stage.stride[1])
        out, mid = stage.out, stage.bottleneck
        flops, params = op_cost(cin, mid, out, stage.kernel, frames, size_out)
        f, p = op_cost(out, mid, out, stage.kernel, frames, size_out)
        n = stage.layers - 1
        return flops + n * f, params + n * p, size_out

    def stem_entropy(self, spec: "ArchSpec", r: int, refine: bool) -> float:
        return op_entropy(3, spec.stem.out, spec.stem.kernel, 1, spec.frames, r, refine)

    def stage_entropy(self, stage: "StageSpec", cin: int, frames: int, r: int, refine: bool) -> float:
        total = op_entropy(cin, stage.bottleneck, stage.kernel, 1, frames, r, refine)
        for d in stage_dilations(stage):
            total += op_entropy(stage.out, stage.bottleneck, stage.kernel, d, frames, r, refine)
        return total

    def create_stem(self, spec: "ArchSpec") -> "nn.Module":
        c = spec.stem.out
        return create_basic_op(cin=3, mid=c, out=c, kernel=spec.stem.kernel, stride=spec.stem.stride[1])

    def create_stage(self, stage: "StageSpec", *, cin: int) -> "nn.Module":
        return create_stage(cin=cin, out=stage.out, mid=stage.bottleneck, kernel=stage.kernel,
                            stride=stage.stride[1], dilations=stage_dilations(stage))

    def build(self, spec: "ArchSpec", *, dropout: float = 0.5) -> "nn.Module":
        model = super().build(spec, dropout=dropout)
        zero_init_stack_layers(model)
        return model


FAMILY = register_family(R2Plus1DFamily())
