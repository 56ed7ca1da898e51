"""The supplement's generalisation check in small (§3): Opt, S, ST and S+ST trained with the same recipe.

    result = run_comparison(config)      # config: a JobConfig of the main job whose strategy is fusion

The command line is ``jobs/fusion_variants.py`` (the options of ``jobs/search_and_train.py``, ``--strategy``
fusion). It is the main job twice, on the same ``out_dir`` (so one MLflow parent run, one search, the same recipe):

1. ``run_job`` with strategy ``fusion`` and ``top_k`` 1: the template is trained, the probabilities are
   read out and the Opt network (``cand1``) is trained;
2. ``run_job`` again with the other distinct candidates of the outcome (S, ST, S+ST everywhere, and E3D's own
   kernels when asked for) as extra spec files (the job's ``--also``): the finished search and Opt's finished
   training are read back, the variants are trained.

Two steps because the job's ``top_k_distinct`` tells candidates apart by kernels and depths only: ST and
S+ST everywhere share both (docs/fusion.md, "Wiring"). The table (``fusion_comparison.md`` / ``.json``)
lists clip-level top-1 (the last epoch's single-view validation, as the supplement reports) and multi-view top-1.
The caller starts Ray (the job: ``--address``/``--num-cpus``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from e3d.families.fused import fusion_pattern


@dataclass
class Comparison:
    rows: list[dict[str, Any]]
    table: str
    outcome: Any
    out_dir: str


def variant_specs(outcome: Any, folder: Path) -> list[Path]:
    """Write every candidate but Opt to ``folder/<name>.json``; returns the paths in the outcome's order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for c in outcome.candidates[1:]:
        path = folder / f"{c.spec.name.replace('+', '')}.json"
        path.write_text(c.spec.to_json() + "\n")
        paths.append(path)
    return paths


def run_comparison(config: Any, *, verbose: bool = True) -> Comparison:
    """Both job runs (module docstring) for a ``JobConfig`` whose strategy is ``fusion``; the table of results."""
    from pipeline.search_and_train import run_job

    if config.strategy != "fusion":
        raise ValueError(f"the comparison runs strategy 'fusion', got {config.strategy!r}")
    first = run_job(replace(config, selection=replace(config.selection, top_k=1)), verbose=verbose)
    out = Path(first.out_dir)
    extra = tuple(str(p) for p in variant_specs(first.outcome, out / "fusion_variants"))
    second = run_job(replace(config, selection=replace(config.selection, top_k=1,
                                                       extra=tuple(config.selection.extra) + extra)), verbose=verbose)
    outcome = second.outcome
    by_name = {c.spec.name: c for c in outcome.candidates}
    rows = []
    for result in second.candidates:
        cand = outcome.best if result.name == "cand1" else by_name.get(result.name)
        info = dict(cand.info) if cand is not None else {}
        spec = cand.spec if cand is not None else None
        rows.append({"variant": info.get("variant", result.name), "name": result.name,
                     "same_as": info.get("same_as", []),
                     "fusion": fusion_pattern(spec) if spec is not None else "",
                     "kernels": spec.kernel_pattern if spec is not None else "",
                     "log_prob": info.get("log_prob"), "gflops": round((result.train_flops or result.flops) / 1e9, 4),
                     "mparams": round(result.params / 1e6, 4), "clip_top1": result.val_top1,
                     "best_clip_top1": result.best_val_top1, "mv_top1": result.mv_top1, "epochs": result.epochs,
                     "train_time_s": round(result.train_time_s, 1), "error": result.error})
    table = format_rows(rows)
    record = {"rows": rows, "opt": outcome.extra.get("opt"), "settings": outcome.settings}
    (out / "fusion_comparison.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    (out / "fusion_comparison.md").write_text(table + "\n")
    if verbose:
        print("\n" + table)
    return Comparison(rows=rows, table=table, outcome=outcome, out_dir=str(out))


def format_rows(rows: list[dict[str, Any]]) -> str:
    lines = ["| variant | fusion per stage | kernels | GFLOPs | M params | log P | clip top-1 | best clip top-1 | "
             "multi-view top-1 |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        same = f" (= {', '.join(r['same_as'])})" if r["same_as"] else ""
        lp = "" if r["log_prob"] is None else f"{r['log_prob']:.2f}"
        lines.append(f"| {r['variant']}{same} | {r['fusion']} | {r['kernels']} | {r['gflops']:.4f} "
                     f"| {r['mparams']:.3f} | {lp} | {r['clip_top1']:.1f} | {r['best_clip_top1']:.1f} | {r['mv_top1']:.1f} |")
    return "\n".join(lines)
