"""The weight-sharing supernet of a :class:`~e3d.parsec.space.TwoStreamSpace`: one network that runs any
architecture of the space, given as its ``twostream`` spec.

Weight sharing is by slicing (as in Once-for-All / slimmable networks): every layer holds the weights of the
space's widest choice, an architecture uses the first ``c`` channels; a stage holds its deepest choice and an
architecture runs its first ``layers`` blocks; the depthwise kernel holds the largest ``kt x k x k`` of the
kernel choices and an architecture uses its centre. BN keeps per-channel statistics for the widest choice and
normalises the first ``c``. Each fusion operation of a fusion point has its own weights.

For a given spec the supernet computes exactly the layers :func:`e3d.families.twostream.create_twostream`
builds (same convs, strides, SE, shortcuts, fusion blocks, head over both streams, classifier), so its FLOPs
for that spec equal ``e3d.cost.cost(spec)`` (``tests/test_parsec.py`` checks this with torch's counter).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..blocks import Classifier, conv_bn, strided_avg_pool
from ..channels import round_channels
from ..cost import has_se, se_width
from ..families.twostream import TCONV_KERNEL, view
from ..spec import ArchSpec, StageSpec
from .space import TwoStreamSpace


class SlicedBN(nn.BatchNorm3d):
    """BatchNorm over the first ``C`` channels of its input (``C`` <= the channels it was made for)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        factor = self.momentum or 0.0
        if self.training:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative average, as nn.BatchNorm does
                factor = 1.0 / float(self.num_batches_tracked)
        return F.batch_norm(x, self.running_mean[:c], self.running_var[:c], self.weight[:c], self.bias[:c],
                            self.training, factor, self.eps)


def pointwise(conv: nn.Conv3d, x: torch.Tensor, cout: int, stride: tuple[int, int, int] = (1, 1, 1)) -> torch.Tensor:
    """``conv``'s first ``cout`` filters over the channels of ``x``."""
    return F.conv3d(x, conv.weight[:cout, :x.shape[1]], None, stride)


