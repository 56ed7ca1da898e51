"""One candidate's training run: a ``ray.train.torch.TorchTrainer`` (Train V2) plus its MLflow run.

:func:`build_trainer` assembles the trainer (ScalingConfig from a :class:`ResourcePlan`, RunConfig with
checkpointing and FailureConfig, the ingest config that leaves CPU to Ray Data); :func:`train_one` is the
whole thing for one spec: MLflow child run with the comparison params, ``trainer.fit()``, then the final
model, spec JSON, curves and result record as artifacts.

Resume: the Ray Train run is ``<out_dir>/train/<run_name>``. Calling again with the same ``run_name`` (the
default name is derived from the spec, data and recipe, so re-running a killed job uses it) continues from
the last checkpoint, in the same MLflow run.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from e3d.cost import cost
from e3d.spec import ArchSpec
from pipeline.tracking import spec_params

from .data import as_source, steps_per_epoch
from .loop import load_state, model_from_checkpoint, train_loop_per_worker
from .recipe import Recipe
from .report import CandidateResult, plot_curves
from .resources import ResourcePlan, plan_resources

MLFLOW_FILE = "mlflow.json"
RESULT_FILE = "result.json"


# -- Ray Train pieces -----------------------------------------------------------------------------------
def ingest_config(data_cpus: float | None):
    """A DataConfig that splits ``"train"`` into equal shards (every DDP worker must take the same number of
    steps) and the evaluation datasets without dropping rows (every view counts), with Ray Data limited to
    ``data_cpus`` CPUs so the decode tasks of concurrent candidates never starve each other or the workers."""
    from ray.data import ExecutionOptions, ExecutionResources
    from ray.train import DataConfig

    class _Ingest(DataConfig):
        def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
            output = [{} for _ in range(world_size)]
            hints = worker_node_ids if self._enable_shard_locality else None
            for name, ds in datasets.items():
                if ds.name is None:
                    ds.set_name(name)
                ds = ds.copy(ds)
                ds.context.execution_options = self._resolve_execution_options(name)
                splits = ds.streaming_split(world_size, equal=(name == "train"), locality_hints=hints)
                for i, split in enumerate(splits):
                    output[i][name] = split
            return output

    options = None
    if data_cpus:
        options = ExecutionOptions(resource_limits=ExecutionResources(cpu=float(data_cpus)))
    return _Ingest(execution_options=options)


def build_trainer(*, loop_config: dict[str, Any], datasets: dict[str, Any], plan: ResourcePlan, run_name: str,
                  storage_path: str | Path, max_failures: int = 1, num_to_keep: int = 2, callbacks: list | None = None):
    """The TorchTrainer of one candidate: ``plan.num_workers`` workers (NCCL on GPUs, gloo on CPUs),
    a checkpoint per epoch (the last ``num_to_keep`` kept), ``max_failures`` automatic restarts from the last
    checkpoint when a worker dies. Inside a Tune trial its reports also go to Tune."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    callbacks = list(callbacks or [])
    try:
        from ray.tune.trainable.trainable_fn_utils import _in_tune_session

        if _in_tune_session():
            from ray.tune.integration.ray_train import TuneReportCallback

            callbacks.append(TuneReportCallback())
    except ImportError:  # pragma: no cover - Tune is part of the required extras
        pass
    per_worker = {"CPU": plan.cpus_per_worker} | ({"GPU": plan.gpus_per_worker} if plan.use_gpu else {})
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if plan.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=plan.num_workers, use_gpu=plan.use_gpu,
                                     resources_per_worker=per_worker),
        run_config=RunConfig(name=run_name, storage_path=str(Path(storage_path).resolve()),
                             checkpoint_config=CheckpointConfig(num_to_keep=num_to_keep),
                             failure_config=FailureConfig(max_failures=max_failures),
                             callbacks=callbacks or None),
        datasets={k: v for k, v in datasets.items() if v is not None},
        dataset_config=ingest_config(plan.data_cpus),
    )


# -- helpers --------------------------------------------------------------------------------------------
def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "candidate"


