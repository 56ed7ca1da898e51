"""The analysis (no Ray): each predictor against the validation accuracy over the models' rows, with the rank
statistics of :mod:`e3d.stats`."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from e3d.stats import binned_kendall, bootstrap_ci, kendall, spearman, top_k_hit_rate

from .config import epoch_budgets


def finite_pairs(rows: Sequence[Mapping[str, Any]], proxy: str, target: str) -> list[Mapping[str, Any]]:
    """The rows where both ``proxy`` and ``target`` are finite numbers."""
    return [r for r in rows if finite(r.get(proxy)) and finite(r.get(target))]


def finite(v: Any) -> bool:
    """Whether ``v`` is a finite number (None, NaN, inf and text are not)."""
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def correlate_one(rows: Sequence[Mapping[str, Any]], proxy: str, target: str, *, bins: int, n_boot: int, seed: int,
                  top_k: int | None) -> dict[str, Any]:
    """The statistics of ``proxy`` against ``target`` over the rows where both are finite."""
    use = finite_pairs(rows, proxy, target)
    x = [float(r[proxy]) for r in use]
    y = [float(r[target]) for r in use]
    k = top_k or max(1, math.ceil(len(use) / 4))
    binned, detail = binned_kendall(x, y, [float(r["gflops"]) for r in use], bins)
    return {"n": len(use), "kendall_tau": kendall(x, y), "kendall_ci": bootstrap_ci(x, y, kendall, n_boot=n_boot,
                                                                                    seed=seed),
            "spearman_rho": spearman(x, y), "spearman_ci": bootstrap_ci(x, y, spearman, n_boot=n_boot, seed=seed),
            "binned_kendall_tau": binned, "bins": detail, "top_k": k, "top_k_hit_rate": top_k_hit_rate(x, y, k)}


def correlate(rows: Sequence[Mapping[str, Any]], proxies: Sequence[str], *, epochs: int, bins: int = 3,
              n_boot: int = 1000, seed: int = 0, top_k: int | None = None) -> dict[str, dict[str, Any]]:
    """``{proxy: {n, kendall_tau, kendall_ci, spearman_rho, spearman_ci, binned_kendall_tau, bins, top_k,
    top_k_hit_rate, multi_view: {...the same against mv_top1}, by_epoch: {"<e>": {kendall_tau,
    spearman_rho, n}}}}`` against the final validation top-1 (``val_top1``)."""
    out = {}
    for p in proxies:
        kw = dict(bins=bins, n_boot=n_boot, seed=seed, top_k=top_k)
        res = correlate_one(rows, p, "val_top1", **kw)
        res["multi_view"] = correlate_one(rows, p, "mv_top1", **kw)
        res["by_epoch"] = {}
        for e in epoch_budgets(epochs):
            use = finite_pairs(rows, p, f"val_top1_e{e}")
            x, y = [float(r[p]) for r in use], [float(r[f"val_top1_e{e}"]) for r in use]
            res["by_epoch"][str(e)] = {"fraction": e / epochs, "n": len(use), "kendall_tau": kendall(x, y),
                                       "spearman_rho": spearman(x, y)}
        out[p] = res
    return out
