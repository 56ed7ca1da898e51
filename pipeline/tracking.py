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
import numbers
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping

from e3d.spec import ArchSpec

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

PARENT_TAG = "mlflow.parentRunId"
EXPERIMENT_KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
log = logging.getLogger(__name__)


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


def spec_params(spec: ArchSpec) -> dict[str, Any]:
    """The spec summary logged as run params, so MLflow's comparison view lines candidates up
    (``stentr`` is ``inf`` where the score is infinite at the spec's input)."""
    from e3d.summary import summarize

    s = summarize(spec, strict=False)
    return {
        "arch": s["name"], "flops": s["flops"], "gflops": s["gflops"], "params": s["params"],
        "mparams": s["mparams"], "layers": s["layers"], "stentr": round(s["stentr"], 4),
        "homoentr": round(s["homoentr"], 4), "kernels": s["kernels"],
        "depths": "-".join(map(str, s["depths"])), "widths": "-".join(map(str, s["widths"])),
        "bottlenecks": "-".join(map(str, s["bottlenecks"])), "input": f"{spec.frames}x{spec.size}x{spec.size}",
        "stem": s["stem"], "head": s["head"], "family": spec.family,
    } | ({"family_fields": json.dumps({"arch": {k: v for k, v in spec.to_dict().items() if k in dict(spec.extra)},
                                       "stages": [{k: st.get(k) for k, _ in st.extra} for st in spec.stages]})[:6000]}
         if spec.extra or any(st.extra for st in spec.stages) else {})


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
    ``summary.json`` and the output files under ``search/``. The run ends FAILED if the search raised (KILLED if stopped).
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


# -- trained candidates -----------------------------------------------------------------------------------
def candidate_params(spec: ArchSpec, trained: ArchSpec, recipe: Any, plan: Any, source: Any,
                     eval_views: tuple[int, int], run_name: str) -> dict[str, Any]:
    """Run params of a trained candidate: the spec as searched (:func:`spec_params`), the network actually
    trained (input, GFLOPs, params, classes), the evaluation views, ``recipe.*``, ``resources.*``, ``data.*``."""
    from e3d.cost import cost

    p = spec_params(spec)
    t = cost(trained)
    p |= {"train_input": f"{trained.frames}x{trained.size}x{trained.size}", "train_gflops": round(t.gflops, 4),
          "train_mparams": round(t.mparams, 4), "num_classes": trained.num_classes,
          "sampling_rate": trained.sampling_rate, "eval_clips": eval_views[0], "eval_crops": eval_views[1],
          "train_run": run_name}
    p |= recipe.params(plan.num_workers) | plan.params() | source.params()
    return {k: v for k, v in p.items() if v is not None}


