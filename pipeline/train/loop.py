"""``train_loop_per_worker``: what every Ray Train worker runs to train a candidate (pure: everything comes from
``config``), on the skeleton of :mod:`pipeline.train.worker`.

    state = setup(config, placement(config))    # network, optimizer, schedule, AMP
    run(state, one_epoch, ...)                   # resume; per epoch train_epoch | validate (summed over workers),
                                                 # a report with a checkpoint; then evaluate_multiview (K clips x 3
                                                 # crops per video, softmax averaged per video) and the final report

``config`` keys: ``spec`` (the trained spec as a dict), ``recipe`` (``Recipe.to_dict()``), ``steps_per_epoch``,
``seed``, ``torch_threads`` (None: leave torch's default), ``callbacks`` (:class:`~pipeline.train.callbacks.
LoopCallback` s: MLflow logging, fault injection in tests). Mixed precision on CUDA only.

Ray Train's controller collects reports by polling the workers (every 2 s by default): a checkpoint reported
less than that before a worker dies can be lost, and the restart then resumes from the one before.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from e3d.model import build_model
from e3d.spec import ArchSpec

from .callbacks import LoopCallback
from .evaluate import Meter, all_reduce_meter, evaluate_views, gather_views
from .optim import amp_settings, apply_init, make_optimizer, make_scheduler
from .recipe import Recipe
from .worker import Placement, WorkerState, batches, dataset_shard, inputs, placement, run, unwrap

log = logging.getLogger("pipeline.train")


@dataclass(kw_only=True)
class TrainState(WorkerState):
    """A candidate in training; ``final`` (the multi-view evaluation) and ``predictions`` come from the
    checkpoint when the run resumes with no more epochs to train."""

    spec: ArchSpec
    recipe: Recipe
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    autocast: Callable[[], Any]
    final: dict[str, Any] | None = None
    predictions: dict[str, list[int]] | None = None  # per validation video, from the multi-view evaluation

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
        self.final = saved.get("final") if self.start_epoch >= self.epochs else None
        self.predictions = saved.get("predictions") if self.final is not None else None

    def final_metrics(self) -> dict[str, Any]:
        """The last epoch's metrics, the multi-view evaluation and the best validation epoch."""
        last = dict(self.history[-1]) if self.history else {}
        last |= (self.final or {}) | {"is_final": 1, "session_start_epoch": self.start_epoch}
        if self.history and "val_top1" in self.history[0]:
            best = max(self.history, key=lambda m: m.get("val_top1", -1.0))
            last |= {"best_val_top1": best["val_top1"], "best_epoch": best["epoch"]}
        return last


def setup(config: dict[str, Any], where: Placement = Placement()) -> TrainState:
    """Build the network (same seed on every rank), optimizer, schedule and AMP."""
    spec, recipe = ArchSpec.from_dict(config["spec"]), Recipe.from_dict(config["recipe"])
    torch.manual_seed(int(config.get("seed", 0)))  # same initial weights on every worker (DDP also syncs them)
    if where.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model = apply_init(build_model(spec, dropout=recipe.dropout), recipe.init)
    if where.device.type == "cuda" and where.world > 1 and recipe.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = where.prepare(model)
    optimizer = make_optimizer(unwrap(model), recipe, recipe.lr_for(where.world))
    scheduler = make_scheduler(optimizer, recipe, int(config["steps_per_epoch"]))
    autocast, scaler = amp_settings(where.device, recipe)
    return TrainState(rank=where.rank, world=where.world, device=where.device, model=model, epochs=recipe.epochs,
                      label=f"[train] {spec.name}", spec=spec, recipe=recipe, optimizer=optimizer,
                      scheduler=scheduler, scaler=scaler, autocast=autocast)


