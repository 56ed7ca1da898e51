"""Analytic FLOPs (multiply-accumulates) and parameter count of a spec's training network.

Convention (DESIGN.md, fvcore/X3D): every conv and linear layer counts ``in/groups * out * kernel volume``
MACs per output element; BN, activations, pooling, additions and the SE gate are free. Params count every
weight, every bias (SE convs, linear layers) and BN's affine pair. The architecture is the one
:mod:`e3d.model` builds; ``tests/test_cost.py`` checks both numbers against the built module.
"""
from __future__ import annotations

from dataclasses import dataclass

from .spec import X3D_STEM_TEMPORAL_KERNEL, ArchSpec, StageSpec


def se_width(bottleneck: int) -> int:
    """SE hidden width: 1/16 of the bottleneck rounded to a multiple of 8, at least 8 (X3D's round_width)."""
    width = bottleneck / 16
    out = max(8, int(width + 4) // 8 * 8)
    return out + 8 if out < 0.9 * width else out


def has_se(block_index: int) -> bool:
    """SE sits on blocks 0, 2, 4, ... of every stage."""
    return block_index % 2 == 0


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Cost:
    flops: int
    params: int
    layers: int

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    @property
    def mparams(self) -> float:
        return self.params / 1e6


def _stage_cost(stage: StageSpec, cin: int, frames: int, size_in: int) -> tuple[int, int, int]:
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


def cost(spec: ArchSpec) -> Cost:
    """FLOPs (MACs), params and conv layer count of the training network for one clip."""
    t = spec.frames
    stem = spec.stem
    size = ceil_div(spec.size, stem.stride[1])
    kvol = stem.kernel[0] * stem.kernel[1] * stem.kernel[2]
    flops = 3 * stem.out * kvol * t * size * size
    params = 3 * stem.out * kvol + 2 * stem.out
    layers = 1
    if spec.family == "x3d":  # X3D's depthwise temporal conv after the stem
        flops += stem.out * X3D_STEM_TEMPORAL_KERNEL * t * size * size
        params += stem.out * X3D_STEM_TEMPORAL_KERNEL
        layers += 1
    cin = stem.out
    for stage in spec.stages:
        f, p, size = _stage_cost(stage, cin, t, size)
        flops, params, layers, cin = flops + f, params + p, layers + 3 * stage.layers, stage.out
    head = spec.head.out
    flops += cin * head * t * size * size + head * spec.hidden + spec.hidden * spec.num_classes
    params += cin * head + 2 * head + (head + 1) * spec.hidden + (spec.hidden + 1) * spec.num_classes
    return Cost(flops=flops, params=params, layers=layers + 1)


def flops(spec: ArchSpec) -> int:
    return cost(spec).flops


def params(spec: ArchSpec) -> int:
    return cost(spec).params


def num_layers(spec: ArchSpec) -> int:
    """Conv layers of the backbone (stem, 3 per block, head): the depth the search's layer limit bounds."""
    return cost(spec).layers