class CandidateRun:
    """One trained candidate's MLflow run: opened (or resumed) before ``trainer.fit()``, filled by rank 0's
    :class:`WorkerMetricsLogger` during training, closed by :meth:`finish` with the final metrics, curves,
    result record and model."""

    MARKER = "mlflow.json"  # in the candidate's folder: which run to resume

    def __init__(self, tracking: Tracking, client: Any, run_id: str, resumed: bool):
        self.tracking, self.client, self.run_id, self.resumed = tracking, client, run_id, resumed

    @classmethod
    def open(cls, tracking: Tracking, folder: Path, *, run_name: str, display_name: str, resume: bool,
             tags: Mapping[str, str]) -> "CandidateRun":
        """The run recorded in ``folder`` when resuming and this store still has it (moved under
        ``tracking.parent_run_id`` when a new job run resumes it), else a new run nested under it."""
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking.tracking_uri)
        marker = folder / cls.MARKER
        if resume and marker.is_file():
            info = json.loads(marker.read_text())
            if info.get("tracking_uri") == tracking.tracking_uri:
                try:
                    run = client.get_run(info["run_id"])
                    if run.info.lifecycle_stage == "active":
                        client.update_run(run.info.run_id, status="RUNNING")
                        old_parent = run.data.tags.get(PARENT_TAG)
                        if tracking.parent_run_id and old_parent != tracking.parent_run_id:
                            # resumed by a new job run: nest under it (the UI shows a run under one parent)
                            client.set_tag(run.info.run_id, PARENT_TAG, tracking.parent_run_id)
                            if old_parent:
                                client.set_tag(run.info.run_id, "e3d.previous_parent_run", old_parent)
                        return cls(tracking, client, run.info.run_id, resumed=True)
                except Exception:
                    pass
        run = client.create_run(tracking.experiment_id(), run_name=display_name,
                                tags=tracking.tags({"e3d.kind": "train", "e3d.train_run": run_name} | dict(tags)))
        marker.write_text(json.dumps({"tracking_uri": tracking.tracking_uri, "run_id": run.info.run_id,
                                      "experiment": tracking.experiment_name}) + "\n")
        return cls(tracking, client, run.info.run_id, resumed=False)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params; on a resumed run keep the first values and record changed ones as ``changed.*`` tags
        (MLflow refuses to change a param)."""
        from mlflow.entities import Param, RunTag

        existing = self.client.get_run(self.run_id).data.params
        new = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
        changed = [RunTag(f"changed.{k}", str(v)[:5000]) for k, v in params.items()
                   if k in existing and existing[k] != str(v)[:6000]]
        for i in range(0, len(new), 100):
            self.client.log_batch(self.run_id, params=new[i:i + 100])
        if changed:
            self.client.log_batch(self.run_id, tags=changed)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def worker_logger(self, log_every: int = 0) -> "WorkerMetricsLogger":
        """The loop callback that logs the workers' metrics into this run."""
        return WorkerMetricsLogger(self.tracking.tracking_uri, self.run_id, log_every)

    def finish(self, result: Any, *, result_file: Path, curves_file: Path, log_model: bool) -> None:
        """Curves, final metrics (step = epochs), the result record and the model (``log_model``, unless a
        no-op resume already has it); the run ends FINISHED, or FAILED with an ``e3d.error`` tag."""
        from mlflow.entities import Metric

        from pipeline.train.report import plot_curves

        status = "FINISHED"
        try:
            if result.history:
                plot_curves({result.name: result.history}, curves_file, result.name)
                self.log_artifact(curves_file, "plots")
            now = int(time.time() * 1000)
            finals = {"final_val_top1": result.val_top1, "final_val_top5": result.val_top5,
                      "best_val_top1": result.best_val_top1, "mv_top1": result.mv_top1, "mv_top5": result.mv_top5,
                      "total_train_time_s": result.train_time_s, "wall_time_s": result.wall_time_s,
                      "mean_train_clips_per_s": result.clips_per_s}
            self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, result.epochs)
                                                        for k, v in finals.items()
                                                        if v is not None and math.isfinite(float(v))])
            self.log_artifact(result_file, "result")
            if log_model and result.checkpoint and result.ok and not self._has_current_model(result):
                self.log_model(result.checkpoint)
        except Exception as exc:  # keep the training result even if an artifact fails
            print(f"[train] {result.name}: MLflow artifacts failed: {exc!r}")
        if result.error:
            self.client.set_tag(self.run_id, "e3d.error", result.error[:5000])
            status = "FAILED"
        self.client.set_terminated(self.run_id, status=status)

    def log_model(self, checkpoint_dir: str | Path) -> None:
        """``mlflow.pytorch.log_model`` of the trained network (CPU), with explicit pip requirements so nothing
        is inferred (offline, fast)."""
        import mlflow
        import mlflow.pytorch
        import torch

        from pipeline.train.checkpoint import model_from_checkpoint

        import numpy as np

        model, state = model_from_checkpoint(checkpoint_dir)
        spec = state["spec"]
        frames, size = spec["input"]["frames"], spec["input"]["size"]
        mlflow.set_tracking_uri(self.tracking.tracking_uri)
        with mlflow.start_run(run_id=self.run_id, nested=mlflow.active_run() is not None):
            # 'pt2' (torch.export): a safe format, no pickled code; an example batch of 2 keeps the batch
            # dimension dynamic (torch.export specialises size-1 dimensions)
            mlflow.pytorch.log_model(model.eval(), name="model", serialization_format="pt2",
                                     input_example=np.zeros((2, 3, frames, size, size), np.float32),
                                     pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "e3d-ray"],
                                     metadata={"spec": json.dumps(spec), "epoch": state["epoch"]})

    def _has_current_model(self, result: Any) -> bool:
        """Whether a resumed run that trained nothing new already has its final model logged."""
        if result.resumed_from_epoch < result.epochs:
            return False
        try:
            import mlflow

            mlflow.set_tracking_uri(self.tracking.tracking_uri)
            run = self.client.get_run(self.run_id)
            models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id],
                                                 filter_string=f"source_run_id = '{self.run_id}'",
                                                 output_format="list")
            return len(models) > 0
        except Exception:
            return False


