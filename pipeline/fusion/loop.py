"""``template_loop``: the Ray Train worker loop that learns the template's weights and gate probabilities.

    state = setup(config)                    # template, SGD (weights) + Adam (gate logits), schedule; resume
    for epoch in range(state.start_epoch, epochs):
        train_epoch(...)                     # loss = CE (Monte Carlo over relaxed gates) + kl_weight * KL / N
        validate(...)                        # expected gates 1 - p
        report(...)                          # metrics + checkpoint (weights, optimizers, p per epoch)
    report(final)                            # a last checkpoint, so the driver reads the result from it

Eq. S9 is the negative ELBO over the whole training set: ``KL - sum_t log p(y_t | x_t, w e^t)``; per clip that
is the mean cross-entropy plus ``KL / N`` (``N`` training clips). ``config`` keys: ``template``
(:class:`~e3d.fusion.template.TemplateSettings` as a dict), ``recipe``, ``num_classes``, ``n_train``,
``steps_per_epoch``, ``length_scale``, ``kl_weight``, ``arch_lr``, ``seed``, ``torch_threads``,
``callbacks`` (loop callbacks with ``on_start(state)`` and ``on_epoch_end(state, metrics)``, e.g.
:class:`pipeline.tracking.WorkerMetricsLogger` into the search run).
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from e3d.fusion.template import UNITS, TemplateNet, TemplateSettings, posterior
from pipeline.train.evaluate import Meter, all_reduce_meter
from pipeline.train.loop import dataset_shard
from pipeline.train.optim import make_scheduler
from pipeline.train.recipe import Recipe

STATE_FILE = "template.pt"


@dataclass
class TemplateState:
    """What one worker trains; ``start_epoch`` and ``history`` come back from the checkpoint on resume."""

    settings: TemplateSettings
    recipe: Recipe
    device: torch.device
    rank: int
    world: int
    model: nn.Module  # DDP-wrapped when world > 1
    optimizer: torch.optim.Optimizer
    arch_optimizer: torch.optim.Optimizer
    scheduler: Any
    start_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def core(self) -> TemplateNet:
        return self.model.module if isinstance(self.model, nn.parallel.DistributedDataParallel) else self.model

    def state_dict(self, epoch: int) -> dict[str, Any]:
        return {"model": self.core.state_dict(), "optimizer": self.optimizer.state_dict(),
                "arch_optimizer": self.arch_optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "epoch": epoch, "history": self.history, "settings": self.settings.to_dict(),
                "layout": self.core.layout(), "drop_p": [p.tolist() for p in self.core.drop_probabilities()]}


def setup(config: dict[str, Any]) -> TemplateState:
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    settings, recipe = TemplateSettings.from_dict(config["template"]), Recipe.from_dict(config["recipe"])
    if config.get("torch_threads"):
        torch.set_num_threads(int(config["torch_threads"]))
    torch.manual_seed(int(config.get("seed", 0)))
    model = TemplateNet(settings, int(config["num_classes"]))
    core = model
    model = ray.train.torch.prepare_model(model)
    device = ray.train.torch.get_device()
    optimizer, arch_optimizer = make_optimizers(core, recipe, recipe.lr_for(world), float(config["arch_lr"]))
    scheduler = make_scheduler(optimizer, recipe, int(config["steps_per_epoch"]))
    state = TemplateState(settings, recipe, device, rank, world, model, optimizer, arch_optimizer, scheduler)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            saved = torch.load(f"{d}/{STATE_FILE}", map_location=device, weights_only=False)
        state.core.load_state_dict(saved["model"])
        state.optimizer.load_state_dict(saved["optimizer"])
        state.arch_optimizer.load_state_dict(saved["arch_optimizer"])
        state.scheduler.load_state_dict(saved["scheduler"])
        state.start_epoch, state.history = int(saved["epoch"]), list(saved["history"])
    return state


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


def _batches(shard: Any, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=1):
        x, y = (np.asarray(batch[k]) for k in ("clip", "label"))
        yield torch.as_tensor(x if x.flags.writeable else x.copy()), torch.as_tensor(np.array(y, dtype=np.int64))


def train_epoch(state: TemplateState, shard: Any, config: dict[str, Any]) -> dict[str, Any]:
    model, core, recipe = state.model, state.core, state.recipe
    n_train, k, weight = int(config["n_train"]), float(config["length_scale"]), float(config["kl_weight"])
    mc = state.settings.mc_samples
    model.train()
    meter, kl_value, steps, t0 = Meter(), 0.0, 0, time.perf_counter()
    for x, y in _batches(shard, recipe.batch_size):
        x, y = x.to(state.device), y.to(state.device)
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
    for x, y in _batches(shard, state.recipe.batch_size):
        x, y = x.to(state.device), y.to(state.device)
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


def _cpu_sum(seconds: float, device: torch.device) -> float:
    """CPU-seconds summed over the workers (Train keeps rank 0's report only)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return seconds
    t = torch.tensor([seconds], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())


def report(state: TemplateState, metrics: dict[str, Any], epoch: int, name: str) -> None:
    import ray.train

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if state.rank == 0:
            torch.save(state.state_dict(epoch), f"{tmp}/{STATE_FILE}")
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)


def template_loop(config: dict[str, Any]) -> None:
    callbacks = list(config.get("callbacks") or [])
    state = setup(config)
    train, val = dataset_shard("train"), dataset_shard("val")
    for cb in callbacks:
        cb.on_start(state)
    epochs = state.recipe.epochs
    for epoch in range(state.start_epoch, epochs):
        t0, cpu0 = time.perf_counter(), time.process_time()
        metrics: dict[str, Any] = {"epoch": epoch + 1} | train_epoch(state, train, config)
        if val is not None:
            metrics |= validate(state, val)
        metrics |= layer_metrics(state.core)
        metrics |= {"epoch_time_s": time.perf_counter() - t0,
                    "cpu_s": _cpu_sum(time.process_time() - cpu0, state.device),
                    "drop_p": [p.tolist() for p in state.core.drop_probabilities()]}
        state.history.append(metrics)
        for cb in callbacks:
            cb.on_epoch_end(state, {k: v for k, v in metrics.items() if k != "drop_p"})
        report(state, {k: v for k, v in metrics.items() if k != "drop_p"}, epoch + 1, f"epoch_{epoch + 1:04d}")
    final = {"epoch": epochs, "is_final": 1} | {k: v for k, v in (state.history[-1] if state.history else {}).items()
                                                 if k not in ("epoch", "drop_p")}
    report(state, final, epochs, f"final_{epochs:04d}_{time.strftime('%Y%m%d-%H%M%S')}")
