"""The template network (supplement §2.1, Fig. 1) and the variational drop-path gates on it (§1.1).

    x ─ stem (conv 1x3x3, BN, ReLU, pool /2) ─ dense block 1 ─ reduction ─ dense block 2 ─ ... ─ BN, ReLU, pool, fc

A dense block holds ``layers_per_block`` fusion layers; layer ``j`` sees the block input and the outputs of
layers ``1..j-1`` (dense connectivity: its output feeds every later layer of the block, and the block's
output is all of them concatenated). A reduction block (BN, ReLU, 1x1x1 conv to ``compression`` of the
width, 3x3 average pooling with spatial stride 2) joins two dense blocks; time is never downsampled.

One fusion layer, fed inputs ``x_1..x_n`` (concatenated, BN, ReLU: ``h_i``)::

    out = sum_i [ (1 - e_{i,S})    * conv_S(h_i)                                 S:    1 x k x k
                + (1 - e_{i,ST})   * conv_ST(h_i)                                ST:   kt x k x k
                + (1 - e_{i,S+ST}) * (conv_S'(h_i) + conv_ST'(h_i)) ]            S+ST: both, own weights

``e_{l,i,u}`` is the drop-path gate (D1-D3) of input ``i`` and unit ``u`` at layer ``l``: Bernoulli(``p``),
relaxed to the concrete distribution (Eq. S13) while training; ``conv(concat_i g_i h_i) = sum_i g_i conv_i(h_i)``
because a conv without bias is linear, so gating each input's channels before one conv per unit is exact.
When all three units of an input are dropped its features still reach later layers through the
concatenation: that is the residual operation of Fig. 3. Evaluation uses the expected gate ``1 - p``.

The KL term of Eq. S12 per gate is ``(1 - p) k^2 / 2 ||w||^2 + p log p`` with ``w`` the weights unit ``u``
applies to input ``i`` (both convs' slices for S+ST); :class:`KLRegulariser` computes it with the
closed-form gradient of Eq. 5. The posterior probability that a unit is used is ``1 - sqrt(p)`` (Eq. S16-S17).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..blocks import StridedAvgPool

UNITS = ("S", "ST", "S+ST")


@dataclass(frozen=True)
class TemplateSettings:
    """The template's size and the gates' relaxation. The supplement's network is a DenseNet-121-like one
    (Fig. 1: blocks of 6 layers); these defaults fit a CPU."""

    blocks: int = 3
    layers_per_block: int = 4
    growth: int = 16
    stem: int = 16
    kernel: int = 3          # spatial size k of every unit
    kt: int = 3              # temporal size of the ST convs
    compression: float = 0.5
    dropout: float = 0.2     # before the classifier
    init_drop: float = 0.2   # initial drop probability p of every gate
    tau: float = 0.1         # concrete temperature (Eq. S13)
    mc_samples: int = 1      # gate samples per step (Eq. S8's Monte Carlo)

    def __post_init__(self) -> None:
        for name in ("blocks", "layers_per_block", "growth", "stem", "kernel", "kt", "mc_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"template {name} must be >= 1, got {getattr(self, name)}")
        if self.kernel % 2 == 0 or self.kt % 2 == 0:
            raise ValueError(f"template kernel sizes must be odd, got k={self.kernel} kt={self.kt}")
        if not 0 < self.compression <= 1 or not 0 < self.init_drop < 1 or self.tau <= 0 or not 0 <= self.dropout < 1:
            raise ValueError("template: need 0 < compression <= 1, 0 < init_drop < 1, tau > 0, 0 <= dropout < 1")

    @property
    def num_layers(self) -> int:
        return self.blocks * self.layers_per_block

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TemplateSettings":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# -- the gates ------------------------------------------------------------------------------------------------
def concrete_drop(logit_p: torch.Tensor, tau: float, *, batch: int | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Relaxed Bernoulli(p) drop indicators (Eq. S13), one per gate (and per example when ``batch``):

        e = sigmoid((log p - log(1 - p) + log(-log r2) - log(-log r1)) / tau),   r1, r2 ~ U(0, 1)

    (the supplement writes ``log(log r)``; the Gumbel noise is ``-log(-log r)``). ``e -> Bernoulli(p)`` as
    ``tau -> 0``; for every ``tau``, ``P(e > 1/2) = p``.
    """
    shape = ((batch,) if batch else ()) + tuple(logit_p.shape)
    eps = torch.finfo(logit_p.dtype).tiny
    r = torch.rand((2,) + shape, dtype=logit_p.dtype, device=logit_p.device, generator=generator).clamp(eps, 1 - 1e-7)
    noise = torch.log(-torch.log(r[1])) - torch.log(-torch.log(r[0]))
    return torch.sigmoid((logit_p + noise) / tau)