@dataclass
class WorkerMetricsLogger:
    """Rank 0's metrics into an MLflow run from inside the Train workers: the loop callback of every Ray Train loop
    (:mod:`pipeline.train.worker`). Each epoch's numbers at step = epoch (named ``<prefix><name>``; with a prefix
    the ``epoch`` and ``step`` counters are left out), the final evaluation's at step = the last epoch, and
    per-iteration metrics (:meth:`add`: ``train_loss_step``/``lr_step`` every ``log_every`` iterations, 0: never)
    at step = the iteration, written with the epoch's (at the latest every ``FLUSH_S`` seconds). Written in chunks
    that MLflow accepts (at most ``CHUNK`` per call); tracking never stops training: failures warn."""

    tracking_uri: str
    run_id: str
    log_every: int = 0
    prefix: str = ""

    CHUNK: ClassVar[int] = 900  # MLflow takes at most 1000 metrics per log_batch
    FLUSH_S: ClassVar[float] = 60.0

    def __post_init__(self) -> None:
        self._client: Any = None  # made on rank 0 in on_start (the logger is pickled to the workers)
        self._pending: list[Any] = []
        self._flushed = time.monotonic()

    def on_start(self, state: Any) -> None:
        if state.rank == 0:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(self.tracking_uri)

    def on_step(self, state: Any, epoch: int, loss: Any) -> None:
        step = state.scheduler.last_epoch
        if self.log_every and loss is not None and step % self.log_every == 0:
            self.add({"train_loss_step": float(loss.detach()), "lr_step": state.optimizer.param_groups[0]["lr"]},
                     step=step)

    def on_epoch_end(self, state: Any, metrics: dict[str, Any]) -> None:
        epoch = int(metrics["epoch"])
        if self.prefix:
            metrics = {f"{self.prefix}{k}": v for k, v in metrics.items() if k not in ("epoch", "step")}
        self.log(metrics, step=epoch)

    def on_evaluation(self, state: Any, metrics: dict[str, Any]) -> None:
        self.log(metrics, step=state.epochs)

    def add(self, metrics: Mapping[str, Any], step: int) -> None:
        """Keep the finite numbers of ``metrics`` at ``step`` for the next write."""
        if self._client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending += [Metric(k, float(v), now, step) for k, v in metrics.items()
                          if isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))]
        if time.monotonic() - self._flushed > self.FLUSH_S:
            self.flush()

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Write ``metrics`` at ``step`` now, with what was kept."""
        self.add(metrics, step)
        self.flush()

    def flush(self) -> None:
        pending, self._pending, self._flushed = self._pending, [], time.monotonic()
        try:
            for i in range(0, len(pending), self.CHUNK):
                self._client.log_batch(self.run_id, metrics=pending[i:i + self.CHUNK])
        except Exception as exc:  # tracking must never kill training
            log.warning("[train] MLflow logging failed (%r); continuing", exc)


def register_champion(tracking: Tracking, run_id: str, model_name: str, *, alias: str = "champion") -> int | None:
    """Register the model logged by candidate run ``run_id`` as a new version of ``model_name`` and point
    ``alias`` at it; the version, or None when that run logged no model."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking.tracking_uri)
    client = MlflowClient(tracking.tracking_uri)
    run = client.get_run(run_id)
    models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id],
                                         filter_string=f"source_run_id = '{run_id}'", output_format="list")
    if not models:
        return None
    version = mlflow.register_model(models[0].model_uri, model_name)
    client.set_registered_model_alias(model_name, alias, version.version)
    return int(version.version)


def log_model_folder(tracking: Tracking, run_id: str, folder: str | Path, artifact_path: str = "model_folder") -> None:
    """A model folder (``config.json``, ``model.safetensors``, ``README.md``: :mod:`e3d.model_folder`) as artifacts of
    run ``run_id``, beside the ``torch.export`` model that run logged: loadable with ``e3d.load`` once downloaded."""
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking.tracking_uri).log_artifacts(run_id, str(folder), artifact_path)
