"""One candidate's training run: a ``ray.train.torch.TorchTrainer`` (Train V2) plus its MLflow run.

:func:`build_trainer` assembles the trainer around any worker loop (ScalingConfig from a
:class:`ResourcePlan`, RunConfig with checkpointing and FailureConfig, the ingest config that leaves CPU to
Ray Data); :func:`train_one` is the whole thing for one spec: the candidate's MLflow run
(:class:`pipeline.tracking.CandidateRun`) around ``trainer.fit()`` of :func:`~pipeline.train.loop.
train_loop_per_worker`.

Resume: the Ray Train run is ``<storage>/<run_name>`` (``storage`` defaults to ``<out_dir>/train``; it may
be a pyarrow filesystem URI such as ``s3://bucket/prefix``). Calling again with the same ``run_name`` (the
default name is derived from the spec, data and recipe, so re-running a killed job uses it) continues from
the last checkpoint, in the same MLflow run.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from pyarrow.fs import FileType

from e3d.cost import cost
from e3d.spec import ArchSpec
from e3d.statefile import write_bytes
from pipeline.faults import OutOfSpace, out_of_space
from pipeline.tracking import CandidateRun, candidate_params, spec_params

from .callbacks import LoopCallback
from .checkpoint import finished_checkpoint, load_state, repair_run
from .data import as_source, steps_per_epoch
from .loop import train_loop_per_worker
from .recipe import Recipe
from .report import CandidateResult
from .resources import ResourcePlan, plan_resources

RESULT_FILE = "result.json"


# -- Ray Train pieces -----------------------------------------------------------------------------------
def ingest_config(data_cpus: float | None):
    """A DataConfig that splits ``"train"`` into equal shards (every DDP worker must take the same number of
    steps) and the evaluation datasets without dropping rows (every view counts), with Ray Data limited to
    ``data_cpus`` CPUs so the decode tasks of concurrent candidates never starve each other or the workers.
    A single worker gets plain iterators: a ``streaming_split`` would start one coordinator actor (a process)
    per dataset for nothing."""
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
                options = self._resolve_execution_options(name)
                options.preserve_order = True  # batches in the dataset's order: the same seed, the same epochs
                ds.context.execution_options = options
                if world_size == 1:  # nothing to split: a plain iterator, no coordinator actor per dataset
                    output[0][name] = ds.iterator()
                    continue
                splits = ds.streaming_split(world_size, equal=(name == "train"), locality_hints=hints)
                for i, split in enumerate(splits):
                    output[i][name] = split
            return output

    options = None
    if data_cpus:
        options = ExecutionOptions(resource_limits=ExecutionResources(cpu=float(data_cpus)))
    return _Ingest(execution_options=options)


def build_trainer(*, loop_config: dict[str, Any], datasets: dict[str, Any], plan: ResourcePlan, run_name: str,
                  storage_path: str | Path, max_failures: int = 1, num_to_keep: int = 2, callbacks: list | None = None,
                  train_loop_per_worker: Callable[[dict[str, Any]], None] = train_loop_per_worker,
                  storage_filesystem: Any = None, repair: bool = True):
    """A TorchTrainer running ``train_loop_per_worker(loop_config)`` (default: the candidate training loop;
    a supernet search passes its own) on ``plan.num_workers`` workers (NCCL on GPUs, gloo on CPUs), with
    ``datasets`` sharded by :func:`ingest_config`, the last ``num_to_keep`` checkpoints kept and
    ``max_failures`` automatic restarts from the last checkpoint when a worker dies. ``callbacks``: Train
    ``UserCallback`` s; inside a Tune trial its reports also go to Tune. ``storage_path``: a local folder, a
    pyarrow filesystem URI (``s3://bucket/prefix``), or a path on ``storage_filesystem`` (a
    ``pyarrow.fs.FileSystem``, pickled to the workers). Each worker asks for ``plan.worker_resources``.
    ``repair``: first check the run's folder, if there is one (:func:`repair_run`: corrupt checkpoints and a bad
    snapshot set aside), so that every loop, the supernet searches' too, resumes only from a good checkpoint."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    callbacks = list(callbacks or [])
    try:
        from ray.tune.trainable.trainable_fn_utils import _in_tune_session

        if _in_tune_session():
            from ray.tune.integration.ray_train import TuneReportCallback

            callbacks.append(TuneReportCallback())
    except ImportError:  # pragma: no cover - Tune is part of the required extras
        pass
    per_worker = plan.worker_resources
    storage = str(storage_path)
    if storage_filesystem is None and "://" not in storage:
        storage = str(Path(storage).expanduser().resolve())
    if repair:
        fs, path = (storage_filesystem, storage) if storage_filesystem is not None else resolve_storage(storage)[:2]
        repair_run(fs, f"{path.rstrip('/')}/{run_name}")
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if plan.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=plan.num_workers, use_gpu=plan.use_gpu,
                                     resources_per_worker=per_worker),
        run_config=RunConfig(name=run_name, storage_path=storage, storage_filesystem=storage_filesystem,
                             checkpoint_config=CheckpointConfig(num_to_keep=num_to_keep),
                             failure_config=FailureConfig(max_failures=max_failures),
                             logging_config=LoggingConfig(log_level=os.environ.get("E3D_TRAIN_LOG_LEVEL", "INFO")),
                             callbacks=callbacks or None),
        datasets={k: v for k, v in datasets.items() if v is not None},
        dataset_config=ingest_config(plan.data_cpus),
    )


