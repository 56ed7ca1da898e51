"""``train_loop_per_worker``: what every Ray Train worker runs (pure: everything comes from ``config``).

Per epoch: one pass over this worker's shard of ``"train"`` (SGD, per-iteration warm-up + cosine schedule,
mixed precision on CUDA), a validation pass over its shard of ``"val"`` with loss/top-1/top-5 summed across
workers, and a checkpoint (model, optimizer, scheduler, scaler, epoch, history) reported with
``ray.train.report``. At start it resumes from ``ray.train.get_checkpoint()`` when there is one. After the last
epoch it runs the multi-view evaluation over ``"test"`` (K clips x 3 crops per video, softmax averaged per
video across all workers) and reports it with a final checkpoint, so ``Result.metrics`` holds it.

``config`` keys: ``spec`` (the trained spec as a dict), ``recipe`` (``Recipe.to_dict()``), ``steps_per_epoch``,
``seed``, ``torch_threads`` (None: leave torch's default), ``mlflow`` (``{"tracking_uri", "run_id"}`` or None:
rank 0 logs per-epoch metrics there), ``log_every`` (iterations between step-level MLflow metrics, 0: off),
``fail_once_at_epoch`` (testing hook: ``[epoch index, marker path]``: rank 0 exits hard after the first iteration
of that epoch unless the marker exists, to exercise ``FailureConfig`` restarts).

Ray Train's controller collects reports by polling the workers (every 2 s by default): a checkpoint reported
less than that before a worker dies can be lost, and the restart then resumes from the one before.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from e3d.model import build_model
from e3d.spec import ArchSpec

from .evaluate import Meter, all_reduce_meter, evaluate_views, gather_views
from .recipe import Recipe

STATE_FILE = "state.pt"
log = logging.getLogger("pipeline.train")
META_FILE = "meta.json"


# -- pieces (importable and testable without Ray) ---------------------------------------------------
def param_groups(model: nn.Module, recipe: Recipe) -> list[dict[str, Any]]:
    """Weight decay on conv/linear weights; BN parameters and biases too only if the recipe says so."""
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim > 1 or recipe.decay_norm_and_bias else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def apply_init(model: nn.Module, scheme: str) -> nn.Module:
    """Re-initialise a freshly built network per ``Recipe.init`` (see ``recipe.INITS``); "model" keeps it."""
    if scheme == "model":
        return model
    if scheme == "model-unit-gamma":
        from e3d.model import init_weights

        init_weights(model, zero_init_residual=False)
        return model
    if scheme != "torch":
        raise ValueError(f"unknown init scheme {scheme!r}")
    for m in model.modules():
        if isinstance(m, (nn.Conv3d, nn.Linear, nn.modules.batchnorm._BatchNorm)):
            m.reset_parameters()
    return model


def make_optimizer(model: nn.Module, recipe: Recipe, lr: float) -> torch.optim.SGD:
    return torch.optim.SGD(param_groups(model, recipe), lr=lr, momentum=recipe.momentum,
                           nesterov=recipe.nesterov and recipe.momentum > 0)


def make_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int):
    """Stepped once per iteration: ``lr = peak * recipe.lr_factor(iteration / steps_per_epoch)``."""
    spe = max(1, int(steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: recipe.lr_factor(it / spe))


def amp_settings(device: torch.device, recipe: Recipe) -> tuple[Callable[[], Any], torch.amp.GradScaler]:
    """(autocast context factory, grad scaler). Mixed precision only on CUDA: bfloat16 where supported
    (no scaling needed), else float16 with a dynamic loss scaler. On CPU: full precision, inert scaler."""
    if device.type == "cuda" and recipe.amp:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
        return (lambda: torch.autocast("cuda", dtype=dtype)), scaler
    return contextlib.nullcontext, torch.amp.GradScaler("cuda", enabled=False)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def load_state(checkpoint_dir: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    return torch.load(Path(checkpoint_dir) / STATE_FILE, map_location=map_location, weights_only=False)


def model_from_checkpoint(checkpoint_dir: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """The trained network (eval mode, CPU) and the checkpoint's state dict."""
    state = load_state(checkpoint_dir)
    spec = ArchSpec.from_dict(state["spec"])
    model = build_model(spec, dropout=state.get("dropout", 0.5))
    model.load_state_dict(state["model"])
    return model.eval(), state


def _batches(shard: Any, batch_size: int, *, drop_last: bool = False):
    """Numpy batches of a dataset shard, made writable (Ray hands out read-only views; torch wants to own)."""
    for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy", drop_last=drop_last,
                                    prefetch_batches=1):
        yield {k: (v if not isinstance(v, np.ndarray) or v.flags.writeable else v.copy()) for k, v in batch.items()}


class _MlflowSink:
    """Rank 0's per-epoch (and every ``log_every`` iterations) metrics into an existing MLflow run."""

    def __init__(self, cfg: dict | None, rank: int):
        self.client = self.run_id = None
        if cfg and rank == 0:
            from mlflow.tracking import MlflowClient

            self.client, self.run_id = MlflowClient(cfg["tracking_uri"]), cfg["run_id"]

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))]
        try:
            self.client.log_batch(self.run_id, metrics=batch)
        except Exception as exc:  # tracking must never kill training
            log.warning("[train] MLflow logging failed (%r); continuing", exc)


