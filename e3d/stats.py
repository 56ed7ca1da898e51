"""Statistics for small evaluation sets, in plain numpy: bootstrap intervals over videos and seeds.

A comparison evaluates every network on the same validation videos, so two arms are compared *paired*:
video by video, seed by seed. The data of one arm is a matrix ``correct[seed, video]`` (1 where the
network of that seed got the video right, multi-view top-1). Its accuracy is the matrix mean; its
uncertainty comes from both the videos (which ones happened to be in the validation split) and the seeds
(which network the search and the training happened to produce), so the bootstrap resamples both: seeds
with replacement, then videos with replacement, the same draws for both arms of a pair.

    mean, (lo, hi) = bootstrap_mean(correct)                     # percent, 95 % interval
    delta, (lo, hi), p_better = paired_bootstrap(arm, baseline)  # arm minus baseline, P(arm better)

Every draw is a pair of multinomial count vectors (how often each seed and each video was drawn), so a
resampled mean is ``cs @ X @ cv / (S * V)``: 10 000 draws of 3 seeds x 111 videos take milliseconds.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

DEFAULT_BOOT = 10_000


def _matrix(x: Sequence[Sequence[float]] | np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"{name}: expected a matrix [seeds, videos] with at least one of each, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: contains non-finite values")
    return a


def resample_means(x: np.ndarray, *, n_boot: int = DEFAULT_BOOT, seed: int = 0) -> np.ndarray:
    """``n_boot`` bootstrap means of ``x[seed, video]``: seeds and videos each drawn with replacement."""
    x = _matrix(x, "x")
    s, v = x.shape
    rng = np.random.default_rng(seed)
    cs = rng.multinomial(s, np.full(s, 1.0 / s), size=n_boot).astype(np.float64)  # (B, S)
    cv = rng.multinomial(v, np.full(v, 1.0 / v), size=n_boot).astype(np.float64)  # (B, V)
    return np.einsum("bs,sv,bv->b", cs, x, cv) / (s * v)


def _interval(draws: np.ndarray, level: float) -> tuple[float, float]:
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(draws, [tail, 100.0 - tail])
    return float(lo), float(hi)


def bootstrap_mean(correct: Sequence[Sequence[float]] | np.ndarray, *, n_boot: int = DEFAULT_BOOT,
                   level: float = 0.95, seed: int = 0) -> tuple[float, tuple[float, float]]:
    """Mean of ``correct[seed, video]`` and its bootstrap interval (percentile, over videos and seeds)."""
    x = _matrix(correct, "correct")
    return float(x.mean()), _interval(resample_means(x, n_boot=n_boot, seed=seed), level)


def paired_bootstrap(arm: Sequence[Sequence[float]] | np.ndarray, baseline: Sequence[Sequence[float]] | np.ndarray,
                     *, n_boot: int = DEFAULT_BOOT, level: float = 0.95,
                     seed: int = 0) -> tuple[float, tuple[float, float], float]:
    """``arm - baseline`` on the same seeds and videos (rows and columns aligned): the mean difference, its
    paired bootstrap interval, and the probability that the arm is better (the share of draws with a positive
    difference, ties counted half: two identical arms give 0.5)."""
    a, b = _matrix(arm, "arm"), _matrix(baseline, "baseline")
    if a.shape != b.shape:
        raise ValueError(f"paired arms need the same seeds and videos: shapes {a.shape} and {b.shape}")
    draws = resample_means(a - b, n_boot=n_boot, seed=seed)
    p_better = float(np.mean(draws > 0) + 0.5 * np.mean(draws == 0))
    return float((a - b).mean()), _interval(draws, level), p_better
