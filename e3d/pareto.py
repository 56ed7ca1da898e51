"""The Pareto front of an outcome's candidates: higher score, fewer FLOPs, fewer params (and lower latency
when a predictor is given). ``pareto.csv`` and ``pareto.png`` beside the other search outputs; the main job's
``--select pareto`` trains candidates spread along the front instead of the top of the ranking."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .strategy import Candidate

Objective = tuple[str, Callable[[Candidate], float], int]  # name, value, +1 maximise / -1 minimise


def objectives(latency: Callable[[Any], float] | None = None) -> list[Objective]:
    objs: list[Objective] = [("score", lambda c: c.score, 1), ("flops", lambda c: float(c.flops), -1),
                             ("params", lambda c: float(c.params), -1)]
    if latency is not None:
        predict = getattr(latency, "predict", latency)
        objs.append(("latency_ms", lambda c: float(predict(c.spec)), -1))
    return objs


def pareto_front(candidates: Sequence[Candidate], objs: Sequence[Objective] | None = None) -> list[int]:
    """Indices of the non-dominated candidates (no other is at least as good in every objective and better in
    one), in the order given. All pairs compared at once with numpy, a block of rows at a time."""
    objs = list(objs or objectives())
    values = np.array([[sign * fn(c) for _, fn, sign in objs] for c in candidates], dtype=float).reshape(
        len(candidates), len(objs))  # every objective maximised
    dominated = np.zeros(len(values), dtype=bool)
    for start in range(0, len(values), 512):  # rows of the block dominate columns: block x n x objectives
        rows = values[start:start + 512, None, :]
        dominated |= ((rows >= values[None]).all(-1) & (rows > values[None]).any(-1)).any(0)
    return np.flatnonzero(~dominated).tolist()


def spread(candidates: Sequence[Candidate], front: Sequence[int], k: int) -> list[int]:
    """``k`` indices of the front spread evenly over its FLOPs range (always the two ends when k >= 2)."""
    ordered = sorted(front, key=lambda i: candidates[i].flops)
    if k >= len(ordered):
        return ordered
    if k == 1:
        return [max(front, key=lambda i: candidates[i].score)]
    picks = [ordered[round(j * (len(ordered) - 1) / (k - 1))] for j in range(k)]
    return list(dict.fromkeys(picks))


def write_pareto(out_dir: str | Path, candidates: Sequence[Candidate], objs: Sequence[Objective] | None = None,
                 title: str = "") -> dict[str, Path]:
    """``pareto.csv`` (every candidate, its objectives and whether it is on the front) and ``pareto.png``."""
    objs = list(objs or objectives())
    front = set(pareto_front(candidates, objs))
    out = Path(out_dir)
    path = out / "pareto.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["name", "rank", *[name for name, _, _ in objs], "on_front"])
        for rank, c in enumerate(candidates):
            w.writerow([c.spec.name, rank, *[fn(c) for _, fn, _ in objs], int(rank in front)])
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, len(objs) - 1, figsize=(4.2 * (len(objs) - 1), 3.6), dpi=110, squeeze=False)
    ys = [c.score for c in candidates]
    for ax, (name, fn, _) in zip(axes[0], objs[1:]):
        xs = [fn(c) for c in candidates]
        ax.scatter(xs, ys, s=8, alpha=0.4, label="candidates")
        on = sorted(front, key=lambda i: xs[i])
        ax.scatter([xs[i] for i in on], [ys[i] for i in on], s=18, color="C3", label="Pareto front")
        ax.set_xlabel(name)
        ax.set_ylabel("score")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title or "Pareto front")
    fig.tight_layout()
    png = out / "pareto.png"
    fig.savefig(png)
    plt.close(fig)
    return {"pareto": path, "pareto_plot": png}
