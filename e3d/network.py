"""The common network skeleton: a family's stem and stages, then the head (1x1x1 conv, BN, ReLU) and the classifier.

:func:`e3d.model.build_model` is the entry point; this module takes the family as an argument and asks no
registry, so the families can build it without an import cycle. Every tensor is
``(batch, channels, time, height, width)``; time is never downsampled; a strided 'same' conv maps a spatial
size ``r`` to ``ceil(r / stride)``. :func:`e3d.cost.cost` counts exactly what is built here.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from .blocks import Classifier, InvertedBottleneck, conv_bn

if TYPE_CHECKING:
    from .family import Family
    from .spec import ArchSpec

__all__ = ["VideoNet", "init_weights"]


class VideoNet(nn.Module):
    """The network a spec describes: ``(B, 3, frames, size, size) -> (B, num_classes)`` logits."""

    def __init__(self, spec: "ArchSpec", *, family: "Family", dropout: float = 0.5):
        super().__init__()
        self.spec = spec
        self.stem = family.create_stem(spec)
        stages, cin = [], spec.stem.out
        for s in spec.stages:
            stages.append(family.create_stage(s, cin=cin))
            cin = s.out
        self.stages = nn.Sequential(*stages)
        self.head = conv_bn(cin, spec.head.out)
        self.classifier = Classifier(spec.head.out, spec.hidden, spec.num_classes, dropout)
        init_weights(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W) -> (B, head.out, T, H / 32, W / 32)`` (for the default strides)."""
        return self.head(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def init_weights(model: nn.Module, *, zero_init_residual: bool = True) -> None:
    """Kaiming-normal convs on fan-out, unit BN (zero for the last BN of each residual branch when
    ``zero_init_residual``), small linear layers.

    The fan-out is counted per group: ``torch.nn.init`` ignores ``groups``, which would make depthwise
    weights ``sqrt(channels)`` times too small (pySlowFast's X3D init has that flaw) and stall short runs.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv3d):
            fan_out = m.out_channels // m.groups * math.prod(m.kernel_size)
            nn.init.normal_(m.weight, std=math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm3d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in model.modules():
            if isinstance(m, InvertedBottleneck):
                nn.init.zeros_(m.project[1].weight)  # each block starts as its shortcut
