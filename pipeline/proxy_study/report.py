"""The study's report: ``models.csv``, ``correlations.json``, ``table.md`` (and ``searches.csv``), the Fig. 3 style
scatter plots and tau against the training budget."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .analysis import finite, finite_pairs
from .config import RANDOM, StudyConfig, epoch_budgets
from .state import write_json
from .table import write_csv


def fmt(v: Any, nd: int = 3) -> str:
    return f"{v:.{nd}f}" if finite(v) else "–"


def sig(v: Any) -> str:
    return f"{v:.3g}" if finite(v) else "–"


def ci_text(ci: Sequence[Any]) -> str:
    return f"[{fmt(ci[0], 2)}, {fmt(ci[1], 2)}]" if ci and finite(ci[0]) else ""


def format_table(corr: Mapping[str, Mapping[str, Any]], epochs: int) -> str:
    """Markdown: per proxy n, tau [CI], rho [CI], binned tau, top-k hit rate, tau per epoch budget, and the
    multi-view tau/rho."""
    budgets = epoch_budgets(epochs)
    head = (["proxy", "n", "Kendall τ [95% CI]", "Spearman ρ [95% CI]", "τ within FLOPs bins", "top-k hit"]
            + [f"τ @ {e}/{epochs} ep" for e in budgets] + ["multi-view τ", "multi-view ρ"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p, c in corr.items():
        mv = c["multi_view"]
        cells = [p, str(c["n"]), f"{fmt(c['kendall_tau'])} {ci_text(c['kendall_ci'])}".strip(),
                 f"{fmt(c['spearman_rho'])} {ci_text(c['spearman_ci'])}".strip(), fmt(c["binned_kendall_tau"]),
                 f"{fmt(c['top_k_hit_rate'], 2)} (k={c['top_k']})"]
        cells += [fmt(c["by_epoch"][str(e)]["kendall_tau"]) for e in budgets]
        cells += [fmt(mv["kendall_tau"]), fmt(mv["spearman_rho"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def format_searches(searches: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]) -> str:
    by_name = {r["name"]: r for r in rows}
    head = ["search", "strategy", "ranked by", "iterations × population", "cost (CPU-s)", "wall (s)",
            "winner", "winner GFLOPs", "winner score", "val top-1", "multi-view top-1"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in searches:
        r = by_name.get(s["winner"], {})
        size = "1 draw" if s["strategy"] == RANDOM else f"{s['iterations']} × {s['population']}"
        cells = [s["search"], s["strategy"], s["score"], size, sig(s["cpu_s"]), sig(s["wall_s"]),
                 s["winner"] + (f" (not trained: {s['error']})" if s.get("error") else ""), fmt(s["gflops"], 4),
                 fmt(s["best_score"], 2), fmt(r.get("val_top1"), 1), fmt(r.get("mv_top1"), 1)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_scatter(rows: Sequence[Mapping[str, Any]], proxies: Sequence[str], corr: Mapping[str, Any],
                 folder: Path) -> list[Path]:
    """Fig. 3 style: validation top-1 against each proxy, colour = GFLOPs, sampled models as dots, zoo
    references as stars and search winners as triangles (labelled); one PNG per proxy and one grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def draw(ax, p):
        use = finite_pairs(rows, p, "val_top1")
        if not use:
            ax.set_title(f"{p}: no finite values")
            return None
        gf = [r["gflops"] for r in rows if finite(r.get("gflops"))]
        vmin, vmax = min(gf), max(gf)
        sc = None
        for kind, marker, size in (("sample", "o", 30), ("zoo", "*", 140), ("search", "^", 70)):
            sub = [r for r in use if r["source"].split(":")[0] == kind]
            if not sub:
                continue
            sc = ax.scatter([r[p] for r in sub], [r["val_top1"] for r in sub], c=[r["gflops"] for r in sub],
                            cmap="viridis", vmin=vmin, vmax=vmax, marker=marker, s=size, edgecolors="k",
                            linewidths=0.4, label=kind)
            if kind != "sample":
                for r in sub:
                    ax.annotate(r["name"], (r[p], r["val_top1"]), fontsize=7, xytext=(3, 3),
                                textcoords="offset points")
        c = corr[p]
        ax.set_title(f"{p}: τ={fmt(c['kendall_tau'], 2)} {ci_text(c['kendall_ci'])}, ρ={fmt(c['spearman_rho'], 2)}, "
                     f"binned τ={fmt(c['binned_kendall_tau'], 2)}", fontsize=8)
        ax.set(xlabel=p, ylabel="val top-1 (%)")
        ax.grid(alpha=0.3)
        return sc

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for p in proxies:
        fig, ax = plt.subplots(figsize=(5, 4))
        sc = draw(ax, p)
        if sc is not None:
            fig.colorbar(sc, ax=ax, label="GFLOPs")
            ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        paths.append(folder / f"scatter_{p}.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    cols = min(4, len(proxies))
    nrows = math.ceil(len(proxies) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.6 * nrows), squeeze=False)
    for ax, p in zip(axes.flat, proxies):
        draw(ax, p)
    for ax in list(axes.flat)[len(proxies):]:
        ax.axis("off")
    fig.tight_layout()
    paths.append(folder / "scatter.png")
    fig.savefig(paths[-1], dpi=90)
    plt.close(fig)
    return paths


def plot_tau_vs_epochs(corr: Mapping[str, Any], epochs: int, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = epoch_budgets(epochs)
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (p, c) in enumerate(corr.items()):
        ys = [c["by_epoch"][str(e)]["kendall_tau"] for e in budgets]
        ax.plot(budgets, [y if finite(y) else np.nan for y in ys], "o-", color=f"C{i % 10}", label=p)
    ax.axhline(0, color="k", lw=0.5)
    ax.set(xlabel="epochs of training (same runs)", ylabel="Kendall τ vs val top-1", xticks=budgets,
           title="proxy rank correlation vs training budget")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_outputs(out: Path, rows: list[dict[str, Any]], proxies: Sequence[str], corr: dict[str, Any],
                  searches: Sequence[Mapping[str, Any]], config: StudyConfig) -> list[Path]:
    files = [write_csv(rows, out / "models.csv"), write_json(out / "correlations.json", corr)]
    table = (f"# Proxy study: {len(rows)} models, {config.epochs} epochs at "
             f"{config.clip_frames}x{config.clip_size}^2\n\n"
             f"Against the final validation top-1 (single view); binned = within {config.bins} FLOPs bins; "
             f"top-k hit: of the proxy's top k, the fraction among the k most accurate; top1_after_Nep: each network's "
             f"own validation top-1 after its first N epochs (the low-fidelity baseline, from the same runs).\n\n"
             + format_table(corr, config.epochs))
    if searches:
        table += "\n## Searches at equal budget\n\n" + format_searches(searches, rows)
        files.append(write_csv([dict(s, spec=json.dumps(s["spec"])) for s in searches], out / "searches.csv"))
    (out / "table.md").write_text(table)
    files.append(out / "table.md")
    files += plot_scatter(rows, proxies, corr, out)
    files.append(plot_tau_vs_epochs(corr, config.epochs, out / "tau_vs_epochs.png"))
    print(table)
    return files