# -- one epoch -----------------------------------------------------------------------------------------
def train_epoch(state: TrainState, shard: Any, epoch: int,
                callbacks: Sequence[LoopCallback] = ()) -> dict[str, Any]:
    """One pass over this worker's shard of ``"train"`` (SGD stepped per iteration); loss and top-1 summed
    over all workers."""
    model, recipe, optimizer, scaler = state.model, state.recipe, state.optimizer, state.scaler
    model.train()
    meter, t0, steps = Meter(), time.perf_counter(), 0
    for batch in batches(shard, recipe.batch_size):
        x, y = inputs(batch, state.device)
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
def validate(state: TrainState, shard: Any) -> dict[str, Any]:
    """Loss, top-1 and top-5 over this worker's shard of ``"val"`` (one view per video), summed over all
    workers. Runs the unwrapped network: shards may differ in length, so no DDP collectives here."""
    t0 = time.perf_counter()
    core, val = state.core, Meter()
    core.eval()
    for batch in batches(shard, state.recipe.batch_size):
        x, y = inputs(batch, state.device)
        with state.autocast():
            logits = core(x)
        val.update(logits, y, float(F.cross_entropy(logits.float(), y, reduction="sum")))
    return all_reduce_meter(val, state.device).summary("val") | {"val_time_s": time.perf_counter() - t0}


def one_epoch(state: TrainState, epoch: int, train: Any, val: Any,
              callbacks: Sequence[LoopCallback] = ()) -> dict[str, Any]:
    """:func:`train_epoch` and, when there is a ``"val"`` shard, :func:`validate`; the console line."""
    t0 = time.perf_counter()
    metrics = train_epoch(state, train, epoch, callbacks)
    if val is not None:
        metrics |= validate(state, val)
    metrics["epoch_time_s"] = time.perf_counter() - t0
    if state.rank == 0:
        shown = " ".join(f"{k}={metrics[k]:.4g}" for k in ("train_loss", "train_top1", "val_top1", "val_top5",
                                                             "lr", "train_clips_per_s") if k in metrics)
        log.info(f"{state.label} epoch {metrics['epoch']}/{state.epochs}: {shown}")
    return metrics


def evaluate_multiview(state: TrainState, shard: Any) -> dict[str, Any]:
    """Top-1/top-5 over ``"test"``'s K clips x 3 crops per video: softmax summed per video on every worker,
    gathered, averaged per video. Each video's predicted class goes to ``state.predictions`` (checkpointed)."""
    t0 = time.perf_counter()
    cuda = state.device.type == "cuda"
    acc = evaluate_views(state.core, batches(shard, state.recipe.batch_size), num_classes=state.spec.num_classes,
                         device=state.device, autocast=state.autocast if cuda else None)
    merged = gather_views(acc)
    final = merged.result() | {"mv_time_s": time.perf_counter() - t0}
    state.predictions = merged.predictions()
    if state.rank == 0:
        log.info(f"{state.label} multi-view: top1={final['mv_top1']:.2f} top5={final['mv_top5']:.2f} "
                 f"over {final['mv_videos']} videos x {final['mv_views_per_video']:.1f} views")
    return final


def evaluate_once(state: TrainState, shard: Any, callbacks: Sequence[LoopCallback] = ()) -> None:
    """The multi-view evaluation unless the checkpoint already holds it (none without a ``"test"`` shard)."""
    if state.final is not None:
        return
    state.final = {}
    if shard is not None:
        state.final = evaluate_multiview(state, shard)
        for cb in callbacks:
            cb.on_evaluation(state, state.final)


# -- the loop ------------------------------------------------------------------------------------------
def train_loop_per_worker(config: dict[str, Any]) -> None:
    callbacks: list[LoopCallback] = list(config.get("callbacks") or [])
    state = setup(config, placement(config))
    train, val, test = dataset_shard("train"), dataset_shard("val"), dataset_shard("test")
    run(state, lambda s, epoch: one_epoch(s, epoch, train, val, callbacks), callbacks,
        finish=lambda s: evaluate_once(s, test, callbacks))