class SlicedSE(nn.Module):
    """Squeeze-excite whose hidden width follows the input width (``se_width``), as in the built blocks."""

    def __init__(self, channels: int):
        super().__init__()
        self.fc1 = nn.Conv3d(channels, se_width(channels), 1)
        self.fc2 = nn.Conv3d(se_width(channels), channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        h = se_width(c)
        s = F.adaptive_avg_pool3d(x, 1)
        s = torch.relu(F.conv3d(s, self.fc1.weight[:h, :c], self.fc1.bias[:h]))
        return x * torch.sigmoid(F.conv3d(s, self.fc2.weight[:c, :h], self.fc2.bias[:c]))


class SlicedBlock(nn.Module):
    """An inverted bottleneck (:class:`e3d.blocks.InvertedBottleneck`) at any width, bottleneck and kernel up
    to its maxima: ``(B, cin, T, H, W) -> (B, out, T, ceil(H / s), ceil(W / s))``."""

    def __init__(self, cin: int, bottleneck: int, out: int, kernel: tuple[int, int, int], *, se: bool):
        super().__init__()
        self.kernel = kernel
        self.expand = nn.Conv3d(cin, bottleneck, 1, bias=False)
        self.expand_bn = SlicedBN(bottleneck)
        self.depthwise = nn.Conv3d(bottleneck, bottleneck, kernel, groups=bottleneck, bias=False)
        self.depthwise_bn = SlicedBN(bottleneck)
        self.se = SlicedSE(bottleneck) if se else None
        self.project = nn.Conv3d(bottleneck, out, 1, bias=False)
        self.project_bn = SlicedBN(out)
        self.shortcut = nn.Conv3d(cin, out, 1, bias=False)
        self.shortcut_bn = SlicedBN(out)

    def forward(self, x: torch.Tensor, *, bottleneck: int, out: int, kernel: tuple[int, int, int],
                stride: tuple[int, int, int]) -> torch.Tensor:
        cin = x.shape[1]
        y = torch.relu(self.expand_bn(pointwise(self.expand, x, bottleneck)))
        (kt, k, _), (mt, mk, _) = kernel, self.kernel
        t0, s0 = (mt - kt) // 2, (mk - k) // 2
        w = self.depthwise.weight[:bottleneck, :, t0:t0 + kt, s0:s0 + k, s0:s0 + k]
        y = self.depthwise_bn(F.conv3d(y, w, None, stride, (kt // 2, k // 2, k // 2), 1, bottleneck))
        if self.se is not None:
            y = self.se(y)
        y = self.project_bn(pointwise(self.project, torch.relu(y), out))
        if cin != out:
            shortcut = self.shortcut_bn(pointwise(self.shortcut, x, out, stride))
        elif stride != (1, 1, 1):
            shortcut = strided_avg_pool(x, stride)  # any map size, also under 3x3
        else:
            shortcut = x
        return y + shortcut


class SlicedStage(nn.Module):
    """The deepest stage of a space position; runs the first ``stage.layers`` blocks of ``stage``'s shape."""

    def __init__(self, cin: int, bottleneck: int, out: int, depth: int, kernel: tuple[int, int, int]):
        super().__init__()
        self.blocks = nn.ModuleList(SlicedBlock(cin if i == 0 else out, bottleneck, out, kernel, se=has_se(i))
                                    for i in range(depth))

    def forward(self, x: torch.Tensor, stage: StageSpec) -> torch.Tensor:
        for i in range(stage.layers):
            x = self.blocks[i](x, bottleneck=stage.bottleneck, out=stage.out, kernel=stage.kernel,
                               stride=stage.stride if i == 0 else (1, 1, 1))
        return x


class FusionPoint(nn.Module):
    """The four operations of one fusion point (supplement §2), each with its own weights:
    ``(B, C_D, T_D, r, r) -> (B, C_S, T_S, r, r)`` (None for ``skip``)."""

    def __init__(self, c_dense: int, c_sparse: int, alpha: int):
        super().__init__()
        self.alpha = alpha
        self.tconv = nn.Conv3d(c_dense, c_dense, (TCONV_KERNEL, 1, 1), groups=c_dense, bias=False)
        self.convs = nn.ModuleDict({"tconv": nn.Conv3d(c_dense, c_sparse, 1, bias=False),
                                    "tsample": nn.Conv3d(c_dense, c_sparse, 1, bias=False),
                                    "t2c": nn.Conv3d(alpha * c_dense, c_sparse, 1, bias=False)})
        self.bns = nn.ModuleDict({op: SlicedBN(c_sparse) for op in self.convs})

    def forward(self, d: torch.Tensor, op: str, c_sparse: int) -> torch.Tensor | None:
        a = self.alpha
        if op == "skip":
            return None
        if op == "tconv":
            c = d.shape[1]
            d = F.conv3d(d, self.tconv.weight[:c], None, (a, 1, 1), (TCONV_KERNEL // 2, 0, 0), 1, c)
        elif op == "tsample":
            d = d[:, :, ::a]
        else:  # time to channel, as e3d.families.twostream.TimeToChannel
            b, c, t, h, w = d.shape
            ts = -(-t // a)
            if ts * a != t:
                d = F.pad(d, (0, 0, 0, 0, 0, ts * a - t))
            d = d.reshape(b, c, ts, a, h, w).transpose(2, 3).reshape(b, c * a, ts, h, w)
        return self.bns[op](pointwise(self.convs[op], d, c_sparse))


class TwoStreamSupernet(nn.Module):
    """Every architecture of ``space``: ``forward(x, spec)`` with ``x`` ``(B, 3, T_D, S, S)`` -> logits."""

    def __init__(self, space: TwoStreamSpace, *, dropout: float = 0.5):
        super().__init__()
        c = space.config
        self.space, self.alpha = space, c.alpha
        widest = {v.name: max(v.choices) if "kernel" not in v.name else None for v in space.variables}
        kernels = [v.choices for v in space.variables if v.name.endswith(".kernel")]
        kmax = (max(k[0] for ks in kernels for k in ks), max(k[1] for ks in kernels for k in ks))
        kernel = (kmax[0], kmax[1], kmax[1])
        depth = max(c.depths)
        self.stem = conv_bn(3, space.stem, kernel=(1, 3, 3), stride=(1, 2, 2))
        self.dense_stem = conv_bn(3, space.dense_stem, kernel=(1, 3, 3), stride=(1, 2, 2))
        stages, dense, fusions = [], [], []
        c_s, c_d = space.stem, space.dense_stem
        for i in range(space.n_stages):
            ws, wd = widest[f"sparse{i}.width"], widest[f"dense{i}.width"]
            stages.append(SlicedStage(c_s, round_channels(c.expansion * ws, 8, ties="up"), ws, depth, kernel))
            dense.append(SlicedStage(c_d, round_channels(c.expansion * wd, 8, ties="up"), wd, depth, kernel))
            fusions.append(FusionPoint(wd, ws, c.alpha))
            c_s, c_d = ws, wd
        self.stages, self.dense_stages = nn.ModuleList(stages), nn.ModuleList(dense)
        self.fusions = nn.ModuleList(fusions)
        # the head conv over [sparse, pooled dense] as two convs, so each stream's channels slice on their own
        self.head_sparse = nn.Conv3d(c_s, c.head, 1, bias=False)
        self.head_dense = nn.Conv3d(c_d, c.head, 1, bias=False)
        self.head_bn = nn.BatchNorm3d(c.head)
        self.classifier = Classifier(c.head, c.hidden, space.num_classes, dropout)

    def features(self, x: torch.Tensor, spec: ArchSpec) -> torch.Tensor:
        v = view(spec)
        a = v.alpha
        s, d = self.stem(x[:, :, ::a]), self.dense_stem(x)
        for i, (stage, dense, op) in enumerate(zip(spec.stages, v.dense.stages, v.fusion)):
            s, d = self.stages[i](s, stage), self.dense_stages[i](d, dense)
            fused = self.fusions[i](d, op, stage.out)
            if fused is not None:
                s = s + fused
        if a > 1:
            d = F.avg_pool3d(d, (a, 1, 1), (a, 1, 1), ceil_mode=True)
        y = pointwise(self.head_sparse, s, self.head_bn.num_features) + \
            pointwise(self.head_dense, d, self.head_bn.num_features)
        return torch.relu(self.head_bn(y))

    def forward(self, x: torch.Tensor, spec: ArchSpec) -> torch.Tensor:
        return self.classifier(self.features(x, spec))