class KLRegulariser(torch.autograd.Function):
    """``sum (1 - p) k^2 / 2 * s + p log p`` over gates (Eq. S12), ``s = ||w||^2`` per gate, with the gradient
    in closed form (Eq. 5): ``dR/ds = (1 - p) k^2 / 2`` (so ``dR/dw = (1 - p) k^2 w``) and
    ``dR/dp = -k^2 / 2 * s + log p + 1``."""

    @staticmethod
    def forward(ctx, sq_norms: torch.Tensor, p: torch.Tensor, k2: float) -> torch.Tensor:
        ctx.save_for_backward(sq_norms, p)
        ctx.k2 = k2
        return ((1 - p) * (k2 / 2) * sq_norms + p * torch.log(p)).sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        sq_norms, p = ctx.saved_tensors
        k2 = ctx.k2
        grad_s = grad * (1 - p) * (k2 / 2) if ctx.needs_input_grad[0] else None
        grad_p = grad * (-(k2 / 2) * sq_norms + torch.log(p) + 1) if ctx.needs_input_grad[1] else None
        return grad_s, grad_p, None


def kl_regulariser(sq_norms: torch.Tensor, p: torch.Tensor, length_scale: float) -> torch.Tensor:
    return KLRegulariser.apply(sq_norms, p, float(length_scale) ** 2)


def posterior(p: torch.Tensor | float) -> torch.Tensor | float:
    """P(unit used | data) = 1 - sqrt(p) (Eq. S16-S17: ``p = p_hat * p_tilde`` with equal factors)."""
    return 1 - (p.sqrt() if isinstance(p, torch.Tensor) else math.sqrt(p))


