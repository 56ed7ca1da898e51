"""Random search in the FLOPs band (supplement §5): architectures drawn uniformly from the two-stream space
with FLOPs in ``[t_min, t_max]``, to be trained from scratch with the same recipe as any other candidate.

    specs = band_specs(space, t_min, t_max, 16, seed=0)
    results = train_candidates(specs + [searched], dataset, ...)     # pipeline.train
    band_median(results[1:])
"""
from __future__ import annotations

import random
import statistics
from typing import Any, Sequence

from ..spec import ArchSpec
from .space import TwoStreamSpace


def sample_band(space: TwoStreamSpace, t_min: float, t_max: float, n: int, *, seed: int = 0,
                max_draws: int = 2_000_000) -> list[tuple[int, ...]]:
    """``n`` distinct architectures drawn uniformly from those of ``space`` whose FLOPs lie in
    ``[t_min, t_max]`` (rejection sampling from the uniform distribution over the space: uniform over the
    band; supplement §5's random search)."""
    rng = random.Random(seed)
    found: dict[tuple[int, ...], None] = {}
    draws = 0
    while len(found) < n:
        if draws >= max_draws:
            raise RuntimeError(f"only {len(found)} of {n} architectures in [{t_min / 1e9:.4g}, {t_max / 1e9:.4g}] "
                               f"GFLOPs after {draws} draws; widen the band")
        index = tuple(rng.randrange(s) for s in space.sizes)
        draws += 1
        if index not in found and t_min <= space.flops(index) <= t_max:
            found[index] = None
    return list(found)


def band_specs(space: TwoStreamSpace, t_min: float, t_max: float, n: int, *, seed: int = 0,
               prefix: str = "band") -> list[ArchSpec]:
    """``n`` distinct specs drawn uniformly among the space's architectures within the band."""
    return [space.decode(index, f"{prefix}-{i:02d}") for i, index in enumerate(sample_band(space, t_min, t_max, n,
                                                                                         seed=seed))]


def band_median(results: Sequence[Any], key: str = "mv_top1") -> float:
    """Median of ``key`` over the trained band networks that finished."""
    values = [getattr(r, key) for r in results if r.ok]
    return statistics.median(values) if values else float("nan")
