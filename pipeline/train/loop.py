"""``train_loop_per_worker``: what every Ray Train worker runs (pure: everything comes from ``config``).

    state = setup(config)                        # network, optimizer, schedule, AMP; resume from the checkpoint
    for epoch in range(state.start_epoch, recipe.epochs):
        metrics = train_epoch(...) | validate(...)   # summed over all workers
        report(...)                              # ray.train.report with a checkpoint, every epoch
    final = evaluate_multiview(...)              # K clips x 3 crops per video, softmax averaged per video
    report(...)                                  # with a final checkpoint, so Result.metrics holds it

``config`` keys: ``spec`` (the trained spec as a dict), ``recipe`` (``Recipe.to_dict()``), ``steps_per_epoch``,
``seed``, ``torch_threads`` (None: leave torch's default), ``callbacks`` (:class:`~pipeline.train.callbacks.
LoopCallback` s: MLflow logging, fault injection in tests). Mixed precision on CUDA only.

Ray Train's controller collects reports by polling the workers (every 2 s by default): a checkpoint reported
less than that before a worker dies can be lost, and the restart then resumes from the one before.
"""
from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from e3d.model import build_model
from e3d.spec import ArchSpec

from .callbacks import LoopCallback
from .checkpoint import load_state, save_state
from .evaluate import Meter, all_reduce_meter, evaluate_views, gather_views
from .optim import amp_settings, apply_init, make_optimizer, make_scheduler
from .recipe import Recipe

log = logging.getLogger("pipeline.train")


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@dataclass
class WorkerState:
    """What one worker trains with; ``start_epoch``, ``history`` and ``final`` come from the checkpoint when
    the run resumes (``start_epoch``: where this session began)."""

    spec: ArchSpec
    recipe: Recipe
    device: torch.device
    rank: int
    world: int
    model: nn.Module  # DDP-wrapped when world > 1
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    autocast: Callable[[], Any]
    start_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] | None = None
    predictions: dict[str, list[int]] | None = None  # per validation video, from the multi-view evaluation

    @property
    def core(self) -> nn.Module:
        """The network without DDP (evaluation uses it: uneven shards must not wait for collectives)."""
        return unwrap(self.model)

    def state_dict(self, epoch: int) -> dict[str, Any]:
        return {"model": self.core.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "epoch": epoch,
                "history": self.history, "final": self.final, "predictions": self.predictions,
                "spec": self.spec.to_dict(),
                "recipe": self.recipe.to_dict(), "dropout": self.recipe.dropout}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.core.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        self.start_epoch, self.history = int(saved["epoch"]), list(saved["history"])
        # a finished run's evaluation only stands if no more epochs are asked for now
        self.final = saved.get("final") if self.start_epoch >= self.recipe.epochs else None
        self.predictions = saved.get("predictions") if self.final is not None else None


# -- set-up and resume -----------------------------------------------------------------------------------
def setup(config: dict[str, Any]) -> WorkerState:
    """Build the network (same seed on every rank), optimizer, schedule and AMP; resume from Train's
    checkpoint when there is one."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    spec, recipe = ArchSpec.from_dict(config["spec"]), Recipe.from_dict(config["recipe"])
    if config.get("torch_threads"):
        torch.set_num_threads(int(config["torch_threads"]))
    torch.manual_seed(int(config.get("seed", 0)))  # same initial weights on every worker (DDP also syncs them)
    device = ray.train.torch.get_device()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model = apply_init(build_model(spec, dropout=recipe.dropout), recipe.init)
    if device.type == "cuda" and world > 1 and recipe.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = ray.train.torch.prepare_model(model)  # to the device; DDP when world > 1
    optimizer = make_optimizer(unwrap(model), recipe, recipe.lr_for(world))
    scheduler = make_scheduler(optimizer, recipe, int(config["steps_per_epoch"]))
    autocast, scaler = amp_settings(device, recipe)
    state = WorkerState(spec, recipe, device, rank, world, model, optimizer, scheduler, scaler, autocast)
    resume(state, ray.train.get_checkpoint())
    return state


def resume(state: WorkerState, checkpoint: Any) -> None:
    """Load model, optimizer, schedule, scaler, epoch and history from a ``ray.train.Checkpoint`` (or nothing)."""
    if checkpoint is None:
        return
    with checkpoint.as_directory() as d:
        state.load_state_dict(load_state(d, map_location=state.device))
    if state.rank == 0:
        log.info(f"[train] {state.spec.name}: resumed from checkpoint at epoch {state.start_epoch}/"
                 f"{state.recipe.epochs}")


# -- one epoch -----------------------------------------------------------------------------------------
def _batches(shard: Any, batch_size: int, *, drop_last: bool = False) -> Iterator[dict[str, Any]]:
    """Numpy batches of a dataset shard, made writable (Ray hands out read-only views; torch wants to own)."""
    for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy", drop_last=drop_last,
                                    prefetch_batches=1):
        yield {k: (v if not isinstance(v, np.ndarray) or v.flags.writeable else v.copy()) for k, v in batch.items()}


def _inputs(batch: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(batch["clip"]).to(device, non_blocking=True)
    y = torch.as_tensor(batch["label"]).long().to(device, non_blocking=True)
    return x, y


def train_epoch(state: WorkerState, shard: Any, epoch: int,
                callbacks: Sequence[LoopCallback] = ()) -> dict[str, Any]:
    """One pass over this worker's shard of ``"train"`` (SGD stepped per iteration); loss and top-1 summed
    over all workers."""
    model, recipe, optimizer, scaler = state.model, state.recipe, state.optimizer, state.scaler
    model.train()
    meter, t0, steps = Meter(), time.perf_counter(), 0
    for batch in _batches(shard, recipe.batch_size):
        x, y = _inputs(batch, state.device)
        with state.autocast():
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=recipe.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if recipe.grad_clip:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(state.core.parameters(), recipe.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        state.scheduler.step()
        meter.update(logits, y, float(loss.detach()) * y.numel())
        steps += 1
        for cb in callbacks:
            cb.on_step(state, epoch, loss)
    train_time = time.perf_counter() - t0
    train = all_reduce_meter(meter, state.device)
    metrics: dict[str, Any] = {"epoch": epoch + 1, "session_start_epoch": state.start_epoch,
                               "lr": optimizer.param_groups[0]["lr"], "steps": steps, "train_time_s": train_time,
                               "train_clips_per_s": train.count / max(train_time, 1e-9)}
    return metrics | {k: v for k, v in train.summary("train").items() if k != "train_top5"}


@torch.no_grad()
def validate(state: WorkerState, shard: Any) -> dict[str, Any]:
    """Loss, top-1 and top-5 over this worker's shard of ``"val"`` (one view per video), summed over all
    workers. Runs the unwrapped network: shards may differ in length, so no DDP collectives here."""
    t0 = time.perf_counter()
    core, val = state.core, Meter()
    core.eval()
    for batch in _batches(shard, state.recipe.batch_size):
        x, y = _inputs(batch, state.device)
        with state.autocast():
            logits = core(x)
        val.update(logits, y, float(F.cross_entropy(logits.float(), y, reduction="sum")))
    return all_reduce_meter(val, state.device).summary("val") | {"val_time_s": time.perf_counter() - t0}


def evaluate_multiview(state: WorkerState, shard: Any) -> dict[str, Any]:
    """Top-1/top-5 over ``"test"``'s K clips x 3 crops per video: softmax summed per video on every worker,
    gathered, averaged per video. Each video's predicted class goes to ``state.predictions`` (checkpointed)."""
    t0 = time.perf_counter()
    cuda = state.device.type == "cuda"
    acc = evaluate_views(state.core, _batches(shard, state.recipe.batch_size), num_classes=state.spec.num_classes,
                         device=state.device, autocast=state.autocast if cuda else None)
    merged = gather_views(acc)
    final = merged.result() | {"mv_time_s": time.perf_counter() - t0}
    state.predictions = merged.predictions()
    if state.rank == 0:
        log.info(f"[train] {state.spec.name} multi-view: top1={final['mv_top1']:.2f} top5={final['mv_top5']:.2f} "
                 f"over {final['mv_videos']} videos x {final['mv_views_per_video']:.1f} views")
    return final


