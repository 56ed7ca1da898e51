"""``template_loop``: the Ray Train worker loop that learns the template's weights and gate probabilities, on the
skeleton of :mod:`pipeline.train.worker` (resume, a report with a checkpoint every epoch, the final report from
which the driver reads the result).

    state = setup(config, placement(config))  # template, SGD (weights) + Adam (gate logits), schedule
    one epoch:                                # run(state, one_epoch, callbacks)
        train_epoch(...)                     # loss = CE (Monte Carlo over relaxed gates) + kl_weight * KL / N
        validate(...)                        # expected gates 1 - p

Eq. S9 is the negative ELBO over the whole training set: ``KL - sum_t log p(y_t | x_t, w e^t)``; per clip that
is the mean cross-entropy plus ``KL / N`` (``N`` training clips). ``config`` keys: ``template``
(:class:`~e3d.fusion.template.TemplateSettings` as a dict), ``recipe``, ``num_classes``, ``n_train``,
``steps_per_epoch``, ``length_scale``, ``kl_weight``, ``arch_lr``, ``seed``, ``torch_threads``,
``callbacks`` (loop callbacks with ``on_start(state)`` and ``on_epoch_end(state, metrics)``, e.g.
:class:`pipeline.tracking.WorkerMetricsLogger` into the search run). Each epoch's metrics hold ``drop_p`` (every
layer's drop probabilities), which reports and MLflow leave out.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from e3d.fusion.template import UNITS, TemplateNet, TemplateSettings, posterior
from pipeline.train.evaluate import Meter, all_reduce_meter
from pipeline.train.optim import make_scheduler
from pipeline.train.recipe import Recipe
from pipeline.train.worker import (Placement, WorkerState, dataset_shard, placement, run, sum_over_workers,
                                   tensor_batches)


@dataclass(kw_only=True)
class TemplateState(WorkerState):
    """What one worker trains (``model``: the template)."""

    settings: TemplateSettings
    recipe: Recipe
    optimizer: torch.optim.Optimizer
    arch_optimizer: torch.optim.Optimizer
    scheduler: Any

    def state_dict(self, epoch: int) -> dict[str, Any]:
        return {"model": self.core.state_dict(), "optimizer": self.optimizer.state_dict(),
                "arch_optimizer": self.arch_optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "epoch": epoch, "history": self.history, "settings": self.settings.to_dict(),
                "layout": self.core.layout(), "drop_p": [p.tolist() for p in self.core.drop_probabilities()]}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.core.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.arch_optimizer.load_state_dict(saved["arch_optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.start_epoch, self.history = int(saved["epoch"]), list(saved["history"])


def setup(config: dict[str, Any], where: Placement = Placement()) -> TemplateState:
    settings, recipe = TemplateSettings.from_dict(config["template"]), Recipe.from_dict(config["recipe"])
    torch.manual_seed(int(config.get("seed", 0)))
    core = TemplateNet(settings, int(config["num_classes"]))
    model = where.prepare(core)
    optimizer, arch_optimizer = make_optimizers(core, recipe, recipe.lr_for(where.world), float(config["arch_lr"]))
    scheduler = make_scheduler(optimizer, recipe, int(config["steps_per_epoch"]))
    return TemplateState(rank=where.rank, world=where.world, device=where.device, model=model, epochs=recipe.epochs,
                         label="[fusion] template", settings=settings, recipe=recipe, optimizer=optimizer,
                         arch_optimizer=arch_optimizer, scheduler=scheduler)


def make_optimizers(model: TemplateNet, recipe: Recipe, lr: float, arch_lr: float):
    """SGD on the weights (the recipe's weight decay on every conv/linear weight except the units', whose
    Gaussian prior is the KL term) and Adam on the gate logits."""
    arch = {id(p) for p in model.arch_parameters()}
    units = {id(p) for p in model.unit_parameters()}
    decay, no_decay = [], []
    for p in model.parameters():
        if id(p) in arch:
            continue
        (decay if p.ndim > 1 and id(p) not in units else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    sgd = torch.optim.SGD(groups, lr=lr, momentum=recipe.momentum, nesterov=recipe.nesterov and recipe.momentum > 0)
    return sgd, torch.optim.Adam(model.arch_parameters(), lr=arch_lr)


def train_epoch(state: TemplateState, shard: Any, config: dict[str, Any]) -> dict[str, Any]:
    model, core, recipe = state.model, state.core, state.recipe
    n_train, k, weight = int(config["n_train"]), float(config["length_scale"]), float(config["kl_weight"])
    mc = state.settings.mc_samples
    model.train()
    meter, kl_value, steps, t0 = Meter(), 0.0, 0, time.perf_counter()
    for x, y in tensor_batches(shard, recipe.batch_size, state.device):
        ce = 0.0
        for _ in range(mc):  # Eq. S8: Monte Carlo over gate samples (fresh relaxed gates every pass)
            logits = model(x)
            ce = ce + F.cross_entropy(logits, y, label_smoothing=recipe.label_smoothing) / mc
        kl = core.regulariser(k)
        loss = ce + weight * kl / n_train
        state.optimizer.zero_grad(set_to_none=True)
        state.arch_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if recipe.grad_clip:
            nn.utils.clip_grad_norm_(core.parameters(), recipe.grad_clip)
        state.optimizer.step()
        state.arch_optimizer.step()
        state.scheduler.step()
        meter.update(logits, y, float(ce.detach()) * y.numel())
        kl_value, steps = float(kl.detach()), steps + 1
    train = all_reduce_meter(meter, state.device)
    return {"steps": steps, "train_time_s": time.perf_counter() - t0, "kl": kl_value,
            "lr": state.optimizer.param_groups[0]["lr"]} | {k_: v for k_, v in train.summary("train").items()
                                                            if k_ != "train_top5"}


@torch.no_grad()
def validate(state: TemplateState, shard: Any) -> dict[str, Any]:
    core, meter = state.core, Meter()
    core.eval()
    for x, y in tensor_batches(shard, state.recipe.batch_size, state.device):
        logits = core(x)
        meter.update(logits, y, float(F.cross_entropy(logits, y, reduction="sum")))
    return {k: v for k, v in all_reduce_meter(meter, state.device).summary("val").items() if k != "val_top5"}


def layer_metrics(core: TemplateNet) -> dict[str, float]:
    """Per layer and unit, the posterior ``1 - sqrt(p)`` averaged over the layer's inputs (``fusion.L03.SST``: MLflow
    metric names take no ``+``)."""
    out = {}
    for (layer, _, _), p in zip(core.layout(), core.drop_probabilities()):
        post = posterior(p).mean(dim=0)
        out |= {f"fusion.L{layer:02d}.{u.replace('+', '')}": float(post[j]) for j, u in enumerate(UNITS)}
    return out


def one_epoch(state: TemplateState, epoch: int, train: Any, val: Any, config: dict[str, Any]) -> dict[str, Any]:
    """:func:`train_epoch`, :func:`validate` when there is a ``"val"`` shard, the layers' posteriors and
    ``drop_p``; CPU-seconds summed over the workers (Train keeps rank 0's report only)."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    metrics: dict[str, Any] = {"epoch": epoch + 1} | train_epoch(state, train, config)
    if val is not None:
        metrics |= validate(state, val)
    metrics |= layer_metrics(state.core)
    return metrics | {"epoch_time_s": time.perf_counter() - t0,
                      "cpu_s": sum_over_workers(time.process_time() - cpu0, state.device),
                      "drop_p": [p.tolist() for p in state.core.drop_probabilities()]}


def template_loop(config: dict[str, Any]) -> None:
    callbacks = list(config.get("callbacks") or [])
    state = setup(config, placement(config))
    train, val = dataset_shard("train"), dataset_shard("val")
    run(state, lambda s, epoch: one_epoch(s, epoch, train, val, config), callbacks)
