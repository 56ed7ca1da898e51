"""The ``e3d-fused`` family: E3D's blocks with a per-stage spatiotemporal *fusion unit* (Zhou et al., CVPR 2020,
"Spatiotemporal Fusion in 3D CNNs: A Probabilistic View"; ``docs/fusion.md``).

A stage's ``kernel`` ``[kt, k, k]`` gives the spatial size ``k`` and the temporal size ``kt`` of its
spatiotemporal conv; the stage field ``fusion`` picks which depthwise conv each block runs:

    S     depthwise 1 x k x k                        (spatial only; the stage's kernel must be [1, k, k])
    ST    depthwise kt x k x k                       (spatiotemporal; kt > 1)
    S+ST  depthwise 1 x k x k + depthwise kt x k x k  (both on the same input, summed, one BN; kt > 1)

               x ─┬─ 1x1x1 Cin->B, BN, ReLU ─┬─ dw 1 x k x k ───┐
                  │                          └─ dw kt x k x k ──┴─ + ─ BN ─ [SE] ─ ReLU ─ 1x1x1 B->Cout, BN ─┐
                  └────────────────────────── shortcut ──────────────────────────────────────────────────┴─ +

``fusion`` is one unit for the whole stage (``"S+ST"``) or a list with one unit per block. Without it a stage
is ``"ST"`` when ``kt > 1`` and ``"S"`` otherwise, so an ``e3d`` spec relabelled ``e3d-fused`` builds the
same network. Everything else (stem, SE, shortcuts, head, classifier) is :mod:`e3d.families.e3d`'s.

Cost: the S+ST depthwise pair costs ``B * (k^2 + kt * k^2)`` MACs per output voxel and as many weights (the
two convs share one BN). Entropy (E3D's score): the two branches see the same input and are summed, so the
output variance of the pair is the sum of the branches' (independent weights):
``term = ln(k^2 * D(1,k,k) + kt * k^2 * D(kt,k,k))`` in place of ``ln(kvol * D)`` (HomoEntr: ``D = 1``);
a single unit gives back the ``e3d`` term.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

from ..cost import ceil_div, has_se, se_width
from ..scores import refinement
from ..spec import SpecError, StageSpec, make_extra, thaw
from ..family import register_family
from .e3d import InvertedBottleneckFamily

if TYPE_CHECKING:
    from torch import nn

    from ..spec import ArchSpec

UNITS = ("S", "ST", "S+ST")
FIELD = "fusion"


# -- the field ------------------------------------------------------------------------------------------------
def default_unit(kernel: Sequence[int]) -> str:
    """The unit a stage without ``fusion`` has: its kernel's (``ST`` when ``kt > 1``, else ``S``)."""
    return "ST" if kernel[0] > 1 else "S"


def block_units(stage: StageSpec) -> list[str]:
    """The fusion unit of each block of ``stage`` (``stage.layers`` of them)."""
    value = stage.get(FIELD)
    if value is None:
        return [default_unit(stage.kernel)] * stage.layers
    if isinstance(value, str):
        return [value] * stage.layers
    return list(value)


def with_fusion(stage: StageSpec, units: str | Sequence[str], *, kt: int = 3) -> StageSpec:
    """``stage`` running ``units`` (one for the stage or one per block): the kernel becomes ``[1, k, k]`` when
    every block is ``S``, else ``[kt', k, k]`` with ``kt'`` the stage's own temporal size when it has one, else
    ``kt``. A list whose blocks all agree is stored as one string."""
    units = [units] * stage.layers if isinstance(units, str) else list(units)
    if len(units) != stage.layers:
        raise ValueError(f"{len(units)} fusion units for a stage of {stage.layers} blocks")
    k = stage.kernel[1]
    temporal = stage.kernel[0] if stage.kernel[0] > 1 else kt
    kernel = (1, k, k) if all(u == "S" for u in units) else (temporal, k, k)
    value: Any = units[0] if len(set(units)) == 1 else units
    extra = {name: thaw(v) for name, v in stage.extra} | {FIELD: value}
    return StageSpec(kernel=kernel, out=stage.out, bottleneck=stage.bottleneck, layers=stage.layers,
                     stride=stage.stride, extra=make_extra(extra))