# -- the network ----------------------------------------------------------------------------------------------
def _conv(cin: int, cout: int, kernel: tuple[int, int, int]) -> nn.Conv3d:
    return nn.Conv3d(cin, cout, kernel, padding=tuple(k // 2 for k in kernel), bias=False)


class FusionLayer(nn.Module):
    """One layer of the template: ``[(B, c_i, T, H, W) for each input] -> (B, growth, T, H, W)``, with the
    gate logits ``logit`` of shape ``(inputs, 3)`` (S, ST, S+ST)."""

    def __init__(self, in_channels: list[int], growth: int, *, k: int, kt: int, init_drop: float):
        super().__init__()
        c = sum(in_channels)
        self.in_channels = list(in_channels)
        self.bn = nn.BatchNorm3d(c)
        s, st = (1, k, k), (kt, k, k)
        self.s, self.st = _conv(c, growth, s), _conv(c, growth, st)
        self.sst_s, self.sst_st = _conv(c, growth, s), _conv(c, growth, st)
        self.register_buffer("owner", torch.repeat_interleave(torch.arange(len(in_channels)),
                                                              torch.tensor(in_channels)), persistent=False)
        self.logit = nn.Parameter(torch.full((len(in_channels), 3), math.log(init_drop / (1 - init_drop))))

    def unit_weights(self) -> list[list[torch.Tensor]]:
        return [[self.s.weight], [self.st.weight], [self.sst_s.weight, self.sst_st.weight]]

    def drop_p(self) -> torch.Tensor:
        return torch.sigmoid(self.logit)

    def sq_norms(self) -> torch.Tensor:
        """``||w_{i,u}||^2`` per (input, unit): ``(inputs, 3)``."""
        cols = []
        for weights in self.unit_weights():
            per_channel = sum(w.pow(2).sum(dim=(0, 2, 3, 4)) for w in weights)
            cols.append(torch.zeros(len(self.in_channels), dtype=per_channel.dtype, device=per_channel.device)
                        .index_add(0, self.owner, per_channel))
        return torch.stack(cols, dim=1)

    def forward(self, xs: list[torch.Tensor], keep: torch.Tensor) -> torch.Tensor:
        """``keep``: ``(B, inputs, 3)`` per-example gates (``1 - e``) or ``(inputs, 3)`` shared ones."""
        h = F.relu(self.bn(torch.cat(xs, 1)))
        per_channel = keep[..., self.owner, :]  # (B, C, 3) or (C, 3)
        shape = (-1, h.shape[1], 1, 1, 1) if per_channel.dim() == 3 else (1, h.shape[1], 1, 1, 1)
        z = [h * per_channel[..., u].reshape(shape) for u in range(3)]
        return self.s(z[0]) + self.st(z[1]) + self.sst_s(z[2]) + self.sst_st(z[2])


class TemplateNet(nn.Module):
    """The densely connected template: ``(B, 3, T, H, W) -> (B, num_classes)`` logits. In training mode every
    forward pass samples fresh relaxed gates per example; in eval mode gates are their means ``1 - p``."""

    def __init__(self, settings: TemplateSettings, num_classes: int):
        super().__init__()
        t = settings
        self.settings = t
        self.stem = nn.Sequential(_conv(3, t.stem, (1, 3, 3)), nn.BatchNorm3d(t.stem), nn.ReLU(),
                                  StridedAvgPool((1, 2, 2)))
        self.blocks, self.reductions = nn.ModuleList(), nn.ModuleList()
        c = t.stem
        for b in range(t.blocks):
            layers = nn.ModuleList(FusionLayer([c] + [t.growth] * j, t.growth, k=t.kernel, kt=t.kt,
                                               init_drop=t.init_drop) for j in range(t.layers_per_block))
            self.blocks.append(layers)
            c += t.layers_per_block * t.growth
            if b < t.blocks - 1:
                out = max(8, int(c * t.compression))
                self.reductions.append(nn.Sequential(nn.BatchNorm3d(c), nn.ReLU(), _conv(c, out, (1, 1, 1)),
                                                     StridedAvgPool((1, 2, 2))))
                c = out
        self.head = nn.Sequential(nn.BatchNorm3d(c), nn.ReLU())
        self.dropout = nn.Dropout(t.dropout)
        self.fc = nn.Linear(c, num_classes)

    def layers(self) -> list[FusionLayer]:
        return [layer for block in self.blocks for layer in block]

    def layout(self) -> list[tuple[int, int, int]]:
        """``(layer, block, inputs)`` per fusion layer: global 1-based layer number, 1-based block."""
        return [(i + 1, i // self.settings.layers_per_block + 1, len(layer.in_channels))
                for i, layer in enumerate(self.layers())]

    def arch_parameters(self) -> list[nn.Parameter]:
        return [layer.logit for layer in self.layers()]

    def unit_parameters(self) -> list[nn.Parameter]:
        """The unit convs' weights: their prior is the KL term, so they take no extra weight decay."""
        return [w for layer in self.layers() for ws in layer.unit_weights() for w in ws]

    def drop_probabilities(self) -> list[torch.Tensor]:
        return [layer.drop_p().detach().cpu() for layer in self.layers()]

    def regulariser(self, length_scale: float) -> torch.Tensor:
        """Eq. S12 summed over every gate of every layer."""
        sq = torch.cat([layer.sq_norms().reshape(-1) for layer in self.layers()])
        p = torch.cat([layer.drop_p().reshape(-1) for layer in self.layers()])
        return kl_regulariser(sq, p, length_scale)

    def _keep(self, layer: FusionLayer, batch: int) -> torch.Tensor:
        p_logit = layer.logit
        if self.training:
            return 1 - concrete_drop(p_logit, self.settings.tau, batch=batch)
        return 1 - torch.sigmoid(p_logit)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for b, block in enumerate(self.blocks):
            feats = [x]
            for layer in block:
                feats.append(layer(feats, self._keep(layer, x.shape[0])))
            x = torch.cat(feats, 1)
            if b < len(self.reductions):
                x = self.reductions[b](x)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(F.adaptive_avg_pool3d(self.features(x), 1).flatten(1)))