def trained_spec(spec: ArchSpec, source: Any) -> ArchSpec:
    """The spec at the data's clip size and number of classes (the network that is actually trained)."""
    out = spec.with_input(frames=source.frames, size=source.size).with_num_classes(source.num_classes)
    return out.replace(sampling_rate=getattr(source, "sampling_rate", None) or spec.sampling_rate)


def default_run_name(spec: ArchSpec, source: Any, recipe: Recipe, eval_views: tuple[int, int]) -> str:
    """``<spec name>-<hash>``: the same candidate on the same data with the same recipe (up to the number of
    epochs, so a run can be extended) gets the same name, hence resumes."""
    rec = recipe.to_dict()
    for k in ("epochs", "warmup_epochs"):
        rec.pop(k)
    blob = json.dumps([spec.to_dict(), source.fingerprint(), rec, eval_views], sort_keys=True, default=str)
    return f"{slug(spec.name)}-{hashlib.sha1(blob.encode()).hexdigest()[:8]}"


def _mlflow_params(spec: ArchSpec, trained: ArchSpec, recipe: Recipe, plan: ResourcePlan, source: Any,
                   eval_views: tuple[int, int], run_name: str) -> dict[str, Any]:
    p = spec_params(spec)
    t = cost(trained)
    p |= {"train_input": f"{trained.frames}x{trained.size}x{trained.size}", "train_gflops": round(t.gflops, 4),
          "train_mparams": round(t.mparams, 4), "num_classes": trained.num_classes,
          "sampling_rate": trained.sampling_rate, "eval_clips": eval_views[0], "eval_crops": eval_views[1],
          "train_run": run_name}
    p |= recipe.params(plan.num_workers) | plan.params() | source.params()
    return {k: v for k, v in p.items() if v is not None}


def _log_params(client: Any, run_id: str, params: dict[str, Any]) -> None:
    """Log params; on a resumed run keep the first values and record changed ones as ``changed.*`` tags
    (MLflow refuses to change a param)."""
    from mlflow.entities import Param, RunTag

    existing = client.get_run(run_id).data.params
    new = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
    changed = [RunTag(f"changed.{k}", str(v)[:5000]) for k, v in params.items()
               if k in existing and existing[k] != str(v)[:6000]]
    for i in range(0, len(new), 100):
        client.log_batch(run_id, params=new[i:i + 100])
    if changed:
        client.log_batch(run_id, tags=changed)


def _open_mlflow_run(tracking: Any, folder: Path, run_name: str, display_name: str, resume: bool,
                     tags: dict[str, str]) -> tuple[Any, str, bool]:
    """(client, run id, resumed): the run recorded in ``folder`` when resuming and it still exists in this
    store (moved under ``tracking.parent_run_id`` when a new job run resumes it), else a new run nested under
    ``tracking.parent_run_id``."""
    from mlflow.tracking import MlflowClient

    from pipeline.tracking import PARENT_TAG

    client = MlflowClient(tracking.tracking_uri)
    marker = folder / MLFLOW_FILE
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
                    return client, run.info.run_id, True
            except Exception:
                pass
    run = client.create_run(tracking.experiment_id(), run_name=display_name,
                            tags=tracking.tags({"e3d.kind": "train", "e3d.train_run": run_name} | tags))
    marker.write_text(json.dumps({"tracking_uri": tracking.tracking_uri, "run_id": run.info.run_id,
                                  "experiment": tracking.experiment_name}) + "\n")
    return client, run.info.run_id, False


def log_final_model(tracking: Any, run_id: str, checkpoint_dir: str | Path) -> None:
    """``mlflow.pytorch.log_model`` of the trained network (CPU), with explicit pip requirements so nothing
    is inferred (offline, fast)."""
    import mlflow
    import mlflow.pytorch
    import torch

    model, state = model_from_checkpoint(checkpoint_dir)
    mlflow.set_tracking_uri(tracking.tracking_uri)
    with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
        # pickle format: MLflow 3's default 'pt2' (torch.export) needs an input example and re-traces the net
        mlflow.pytorch.log_model(model, name="model", serialization_format="pickle",
                                 pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "e3d-ray"],
                                 metadata={"spec": json.dumps(state["spec"]), "epoch": state["epoch"]})


