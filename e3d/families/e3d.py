"""The ``e3d`` family: the E3D paper's training network (Appendix F, DESIGN.md "Architecture spec").

    stem:  Conv3d 3 -> C (kernel, stride), BN, ReLU
    stage: ``layers`` inverted bottlenecks; block i:
             x ─┬─ 1x1x1 Cin->B, BN, ReLU ─ depthwise kt x k x k (stride on block 0), BN ─ [SE] ─ ReLU
                │  ─ 1x1x1 B->Cout, BN ─┐
                └────── shortcut ───────┴─ +
           SE (hidden :func:`e3d.cost.se_width`) on blocks 0, 2, 4, ...; shortcut: identity, 1x1x1 conv + BN
           where the width changes, average pooling where only the stride does.

Cost and entropy terms below count exactly what ``create_stem`` / ``create_stage`` build.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..cost import ceil_div, has_se, se_width
from ..scores import refinement
from ..family import Family, register_family

if TYPE_CHECKING:
    from torch import nn

    from ..spec import ArchSpec, StageSpec


def log_kernel(kernel: tuple[int, int, int], frames: int, r: int, refine: bool) -> float:
    """``ln(kt * k * k * D)`` with ``D`` the STEntr refinement factor (1 when ``refine`` is off)."""
    volume = kernel[0] * kernel[1] * kernel[2]
    return math.log(volume * refinement(frames, r, kernel)) if refine else math.log(volume)


def stage_cost(stage: "StageSpec", cin: int, frames: int, size_in: int) -> tuple[int, int, int]:
    """(flops, params, output spatial size) of one stage of inverted-bottleneck blocks."""
    b, out, kvol = stage.bottleneck, stage.out, stage.kernel[0] * stage.kernel[1] * stage.kernel[2]
    size_out = ceil_div(size_in, stage.stride[1])
    vox_in, vox_out = frames * size_in * size_in, frames * size_out * size_out
    se = se_width(b)
    se_flops, se_params = 2 * b * se, 2 * b * se + se + b
    n_se = (stage.layers + 1) // 2

    # the first block: cin -> b at the input resolution, strided depthwise, b -> out
    flops = cin * b * vox_in + (b * kvol + b * out) * vox_out
    params = cin * b + b * kvol + b * out + 2 * (2 * b + out)
    if cin != out:  # 1x1x1 projection on the residual path (strided like the block)
        flops += cin * out * vox_out
        params += cin * out + 2 * out
    # the remaining blocks: out -> b -> out at the output resolution
    rest = stage.layers - 1
    flops += rest * (out * b + b * kvol + b * out) * vox_out
    params += rest * (out * b + b * kvol + b * out + 2 * (2 * b + out))
    flops += n_se * se_flops
    params += n_se * se_params
    return flops, params, size_out


def stage_entropy(stage: "StageSpec", cin: int, frames: int, r: int, refine: bool) -> float:
    """Per block: 1x1 (C = block input) + depthwise (C = 1) + 1x1 (C = bottleneck)."""
    n, b, out = stage.layers, stage.bottleneck, stage.out
    return math.log(cin) + (n - 1) * math.log(out) + n * (log_kernel(stage.kernel, frames, r, refine) + math.log(b))


def create_stem(*, out: int, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> "nn.Module":
    """Dense conv 3 -> out, BN, ReLU: ``(B, 3, T, H, W) -> (B, out, T, ceil(H / s), ceil(W / s))``."""
    from ..blocks import conv_bn  # noqa: PLC0415

    return conv_bn(3, out, kernel=kernel, stride=stride)


def create_stage(*, cin: int, out: int, bottleneck: int, layers: int, kernel: tuple[int, int, int],
                 stride: tuple[int, int, int], act=None, post=None) -> "nn.Module":
    """``layers`` inverted bottlenecks: ``(B, cin, T, H, W) -> (B, out, T, ceil(H / s), ceil(W / s))``.

    ``act`` follows the depthwise conv (default ReLU), ``post`` the residual sum (default none).
    """
    from torch import nn  # noqa: PLC0415

    from ..blocks import InvertedBottleneck  # noqa: PLC0415

    return nn.Sequential(*[
        InvertedBottleneck(cin if i == 0 else out, bottleneck, out, kernel=kernel,
                           stride=stride if i == 0 else (1, 1, 1), se_hidden=se_width(bottleneck) if has_se(i) else None,
                           act=act or nn.ReLU, post=post or nn.Identity)
        for i in range(layers)])


class InvertedBottleneckFamily(Family):
    name = "e3d"
    description = "E3D's training network: dense stem, 3D inverted bottlenecks with SE, ReLU (Appendix F)"

    def stem_cost(self, spec: "ArchSpec", size_out: int) -> tuple[int, int, int]:
        stem = spec.stem
        kvol = stem.kernel[0] * stem.kernel[1] * stem.kernel[2]
        return 3 * stem.out * kvol * spec.frames * size_out * size_out, 3 * stem.out * kvol + 2 * stem.out, 1

    def stage_cost(self, stage: "StageSpec", cin: int, frames: int, size_in: int) -> tuple[int, int, int]:
        return stage_cost(stage, cin, frames, size_in)

    def stem_entropy(self, spec: "ArchSpec", r: int, refine: bool) -> float:
        return math.log(3) + log_kernel(spec.stem.kernel, spec.frames, r, refine)

    def stage_entropy(self, stage: "StageSpec", cin: int, frames: int, r: int, refine: bool) -> float:
        return stage_entropy(stage, cin, frames, r, refine)

    def create_stem(self, spec: "ArchSpec") -> "nn.Module":
        return create_stem(out=spec.stem.out, kernel=spec.stem.kernel, stride=spec.stem.stride)

    def create_stage(self, stage: "StageSpec", *, cin: int) -> "nn.Module":
        return create_stage(cin=cin, out=stage.out, bottleneck=stage.bottleneck, layers=stage.layers,
                            kernel=stage.kernel, stride=stage.stride)


FAMILY = register_family(InvertedBottleneckFamily())
