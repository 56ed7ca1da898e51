"""``search_loop_per_worker``: the supernet search every Ray Train worker runs (Sec. 3.3, Appendix A), on the
skeleton of :mod:`pipeline.train.worker` (resume, a report with a checkpoint every epoch, the final report).

    state = setup(config, placement(config))       # supernet, alpha/beta, both optimizers
    one epoch:                                     # run(state, one_epoch, callbacks)
        for each batch of the weight part:         # equal shards: every worker takes the same number of steps
            if epoch >= warmup_epochs:             # architecture step on the next batch of the architecture part
                arch_step(...)                     # Adam on alpha, beta: CE + lam * log_k(E[FLOPs])   (Eq. 5)
            weight_step(...)                       # SGD on the weights: CE, cosine schedule
        monitor(...)                               # the relaxed supernet on the monitoring part

DDP: the supernet is wrapped by ``ray.train.torch.prepare_model`` (NCCL on GPUs, gloo on CPUs) for the weight steps;
alpha and beta are not part of it. An architecture step runs the unwrapped supernet, takes ``torch.autograd.grad``
with respect to alpha and beta only and all-reduces those gradients itself, averaged over the workers that had a
batch: Ray Data splits the architecture part unevenly (only "train" is split equally), so a worker whose part is
used up joins the step with zero gradients, and the steps stop when no worker has a batch left. The remaining
weight steps of the epoch go on alone.

``config``: ``space`` (``DnasSpace.to_dict()``), ``settings`` (``DnasSettings.to_dict()``), ``steps_per_epoch``,
``seed``, ``torch_threads``, ``callbacks`` (loop callbacks as in :mod:`pipeline.train.callbacks`: ``on_start``,
``on_step``, ``on_epoch_end``, ``on_evaluation``; MLflow logging, fault injection).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from e3d.cost import cost
from e3d.dnas.space import DnasSpace, derive, expected_flops
from e3d.dnas.supernet import ArchParams, ExpectedFlops, SuperNet, cost_penalty
from pipeline.train.evaluate import Meter, all_reduce_meter
from pipeline.train.worker import (Placement, WorkerState, all_reduce_sum, dataset_shard, placement, run,
                                   sum_over_workers, tensor_batches)

log = logging.getLogger("pipeline.dnas")


@dataclass(kw_only=True)
class SearchState(WorkerState):
    """What one worker searches with (``model``: the supernet)."""

    space: DnasSpace
    settings: dict[str, Any]
    arch: ArchParams
    flops: ExpectedFlops
    w_opt: torch.optim.Optimizer
    a_opt: torch.optim.Optimizer
    scheduler: Any
    autocast: Any

    def state_dict(self, epoch: int) -> dict[str, Any]:
        return {"supernet": self.core.state_dict(), "arch": self.arch.state_dict(), "w_opt": self.w_opt.state_dict(),
                "a_opt": self.a_opt.state_dict(), "scheduler": self.scheduler.state_dict(), "epoch": epoch,
                "history": self.history, "space": self.space.to_dict(), "settings": self.settings,
                "arch_weights": self.arch.as_lists()}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.core.load_state_dict(saved["supernet"])
        self.arch.load_state_dict(saved["arch"])
        self.w_opt.load_state_dict(saved["w_opt"])
        self.a_opt.load_state_dict(saved["a_opt"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.start_epoch, self.history = int(saved["epoch"]), list(saved["history"])


def cosine_factor(step: int, total: int, floor: float) -> float:
    """``lr(step) / lr``: a half cosine from 1 to ``floor`` over ``total`` steps (Appendix A: 0.02 -> 1e-4)."""
    t = min(max(step / max(1, total), 0.0), 1.0)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))


def setup(config: dict[str, Any], where: Placement = Placement()) -> SearchState:
    """Supernet (same seed on every rank), architecture parameters, optimizers, schedule."""
    space, s = DnasSpace.from_dict(config["space"]), dict(config["settings"])
    torch.manual_seed(int(config.get("seed", 0)))
    net = SuperNet(space, dropout=float(s["dropout"]))
    model = where.prepare(net)
    arch = ArchParams(space).to(where.device)
    flops = ExpectedFlops(space).to(where.device)
    w_opt = torch.optim.SGD(net.parameters(), lr=float(s["lr"]), momentum=float(s["momentum"]),
                            weight_decay=float(s["weight_decay"]))
    a_opt = torch.optim.Adam(arch.parameters(), lr=float(s["arch_lr"]), betas=(0.5, 0.999),
                             weight_decay=float(s["arch_weight_decay"]))
    total = int(s["epochs"]) * int(config["steps_per_epoch"])
    floor = min(1.0, float(s["min_lr"]) / float(s["lr"]))
    scheduler = torch.optim.lr_scheduler.LambdaLR(w_opt, lambda it: cosine_factor(it, total, floor))
    autocast = contextlib.nullcontext
    if where.device.type == "cuda" and torch.cuda.is_bf16_supported():
        autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16)  # noqa: E731
    return SearchState(rank=where.rank, world=where.world, device=where.device, model=model, epochs=int(s["epochs"]),
                       label="[dnas] supernet", space=space, settings=s, arch=arch, flops=flops, w_opt=w_opt,
                       a_opt=a_opt, scheduler=scheduler, autocast=autocast)


# -- the two steps -------------------------------------------------------------------------------------
def arch_step(state: SearchState, batch: tuple[torch.Tensor, torch.Tensor] | None, meter: Meter,
              losses: list[float]) -> bool:
    """One Adam step on alpha and beta with the weights fixed: ``CE(batch) + lam * log_k(E[FLOPs])`` (Eq. 5).

    Collective: every worker calls it at every weight step of a search epoch. A worker whose part of the
    architecture data is used up passes ``batch=None`` and adds zero gradients; the gradients are averaged over
    the workers that had a batch. Returns False (and steps nothing) once no worker has one. The forward runs
    the unwrapped supernet: only alpha and beta get gradients (``torch.autograd.grad``), and DDP's collectives
    stay out of a step that workers may take without data."""
    s, params = state.settings, list(state.arch.parameters())
    if batch is not None:
        x, y = batch
        alpha_w, beta_w = state.arch.weights()
        with state.autocast():
            logits = state.core(x, alpha_w, beta_w).float()
        ce = F.cross_entropy(logits, y)
        loss = ce + cost_penalty(state.flops(alpha_w, beta_w), float(s["lam"]), float(s["log_base"]))
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]
        meter.update(logits, y, float(ce.detach()) * y.numel())
        losses.append(float(loss.detach()))
    else:
        grads = [torch.zeros_like(p) for p in params]
    had_batch = torch.tensor([0.0 if batch is None else 1.0], dtype=torch.float64, device=state.device)
    flat = torch.cat([g.detach().reshape(-1).to(torch.float64) for g in grads] + [had_batch])
    flat = all_reduce_sum(flat)
    workers_with_data = float(flat[-1])
    if workers_with_data == 0:
        return False
    flat = flat[:-1] / workers_with_data
    state.a_opt.zero_grad(set_to_none=True)
    k = 0
    for p in params:
        p.grad = flat[k:k + p.numel()].view_as(p).to(p.dtype)
        k += p.numel()
    state.a_opt.step()
    return True


def weight_step(state: SearchState, x: torch.Tensor, y: torch.Tensor, meter: Meter) -> None:
    """One SGD step on the supernet's weights with alpha and beta fixed (cross-entropy only: the cost term
    does not depend on the weights)."""
    with torch.no_grad():
        alpha_w, beta_w = state.arch.weights()
    with state.autocast():
        logits = state.model(x, alpha_w, beta_w)
    loss = F.cross_entropy(logits.float(), y)
    state.w_opt.zero_grad(set_to_none=True)
    loss.backward()
    if state.settings.get("grad_clip"):
        nn.utils.clip_grad_norm_(state.core.parameters(), float(state.settings["grad_clip"]))
    state.w_opt.step()
    state.scheduler.step()
    meter.update(logits, y, float(loss.detach()) * y.numel())


def search_epoch(state: SearchState, train: Any, arch: Any, epoch: int, callbacks=()) -> dict[str, Any]:
    """One epoch: architecture + weight steps (weights only during the warm-up)."""
    s = state.settings
    bs, searching = int(s["batch_size"]), epoch >= int(s["warmup_epochs"])
    state.model.train()
    w_meter, a_meter = Meter(), Meter()
    arch_iter = tensor_batches(arch, bs, state.device) if searching else None
    arch_live = searching  # until no worker has an architecture batch left in this epoch
    arch_losses: list[float] = []
    steps = arch_steps = 0
    t0, cpu0 = time.perf_counter(), time.process_time()
    for x, y in tensor_batches(train, bs, state.device):
        if arch_live:
            nxt = next(arch_iter, None) if arch_iter is not None else None
            if nxt is None:
                arch_iter = None
            arch_live = arch_step(state, nxt, a_meter, arch_losses)
            arch_steps += arch_live
        weight_step(state, x, y, w_meter)
        steps += 1
        for cb in callbacks:
            cb.on_step(state, epoch, None)
    if arch_iter is not None:  # finish the pass: the next epoch's pass over the shard starts from a finished one
        for _ in arch_iter:
            pass
    train_m = all_reduce_meter(w_meter, state.device)
    arch_m = all_reduce_meter(a_meter, state.device)
    out = {"epoch": epoch + 1, "phase": "search" if searching else "warmup", "session_start_epoch": state.start_epoch,
           "lr": state.w_opt.param_groups[0]["lr"], "steps": steps, "arch_steps": arch_steps,
           "train_time_s": time.perf_counter() - t0}
    out |= {k: v for k, v in train_m.summary("train").items() if k != "train_top5"}
    if arch_steps:
        out |= {"arch_ce": arch_m.loss_sum / max(arch_m.count, 1), "arch_top1": 100 * arch_m.top1 / max(arch_m.count, 1),
                "arch_loss": float(np.mean(arch_losses)) if arch_losses else math.nan}
    out["cpu_s"] = sum_over_workers(time.process_time() - cpu0, state.device)
    return out


@torch.no_grad()
def monitor(state: SearchState, shard: Any) -> dict[str, Any]:
    """The relaxed supernet on the monitoring part (Appendix A's "inference" set), summed over workers."""
    if shard is None:
        return {}
    core, meter = state.core, Meter()
    core.eval()
    alpha_w, beta_w = state.arch.weights()
    for x, y in tensor_batches(shard, int(state.settings["batch_size"]), state.device):
        with state.autocast():
            logits = core(x, alpha_w, beta_w).float()
        meter.update(logits, y, float(F.cross_entropy(logits, y, reduction="sum")))
    m = all_reduce_meter(meter, state.device)
    return {k: v for k, v in m.summary("monitor").items() if k != "monitor_top5"}


def architecture_metrics(state: SearchState) -> dict[str, Any]:
    """Expected FLOPs (Eq. 4), the derived network's exact cost and shape, the weights as JSON."""
    alpha, beta = state.arch.as_lists()
    best = derive(state.space, alpha, beta, k=1, path_score=str(state.settings["path_score"]))[0]
    c = cost(best.spec)
    return {"expected_gflops": expected_flops(state.space, alpha, beta) / 1e9, "derived_gflops": c.flops / 1e9,
            "derived_mparams": c.params / 1e6, "derived_log_prob": best.log_prob,
            "derived_widths": "-".join(map(str, best.spec.widths)),
            "derived_depths": "-".join(str(d - 1) for d in best.spec.depths),
            "derived_dilations": "|".join(",".join(map(str, st.get("dilations"))) for st in best.spec.stages),
            "alpha_json": json.dumps(alpha), "beta_json": json.dumps(beta)}


def one_epoch(state: SearchState, epoch: int, train: Any, arch: Any, mon: Any, callbacks=()) -> dict[str, Any]:
    """:func:`search_epoch`, :func:`monitor` and :func:`architecture_metrics`; the console line."""
    t0 = time.perf_counter()
    metrics = search_epoch(state, train, arch, epoch, callbacks)
    metrics |= monitor(state, mon)
    metrics |= architecture_metrics(state)
    metrics["epoch_time_s"] = time.perf_counter() - t0
    if state.rank == 0:
        log.info(f"{state.label} epoch {epoch + 1}/{state.epochs} ({metrics['phase']}): "
                 f"train_loss={metrics['train_loss']:.4g} expected={metrics['expected_gflops']:.4g}G "
                 f"derived={metrics['derived_gflops']:.4g}G widths {metrics['derived_widths']} "
                 f"stack {metrics['derived_depths']}")
    return metrics


def search_loop_per_worker(config: dict[str, Any]) -> None:
    callbacks = list(config.get("callbacks") or [])
    state = setup(config, placement(config))
    train, arch, mon = dataset_shard("train"), dataset_shard("arch"), dataset_shard("monitor")
    run(state, lambda s, epoch: one_epoch(s, epoch, train, arch, mon, callbacks), callbacks)
