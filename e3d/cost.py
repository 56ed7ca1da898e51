"""Analytic FLOPs (multiply-accumulates) and parameter count of a spec's training network.

Convention (DESIGN.md, fvcore/X3D): every conv and linear layer counts ``in/groups * out * kernel volume``
MACs per output element; BN, activations, pooling, additions and the SE gate are free. Params count every
weight, every bias (SE convs, linear layers) and BN's affine pair. Each family module
(:mod:`e3d.families`) counts what its builders build; ``tests/test_cost.py`` checks both numbers against
the built module for every registered family.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .channels import round_channels
from .family import Cost, ceil_div, get_family

if TYPE_CHECKING:
    from .spec import ArchSpec

__all__ = ["Cost", "cost", "flops", "params", "num_layers", "ceil_div", "has_se", "se_width"]


def se_width(bottleneck: int) -> int:
    """SE hidden width: 1/16 of the bottleneck rounded to a multiple of 8, at least 8 (X3D's round_width)."""
    width = bottleneck / 16
    out = round_channels(width, 8, ties="up")
    return out + 8 if out < 0.9 * width else out


def has_se(block_index: int) -> bool:
    """SE sits on blocks 0, 2, 4, ... of every stage."""
    return block_index % 2 == 0


def cost(spec: ArchSpec) -> Cost:
    """FLOPs (MACs), params and conv layer count of the training network for one clip (its family's)."""
    return get_family(spec.family).cost(spec)


def flops(spec: ArchSpec) -> int:
    return cost(spec).flops


def params(spec: ArchSpec) -> int:
    return cost(spec).params


def num_layers(spec: ArchSpec) -> int:
    """Conv layers of the backbone (stem, 3 per block, head): the depth the search's layer limit bounds."""
    return cost(spec).layers
