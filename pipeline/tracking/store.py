"""Where a job logs: :class:`Tracking` (a store, an experiment, the parent run to nest under) and the MLflow UI on it.

Child runs name their parent in the ``mlflow.parentRunId`` tag (:data:`PARENT_TAG`), so the UI nests them. The
default store is a SQLite file, so ``mlflow ui --backend-store-uri sqlite:///<abs path>/mlflow.db`` works offline;
any other tracking URI (an MLflow server) is accepted. Artifacts go to a folder beside the database unless told
otherwise.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

PARENT_TAG = "mlflow.parentRunId"
EXPERIMENT_KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"


def default_tracking_uri(root: str | Path = "runs") -> str:
    """``sqlite:///<abs root>/mlflow.db`` (MLflow 3's file store refuses new ``./mlruns`` folders)."""
    root = Path(root).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def ui_command(tracking_uri: str) -> str:
    """The shell command that opens the MLflow UI on this store (a server URI needs none: open :func:`ui_url`)."""
    return f"mlflow ui --backend-store-uri {tracking_uri}"


def _is_server(tracking_uri: str) -> bool:
    """A tracking server serves its own UI; any other store needs ``mlflow ui``."""
    return tracking_uri.startswith(("http://", "https://"))


def ui_url(tracking_uri: str, experiment_name: str, port: int = 5000) -> str:
    """The page of the experiment's runs: ``<ui>/#/experiments/<id>?workflowType=machine_learning``.

    MLflow 3's UI keeps a per-browser mode (GenAI or model training) that starts as GenAI, where an experiment
    opens on a traces overview; the ``workflowType`` parameter opens it on its runs (and switches the mode).
    ``<ui>`` is the tracking server for an ``http(s)`` URI, else ``mlflow ui``'s ``http://127.0.0.1:<port>``.
    """
    base = tracking_uri.rstrip("/") if _is_server(tracking_uri) else f"http://127.0.0.1:{port}"
    try:
        from mlflow.tracking import MlflowClient

        experiment = MlflowClient(tracking_uri).get_experiment_by_name(experiment_name)
    except Exception:  # a hint only: never a reason to fail a finished job
        experiment = None
    return f"{base}/#/experiments/{experiment.experiment_id}?workflowType=machine_learning" if experiment else base


def ui_hint(tracking: "Tracking") -> str:
    """The lines a job ends with: the command that starts the UI (local stores) and the page to open."""
    url = ui_url(tracking.tracking_uri, tracking.experiment_name)
    if _is_server(tracking.tracking_uri):
        return f"  open {url}"
    return f"  {ui_command(tracking.tracking_uri)}\n  then open {url}"


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
            # a model-training experiment: the UI opens on its runs, not on the GenAI traces overview
            return mlflow.create_experiment(self.experiment_name, artifact_location=self.artifact_location,
                                            tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})
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
    def run(self, run_name: str, *, run_id: str | None = None, tags: Mapping[str, str] | None = None,
            system_metrics: bool = False) -> Iterator[Any]:
        """Start (or, given ``run_id``, resume) a run, nested under ``parent_run_id`` when set.
        ``system_metrics``: sample this machine's CPU, memory (and GPU, with ``nvidia-ml-py``) into the run.
        The run ends FINISHED, FAILED on an exception, KILLED when the process is asked to stop (``SystemExit``,
        ``KeyboardInterrupt``: how Ray Tune ends a trial its scheduler stops)."""
        mlflow = self.client()
        experiment_id = self.experiment_id()
        with mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name, experiment_id=experiment_id,
                              tags=None if run_id else self.tags(tags), nested=mlflow.active_run() is not None,
                              log_system_metrics=system_metrics or None) as active:
            try:
                yield active
            except (SystemExit, KeyboardInterrupt):  # stopped (Ctrl-C, a Tune trial ASHA stops): not a failure
                mlflow.end_run("KILLED")
                raise

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
