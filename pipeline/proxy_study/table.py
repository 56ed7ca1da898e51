"""The models table: one row per model with its cost, proxies and accuracies (``models.csv``)."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from e3d.cost import cost

from .config import epoch_budgets, low_fidelity
from .models import Model


def model_rows(models: Sequence[Model], scores: Mapping[str, Mapping[str, dict]], results: Mapping[str, Any],
               proxies: Sequence[str], epochs: int) -> list[dict[str, Any]]:
    """One row per model: name, source, gflops and mparams at the trained clip, the spec summary, every
    proxy, the accuracies (final, multi-view, and after each epoch budget), training time."""
    rows = []
    for m in models:
        c = cost(m.spec)
        r = results.get(m.name)
        hist = {int(h["epoch"]): h for h in (r.history if r is not None else [])}
        row: dict[str, Any] = {"name": m.name, "source": m.source, "gflops": round(c.flops / 1e9, 5),
                               "mparams": round(c.params / 1e6, 5), "layers": c.layers,
                               "kernels": m.spec.kernel_pattern, "depths": "-".join(map(str, m.spec.depths)),
                               "widths": "-".join(map(str, m.spec.widths))}
        for p in proxies:
            row[p] = scores.get(m.name, {}).get(p, {}).get("mean", math.nan)
        ok = r is not None and r.ok
        row["val_top1"] = r.val_top1 if ok else math.nan
        row["mv_top1"] = r.mv_top1 if ok else math.nan
        row["best_val_top1"] = r.best_val_top1 if ok else math.nan
        for e in epoch_budgets(epochs):
            row[f"val_top1_e{e}"] = float(hist[e].get("val_top1", math.nan)) if ok and e in hist else math.nan
        for e in low_fidelity(epochs):
            row[f"top1_after_{e}ep"] = float(hist[e].get("val_top1", math.nan)) if ok and e in hist else math.nan
        row["epochs"] = r.epochs if r is not None else 0
        row["train_time_s"] = round(r.train_time_s, 1) if r is not None else math.nan
        row["error"] = (r.error or "") if r is not None else "not trained"
        rows.append(row)
    return rows


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    return path
