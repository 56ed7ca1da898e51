"""From learned drop probabilities to fusion strategies (supplement §1.2 and §3).

* the posterior probability that unit ``u`` takes input ``i`` at layer ``l``: ``P = 1 - sqrt(p_{l,i,u})``
  (Eq. S16-S17), written as ``fusion_probabilities.csv`` (layer, input, unit, probability);
* a layer's marginal: ``P_l(u)``, the mean of ``P`` over the layer's inputs (the supplement's "marginal
  probability of layer-level fusion units"), written as ``fusion_layers.csv`` and drawn as a heatmap;
* the probability that a network sampled from the template uses exactly unit ``u`` at layer ``l``:
  ``q_l(u) = P_l(u) * prod_{u' != u} (1 - P_l(u'))``; the "Opt" strategy is the most probable one: per layer
  ``argmax_u q_l(u)`` (= ``argmax_u P_l(u)``);
* mapped onto a backbone of ``D`` blocks by relative depth: block ``j`` (0-based) reads template layer
  ``floor((j + 1/2) L / D)``; a strategy's log-probability is ``sum_j log q_{layer(j)}(u_j)``. With one unit
  per stage, the stage's unit maximises the sum over its blocks (the most probable stage-wise network).
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

UNITS = ("S", "ST", "S+ST")


def unit_posteriors(drop_p: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``1 - sqrt(p)`` per layer: ``(inputs, 3)`` arrays."""
    return [1.0 - np.sqrt(np.asarray(p, dtype=np.float64)) for p in drop_p]


def layer_marginals(drop_p: Sequence[np.ndarray]) -> np.ndarray:
    """``(L, 3)``: per layer, each unit's posterior averaged over the layer's inputs."""
    return np.stack([post.mean(axis=0) for post in unit_posteriors(drop_p)])


def exclusive(marginals: np.ndarray) -> np.ndarray:
    """``(L, 3)``: ``q_l(u)``, the probability that layer ``l`` uses unit ``u`` and neither other unit."""
    m = np.clip(np.asarray(marginals, dtype=np.float64), 1e-12, 1 - 1e-12)
    out = np.empty_like(m)
    for u in range(m.shape[1]):
        others = np.prod(np.delete(1 - m, u, axis=1), axis=1)
        out[:, u] = m[:, u] * others
    return out


def opt_layers(marginals: np.ndarray) -> list[str]:
    """The Opt strategy of the template itself: per layer its most probable unit."""
    return [UNITS[int(j)] for j in np.argmax(exclusive(marginals), axis=1)]


def block_layers(depths: Sequence[int], num_layers: int) -> list[list[int]]:
    """Per backbone stage, the template layer (0-based) each of its blocks reads, by relative depth."""
    total = sum(depths)
    out, j = [], 0
    for d in depths:
        out.append([min(num_layers - 1, int((j + b + 0.5) * num_layers / total)) for b in range(d)])
        j += d
    return out


def map_strategy(marginals: np.ndarray, depths: Sequence[int], granularity: str = "stage") -> list[Any]:
    """The most probable units for a backbone with ``depths`` blocks per stage: one unit per stage
    (``granularity="stage"``) or a list per stage (``"block"``)."""
    logq = np.log(np.clip(exclusive(marginals), 1e-300, None))
    out: list[Any] = []
    for layers in block_layers(depths, len(marginals)):
        if granularity == "block":
            out.append([UNITS[int(np.argmax(logq[layer]))] for layer in layers])
        else:
            out.append(UNITS[int(np.argmax(logq[layers].sum(axis=0)))])
    return out


def strategy_log_prob(marginals: np.ndarray, depths: Sequence[int], units: Sequence[Any]) -> float:
    """``sum_j log q_{layer(j)}(u_j)`` of a per-stage (or per-block) assignment on the backbone."""
    logq = np.log(np.clip(exclusive(marginals), 1e-300, None))
    total = 0.0
    for layers, unit in zip(block_layers(depths, len(marginals)), units):
        per_block = [unit] * len(layers) if isinstance(unit, str) else list(unit)
        total += sum(float(logq[layer, UNITS.index(u)]) for layer, u in zip(layers, per_block))
    return total


