"""MLflow conventions shared by every job (DESIGN.md "MLflow").

One experiment per job, a parent run per job, child runs for the search and for each trained candidate
(linked by the ``mlflow.parentRunId`` tag, so the UI nests them). The default store is a SQLite file, so
``mlflow ui --backend-store-uri sqlite:///<abs path>/mlflow.db`` works offline; any other tracking URI
(an MLflow server) is accepted. Artifacts go to a folder beside the database unless told otherwise.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from e3d.spec import ArchSpec

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

PARENT_TAG = "mlflow.parentRunId"


def default_tracking_uri(root: str | Path = "runs") -> str:
    """``sqlite:///<abs root>/mlflow.db`` (MLflow 3's file store refuses new ``./mlruns`` folders)."""
    root = Path(root).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def ui_command(tracking_uri: str) -> str:
    """The shell command that opens the MLflow UI on this store."""
    return f"mlflow ui --backend-store-uri {tracking_uri}"


@dataclass(frozen=True)
class Tracking:
    """Where a job logs: picklable, so Ray actors and Train workers can log to the same experiment."""

    tracking_uri: str
    experiment_name: str = "e3d"
    artifact_location: str | None = None
    parent_run_id: str | None = None

    @classmethod
    def local(cls, root: str | Path = "runs", experiment_name: str = "e3d") -> "Tracking":
        root = Path(root).expanduser().resolve()
        return cls(default_tracking_uri(root), experiment_name, (root / "mlartifacts").as_uri())

    def client(self):
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        return mlflow

    def experiment_id(self) -> str:
        """Create the experiment if needed (artifacts outside Ray's temporary session folders)."""
        mlflow = self.client()
        exp = mlflow.get_experiment_by_name(self.experiment_name)
        if exp is not None:
            return exp.experiment_id
        try:
            return mlflow.create_experiment(self.experiment_name, artifact_location=self.artifact_location)
        except Exception:  # created concurrently by another worker
            exp = mlflow.get_experiment_by_name(self.experiment_name)
            if exp is None:
                raise
            return exp.experiment_id

    def child(self, parent_run_id: str) -> "Tracking":
        return Tracking(self.tracking_uri, self.experiment_name, self.artifact_location, parent_run_id)

    def tags(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        tags = dict(extra or {})
        if self.parent_run_id:
            tags[PARENT_TAG] = self.parent_run_id
        return tags

    @contextlib.contextmanager
    def run(self, run_name: str, *, run_id: str | None = None, tags: Mapping[str, str] | None = None) -> Iterator[Any]:
        """Start (or, given ``run_id``, resume) a run, nested under ``parent_run_id`` when set."""
        mlflow = self.client()
        experiment_id = self.experiment_id()
        with mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name, experiment_id=experiment_id,
                              tags=None if run_id else self.tags(tags),
                              nested=mlflow.active_run() is not None) as active:
            yield active

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def spec_params(spec: ArchSpec) -> dict[str, Any]:
    """The spec summary logged as run params, so MLflow's comparison view lines candidates up
    (``stentr`` is ``inf`` where the score is infinite at the spec's input)."""
    from e3d.cli import summarize

    s = summarize(spec, strict=False)
    return {
        "arch": s["name"], "flops": s["flops"], "gflops": s["gflops"], "params": s["params"],
        "mparams": s["mparams"], "layers": s["layers"], "stentr": round(s["stentr"], 4),
        "homoentr": round(s["homoentr"], 4), "kernels": s["kernels"],
        "depths": "-".join(map(str, s["depths"])), "widths": "-".join(map(str, s["widths"])),
        "bottlenecks": "-".join(map(str, s["bottlenecks"])), "input": f"{spec.frames}x{spec.size}x{spec.size}",
        "stem": s["stem"], "head": s["head"], "family": spec.family,
    }


def log_spec(mlflow: Any, spec: ArchSpec, artifact_path: str = "spec") -> None:
    """Log the spec JSON as an artifact (``<artifact_path>/<name>.json``)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{spec.name}.json"
        path.write_text(spec.to_json() + "\n")
        mlflow.log_artifact(str(path), artifact_path=artifact_path)


def log_dict_json(mlflow: Any, data: Any, name: str, artifact_path: str | None = None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(json.dumps(data, indent=2, default=str) + "\n")
        mlflow.log_artifact(str(path), artifact_path=artifact_path)