# -- the loop ----------------------------------------------------------------------------------------
def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    spec = ArchSpec.from_dict(config["spec"])
    recipe = Recipe.from_dict(config["recipe"])
    steps_per_epoch = int(config["steps_per_epoch"])
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
    core = unwrap(model)
    peak_lr = recipe.lr_for(world)
    optimizer = make_optimizer(core, recipe, peak_lr)
    scheduler = make_scheduler(optimizer, recipe, steps_per_epoch)
    autocast, scaler = amp_settings(device, recipe)

    start_epoch, history, final = 0, [], None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = load_state(d, map_location=device)
        core.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, history = int(state["epoch"]), list(state["history"])
        # a finished run's evaluation only stands if no more epochs are asked for now
        final = state.get("final") if start_epoch >= recipe.epochs else None
        if rank == 0:
            log.info(f"[train] {spec.name}: resumed from checkpoint at epoch {start_epoch}/{recipe.epochs}")
    session_start = start_epoch
    sink = _MlflowSink(config.get("mlflow"), rank)
    log_every = int(config.get("log_every") or 0)

    def save_and_report(metrics: dict[str, Any], epoch: int, name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:
                torch.save({"model": core.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch,
                            "history": history, "final": final, "spec": spec.to_dict(), "recipe": recipe.to_dict(),
                            "dropout": recipe.dropout}, Path(tmp) / STATE_FILE)
                (Path(tmp) / META_FILE).write_text(json.dumps({"epoch": epoch, "metrics": metrics}, default=str))
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=name)

    train_shard = ray.train.get_dataset_shard("train")
    try:
        val_shard = ray.train.get_dataset_shard("val")
    except (KeyError, ValueError):
        val_shard = None

    chaos = config.get("fail_once_at_epoch")  # testing hook: (epoch, marker file) -> this worker dies once

    for epoch in range(start_epoch, recipe.epochs):
        model.train()
        meter, t0, steps = Meter(), time.perf_counter(), 0
        for batch in _batches(train_shard, recipe.batch_size):
            x = torch.as_tensor(batch["clip"]).to(device, non_blocking=True)
            y = torch.as_tensor(batch["label"]).long().to(device, non_blocking=True)
            with autocast():
                logits = model(x)
                loss = F.cross_entropy(logits, y, label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if recipe.grad_clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(core.parameters(), recipe.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            meter.update(logits, y, float(loss.detach()) * y.numel())
            steps += 1
            if chaos and epoch == int(chaos[0]) and rank == 0 and not os.path.exists(chaos[1]):
                # after the controller has collected the last report (it polls every 2 s), like a real crash
                time.sleep(5)
                Path(chaos[1]).write_text(f"worker killed during epoch index {epoch}\n")
                log.warning("[train] fail_once_at_epoch: killing this worker during epoch %d", epoch)
                os._exit(1)
            if log_every and scheduler.last_epoch % log_every == 0:
                sink.log({"train_loss_step": float(loss.detach()), "lr_step": optimizer.param_groups[0]["lr"]},
                         step=scheduler.last_epoch)
        train_time = time.perf_counter() - t0
        train = all_reduce_meter(meter, device)
        metrics: dict[str, Any] = {"epoch": epoch + 1, "session_start_epoch": session_start,
                                   "lr": optimizer.param_groups[0]["lr"], "steps": steps,
                                   "train_time_s": train_time,
                                   "train_clips_per_s": train.count / max(train_time, 1e-9)}
        metrics |= {k: v for k, v in train.summary("train").items() if k != "train_top5"}
        if val_shard is not None:
            t1 = time.perf_counter()
            val = Meter()
            core.eval()  # the unwrapped module: shards may differ in length, so no DDP collectives here
            with torch.no_grad():
                for batch in _batches(val_shard, recipe.batch_size):
                    x = torch.as_tensor(batch["clip"]).to(device, non_blocking=True)
                    y = torch.as_tensor(batch["label"]).long().to(device, non_blocking=True)
                    with autocast():
                        logits = core(x)
                    val.update(logits, y, float(F.cross_entropy(logits.float(), y, reduction="sum")))
            metrics |= all_reduce_meter(val, device).summary("val")
            metrics["val_time_s"] = time.perf_counter() - t1
        metrics["epoch_time_s"] = time.perf_counter() - t0
        history.append(metrics)
        sink.log(metrics, step=epoch + 1)
        if rank == 0:
            shown = " ".join(f"{k}={metrics[k]:.4g}" for k in ("train_loss", "train_top1", "val_top1", "val_top5",
                                                                 "lr", "train_clips_per_s") if k in metrics)
            log.info(f"[train] {spec.name} epoch {epoch + 1}/{recipe.epochs}: {shown}")
        save_and_report(metrics | {"is_final": 0}, epoch + 1, f"epoch_{epoch + 1:04d}")

    # -- final multi-view evaluation ------------------------------------------------------------------
    try:
        test_shard = ray.train.get_dataset_shard("test")
    except (KeyError, ValueError):
        test_shard = None
    if final is None:
        final = {}
        if test_shard is not None:
            t2 = time.perf_counter()
            acc = evaluate_views(core, _batches(test_shard, recipe.batch_size), num_classes=spec.num_classes,
                                 device=device, autocast=autocast if device.type == "cuda" else None)
            final = gather_views(acc).result() | {"mv_time_s": time.perf_counter() - t2}
            if rank == 0:
                log.info(f"[train] {spec.name} multi-view: top1={final['mv_top1']:.2f} top5={final['mv_top5']:.2f} "
                      f"over {final['mv_videos']} videos x {final['mv_views_per_video']:.1f} views")
            sink.log(final, step=recipe.epochs)
    last = dict(history[-1]) if history else {}
    last |= final | {"is_final": 1, "session_start_epoch": session_start}
    if history and "val_top1" in history[0]:
        best = max(history, key=lambda m: m.get("val_top1", -1.0))
        last |= {"best_val_top1": best["val_top1"], "best_epoch": best["epoch"]}
    save_and_report(last, recipe.epochs, f"final_{recipe.epochs:04d}_{time.strftime('%Y%m%d-%H%M%S')}")
