"""The ``x3d`` family: X3D's variant of the E3D blocks (Feichtenhofer, CVPR 2020), for the zoo's baselines.

Two differences from :mod:`e3d.families.e3d`:

    stem:  Conv3d 3 -> C (1 x k x k, stride) ─ depthwise 5x1x1 temporal conv ─ BN ─ ReLU
    block: swish (SiLU) after the depthwise conv + SE, and ReLU after the residual sum
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..family import register_family
from .e3d import InvertedBottleneckFamily, create_stage

if TYPE_CHECKING:
    from torch import nn

    from ..spec import ArchSpec, StageSpec

STEM_TEMPORAL_KERNEL = 5


def create_stem(*, out: int, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> "nn.Module":
    """Conv 3 -> out, depthwise 5x1x1, BN, ReLU: ``(B, 3, T, H, W) -> (B, out, T, ceil(H / s), ceil(W / s))``."""
    from torch import nn  # noqa: PLC0415

    from ..blocks import same_padding  # noqa: PLC0415

    k = (STEM_TEMPORAL_KERNEL, 1, 1)
    return nn.Sequential(
        nn.Conv3d(3, out, kernel, stride=stride, padding=same_padding(kernel), bias=False),
        nn.Conv3d(out, out, k, padding=same_padding(k), groups=out, bias=False),
        nn.BatchNorm3d(out), nn.ReLU())


class X3DFamily(InvertedBottleneckFamily):
    name = "x3d"
    description = "X3D's blocks: E3D's plus a 5x1x1 depthwise stem conv, swish after the depthwise conv"

    def stem_cost(self, spec: "ArchSpec", size_out: int) -> tuple[int, int, int]:
        flops, params, layers = super().stem_cost(spec, size_out)
        c = spec.stem.out
        flops += c * STEM_TEMPORAL_KERNEL * spec.frames * size_out * size_out
        return flops, params + c * STEM_TEMPORAL_KERNEL, layers + 1

    def stem_entropy(self, spec: "ArchSpec", r: int, refine: bool) -> float:
        return super().stem_entropy(spec, r, refine) + math.log(STEM_TEMPORAL_KERNEL)  # depthwise: C = 1, D = 1

    def create_stem(self, spec: "ArchSpec") -> "nn.Module":
        return create_stem(out=spec.stem.out, kernel=spec.stem.kernel, stride=spec.stem.stride)

    def create_stage(self, stage: "StageSpec", *, cin: int) -> "nn.Module":
        from torch import nn  # noqa: PLC0415

        return create_stage(cin=cin, out=stage.out, bottleneck=stage.bottleneck, layers=stage.layers,
                            kernel=stage.kernel, stride=stage.stride, act=nn.SiLU, post=nn.ReLU)


FAMILY = register_family(X3DFamily())