# -- one candidate --------------------------------------------------------------------------------------
def train_one(spec: ArchSpec, data: Any, *, clip: Any = None, recipe: Recipe | None = None, tracking: Any = None,
              out_dir: str | Path = "runs/train", eval_clips: int = 10, eval_crops: int = 3,
              plan: ResourcePlan | None = None, run_name: str | None = None, resume: bool = True,
              max_failures: int = 1, seed: int = 0, log_model: bool = True, log_every: int = 10,
              display_name: str | None = None, loop_extra: dict[str, Any] | None = None) -> CandidateResult:
    """Train ``spec`` on ``data`` (a ``VideoDataset`` with its ``clip`` config, or a source from
    :mod:`pipeline.train.data`) at the data's clip size, evaluate it multi-view, log everything to MLflow.

    ``recipe`` defaults to the paper's Sth-Sth recipe (128 epochs: scale it with ``Recipe.scaled``).
    ``plan`` defaults to ``plan_resources(1)`` on the running Ray cluster (``ray.init`` first). ``tracking``
    (``pipeline.tracking.Tracking``, its ``parent_run_id`` set to nest) may be None: no MLflow. Errors in
    training are caught and returned in ``result.error`` (the MLflow run is marked FAILED). ``loop_extra`` adds
    keys to the worker loop's config (see :mod:`pipeline.train.loop`).
    """
    import ray

    if not ray.is_initialized():
        ray.init()
    source = as_source(data, clip, seed=seed)
    recipe = recipe or Recipe.paper("sthsth")
    plan = plan or plan_resources(1)
    out_dir = Path(out_dir).expanduser().resolve()
    eval_views = (int(eval_clips), int(eval_crops))
    trained = trained_spec(spec, source)
    run_name = run_name or default_run_name(spec, source, recipe, eval_views)
    storage = out_dir / "train"
    if not resume and (storage / run_name).exists():
        run_name = f"{run_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder = out_dir / "candidates" / run_name
    folder.mkdir(parents=True, exist_ok=True)
    summary = spec_params(spec)
    (folder / "spec.json").write_text(spec.to_json() + "\n")
    (folder / "trained_spec.json").write_text(trained.to_json() + "\n")

    result = CandidateResult(
        name=spec.name, run_name=run_name, spec=spec.to_dict(), trained_spec=trained.to_dict(),
        flops=int(summary["flops"]), params=int(summary["params"]), stentr=float(summary["stentr"]),
        homoentr=float(summary["homoentr"]), input=summary["input"],
        train_input=f"{trained.frames}x{trained.size}x{trained.size}", train_flops=cost(trained).flops,
        epochs=recipe.epochs, run_dir=str(storage / run_name), resources=plan.to_dict())

    client = run_id = None
    if tracking is not None:
        client, run_id, resumed = _open_mlflow_run(tracking, folder, run_name, display_name or spec.name, resume,
                                                   {"e3d.arch": spec.name})
        result.mlflow_run_id = run_id
        _log_params(client, run_id, _mlflow_params(spec, trained, recipe, plan, source, eval_views, run_name))
        if not resumed:
            client.log_artifact(run_id, str(folder / "spec.json"), "spec")
            client.log_artifact(run_id, str(folder / "trained_spec.json"), "spec")

    loop_config = {
        "spec": trained.to_dict(), "recipe": recipe.to_dict(), "seed": seed, "torch_threads": plan.torch_threads,
        "steps_per_epoch": steps_per_epoch(source.n_train, plan.num_workers, recipe.batch_size),
        "mlflow": {"tracking_uri": tracking.tracking_uri, "run_id": run_id} if run_id else None,
        "log_every": log_every,
    } | dict(loop_extra or {})
    t0 = time.perf_counter()
    result.started_at = time.time()
    try:
        datasets = {"train": source.train(), "val": source.val(), "test": source.test(*eval_views)}
        trainer = build_trainer(loop_config=loop_config, datasets=datasets, plan=plan, run_name=run_name,
                                storage_path=storage, max_failures=max_failures)
        fit = trainer.fit()
        result.wall_time_s = time.perf_counter() - t0
        if fit.error is not None:
            raise fit.error
        if fit.checkpoint is None:
            raise RuntimeError("training finished without a checkpoint")
        result.checkpoint = fit.checkpoint.path
        state = load_state(fit.checkpoint.path)
        _fill_from_state(result, state)
    except Exception as exc:  # one failed candidate must not stop the others
        result.wall_time_s = time.perf_counter() - t0
        result.error = f"{type(exc).__name__}: {exc}"
        (folder / "error.txt").write_text(traceback.format_exc())
        print(f"[train] {spec.name}: FAILED: {result.error}")

    result.finished_at = time.time()
    (folder / RESULT_FILE).write_text(json.dumps(result.to_dict(), indent=2, default=str) + "\n")
    if client is not None:
        _finish_mlflow(client, tracking, run_id, result, folder, log_model)
    return result


