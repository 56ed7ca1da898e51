"""PyTorch builder: spec -> the training network (DESIGN.md "Architecture spec", paper Appendix F).

One small function or module per block, keyword arguments, shapes in the docstrings. Every tensor is
``(batch, channels, time, height, width)``. Time is never downsampled; a strided 'same' conv maps a spatial
size ``r`` to ``ceil(r / stride)``. :mod:`e3d.cost` counts exactly what is built here.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .cost import has_se, se_width
from .spec import X3D_STEM_TEMPORAL_KERNEL, ArchSpec, ConvSpec, StageSpec

Triple = tuple[int, int, int]


def same_padding(kernel: Triple) -> Triple:
    return tuple(k // 2 for k in kernel)  # type: ignore[return-value]


def conv_bn(cin: int, cout: int, *, kernel: Triple = (1, 1, 1), stride: Triple = (1, 1, 1), groups: int = 1,
            act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    """Conv3d ('same' padding, no bias) + BN (+ activation): ``(B, cin, T, H, W) -> (B, cout, T, H', W')``."""
    layers: list[nn.Module] = [
        nn.Conv3d(cin, cout, kernel, stride=stride, padding=same_padding(kernel), groups=groups, bias=False),
        nn.BatchNorm3d(cout),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """Channel gating: ``x * sigmoid(fc2(relu(fc1(avgpool(x)))))``, shape-preserving ``(B, C, T, H, W)``."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc1 = nn.Conv3d(channels, hidden, 1)
        self.fc2 = nn.Conv3d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(self.pool(x)))))


def shortcut(cin: int, cout: int, stride: Triple) -> nn.Module:
    """Residual path: identity, 1x1x1 conv + BN where the width changes, average pooling where only the
    stride does (3x3 window, so odd sizes map to ``ceil(r / s)`` like the strided convs)."""
    if cin != cout:
        return conv_bn(cin, cout, stride=stride, act=None)
    if stride != (1, 1, 1):
        return nn.AvgPool3d((1, 3, 3), stride=stride, padding=(0, 1, 1), count_include_pad=False)
    return nn.Identity()


class InvertedBottleneck(nn.Module):
    """1x1x1 expand -> depthwise ``kernel`` (strided, + SE) -> 1x1x1 project, plus a residual.

    ``(B, cin, T, H, W) -> (B, cout, T, ceil(H / s), ceil(W / s))``. ReLU after the first two convs
    (swish after the depthwise conv and ReLU after the sum for the ``x3d`` family).
    """

    def __init__(self, cin: int, bottleneck: int, cout: int, *, kernel: Triple, stride: Triple, se: bool,
                 family: str = "e3d"):
        super().__init__()
        self.expand = conv_bn(cin, bottleneck)
        self.depthwise = conv_bn(bottleneck, bottleneck, kernel=kernel, stride=stride, groups=bottleneck, act=None)
        self.se = SqueezeExcite(bottleneck, se_width(bottleneck)) if se else nn.Identity()
        self.act = nn.SiLU() if family == "x3d" else nn.ReLU()
        self.project = conv_bn(bottleneck, cout, act=None)
        self.shortcut = shortcut(cin, cout, stride)
        self.post = nn.ReLU() if family == "x3d" else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.act(self.se(self.depthwise(self.expand(x)))))
        return self.post(y + self.shortcut(x))


def stage(cin: int, spec: StageSpec, family: str = "e3d") -> nn.Sequential:
    """``spec.layers`` blocks; the first maps ``cin -> spec.out`` with the stride, SE on blocks 0, 2, 4..."""
    return nn.Sequential(*[
        InvertedBottleneck(cin if i == 0 else spec.out, spec.bottleneck, spec.out, kernel=spec.kernel,
                           stride=spec.stride if i == 0 else (1, 1, 1), se=has_se(i), family=family)
        for i in range(spec.layers)])


def stem(spec: ConvSpec, family: str = "e3d") -> nn.Sequential:
    """Dense conv 3 -> out, BN, ReLU: ``(B, 3, T, H, W) -> (B, out, T, H / s, W / s)``. The ``x3d`` family
    follows it with X3D's depthwise 5x1x1 temporal conv before the BN."""
    if family != "x3d":
        return conv_bn(3, spec.out, kernel=spec.kernel, stride=spec.stride)
    k = (X3D_STEM_TEMPORAL_KERNEL, 1, 1)
    return nn.Sequential(
        nn.Conv3d(3, spec.out, spec.kernel, stride=spec.stride, padding=same_padding(spec.kernel), bias=False),
        nn.Conv3d(spec.out, spec.out, k, padding=same_padding(k), groups=spec.out, bias=False),
        nn.BatchNorm3d(spec.out), nn.ReLU())


class Classifier(nn.Module):
    """Global average pool -> linear ``hidden`` -> ReLU -> dropout -> linear ``num_classes``:
    ``(B, C, T, H, W) -> (B, num_classes)``."""

    def __init__(self, channels: int, hidden: int, num_classes: int, dropout: float = 0.5):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(channels, hidden)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(torch.relu(self.fc(self.pool(x).flatten(1)))))


class VideoNet(nn.Module):
    """The network a spec describes: ``(B, 3, frames, size, size) -> (B, num_classes)`` logits."""

    def __init__(self, spec: ArchSpec, dropout: float = 0.5):
        super().__init__()
        self.spec = spec
        self.stem = stem(spec.stem, spec.family)
        stages, cin = [], spec.stem.out
        for s in spec.stages:
            stages.append(stage(cin, s, spec.family))
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


def build_model(spec: ArchSpec, *, num_classes: int | None = None, dropout: float = 0.5) -> VideoNet:
    """Build the training network of ``spec`` (optionally with another number of classes)."""
    if num_classes is not None and num_classes != spec.num_classes:
        spec = spec.with_num_classes(num_classes)
    return VideoNet(spec, dropout=dropout)
