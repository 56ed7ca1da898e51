"""MLflow conventions shared by every job (DESIGN.md "MLflow"), and the callbacks that log to it.

One experiment per job, a parent run per job, child runs for the search and for each trained candidate
(linked by the ``mlflow.parentRunId`` tag, so the UI nests them). The default store is a SQLite file, so
``mlflow ui --backend-store-uri sqlite:///<abs path>/mlflow.db`` works offline; any other tracking URI
(an MLflow server) is accepted. Artifacts go to a folder beside the database unless told otherwise.

The search and the trainer know nothing of MLflow: :class:`SearchMlflowCallback` listens to the island
driver's events, :class:`CandidateRun` opens and closes a trained candidate's run around ``trainer.fit()``
and :class:`WorkerMetricsLogger` is the Train workers' loop callback that logs the epochs into it.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from e3d.spec import ArchSpec

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

PARENT_TAG = "mlflow.parentRunId"
log = logging.getLogger(__name__)


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


# -- the island search ------------------------------------------------------------------------------------
def search_params(config: Any, settings: Any, rounds: int) -> dict[str, Any]:
    """Run params of an island search: every ``SearchConfig`` field, ``islands.<setting>``, ``islands.rounds``."""
    out: dict[str, Any] = {}
    for k, v in config.to_dict().items():
        out[k] = json.dumps(v) if isinstance(v, (list, tuple)) else v
    for k, v in settings.to_dict().items():
        out[f"islands.{k}"] = json.dumps(v) if isinstance(v, (dict, list)) else v
    out["islands.rounds"] = rounds
    return out


class SearchMlflowCallback:
    """One MLflow run per island search (a :class:`pipeline.search.callbacks.SearchCallback`).

    Start: a new run named ``run_name`` (default ``<search name>-islands<N>``), nested under
    ``tracking.parent_run_id``, with the search's params; or, on resume, the checkpoint's run when this store
    still has it (tagged ``e3d.resumed_at_round_<r>``). Every round: ``best_score``, ``median_score``,
    ``total_iterations``, ``accepted``, ``acceptance_rate``, ``iterations_per_s``, ``restarts``,
    ``immigrants_accepted`` at step = round. Finish: the best spec's summary as ``best.*`` params,
    ``final_best_score``/``wall_s``/``final_iterations_per_s``, and the artifacts ``spec/<name>.json``,
    ``summary.json`` and the output files under ``search/``. The run ends FAILED if the search raised.
    """

    def __init__(self, tracking: "Tracking", *, run_name: str | None = None, tags: Mapping[str, str] | None = None):
        self.tracking, self.run_name = tracking, run_name
        self.tags = {"e3d.job": "distributed-search"} | dict(tags or {})
        self._run = contextlib.ExitStack()
        self.mlflow: Any = None
        self.fs: Any = None

    def on_start(self, driver: Any) -> None:
        run_id = driver.run_id
        if run_id is not None:  # resuming: continue the checkpointed run if this store has it
            try:
                self.tracking.client().get_run(run_id)
            except Exception:
                log.warning("MLflow run %s of the checkpoint is not in %s: logging to a new run", run_id,
                            self.tracking.tracking_uri)
                run_id = driver.run_id = None
        name = self.run_name or f"{driver.name}-islands{driver.settings.actors}"
        run = self._run.enter_context(self.tracking.run(name, run_id=run_id, tags=self.tags))
        self.mlflow, self.fs = self.tracking.client(), driver.fs
        if run_id is None:
            driver.run_id = run.info.run_id
            self.mlflow.log_params(search_params(driver.config, driver.settings, driver.rounds))
            self.mlflow.set_tag("e3d.out_dir", driver.out_dir)
        else:
            self.mlflow.set_tag(f"e3d.resumed_at_round_{driver.start_round}", time.strftime("%Y-%m-%dT%H:%M:%S"))

    def on_round(self, info: Any) -> None:
        row = info.history_row
        self.mlflow.log_metrics({
            "best_score": info.best, "median_score": info.median, "total_iterations": info.total_iterations,
            "accepted": row["accepted"], "acceptance_rate": row["accepted"] / row["iterations"] if row["iterations"]
            else 0.0, "iterations_per_s": info.iterations_per_s, "restarts": info.restarts,
            "immigrants_accepted": row["immigrants_accepted"]}, step=info.round)

    def on_finish(self, result: Any) -> None:
        from pipeline.search.checkpoint import is_local  # noqa: PLC0415

        mlflow = self.mlflow
        mlflow.log_params({f"best.{k}": v for k, v in spec_params(result.best).items()})
        mlflow.log_metrics({"final_best_score": result.best_score, "wall_s": result.wall_s,
                            "final_iterations_per_s": result.iterations_per_s})
        log_spec(mlflow, result.best)
        log_dict_json(mlflow, result.summary(), "summary.json")
        with tempfile.TemporaryDirectory() as tmp:
            for path in result.files.values():
                local = path
                if not is_local(self.fs):
                    local = str(Path(tmp) / Path(path).name)
                    with self.fs.open_input_stream(path) as src:
                        Path(local).write_bytes(src.read())
                mlflow.log_artifact(local, artifact_path="search")

    def on_end(self, error: BaseException | None) -> None:
        if error is None:
            self._run.close()
        else:
            self._run.__exit__(type(error), error, error.__traceback__)