def fusion_pattern(spec: "ArchSpec") -> str:
    """``S+ST/ST/S/...``: the units per stage (a stage with mixed blocks shows them joined by commas)."""
    parts = []
    for stage in spec.stages:
        units = block_units(stage) if spec.family == FusedFamily.name else [default_unit(stage.kernel)] * stage.layers
        parts.append(units[0] if len(set(units)) == 1 else ",".join(units))
    return "/".join(parts)


def _unit_kernels(unit: str, kernel: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """The depthwise kernels a block of ``unit`` runs (summed when two)."""
    kt, k, _ = kernel
    return {"S": [(1, k, k)], "ST": [(kt, k, k)], "S+ST": [(1, k, k), (kt, k, k)]}[unit]


# -- cost and entropy -----------------------------------------------------------------------------------------
def stage_cost(stage: StageSpec, cin: int, frames: int, size_in: int) -> tuple[int, int, int]:
    """(flops, params, output spatial size) of one stage, block by block."""
    b, out = stage.bottleneck, stage.out
    size_out = ceil_div(size_in, stage.stride[1])
    vox_in, vox_out = frames * size_in * size_in, frames * size_out * size_out
    se = se_width(b)
    flops = params = 0
    for i, unit in enumerate(block_units(stage)):
        c = cin if i == 0 else out
        kvol = sum(kt * kh * kw for kt, kh, kw in _unit_kernels(unit, stage.kernel))
        flops += c * b * (vox_in if i == 0 else vox_out) + (b * kvol + b * out) * vox_out
        params += c * b + b * kvol + b * out + 2 * (2 * b + out)  # three BNs (the S+ST pair shares one)
        if has_se(i):
            flops += 2 * b * se
            params += 2 * b * se + se + b
    if cin != out:  # 1x1x1 projection on the residual path of the first block
        flops += cin * out * vox_out
        params += cin * out + 2 * out
    return flops, params, size_out


def log_unit(unit: str, kernel: tuple[int, int, int], frames: int, r: int, refine: bool) -> float:
    """``ln(sum over the unit's branches of kvol * D)``: the depthwise term of one block."""
    total = 0.0
    for kk in _unit_kernels(unit, kernel):
        volume = kk[0] * kk[1] * kk[2]
        total += volume * (refinement(frames, r, kk) if refine else 1.0)
    return math.log(total)


def stage_entropy(stage: StageSpec, cin: int, frames: int, r: int, refine: bool) -> float:
    """Per block: 1x1 (C = block input) + depthwise unit (C = 1) + 1x1 (C = bottleneck)."""
    b, out = stage.bottleneck, stage.out
    total = 0.0
    for i, unit in enumerate(block_units(stage)):
        total += math.log(cin if i == 0 else out) + log_unit(unit, stage.kernel, frames, r, refine) + math.log(b)
    return total


# -- torch ------------------------------------------------------------------------------------------------------
def create_stage(*, cin: int, out: int, bottleneck: int, kernel: tuple[int, int, int],
                 stride: tuple[int, int, int], units: Sequence[str]) -> "nn.Module":
    """One block per entry of ``units``: ``(B, cin, T, H, W) -> (B, out, T, ceil(H / s), ceil(W / s))``."""
    from torch import nn  # noqa: PLC0415

    from ..blocks import InvertedBottleneck  # noqa: PLC0415

    blocks = []
    for i, unit in enumerate(units):
        c, s = (cin, stride) if i == 0 else (out, (1, 1, 1))
        se = se_width(bottleneck) if has_se(i) else None
        if unit == "S+ST":
            fused = _torch_blocks()["FusedBottleneck"]
            blocks.append(fused(c, bottleneck, out, k=kernel[1], kt=kernel[0], stride=s, se_hidden=se))
        else:
            blocks.append(InvertedBottleneck(c, bottleneck, out, kernel=_unit_kernels(unit, kernel)[0], stride=s,
                                             se_hidden=se))
    return nn.Sequential(*blocks)


def _torch_blocks() -> dict[str, type]:
    """The torch modules of the S+ST block, defined on first use (``import e3d`` stays free of torch)."""
    if _TORCH:
        return _TORCH
    from torch import nn  # noqa: PLC0415

    from ..blocks import InvertedBottleneck, same_padding  # noqa: PLC0415

    class FusedDepthwise(nn.Module):
        """S+ST depthwise pair: ``bn(dw_1xkxk(x) + dw_ktxkxk(x))``, ``(B, C, T, H, W) -> (B, C, T, H', W')``."""

        def __init__(self, channels: int, *, k: int, kt: int, stride: tuple[int, int, int]):
            super().__init__()
            s_kernel, st_kernel = (1, k, k), (kt, k, k)
            self.spatial = nn.Conv3d(channels, channels, s_kernel, stride=stride, padding=same_padding(s_kernel),
                                     groups=channels, bias=False)
            self.spatiotemporal = nn.Conv3d(channels, channels, st_kernel, stride=stride,
                                            padding=same_padding(st_kernel), groups=channels, bias=False)
            self.bn = nn.BatchNorm3d(channels)

        def forward(self, x):
            return self.bn(self.spatial(x) + self.spatiotemporal(x))

    class FusedBottleneck(InvertedBottleneck):
        """:class:`e3d.blocks.InvertedBottleneck` whose depthwise conv is the S+ST pair."""

        def __init__(self, cin: int, bottleneck: int, cout: int, *, k: int, kt: int, stride: tuple[int, int, int],
                     se_hidden: int | None):
            super().__init__(cin, bottleneck, cout, kernel=(1, k, k), stride=stride, se_hidden=se_hidden)
            self.depthwise = FusedDepthwise(bottleneck, k=k, kt=kt, stride=stride)

    for cls in (FusedDepthwise, FusedBottleneck):
        cls.__module__, cls.__qualname__ = __name__, cls.__name__  # picklable as e3d.families.fused.<name>
    _TORCH.update(FusedDepthwise=FusedDepthwise, FusedBottleneck=FusedBottleneck)
    return _TORCH


_TORCH: dict[str, type] = {}


def __getattr__(name: str) -> Any:  # PEP 562: FusedDepthwise / FusedBottleneck on first access
    if name in ("FusedDepthwise", "FusedBottleneck"):
        return _torch_blocks()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- the family -------------------------------------------------------------------------------------------------
class FusedFamily(InvertedBottleneckFamily):
    name = "e3d-fused"
    description = "E3D's blocks with a fusion unit per stage or block: S (1xkxk), ST (ktxkxk) or S+ST (both, summed)"
    stage_fields = (FIELD,)

    def validate(self, spec: "ArchSpec", where: str) -> None:
        for i, stage in enumerate(spec.stages):
            w = f"{where}.stages[{i}]"
            value = stage.get(FIELD)
            if value is not None:
                values = [value] if isinstance(value, str) else value
                if not isinstance(values, list) or not values:
                    raise SpecError(f"{w}.{FIELD}: expected one of {', '.join(UNITS)} or a list of them, got {value!r}")
                if not isinstance(value, str) and len(values) != stage.layers:
                    raise SpecError(f"{w}.{FIELD}: {len(values)} units for {stage.layers} blocks")
                bad = [v for v in values if v not in UNITS]
                if bad:
                    raise SpecError(f"{w}.{FIELD}: expected one of {', '.join(UNITS)}, got {bad[0]!r}")
            units = block_units(stage)
            temporal = any(u != "S" for u in units)
            if temporal and stage.kernel[0] == 1:
                raise SpecError(f"{w}.kernel: units {sorted(set(units))} need a temporal size > 1, got "
                                f"{list(stage.kernel)}")
            if not temporal and stage.kernel[0] != 1:
                raise SpecError(f"{w}.kernel: an S-only stage has kernel [1, k, k], got {list(stage.kernel)}")

    def stage_cost(self, stage: StageSpec, cin: int, frames: int, size_in: int) -> tuple[int, int, int]:
        return stage_cost(stage, cin, frames, size_in)

    def stage_entropy(self, stage: StageSpec, cin: int, frames: int, r: int, refine: bool) -> float:
        return stage_entropy(stage, cin, frames, r, refine)

    def create_stage(self, stage: StageSpec, *, cin: int) -> "nn.Module":
        return create_stage(cin=cin, out=stage.out, bottleneck=stage.bottleneck, kernel=stage.kernel,
                            stride=stage.stride, units=block_units(stage))


FAMILY = register_family(FusedFamily())