# -- files ----------------------------------------------------------------------------------------------------
def write_probabilities(path: str | Path, layout: Sequence[tuple[int, int, int]], drop_p: Sequence[np.ndarray]) -> Path:
    """``layer, input, unit, probability`` (+ ``block``, ``drop_p``): one row per gate. ``layer`` is 1-based
    over the whole template; ``input`` 0 is the dense block's input, ``j`` the output of the block's j-th layer."""
    path = Path(path)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["layer", "input", "unit", "probability", "block", "drop_p"])
        for (layer, block, inputs), p in zip(layout, drop_p):
            for i in range(inputs):
                for j, u in enumerate(UNITS):
                    w.writerow([layer, i, u, f"{1 - math.sqrt(float(p[i][j])):.6f}", block, f"{float(p[i][j]):.6f}"])
    return path


def read_probabilities(path: str | Path) -> list[dict[str, Any]]:
    with Path(path).open() as f:
        return [{"layer": int(r["layer"]), "input": int(r["input"]), "unit": r["unit"],
                 "probability": float(r["probability"])} for r in csv.DictReader(f)]


def write_layers(path: str | Path, layout: Sequence[tuple[int, int, int]], marginals: np.ndarray) -> Path:
    path = Path(path)
    opt = opt_layers(marginals)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["layer", "block", *UNITS, "opt"])
        for (layer, block, _), row, best in zip(layout, marginals, opt):
            w.writerow([layer, block, *(f"{v:.6f}" for v in row), best])
    return path


def layer_table(layout: Sequence[tuple[int, int, int]], marginals: np.ndarray) -> str:
    """The per-layer marginals as a Markdown table."""
    lines = ["| layer | block | P(S) | P(ST) | P(S+ST) | Opt |", "|---|---|---|---|---|---|"]
    for (layer, block, _), row, best in zip(layout, marginals, opt_layers(marginals)):
        lines.append(f"| {layer} | {block} | " + " | ".join(f"{v:.3f}" for v in row) + f" | {best} |")
    return "\n".join(lines)


def plot_heatmap(path: str | Path, layout: Sequence[tuple[int, int, int]], drop_p: Sequence[np.ndarray],
                 title: str = "") -> Path:
    """Four panels: the layer x unit marginals, then per unit the layer x input posteriors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    post = unit_posteriors(drop_p)
    marg = layer_marginals(drop_p)
    width = max(p.shape[0] for p in post)
    fig, axes = plt.subplots(1, 4, figsize=(15, 0.35 * len(layout) + 2.2),
                             gridspec_kw={"width_ratios": [3] + [max(2, width)] * 3, "wspace": 0.15})
    labels = [f"L{layer} (b{block})" for layer, block, _ in layout]
    im = axes[0].imshow(marg, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    axes[0].set_xticks(range(3), UNITS)
    axes[0].set_yticks(range(len(labels)), labels)
    axes[0].set_title("layer marginal")
    for r, row in enumerate(marg):
        for c, v in enumerate(row):
            axes[0].text(c, r, f"{v:.2f}", ha="center", va="center", color="w" if v < 0.6 else "k", fontsize=7)
    for j, u in enumerate(UNITS):
        grid = np.full((len(layout), width), np.nan)
        for r, p in enumerate(post):
            grid[r, :p.shape[0]] = p[:, j]
        axes[j + 1].imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        axes[j + 1].set_title(f"{u}: layer x input")
        axes[j + 1].set_xlabel("input (0 = block input)")
        axes[j + 1].set_yticks(range(len(labels)), [])
    fig.colorbar(im, ax=axes, shrink=0.8, label="P(unit used | data) = 1 - sqrt(p)")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)
