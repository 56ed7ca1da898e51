"""Statistics for small evaluation sets, in numpy (scipy for two rank tests): bootstrap intervals over videos and
seeds, and rank statistics (how well one quantity orders models by another).

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

Rank statistics (the proxy study's, for any predictor of accuracy, e.g. a proxy or the accuracy after one epoch):

    kendall(x, y), spearman(x, y)                     # Kendall's tau-b and Spearman's rho; NaN where undefined
    lo, hi = bootstrap_ci(x, y, kendall, n_boot=1000) # percentile interval over models resampled with replacement
    top_k_hit_rate(x, y, k)                           # of x's top k, the share among y's top k
    tau, bins = binned_kendall(x, y, flops, 3)        # tau within FLOPs bins, weighted by their pairs
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

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


# -- rank statistics ----------------------------------------------------------------------------------------
def kendall(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties in either variable accounted); NaN when a variable is constant or n < 2."""
    from scipy.stats import kendalltau

    if len(x) < 2:
        return math.nan
    return float(kendalltau(x, y).statistic)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho (average ranks for ties); NaN when a variable is constant or n < 2."""
    from scipy.stats import spearmanr

    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan
    return float(spearmanr(x, y).statistic)


def kendall_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of every row pair of ``x``, ``y`` (shape ``(B, n)``) at once; NaN where undefined.
    The same statistic as :func:`kendall` (``scipy.stats.kendalltau``), vectorised for the bootstrap."""
    sx = np.sign(x[:, :, None] - x[:, None, :])
    sy = np.sign(y[:, :, None] - y[:, None, :])
    n = x.shape[1]
    pairs = n * (n - 1) / 2
    concordance = (sx * sy).sum(axis=(1, 2)) / 2
    untied_x = pairs - (sx == 0).sum(axis=(1, 2)) / 2 + n / 2  # the diagonal is not a pair
    untied_y = pairs - (sy == 0).sum(axis=(1, 2)) / 2 + n / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((untied_x > 0) & (untied_y > 0), concordance / np.sqrt(untied_x * untied_y), np.nan)


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of every row pair (average ranks for ties), vectorised; NaN where undefined."""
    from scipy.stats import rankdata

    rx, ry = rankdata(x, axis=1), rankdata(y, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    den = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(axis=1) / den, np.nan)


_ROWS = {"kendall": kendall_rows, "spearman": spearman_rows}


def bootstrap_ci(x: Sequence[float], y: Sequence[float], stat: Callable[[Sequence[float], Sequence[float]], float],
                 *, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat`` (:func:`kendall` or :func:`spearman`, computed vectorised
    over the resamples) over models resampled with replacement; resamples where the statistic is undefined
    (e.g. constant accuracy) are dropped. Widened to contain the point estimate when the bootstrap
    distribution lies on one side of it (only with very few models). NaN when undefined."""
    x_a, y_a = np.asarray(x, float), np.asarray(y, float)
    point = stat(x_a, y_a)
    if len(x_a) < 3 or not math.isfinite(point):
        return (math.nan, math.nan)
    idx = np.random.default_rng(seed).integers(0, len(x_a), (n_boot, len(x_a)))
    values = _ROWS[stat.__name__](x_a[idx], y_a[idx])
    values = values[np.isfinite(values)]
    if len(values) < max(10, n_boot // 10):
        return (math.nan, math.nan)
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return (float(min(lo, point)), float(max(hi, point)))


def top_k_hit_rate(x: Sequence[float], y: Sequence[float], k: int) -> float:
    """Of the ``k`` models the proxy ranks highest, the fraction that are among the ``k`` most accurate (a
    model tied with the k-th best accuracy counts as among them)."""
    if len(x) < k or k < 1 or len(set(y)) < 2:  # equal accuracies: nothing to hit
        return math.nan
    order = sorted(range(len(x)), key=lambda i: -x[i])[:k]
    kth = sorted(y, reverse=True)[k - 1]
    return sum(1 for i in order if y[i] >= kth) / k


def flops_bins(flops: Sequence[float], bins: int) -> list[list[int]]:
    """Model indices split into ``bins`` consecutive groups of (nearly) equal size by FLOPs."""
    order = sorted(range(len(flops)), key=lambda i: flops[i])
    return [list(chunk) for chunk in np.array_split(order, bins) if len(chunk)]


def binned_kendall(x: Sequence[float], y: Sequence[float], flops: Sequence[float], bins: int
                   ) -> tuple[float, list[dict[str, Any]]]:
    """Kendall's tau within each FLOPs bin of at least 3 models, and their mean weighted by the number of
    pairs in each bin: how well the proxy orders models of similar FLOPs."""
    detail, num, den = [], 0.0, 0
    for idx in flops_bins(flops, bins):
        xs, ys = [x[i] for i in idx], [y[i] for i in idx]
        tau = kendall(xs, ys) if len(idx) >= 3 else math.nan
        detail.append({"gflops": [min(flops[i] for i in idx), max(flops[i] for i in idx)], "n": len(idx),
                       "kendall_tau": tau, "spearman_rho": spearman(xs, ys) if len(idx) >= 3 else math.nan})
        if math.isfinite(tau):
            pairs = len(idx) * (len(idx) - 1) // 2
            num += tau * pairs
            den += pairs
    return (num / den if den else math.nan), detail
