"""A comparison's statistics and files: per arm a mean multi-view top-1 over seeds with a bootstrap interval,
every arm against ``random`` by a paired bootstrap over the same videos and seeds, and a verdict in words.

Files: ``results.csv`` (one row per trained network), ``summary.json`` (per arm), ``table.md`` (the table and
the verdict), ``compare.png`` (accuracy against search CPU-seconds, log scale, with intervals).
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from e3d.stats import bootstrap_mean, paired_bootstrap

from .arms import BASELINE

RESULT_COLUMNS = ("arm", "strategy", "score", "seed", "name", "gflops", "mparams", "search_cpu_s", "search_wall_s",
                  "train_s", "val_top1", "mv_top1", "latency_ms", "epochs", "error")


@dataclass
class Report:
    summary: dict[str, Any]
    table: str
    verdict: str
    files: dict[str, str]


def common_videos(networks: Sequence[Any]) -> list[int]:
    """The validation videos every network was evaluated on (a file that failed to decode is in none)."""
    sets = [set(n.predictions["video_id"]) for n in networks if n.ok]
    return sorted(set.intersection(*sets)) if sets else []


def correct_matrix(networks: Sequence[Any], videos: Sequence[int]) -> tuple[list[int], np.ndarray]:
    """(seeds, ``correct[seed, video]``) of one arm's networks, restricted to ``videos``."""
    rows, seeds = [], []
    for n in sorted((n for n in networks if n.ok), key=lambda n: n.seed):
        p = n.predictions
        hit = {v: int(pr == lb) for v, pr, lb in zip(p["video_id"], p["pred"], p["label"])}
        rows.append([hit[v] for v in videos])
        seeds.append(n.seed)
    return seeds, np.asarray(rows, dtype=np.float64).reshape(len(rows), len(videos))


def _mean(values: Sequence[float]) -> float | None:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(finite)) if finite else None


def summarize(networks: Sequence[Any], arms: Sequence[str], *, n_boot: int = 10_000,
              seed: int = 0) -> dict[str, Any]:
    """Per arm: ``n``, ``mv_top1_mean`` and ``mv_top1_ci`` (percent), costs, and ``vs_random``: ``delta``,
    ``ci`` and ``p_better`` over the seeds both arms have (None for the baseline or without one)."""
    videos = common_videos(networks)
    by_arm = {a: [n for n in networks if n.arm == a] for a in arms}
    matrices = {a: correct_matrix(by_arm[a], videos) for a in arms}
    out: dict[str, Any] = {"videos": len(videos), "n_boot": n_boot, "baseline": BASELINE, "arms": {}}
    base = matrices.get(BASELINE)
    for a in arms:
        seeds, m = matrices[a]
        ok = [n for n in by_arm[a] if n.ok]
        row: dict[str, Any] = {"n": len(seeds), "seeds": seeds, "failed": len(by_arm[a]) - len(ok),
                               "mv_top1_mean": None, "mv_top1_ci": None,
                               "gflops_mean": _mean([n.gflops for n in ok]), "mparams_mean": _mean([n.mparams for n in ok]),
                               "search_cpu_s_mean": _mean([n.search_cpu_s for n in ok]),
                               "search_wall_s_mean": _mean([n.search_wall_s for n in ok]),
                               "train_s_mean": _mean([n.train_s for n in ok]),
                               "train_cpu_s_mean": _mean([n.train_cpu_s for n in ok]),
                               "val_top1_mean": _mean([n.val_top1 for n in ok]),
                               "latency_ms_mean": _mean([n.latency_ms for n in ok]), "vs_random": None}
        if len(seeds) and len(videos):
            mean, ci = bootstrap_mean(m, n_boot=n_boot, seed=seed)
            row["mv_top1_mean"], row["mv_top1_ci"] = 100 * mean, [100 * ci[0], 100 * ci[1]]
        if base is not None and a != BASELINE and len(seeds) and len(base[0]) and len(videos):
            both = sorted(set(seeds) & set(base[0]))
            if both:
                x = m[[seeds.index(s) for s in both]]
                y = base[1][[base[0].index(s) for s in both]]
                delta, ci, p = paired_bootstrap(x, y, n_boot=n_boot, seed=seed)
                row["vs_random"] = {"delta": 100 * delta, "ci": [100 * ci[0], 100 * ci[1]], "p_better": p,
                                    "seeds": both}
        out["arms"][a] = row
    return out


def verdict(summary: dict[str, Any]) -> str:
    """Which arms beat ``random`` with an interval above zero, which lose, which cannot be told apart."""
    better, worse, unclear = [], [], []
    for arm, row in summary["arms"].items():
        vs = row.get("vs_random")
        if vs is None:
            continue
        text = f"{arm} ({vs['delta']:+.1f} points, 95% CI [{vs['ci'][0]:+.1f}, {vs['ci'][1]:+.1f}], " \
               f"P(better) {vs['p_better']:.2f})"
        (better if vs["ci"][0] > 0 else worse if vs["ci"][1] < 0 else unclear).append(text)
    if BASELINE not in summary["arms"] or summary["arms"][BASELINE]["n"] == 0:
        return "Verdict: no 'random' baseline was trained, so no arm can be compared with it."
    lines = [f"Verdict, multi-view top-1 on {summary['videos']} validation videos against one random network per "
             f"seed (paired bootstrap over videos and seeds):"]
    lines.append("- better than random: " + ("; ".join(better) if better else "none"))
    if worse:
        lines.append("- worse than random: " + "; ".join(worse))
    lines.append("- cannot be told apart from random: " + ("; ".join(unclear) if unclear else "none"))
    return "\n".join(lines)


