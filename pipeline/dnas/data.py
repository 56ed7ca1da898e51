"""The search's data: the *training* videos split into a weight part, an architecture part and a monitoring
part (Appendix A: 0.6 / 0.2 / 0.2, stratified by class). The user's validation split is never touched: it
stays for the candidates' training and evaluation, so the search cannot overfit it.

Works on a ``pipeline.video.formats.VideoDataset`` (with its ``ClipConfig``) and on an in-memory
``pipeline.train.TensorSource`` (tests, benchmarks).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np


def stratified_split(labels: Sequence[int], fractions: Sequence[float], seed: int) -> list[list[int]]:
    """Indices of ``labels`` in three parts (weights, architecture, monitor), class by class (seeded shuffle).

    Of a class of ``n`` videos the architecture part takes ``round(f1 * n)`` (at least 1 and at most ``n - 1``
    when ``n >= 2``), the monitor part ``round(f2 * n)`` (leaving the weights at least one), the weights the rest.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    f_arch, f_mon = float(fractions[1]), float(fractions[2]) if len(fractions) > 2 else 0.0
    parts: list[list[int]] = [[], [], []]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c)).tolist()
        n = len(idx)
        n_arch = min(max(1, int(round(f_arch * n))), n - 1) if n >= 2 else 0
        n_mon = max(0, min(int(round(f_mon * n)), n - 1 - n_arch))
        n_train = n - n_arch - n_mon
        parts[0] += idx[:n_train]
        parts[1] += idx[n_train:n_train + n_arch]
        parts[2] += idx[n_train + n_arch:]
    return [sorted(p) for p in parts]


@dataclass
class SearchData:
    """Ray Datasets for the search: ``train`` (weights), ``arch`` (architecture), ``monitor`` (or None), the
    number of videos in each, and the number of classes."""

    train: Any
    arch: Any
    monitor: Any
    counts: dict[str, int]
    num_classes: int
    fingerprint: str

    def datasets(self) -> dict[str, Any]:
        return {"train": self.train, "arch": self.arch, "monitor": self.monitor}


def search_data(data: Any, clip: Any, fractions: Sequence[float], *, seed: int = 0) -> SearchData:
    """Split ``data``'s training videos (or clips) and make the three datasets."""
    from pipeline.train.data import TensorSource, VideoSource

    if isinstance(data, TensorSource):
        parts = stratified_split(data.train_y, fractions, seed)
        sub = [TensorSource(data.train_x[p], data.train_y[p], data.train_x[parts[2]], data.train_y[parts[2]],
                            list(data.classes), data.train_noise, 0.0) for p in parts[:2]]
        train, arch = sub[0].train(), sub[1].train()
        monitor = sub[0].val()
        fingerprint = data.fingerprint()
    else:
        if clip is None:
            raise ValueError("searching on videos needs the job's ClipConfig (SearchContext.clip)")
        items = list(data.train)
        parts = stratified_split([it.label for it in items], fractions, seed)
        pick = [[items[i] for i in p] for p in parts]
        train = VideoSource(replace(data, train=pick[0], val=pick[2]), clip, seed=seed).train()
        arch = VideoSource(replace(data, train=pick[1], val=[]), clip, seed=seed + 1).train()
        monitor = VideoSource(replace(data, train=pick[0], val=pick[2]), clip, seed=seed).val()
        fingerprint = VideoSource(data, clip, seed=seed).fingerprint()
    counts = {"train": len(parts[0]), "arch": len(parts[1]), "monitor": len(parts[2])}
    if not counts["train"] or not counts["arch"]:
        raise ValueError(f"the training data ({sum(counts.values())} videos) is too small to split into weight and "
                         f"architecture parts ({counts})")
    return SearchData(train, arch, monitor if counts["monitor"] else None, counts, len(data.classes), fingerprint)
