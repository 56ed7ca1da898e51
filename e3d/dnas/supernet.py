"""The supernet of the differentiable video NAS (Zhou et al. 2021) and its architecture parameters.

    x ─ stem ─┬─ head(stem -> w_1) ─ stack_1 ─┬─ head(w_1 -> w'_1) ─ ...      every node j of stage s:
              ├─ head(stem -> w_2) ─ stack_2 ─┤                                 h_j = sum_i p_ij head_ij(x_i)
              └─ head(stem -> w_3) ─ stack_3 ─┴─ ...                            x_j = stack_j(h_j)
    last stage: sum_j final_j(x_j) ─ classifier          a stack layer: sum_o w_o o(h), o in {d1, d2, d4, skip}

``p = softmax(beta)`` over each node's successors (Eq. 1), ``w = softmax(alpha)`` per stack layer (Eq. 2-3,
shared by the nodes of a stage). The layers are the ``r2plus1d`` family's factories, so the derived network
(:func:`e3d.dnas.space.derive`) is built from the very blocks that were searched, and :class:`ExpectedFlops` is
Eq. 4 on :meth:`e3d.dnas.space.DnasSpace.cost_tables` (equal to the derived spec's exact cost for one-hot weights).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..blocks import Classifier, conv_bn
from ..families.r2plus1d import create_basic_op, create_stack_layer
from ..model import init_weights
from .space import SKIP, DnasSpace

Weights = Sequence[torch.Tensor]


class MixedLayer(nn.Module):
    """One stack layer relaxed (Eq. 3): ``sum_o w[o] * o(x)`` over ``ops`` (dilations; ``SKIP`` is ``x``).
    ``(B, width, T, H, W) -> (B, width, T, H, W)``."""

    def __init__(self, width: int, mid: int, kernel: tuple[int, int, int], ops: Sequence[int]):
        super().__init__()
        self.conv_index = [k for k, o in enumerate(ops) if o != SKIP]
        self.skip_index = ops.index(SKIP) if SKIP in ops else None
        self.convs = nn.ModuleList([create_stack_layer(width=width, mid=mid, kernel=kernel, dilation=ops[k])
                                    for k in self.conv_index])

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        out = x * w[self.skip_index] if self.skip_index is not None else 0
        for k, conv in zip(self.conv_index, self.convs):
            out = out + w[k] * conv(x)
        return out


class SuperNet(nn.Module):
    """Every candidate of ``space`` at once: ``forward(x, alpha_w, beta_w)`` with the softmaxed weights of
    :class:`ArchParams` maps ``(B, 3, frames, size, size)`` to logits ``(B, num_classes)``."""

    def __init__(self, space: DnasSpace, dropout: float = 0.0):
        super().__init__()
        self.space = space
        c = space.stem_width
        self.stem = create_basic_op(cin=3, mid=c, out=c, kernel=space.stem_kernel, stride=space.stem_stride)
        self.heads, self.stacks = nn.ModuleList(), nn.ModuleList()
        prev: Sequence[int] = (c,)
        for st in space.stages:
            self.heads.append(nn.ModuleList([
                create_basic_op(cin=wi, mid=space.mid(wj), out=wj, kernel=st.kernel, stride=st.stride)
                for wi in prev for wj in st.widths]))
            self.stacks.append(nn.ModuleList([
                nn.ModuleList([MixedLayer(wj, space.mid(wj), st.kernel, space.ops) for _ in range(st.max_stack)])
                for wj in st.widths]))
            prev = st.widths
        self.finals = nn.ModuleList([conv_bn(w, space.head_width) for w in prev])
        self.classifier = Classifier(space.head_width, space.hidden, space.num_classes, dropout)
        # E3D's init without zeroing the residual branches: a stack layer whose last BN starts at zero computes
        # relu(x + 0) = x (its input is post-ReLU), exactly the skip op, so the cross-entropy could not tell the
        # ops apart and only the FLOPs term would move alpha (towards skip) until the weights grew
        init_weights(self, zero_init_residual=False)

    def forward(self, x: torch.Tensor, alpha_w: Weights, beta_w: Weights) -> torch.Tensor:
        xs = [self.stem(x)]
        for s, st in enumerate(self.space.stages):
            n, b = len(st.widths), beta_w[s]
            nodes = []
            for j in range(n):
                h = sum(b[i, j] * self.heads[s][i * n + j](xi) for i, xi in enumerate(xs))
                for layer, w in zip(self.stacks[s][j], alpha_w[s]):
                    h = layer(h, w)
                nodes.append(h)
            xs = nodes
        return self.classifier(sum(final(xi) for final, xi in zip(self.finals, xs)))


class ArchParams(nn.Module):
    """``alpha[s]``: ``(max_stack, len(ops))`` per stage; ``beta[s]``: ``(nodes before, nodes of s)`` (the stem is
    one node). All zero at the start: uniform weights."""

    def __init__(self, space: DnasSpace):
        super().__init__()
        self.alpha = nn.ParameterList([nn.Parameter(torch.zeros(st.max_stack, len(space.ops))) for st in space.stages])
        betas, prev = [], 1
        for st in space.stages:
            betas.append(nn.Parameter(torch.zeros(prev, len(st.widths))))
            prev = len(st.widths)
        self.beta = nn.ParameterList(betas)

    def weights(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Softmaxed ``(alpha_w, beta_w)``: over the ops of each stack layer, over the successors of each node."""
        return [a.softmax(-1) for a in self.alpha], [b.softmax(-1) for b in self.beta]

    def as_lists(self) -> tuple[list, list]:
        """The softmaxed weights as nested Python lists (what :func:`e3d.dnas.space.derive` takes)."""
        with torch.no_grad():
            a, b = self.weights()
        return [x.double().cpu().tolist() for x in a], [x.double().cpu().tolist() for x in b]


class ExpectedFlops(nn.Module):
    """Eq. 4 on the space's cost tables, differentiable in the weights (float64)."""

    def __init__(self, space: DnasSpace):
        super().__init__()
        t = space.cost_tables()
        f64 = torch.float64
        self.stem = float(t.stem)
        self.register_buffer("conv", torch.tensor([0.0 if o == SKIP else 1.0 for o in space.ops], dtype=f64))
        self.heads = [torch.tensor(h, dtype=f64) for h in t.head]
        self.ops = [torch.tensor(o, dtype=f64) for o in t.op]
        self.tail = torch.tensor(t.tail, dtype=f64)

    def forward(self, alpha_w: Weights, beta_w: Weights) -> torch.Tensor:
        dev = self.conv.device
        mass = [(a.to(dev, torch.float64) * self.conv).sum() for a in alpha_w]
        after = mass[-1] * self.ops[-1].to(dev) + self.tail.to(dev)
        for s in range(len(mass) - 2, -1, -1):
            b = beta_w[s + 1].to(dev, torch.float64)
            after = mass[s] * self.ops[s].to(dev) + (b * (self.heads[s + 1].to(dev) + after[None, :])).sum(1)
        b0 = beta_w[0].to(dev, torch.float64)[0]
        return self.stem + (b0 * (self.heads[0].to(dev)[0] + after)).sum()


def cost_penalty(flops: torch.Tensor, lam: float, log_base: float) -> torch.Tensor:
    """Eq. 5's second term: ``lambda * log_k(c)``."""
    return lam * torch.log(flops) / math.log(log_base)