def _fmt(v: Any, spec: str) -> str:
    return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def format_table(summary: dict[str, Any]) -> str:
    lines = ["| arm | networks | GFLOPs | M params | search CPU-s | search wall s | train s | multi-view top-1 "
             "[95% CI] | vs random (points) [95% CI] | P(better than random) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for arm, r in summary["arms"].items():
        acc = (f"{r['mv_top1_mean']:.1f} [{r['mv_top1_ci'][0]:.1f}, {r['mv_top1_ci'][1]:.1f}]"
               if r["mv_top1_mean"] is not None else "")
        vs = r.get("vs_random")
        delta = f"{vs['delta']:+.1f} [{vs['ci'][0]:+.1f}, {vs['ci'][1]:+.1f}]" if vs else ("baseline" if arm == BASELINE
                                                                                      else "")
        n = f"{r['n']}" + (f" ({r['failed']} failed)" if r["failed"] else "")
        lines.append(f"| {arm} | {n} | {_fmt(r['gflops_mean'], '.4f')} | {_fmt(r['mparams_mean'], '.3f')} | "
                     f"{_fmt(r['search_cpu_s_mean'], '.3g')} | {_fmt(r['search_wall_s_mean'], '.3g')} | "
                     f"{_fmt(r['train_s_mean'], '.0f')} | {acc} | {delta} | {_fmt(vs['p_better'] if vs else None, '.2f')} |")
    return "\n".join(lines)


def write_results_csv(networks: Sequence[Any], path: Path) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=RESULT_COLUMNS)
        w.writeheader()
        for n in sorted(networks, key=lambda n: (n.arm, n.seed)):
            d = n.to_dict()
            w.writerow({k: (round(d[k], 6) if isinstance(d[k], float) and math.isfinite(d[k]) else d[k])
                        for k in RESULT_COLUMNS})
    return path


def plot(summary: dict[str, Any], path: Path) -> Path | None:
    """Multi-view top-1 (with its interval) against search CPU-seconds on a log axis; zoo networks (no search)
    on the left edge."""
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return None
    rows = [(a, r) for a, r in summary["arms"].items() if r["mv_top1_mean"] is not None]
    if not rows:
        return None
    costs = [r["search_cpu_s_mean"] or 0.0 for _, r in rows]
    floor = min([c for c in costs if c > 0] or [1.0]) / 10
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (arm, r), c in zip(rows, costs):
        x = c if c > 0 else floor
        lo, hi = r["mv_top1_ci"]
        ax.errorbar([x], [r["mv_top1_mean"]], yerr=[[r["mv_top1_mean"] - lo], [hi - r["mv_top1_mean"]]], fmt="o",
                    capsize=4, label=arm + (" (no search)" if c <= 0 else ""))
    base = summary["arms"].get(BASELINE)
    if base and base["mv_top1_mean"] is not None:
        ax.axhspan(base["mv_top1_ci"][0], base["mv_top1_ci"][1], color="0.85", zorder=0, label="random: 95% CI")
    ax.set_xscale("log")
    ax.set_xlabel("search cost (CPU-seconds per search, log scale)")
    ax.set_ylabel("multi-view top-1 (%)")
    ax.set_title(f"{summary['videos']} validation videos; mean over seeds, 95% bootstrap CI")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(networks: Sequence[Any], config: Any, out: Path, *, classes: Sequence[str] = (),
                 n_val: int | None = None) -> Report:
    arms = [a.name for a in config.arms]
    summary = summarize(networks, arms, n_boot=config.n_boot)
    summary |= {"val_videos": n_val, "classes": list(classes)}
    table, words = format_table(summary), verdict(summary)
    files = {"results": str(write_results_csv(networks, out / "results.csv"))}
    # summary.json: {arm: {...}}; what they were measured on goes to the report's own file
    (out / "summary.json").write_text(json.dumps(summary["arms"], indent=2, default=str) + "\n")
    (out / "report.json").write_text(json.dumps({k: v for k, v in summary.items() if k != "arms"}
                                                | {"config": config.to_dict(), "verdict": words},
                                                indent=2, default=str) + "\n")
    files["report"] = str(out / "report.json")
    files["summary"] = str(out / "summary.json")
    (out / "table.md").write_text(table + "\n\n" + words + "\n")
    files["table"] = str(out / "table.md")
    picture = plot(summary, out / "compare.png")
    if picture is not None:
        files["plot"] = str(picture)
    return Report(summary=summary, table=table, verdict=words, files=files)