def _has_current_model(tracking: Any, run_id: str, result: CandidateResult) -> bool:
    """Whether a resumed run that trained nothing new already has its final model logged."""
    if result.resumed_from_epoch < result.epochs:
        return False
    try:
        import mlflow

        mlflow.set_tracking_uri(tracking.tracking_uri)
        run = mlflow.tracking.MlflowClient(tracking.tracking_uri).get_run(run_id)
        models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id],
                                             filter_string=f"source_run_id = '{run_id}'", output_format="list")
        return len(models) > 0
    except Exception:
        return False


def _fill_from_state(result: CandidateResult, state: dict[str, Any]) -> None:
    history = list(state["history"])
    final = state.get("final") or {}
    result.history = history
    result.epochs = int(state["epoch"])
    if history:
        last = history[-1]
        result.val_top1 = float(last.get("val_top1", math.nan))
        result.val_top5 = float(last.get("val_top5", math.nan))
        result.best_val_top1 = max(float(h.get("val_top1", math.nan)) for h in history)
        result.train_time_s = float(sum(h.get("epoch_time_s", 0.0) for h in history))
        result.clips_per_s = float(sum(h["train_samples"] for h in history) /
                                   max(1e-9, sum(h["train_time_s"] for h in history)))
        result.resumed_from_epoch = int(last.get("session_start_epoch", 0))
    result.mv_top1 = float(final.get("mv_top1", math.nan))
    result.mv_top5 = float(final.get("mv_top5", math.nan))
    result.mv_videos = int(final.get("mv_videos", 0))
    result.mv_views_per_video = float(final.get("mv_views_per_video", 0.0))
    result.train_time_s += float(final.get("mv_time_s", 0.0))


def _finish_mlflow(client: Any, tracking: Any, run_id: str, result: CandidateResult, folder: Path,
                   log_model: bool) -> None:
    from mlflow.entities import Metric

    status = "FINISHED"
    try:
        if result.history:
            plot_curves({result.name: result.history}, folder / "curves.png", result.name)
            client.log_artifact(run_id, str(folder / "curves.png"), "plots")
        now = int(time.time() * 1000)
        finals = {"final_val_top1": result.val_top1, "final_val_top5": result.val_top5,
                  "best_val_top1": result.best_val_top1, "mv_top1": result.mv_top1, "mv_top5": result.mv_top5,
                  "total_train_time_s": result.train_time_s, "wall_time_s": result.wall_time_s,
                  "mean_train_clips_per_s": result.clips_per_s}
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, result.epochs) for k, v in finals.items()
                                          if v is not None and math.isfinite(float(v))])
        client.log_artifact(run_id, str(folder / RESULT_FILE), "result")
        if log_model and result.checkpoint and result.ok and not _has_current_model(tracking, run_id, result):
            log_final_model(tracking, run_id, result.checkpoint)
    except Exception as exc:  # keep the training result even if an artifact fails
        print(f"[train] {result.name}: MLflow artifacts failed: {exc!r}")
        status = "FAILED" if result.error else "FINISHED"
    if result.error:
        client.set_tag(run_id, "e3d.error", result.error[:5000])
        status = "FAILED"
    client.set_terminated(run_id, status=status)
