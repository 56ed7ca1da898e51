"""Torch layers shared by the block families (:mod:`e3d.families`): conv + BN, squeeze-excite, the
residual shortcut, the 3D inverted bottleneck and the classifier.

Module classes only hold layers and run ``forward``; which layers a family uses, with which activations,
is decided by its ``create_*`` factories. Every tensor is ``(batch, channels, time, height, width)``; a
strided 'same' conv maps a spatial size ``r`` to ``ceil(r / stride)``; time is never downsampled.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

Triple = tuple[int, int, int]
Activation = Callable[[], nn.Module]


def same_padding(kernel: Triple) -> Triple:
    return tuple(k // 2 for k in kernel)  # type: ignore[return-value]


def conv_bn(cin: int, cout: int, *, kernel: Triple = (1, 1, 1), stride: Triple = (1, 1, 1), groups: int = 1,
            act: Activation | None = nn.ReLU) -> nn.Sequential:
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


class StridedAvgPool(nn.Module):
    """Average over a ``1x3x3`` window clipped to the map (padding not counted), strided:
    ``(B, C, T, H, W) -> (B, C, T, ceil(H / s), ceil(W / s))``, for every ``H, W >= 1``.

    ``nn.AvgPool3d`` refuses maps smaller than its window even when padded (a 2x2 map after three stride-2
    stages of a small clip); there the window is zero-padded explicitly and the sum divided by the number of
    real elements it covered, which is the same average.
    """

    def __init__(self, stride: Triple):
        super().__init__()
        self.stride = stride
        self.pool = nn.AvgPool3d((1, 3, 3), stride=stride, padding=(0, 1, 1), count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] >= 3 and x.shape[-2] >= 3:
            return self.pool(x)
        return strided_avg_pool(x, self.stride)


def strided_avg_pool(x: torch.Tensor, stride: Triple) -> torch.Tensor:
    """:class:`StridedAvgPool` as a function (any map size): ``(B, C, T, H, W) -> (B, C, T, ceil(H/s), ceil(W/s))``."""
    if x.shape[-1] >= 3 and x.shape[-2] >= 3:
        return F.avg_pool3d(x, (1, 3, 3), stride, (0, 1, 1), count_include_pad=False)
    pad = (1, 1, 1, 1)
    total = F.avg_pool3d(F.pad(x, pad), (1, 3, 3), stride=stride)
    covered = F.avg_pool3d(F.pad(torch.ones_like(x[:1, :1]), pad), (1, 3, 3), stride=stride)
    return total / covered


def create_shortcut(cin: int, cout: int, stride: Triple) -> nn.Module:
    """Residual path: identity, 1x1x1 conv + BN where the width changes, average pooling where only the
    stride does (3x3 window, so odd sizes map to ``ceil(r / s)`` like the strided convs)."""
    if cin != cout:
        return conv_bn(cin, cout, stride=stride, act=None)
    if stride != (1, 1, 1):
        return StridedAvgPool(stride)
    return nn.Identity()


class InvertedBottleneck(nn.Module):
    """1x1x1 expand -> depthwise ``kernel`` (strided, + SE) -> ``act`` -> 1x1x1 project, plus a residual,
    then ``post`` on the sum.

    ``(B, cin, T, H, W) -> (B, cout, T, ceil(H / s), ceil(W / s))``. ReLU follows the expand conv; ``act``
    (after the depthwise conv) and ``post`` (after the sum) are the family's choice.
    """

    def __init__(self, cin: int, bottleneck: int, cout: int, *, kernel: Triple, stride: Triple,
                 se_hidden: int | None, act: Activation = nn.ReLU, post: Activation = nn.Identity):
        super().__init__()
        self.expand = conv_bn(cin, bottleneck)
        self.depthwise = conv_bn(bottleneck, bottleneck, kernel=kernel, stride=stride, groups=bottleneck, act=None)
        self.se = SqueezeExcite(bottleneck, se_hidden) if se_hidden else nn.Identity()
        self.act = act()
        self.project = conv_bn(bottleneck, cout, act=None)
        self.shortcut = create_shortcut(cin, cout, stride)
        self.post = post()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.act(self.se(self.depthwise(self.expand(x)))))
        return self.post(y + self.shortcut(x))


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
