"""Analytic entropy scores of a spec: HomoEntr-Score and STEntr-Score (E3D paper, Eq. 6 and 8).

Every conv layer ``l`` of the plain backbone (stem, the three convs of each block, head; no BN, SE or
residuals, Appendix C) adds ``1/2 * ln(C * kt * k * k * D)``, with ``C`` its input channels per group (1
for depthwise) and ``D`` the spatio-temporal refinement factor; the score adds ``ln(C_head)``. Each family
(:mod:`e3d.families`) supplies its layers' terms. This follows the paper's official code; ``docs/scores.md`` records the choices and the reproduced numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from .cost import cost
from .family import get_family
from .registry import Registry, resolve
from .spec import ArchSpec, SpecError


class InfiniteScoreError(SpecError):
    """The feature-map size vector is parallel to a kernel: the refinement factor is infinite."""


def refinement(frames: int, size: int, kernel: tuple[int, int, int]) -> float:
    """``D = -ln(1 - cos(S, K))`` with ``S = [T, r, r]``; 1 for kernels whose spatial extent is 1."""
    kt, k, _ = kernel
    if k == 1:
        return 1.0
    if frames * k == kt * size:  # S parallel to K (exact in integers): cosine distance 0
        raise InfiniteScoreError(
            f"feature map {frames}x{size}x{size} is parallel to kernel {kt}x{k}x{k}: the STEntr refinement "
            f"factor -ln(1 - cos) is infinite; change the kernel or the input size")
    dot = frames * kt + 2 * size * k
    cos = dot / math.sqrt((frames * frames + 2 * size * size) * (kt * kt + 2 * k * k))
    return -math.log(1.0 - cos)


def _score(spec: ArchSpec, refine: bool) -> float:
    return get_family(spec.family).entropy(spec, refine)


def homoentr(spec: ArchSpec) -> float:
    """HomoEntr-Score: refinement factor 1 everywhere (Eq. 6 with unit weight variance)."""
    return _score(spec, refine=False)


def stentr(spec: ArchSpec) -> float:
    """STEntr-Score (Eq. 8); raises :class:`InfiniteScoreError` when a factor would be infinite."""
    return _score(spec, refine=True)


# -- the score registry ---------------------------------------------------------------------------
ANALYTIC, FORWARD = "analytic", "forward"


@dataclass(frozen=True)
class ScoreValue:
    """A score over ``repeats`` seeded evaluations: the mean, the standard deviation and every value."""

    mean: float
    std: float
    values: tuple[float, ...]


@dataclass(frozen=True)
class Score:
    """A named proxy; higher means "predicted better".

    ``kind`` is ``"analytic"`` (``fn(spec) -> float``, microseconds, deterministic) or ``"forward"``
    (``fn(spec, *, seed, batch) -> float``: builds the network and runs it, milliseconds; one evaluation
    per seed). ``needs_batch``: the score reads real clips (``batch``: ``(B, 3, T, H, W)``), e.g. NASWOT.
    ``fn`` may be a ``"module:function"`` path, imported when the score is first evaluated (see
    :func:`declare_score`).
    """

    name: str
    description: str
    kind: str
    fn: Callable[..., float] | str
    needs_batch: bool = False

    @property
    def function(self) -> Callable[..., float]:
        """The score's function (imports its module the first time for a declared score); a module that cannot
        be imported (e.g. no torch in this install) raises ``ValueError`` naming the score."""
        if not isinstance(self.fn, str):
            return self.fn
        try:
            return resolve(self.fn)
        except ImportError as exc:
            raise ValueError(f"score {self.name!r} cannot be loaded from {self.fn}: {exc}") from exc

    def __call__(self, spec: ArchSpec, *, seed: int = 0, batch: Any = None) -> float:
        """One evaluation (the analytic ones ignore ``seed`` and ``batch``)."""
        if self.kind == ANALYTIC:
            return float(self.function(spec))
        if self.needs_batch and batch is None:
            raise ValueError(f"score {self.name!r} needs a batch of real clips")
        return float(self.function(spec, seed=seed, batch=batch))

    def evaluate(self, spec: ArchSpec, *, repeats: int = 1, seed: int = 0, batch: Any = None) -> ScoreValue:
        """Mean and spread over ``repeats`` evaluations seeded ``seed, seed + 1, ...`` (one for analytic)."""
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        n = 1 if self.kind == ANALYTIC else repeats
        values = tuple(self(spec, seed=seed + i, batch=batch) for i in range(n))
        mean = math.fsum(values) / n
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
        return ScoreValue(mean, std, values)


SCORES: Registry[Score] = Registry("score")


def _check_kind(kind: str) -> None:
    if kind not in (ANALYTIC, FORWARD):
        raise ValueError(f"score kind must be {ANALYTIC!r} or {FORWARD!r}, got {kind!r}")


def register_score(name: str, description: str, *, kind: str = ANALYTIC,
                   needs_batch: bool = False) -> Callable[[Callable[..., float]], Callable[..., float]]:
    """Decorator: register ``fn`` as the score ``name`` (see :class:`Score`); returns ``fn`` unchanged."""
    _check_kind(kind)

    def deco(fn: Callable[..., float]) -> Callable[..., float]:
        SCORES.add(name, Score(name, description, kind, fn, needs_batch), description)
        return fn
    return deco


def declare_score(name: str, description: str, target: str, *, kind: str = FORWARD,
                  needs_batch: bool = False) -> Score:
    """Register the score ``name`` whose function is ``target`` (``"module:function"``), imported when the
    score is first evaluated: listing and choosing scores never imports what they need (torch, for the
    forward ones)."""
    _check_kind(kind)
    score = Score(name, description, kind, target, needs_batch)
    SCORES.add(name, score, description)
    return score


def get_score(name: str) -> Score:
    """The registered score ``name``; :class:`ValueError` listing the known ones otherwise."""
    if name not in SCORES:
        raise ValueError(f"unknown score {name!r}; choose one of {', '.join(SCORES.names())} (see `e3d scores`)")
    return SCORES.get(name)


def score_names(kind: str | None = None) -> list[str]:
    """Every registered score (of ``kind`` when given), analytic ones first."""
    return [n for n in SCORES.names() if kind is None or SCORES.get(n).kind == kind]


register_score("stentr", "STEntr-Score: spatio-temporal entropy, E3D Eq. 8 (analytic)")(stentr)
register_score("homoentr", "HomoEntr-Score: entropy with unit refinement, E3D Eq. 6 (analytic)")(homoentr)


@register_score("flops", "multiply-accumulates of the training network for one clip (baseline)")
def _flops(spec: ArchSpec) -> float:
    return float(cost(spec).flops)


@register_score("params", "parameter count of the training network (baseline)")
def _params(spec: ArchSpec) -> float:
    return float(cost(spec).params)


# -- the forward proxies (e3d.proxies: torch is imported when one is first evaluated) -----------------
declare_score("zen", "Zen-score: log feature change under a 0.01 input perturbation + BN variances, "
                     "Gaussian init (Lin et al. 2021; forward)", "e3d.proxies:zen")
declare_score("maedet", "MAE-DET entropy: log std of the final feature map + ln C, Gaussian weights and "
                        "input, BN as identity (Sun et al. 2022; forward)", "e3d.proxies:maedet")
declare_score("naswot", "NASWOT: log det of the Hamming kernel of ReLU codes over a batch of real clips "
                        "(Mellor et al. 2021; forward, needs a batch)", "e3d.proxies:naswot", needs_batch=True)
declare_score("synflow", "SynFlow: log sum |theta * dR/dtheta| of the sign-linearised network on an "
                         "all-ones clip, BN as identity (Tanaka et al. 2020; forward)", "e3d.proxies:synflow")
