"""Random search in the FLOPs band (supplement §5): architectures drawn uniformly from the two-stream space
with FLOPs in ``[t_min, t_max]``, trained from scratch with the same recipe as any other candidate.

    specs = band_specs(space, t_min, t_max, 16, seed=0)
    results = train_specs(specs + [searched], dataset, clip=clip, recipe=recipe, out_dir=out / "train")

Training is :func:`pipeline.train.train_candidates` (one Ray Tune trial per network, as in the main job and the
proxy study), so the searched net, the band's and any baseline are trained and evaluated the same way.
"""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Sequence

from e3d.spec import ArchSpec
from e3d.strategies.parsec import TwoStreamSpace, sample_band


def band_specs(space: TwoStreamSpace, t_min: float, t_max: float, n: int, *, seed: int = 0,
               prefix: str = "band") -> list[ArchSpec]:
    """``n`` distinct specs drawn uniformly among the space's architectures within the band."""
    return [space.decode(index, f"{prefix}-{i:02d}") for i, index in enumerate(sample_band(space, t_min, t_max, n,
                                                                                         seed=seed))]


def train_specs(specs: Sequence[ArchSpec], dataset: Any, *, clip: Any, recipe: Any, out_dir: str | Path,
                tracking: Any = None, eval_clips: int = 2, eval_crops: int = 3, seed: int = 0) -> list[Any]:
    """Train and evaluate ``specs`` with one recipe (``CandidateResult`` s in the order of ``specs``)."""
    from pipeline.train import train_candidates

    return train_candidates(list(specs), dataset, clip=clip, recipe=recipe, tracking=tracking, out_dir=out_dir,
                            eval_clips=eval_clips, eval_crops=eval_crops, seed=seed, log_model=False)


def band_median(results: Sequence[Any], key: str = "mv_top1") -> float:
    """Median of ``key`` over the trained band networks that finished."""
    values = [getattr(r, key) for r in results if r.ok]
    return statistics.median(values) if values else float("nan")
