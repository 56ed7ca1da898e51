"""What a :class:`~pipeline.train.recipe.Recipe` becomes on a worker: the weight init, SGD with its
parameter groups, the per-iteration warm-up + cosine schedule, and mixed precision."""
from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
from torch import nn

from .recipe import Recipe


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
