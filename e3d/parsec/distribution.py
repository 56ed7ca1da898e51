"""The architecture distribution ``P(A | alpha)`` and PARSEC's gradient estimators (supplement §1).

``P(A | alpha)`` is a product of independent categoricals, one per variable of the space, with logits
``alpha``. For ``K`` architectures ``A_k ~ P(A | alpha)`` sharing the weights ``w``, with batch log-likelihoods
``l_k = log P(y | X, w, A_k)`` (summed over the clips of the batch) and FLOPs penalties ``c_k`` (Eq. 2):

    objective  L = -log (1/K sum_k exp l_k) + beta * log(epsilon + (1/K) sum_k c_k)              (Eq. 1-3)
    grad_w   -log P(y|X)  = -sum_k v_k grad_w l_k,                 v_k = softmax(l)_k  (exact for the K draws)
    grad_alpha -log P(y|X) ~ -sum_k (v_k - 1/K) grad_alpha log P(A_k | alpha)            (self-normalised
                             importance weights; 1/K: a baseline with expectation zero)
    grad_alpha log(e + C)  ~ 1/(e + mean c) * 1/K sum_k (c_k - b_k) grad_alpha log P(A_k | alpha)
                             b_k = mean of the other K - 1 penalties (leave-one-out baseline, unbiased)

:func:`surrogate` returns a scalar whose autograd gradient with respect to ``alpha`` is the estimate above;
``tests/test_parsec.py`` checks both against the exact gradients on a space small enough to enumerate.
``epsilon`` keeps ``log C`` finite when every sample lies in the range (C = 0), our choice (docs/parsec.md).
:func:`flops_penalty` is Eq. 2; :func:`k_most_probable` reads the K most probable architectures off the
learnt distribution.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn


class ArchDistribution(nn.Module):
    """Independent categoricals with ``sizes[v]`` choices; ``alpha`` holds all logits (zeros: uniform)."""

    def __init__(self, sizes: Sequence[int]):
        super().__init__()
        self.sizes = [int(n) for n in sizes]
        self.offsets = [0]
        for n in self.sizes:
            self.offsets.append(self.offsets[-1] + n)
        self.alpha = nn.Parameter(torch.zeros(self.offsets[-1]))

    def logits(self, v: int) -> torch.Tensor:
        return self.alpha[self.offsets[v]:self.offsets[v + 1]]

    def log_probs(self) -> list[torch.Tensor]:
        return [torch.log_softmax(self.logits(v), 0) for v in range(len(self.sizes))]

    def probs(self) -> list[list[float]]:
        with torch.no_grad():
            return [lp.exp().tolist() for lp in self.log_probs()]

    def sample(self, k: int, generator: torch.Generator | None = None,
               fixed: Mapping[int, int] | None = None) -> torch.Tensor:
        """``(k, variables)`` choice indices; the variables in ``fixed`` take their fixed choice."""
        fixed = fixed or {}
        cols = []
        with torch.no_grad():
            for v, lp in enumerate(self.log_probs()):
                if v in fixed:
                    cols.append(torch.full((k,), int(fixed[v]), dtype=torch.long))
                else:
                    cols.append(torch.multinomial(lp.exp(), k, replacement=True, generator=generator))
        return torch.stack(cols, 1)

    def log_prob(self, index: torch.Tensor, variables: Sequence[int] | None = None) -> torch.Tensor:
        """``log P(A_k | alpha)`` of each row of ``index`` (over ``variables`` only when given), differentiable."""
        lps = self.log_probs()
        vs = range(len(self.sizes)) if variables is None else variables
        out = torch.zeros(index.shape[0], dtype=self.alpha.dtype)
        for v in vs:
            out = out + lps[v][index[:, v]]
        return out

    def entropy(self) -> float:
        with torch.no_grad():
            return float(sum(-(lp.exp() * lp).sum() for lp in self.log_probs()))

    def mode(self) -> tuple[int, ...]:
        """The most probable architecture (each variable's most probable choice; ties: the first)."""
        with torch.no_grad():
            return tuple(int(torch.argmax(self.logits(v))) for v in range(len(self.sizes)))


@dataclass(frozen=True)
class StepTerms:
    """The objective's parts for one step (per batch): ``data_nll`` is -log of the mixture likelihood summed
    over the batch, ``cost`` the mean penalty C, ``cost_term`` beta * log(epsilon + C), ``weights`` v_k."""

    data_nll: float
    cost: float
    cost_term: float
    weights: list[float]


def posterior_weights(loglik: torch.Tensor) -> torch.Tensor:
    """``v_k = softmax(l)_k``: each sample's share of the mixture likelihood."""
    return torch.softmax(loglik.detach().double(), 0).to(loglik.dtype)


def surrogate(log_prob: torch.Tensor, loglik: torch.Tensor, penalty: torch.Tensor, *, beta: float,
              epsilon: float) -> tuple[torch.Tensor, StepTerms]:
    """A scalar whose gradient w.r.t. ``alpha`` (through ``log_prob``, shape ``(K,)``) estimates the gradient of
    the objective (module docstring); ``loglik`` and ``penalty`` (``(K,)``) carry no gradient."""
    k = log_prob.shape[0]
    loglik, penalty = loglik.detach().double(), penalty.detach().double()
    v = torch.softmax(loglik, 0)
    value = -((v - 1.0 / k).to(log_prob.dtype) * log_prob).sum()
    c = float(penalty.mean())
    if beta > 0 and k > 1:
        baseline = (penalty.sum() - penalty) / (k - 1)
        value = value + beta * ((penalty - baseline).to(log_prob.dtype) * log_prob).mean() / (epsilon + c)
    data_nll = -(float(torch.logsumexp(loglik, 0)) - math.log(k))
    return value, StepTerms(data_nll=data_nll, cost=c, cost_term=beta * math.log(epsilon + c) if beta > 0 else 0.0,
                            weights=v.tolist())


# -- Eq. 2 -------------------------------------------------------------------------------------------
def flops_penalty(flops: float, t_min: float, t_max: float) -> float:
    """``cost(A) = max(0, F / T_max - 1) + max(0, 1 - F / T_min)`` (Eq. 2; the printed ``F / (T_max - 1)`` is
    read as ``F / T_max - 1``, which is zero inside the range like the other hinge): 0 in ``[t_min, t_max]``,
    the relative distance to the range outside it."""
    return max(0.0, flops / t_max - 1.0) + max(0.0, 1.0 - flops / t_min)


# -- the distribution's most probable architectures ----------------------------------------------------
def k_most_probable(log_probs: Sequence[Sequence[float]], k: int, *, distinct: Callable[[tuple[int, ...]], Any] = None,
                    max_pops: int = 100_000) -> list[tuple[tuple[int, ...], float]]:
    """The ``k`` most probable assignments of independent categoricals (``log_probs[v][j]``: log P(variable v
    = choice j)), best first, with their log-probabilities; ``distinct`` (an assignment -> key) keeps only the
    first assignment of each key. Best-first search over per-variable ranks (Lawler/Murty for a product
    distribution): exact, and it touches ``O(k * variables)`` assignments."""
    order = [sorted(range(len(lp)), key=lambda j, lp=lp: -lp[j]) for lp in log_probs]

    def logp(ranks: tuple[int, ...]) -> float:
        return math.fsum(log_probs[v][order[v][r]] for v, r in enumerate(ranks))

    start = tuple(0 for _ in log_probs)
    heap, seen, out, keys, pops = [(-logp(start), start)], {start}, [], set(), 0
    while heap and len(out) < k and pops < max_pops:
        neg, ranks = heapq.heappop(heap)
        pops += 1
        assignment = tuple(order[v][r] for v, r in enumerate(ranks))
        key = distinct(assignment) if distinct else assignment
        if key not in keys:
            keys.add(key)
            out.append((assignment, -neg))
        for v in range(len(ranks)):
            if ranks[v] + 1 < len(order[v]):
                nxt = ranks[:v] + (ranks[v] + 1,) + ranks[v + 1:]
                if nxt not in seen:
                    seen.add(nxt)
                    heapq.heappush(heap, (-logp(nxt), nxt))
    return out