# -- helpers --------------------------------------------------------------------------------------------
def resolve_storage(storage: str | Path) -> tuple[Any, str, str]:
    """``(pyarrow filesystem, path on it, printable URI)`` of a Ray Train storage location: a local folder
    or a pyarrow filesystem URI (``s3://``, ``gs://``, ``file://``...)."""
    import pyarrow.fs as pafs

    text = str(storage)
    if "://" not in text:
        path = str(Path(text).expanduser().resolve())
        return pafs.LocalFileSystem(), path, path
    fs, path = pafs.FileSystem.from_uri(text)
    scheme = text.split("://", 1)[0]
    return fs, path.rstrip("/"), f"{scheme}://{path.rstrip('/')}"


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


# -- one candidate --------------------------------------------------------------------------------------
def train_one(spec: ArchSpec, data: Any, *, clip: Any = None, recipe: Recipe | None = None, tracking: Any = None,
              out_dir: str | Path = "runs/train", eval_clips: int = 10, eval_crops: int = 3,
              plan: ResourcePlan | None = None, run_name: str | None = None, resume: bool = True,
              max_failures: int = 1, seed: int = 0, log_model: bool = True, log_every: int = 10,
              display_name: str | None = None, loop_extra: dict[str, Any] | None = None,
              loop_callbacks: Sequence[LoopCallback] = (), storage: str | Path | None = None) -> CandidateResult:
    """Train ``spec`` on ``data`` (a ``VideoDataset`` with its ``clip`` config, or a source from
    :mod:`pipeline.train.data`) at the data's clip size, evaluate it multi-view, log everything to MLflow.

    ``recipe`` defaults to the paper's Sth-Sth recipe (128 epochs: scale it with ``Recipe.scaled``).
    ``plan`` defaults to ``plan_resources(1)`` on the running Ray cluster (``ray.init`` first). ``tracking``
    (``pipeline.tracking.Tracking``, its ``parent_run_id`` set to nest) may be None: no MLflow. Errors in
    training are caught and returned in ``result.error`` (the MLflow run is marked FAILED). ``loop_extra`` adds
    keys to the worker loop's config, ``loop_callbacks`` hooks to its loop (see :mod:`pipeline.train.loop`).
    ``storage``: where Ray Train keeps the run's checkpoints (default ``<out_dir>/train``): a local folder or a
    pyarrow filesystem URI (``s3://bucket/prefix``); the candidate's own files stay under ``out_dir``.
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
    storage_fs, storage_path, storage_uri = resolve_storage(storage if storage is not None else out_dir / "train")
    if not resume and storage_fs.get_file_info(f"{storage_path}/{run_name}").type != FileType.NotFound:
        run_name = f"{run_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder = out_dir / "candidates" / run_name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.json").write_text(spec.to_json() + "\n")
    (folder / "trained_spec.json").write_text(trained.to_json() + "\n")
    result = _new_result(spec, trained, run_name, recipe, plan, storage_uri)
    result.eval_clips, result.eval_crops = eval_views

    callbacks = list(loop_callbacks)
    run = None
    if tracking is not None:
        run = CandidateRun.open(tracking, folder, run_name=run_name, display_name=display_name or spec.name,
                                resume=resume, tags={"e3d.arch": spec.name})
        result.mlflow_run_id = run.run_id
        run.log_params(candidate_params(spec, trained, recipe, plan, source, eval_views, run_name))
        if not run.resumed:
            run.log_artifact(folder / "spec.json", "spec")
            run.log_artifact(folder / "trained_spec.json", "spec")
        callbacks.append(run.worker_logger(log_every))

    loop_config = {
        "spec": trained.to_dict(), "recipe": recipe.to_dict(), "seed": seed, "torch_threads": plan.torch_threads,
        "steps_per_epoch": steps_per_epoch(source.n_train, plan.num_workers, recipe.batch_size),
        "callbacks": callbacks,
    } | dict(loop_extra or {})
    t0 = time.perf_counter()
    result.started_at = time.time()
    local = contextlib.ExitStack()  # the final checkpoint as a local folder (a download when storage is remote)
    checkpoint_dir = None
    try:
        done = None
        if resume:  # a corrupt checkpoint or snapshot is set aside: Ray resumes from the last good checkpoint
            repair_run(storage_fs, f"{storage_path}/{run_name}")
            done = finished_checkpoint(storage_fs, f"{storage_path}/{run_name}", recipe.epochs)
        if done is not None:  # trained and evaluated by an earlier session: read back, no Ray Train run
            import ray.train  # noqa: PLC0415

            print(f"[train] {spec.name}: finished earlier ({recipe.epochs} epochs, evaluated): "
                  f"read back from {done.rsplit('/', 1)[-1]}")
            checkpoint = ray.train.Checkpoint(done, filesystem=storage_fs)
        else:
            datasets = {"train": source.train(), "val": source.val(), "test": source.test(*eval_views)}
            trainer = build_trainer(loop_config=loop_config, datasets=datasets, plan=plan, run_name=run_name,
                                    storage_path=storage_path, max_failures=max_failures, repair=False,
                                    storage_filesystem=None if storage_uri == storage_path else storage_fs)
            fit = trainer.fit()
            if fit.error is not None:
                raise fit.error
            if fit.checkpoint is None:
                raise RuntimeError("training finished without a checkpoint")
            checkpoint = fit.checkpoint
        result.wall_time_s = time.perf_counter() - t0
        result.checkpoint = storage_uri + checkpoint.path[len(storage_path):] \
            if checkpoint.path.startswith(storage_path) else checkpoint.path
        checkpoint_dir = local.enter_context(checkpoint.as_directory())
        _fill_from_state(result, load_state(checkpoint_dir))
    except Exception as exc:  # one failed candidate must not stop the others
        fault = out_of_space(exc)
        if fault is not None:  # ... but a full disk stops them all: one line, exit 28, rerun resumes
            raise OutOfSpace(fault.path or f"{storage_uri}/{run_name}", fault.detail) from exc
        result.wall_time_s = time.perf_counter() - t0
        result.error = f"{type(exc).__name__}: {exc}"
        (folder / "error.txt").write_text(traceback.format_exc())
        print(f"[train] {spec.name}: FAILED: {result.error}")

    result.finished_at = time.time()
    write_bytes(folder / RESULT_FILE, (json.dumps(result.to_dict(), indent=2, default=str) + "\n").encode())
    with local:
        if run is not None:  # MLflow logs the model from a local folder
            shown = dataclasses.replace(result, checkpoint=checkpoint_dir) if checkpoint_dir else result
            run.finish(shown, result_file=folder / RESULT_FILE, curves_file=folder / "curves.png",
                       log_model=log_model)
    return result


def _new_result(spec: ArchSpec, trained: ArchSpec, run_name: str, recipe: Recipe, plan: ResourcePlan,
                storage: str) -> CandidateResult:
    """The candidate's record before training: its cost and scores as searched and as trained."""
    summary = spec_params(spec)
    return CandidateResult(
        name=spec.name, run_name=run_name, spec=spec.to_dict(), trained_spec=trained.to_dict(),
        flops=int(summary["flops"]), params=int(summary["params"]), stentr=float(summary["stentr"]),
        homoentr=float(summary["homoentr"]), input=summary["input"],
        train_input=f"{trained.frames}x{trained.size}x{trained.size}", train_flops=cost(trained).flops,
        epochs=recipe.epochs, run_dir=f"{storage}/{run_name}", resources=plan.to_dict())


def _fill_from_state(result: CandidateResult, state: dict[str, Any]) -> None:
    """The trained candidate's figures from its final checkpoint (every session's epochs)."""
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
    result.mv_predictions = state.get("predictions")
    result.train_time_s += float(final.get("mv_time_s", 0.0))
