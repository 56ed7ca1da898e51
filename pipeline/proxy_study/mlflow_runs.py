"""The study in MLflow: one parent run (reused on resume) with the analysis and the outputs, the proxies on each
model's own child run."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .analysis import finite
from .config import StudyConfig
from .state import write_json


class _NoRun:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def parent_run(tracking: Any, state: dict[str, Any], out: Path, config: StudyConfig):
    """The study's parent MLflow run: the one of ``study.json`` when it still exists, else a new one."""
    if tracking is None:
        return _NoRun()
    import contextlib

    @contextlib.contextmanager
    def ctx():
        run_id = state.get("parent_run_id") if state.get("tracking_uri") == tracking.tracking_uri else None
        if run_id is not None:
            try:
                tracking.client().get_run(run_id)
            except Exception:  # deleted, or another store
                run_id = None
        with tracking.run(f"proxy-study-{time.strftime('%Y%m%d-%H%M%S')}", run_id=run_id,
                          tags={"e3d.kind": "proxy-study"}) as parent:
            if run_id is None:
                state.update(parent_run_id=parent.info.run_id, tracking_uri=tracking.tracking_uri)
                write_json(out / "study.json", state)
                mlflow = tracking.client()
                mlflow.log_params({f"study.{k}": json.dumps(v) if isinstance(v, (list, dict)) else v
                                   for k, v in config.to_dict().items()})
            yield parent
    return ctx()


def log_mlflow(tracking: Any, parent_id: str, rows, proxies, corr, results, files, scores, seconds) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking.tracking_uri)
    metrics = {"models": len(rows), "study_time_s": seconds}
    for p, c in corr.items():
        for key in ("kendall_tau", "spearman_rho", "binned_kendall_tau", "top_k_hit_rate"):
            if finite(c[key]):
                metrics[f"{key}.{p}"] = c[key]
        if finite(c["multi_view"]["kendall_tau"]):
            metrics[f"mv_kendall_tau.{p}"] = c["multi_view"]["kendall_tau"]
    for k, v in metrics.items():
        client.log_metric(parent_id, k, float(v))
    for f in files:
        client.log_artifact(parent_id, str(f), "proxy_study")
    for row in rows:  # the proxies on each model's own (child) run
        r = results.get(row["name"])
        if r is None or not r.mlflow_run_id:
            continue
        try:
            for p in proxies:
                if finite(row[p]):
                    client.log_metric(r.mlflow_run_id, f"proxy.{p}", float(row[p]))
                    std = scores.get(row["name"], {}).get(p, {}).get("std")
                    if finite(std) and std > 0:
                        client.log_metric(r.mlflow_run_id, f"proxy_std.{p}", float(std))
            client.set_tag(r.mlflow_run_id, "e3d.study_source", row["source"])
        except Exception as exc:  # a report, never a reason to fail the study
            print(f"[proxy-study] could not log proxies to run {r.mlflow_run_id}: {exc!r}")