# -- reports -------------------------------------------------------------------------------------------
def report(state: WorkerState, metrics: dict[str, Any], epoch: int, name: str) -> None:
    """``ray.train.report`` the metrics with a checkpoint (written by rank 0) named ``name``."""
    import ray.train

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if state.rank == 0:
            save_state(tmp, state.state_dict(epoch), metrics)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)


def _log_epoch(state: WorkerState, metrics: dict[str, Any]) -> None:
    if state.rank == 0:
        shown = " ".join(f"{k}={metrics[k]:.4g}" for k in ("train_loss", "train_top1", "val_top1", "val_top5",
                                                             "lr", "train_clips_per_s") if k in metrics)
        log.info(f"[train] {state.spec.name} epoch {metrics['epoch']}/{state.recipe.epochs}: {shown}")


def final_metrics(state: WorkerState) -> dict[str, Any]:
    """The last epoch's metrics, the multi-view evaluation and the best validation epoch: the final report."""
    last = dict(state.history[-1]) if state.history else {}
    last |= (state.final or {}) | {"is_final": 1, "session_start_epoch": state.start_epoch}
    if state.history and "val_top1" in state.history[0]:
        best = max(state.history, key=lambda m: m.get("val_top1", -1.0))
        last |= {"best_val_top1": best["val_top1"], "best_epoch": best["epoch"]}
    return last


def dataset_shard(name: str) -> Any:
    """This worker's shard of the trainer's dataset ``name``; None when the trainer has no such dataset
    (shared by every Ray Train loop of the project: candidates, dnas, parsec, fusion)."""
    import ray.train

    try:
        return ray.train.get_dataset_shard(name)
    except (KeyError, ValueError):
        return None


# -- the loop ------------------------------------------------------------------------------------------
def train_loop_per_worker(config: dict[str, Any]) -> None:
    callbacks: list[LoopCallback] = list(config.get("callbacks") or [])
    state = setup(config)
    train, val = dataset_shard("train"), dataset_shard("val")
    for cb in callbacks:
        cb.on_start(state)
    for epoch in range(state.start_epoch, state.recipe.epochs):
        t0 = time.perf_counter()
        metrics = train_epoch(state, train, epoch, callbacks)
        if val is not None:
            metrics |= validate(state, val)
        metrics["epoch_time_s"] = time.perf_counter() - t0
        state.history.append(metrics)
        for cb in callbacks:
            cb.on_epoch_end(state, metrics)
        _log_epoch(state, metrics)
        report(state, metrics | {"is_final": 0}, epoch + 1, f"epoch_{epoch + 1:04d}")

    test = dataset_shard("test")
    if state.final is None:
        state.final = {}
        if test is not None:
            state.final = evaluate_multiview(state, test)
            for cb in callbacks:
                cb.on_evaluation(state, state.final)
    epochs = state.recipe.epochs
    report(state, final_metrics(state), epochs, f"final_{epochs:04d}_{time.strftime('%Y%m%d-%H%M%S')}")
