"""Accuracy of batch predictions against the data's labels, and the confusion matrix as a picture."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


def accuracy(true: Sequence[str | None], ranks: Sequence[int | None], top1: Sequence[str | None],
             labels: Sequence[str]) -> dict[str, Any]:
    """Top-1/top-5 (percent) over the decoded videos whose true class is one of the network's ``labels``, and the
    confusion matrix (rows: true class, columns: predicted, in ``labels`` order). ``ranks``: the true class's rank
    among all classes (1 = top-1); None where the video did not decode or its class is unknown to the network."""
    index = {name: i for i, name in enumerate(labels)}
    confusion = [[0] * len(labels) for _ in labels]
    scored = hit1 = hit5 = 0
    unknown: set[str] = set()
    for t, r, p in zip(true, ranks, top1):
        if p is None:  # undecodable
            continue
        if t not in index:
            unknown.add(str(t))
            continue
        scored += 1
        hit1 += r == 1
        hit5 += r is not None and r <= 5
        confusion[index[t]][index[p]] += 1
    out: dict[str, Any] = {"scored": scored, "confusion": confusion, "labels": list(labels)}
    if scored:
        out |= {"top1": 100.0 * hit1 / scored, "top5": 100.0 * hit5 / scored}
    if unknown:
        out["classes_unknown_to_the_network"] = sorted(unknown)
    return out


def plot_confusion(confusion: Sequence[Sequence[int]], labels: Sequence[str], path: str | Path, *,
                   title: str = "") -> Path:
    """The confusion matrix (counts, rows normalised for the colour) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    m = np.asarray(confusion, dtype=float)
    frac = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    n = len(labels)
    side = min(24.0, 2.5 + 0.45 * n)
    fig, ax = plt.subplots(figsize=(side, side * 0.85))
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    if n <= 40:
        ax.set_xticks(range(n), labels, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n), labels, fontsize=8)
        for i in range(n):
            for j in range(n):
                if m[i, j]:
                    ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if frac[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted", ylabel="true class", title=title or "confusion matrix")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
