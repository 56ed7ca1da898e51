"""Train the template on Ray Train and read the learned gate probabilities back.

    result = train_template(source, TemplateSettings(), recipe=recipe, out_dir="out/search", length_scale=None)
    result.drop_p[3]            # (inputs, 3) drop probabilities of layer 4; posterior = 1 - sqrt(p)
    result = run_template(request, context, training)   # the fusion strategy's runner (pipeline.context.RayTrainer)

The Train run is ``<out_dir>/template/<run name>``; the name hashes the settings, the data and the recipe
(except its number of epochs), so calling again with the same arguments resumes from the last epoch's
checkpoint (Ray Train V2 continues a run of the same name), and a finished run is read back.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from e3d.fusion.template import TemplateSettings
from e3d.strategies.fusion import TemplateTraining
from e3d.strategy import SearchContext, SearchRequest
from pipeline.train.data import as_source, steps_per_epoch
from pipeline.train.recipe import Recipe

from .loop import template_loop


@dataclass
class TemplateResult:
    """The trained template: per layer ``(layer, block, inputs)`` and its drop probabilities ``(inputs, 3)``
    (S, ST, S+ST), the per-epoch history (each row with that epoch's ``drop_p``), and what it cost."""

    layout: list[tuple[int, int, int]]
    drop_p: list[np.ndarray]
    history: list[dict[str, Any]]
    settings: TemplateSettings
    length_scale: float
    wall_s: float
    cpu_s: float
    run_dir: str
    extra: dict[str, Any] = field(default_factory=dict)


def run_template(request: SearchRequest, context: SearchContext, training: TemplateTraining) -> TemplateResult:
    """The ``fusion`` strategy's training: the template on ``context.dataset`` under ``request.out_dir``, with the
    job's recipe (without one: Something-Something's, 15 epochs of batch 8 at rate 0.02) scaled by ``training``;
    the recipe used is ``result.extra["recipe"]``."""
    base = context.recipe or Recipe.paper("sthsth").scaled(epochs=15, batch_size=8, lr=0.02)
    recipe = base.scaled(epochs=base.epochs if training.epochs is None else training.epochs,
                         batch_size=training.batch_size, lr=training.lr)
    result = train_template(context.dataset, training.template, recipe=recipe, out_dir=request.out_dir,
                            clip=context.clip, length_scale=training.length_scale, kl_weight=training.kl_weight,
                            arch_lr=training.arch_lr, seed=request.seed,
                            tracking_uri=getattr(context.tracking, "tracking_uri", None), mlflow_run_id=context.run_id,
                            say=print if context.progress is not False else (lambda *a, **k: None))
    result.extra["recipe"] = recipe.to_dict()
    return result


def default_length_scale(recipe: Recipe, n_train: int) -> float:
    """The prior length scale ``k`` whose KL weight term acts like the recipe's weight decay at ``p = 0``:
    ``(1 - p) k^2 / (2 N) ||w||^2`` is decay ``lambda`` when ``k^2 = lambda * N``."""
    return math.sqrt(max(recipe.weight_decay, 1e-12) * max(n_train, 1))


def run_name(settings: TemplateSettings, source: Any, recipe: Recipe, extra: dict[str, Any]) -> str:
    rec = recipe.to_dict()
    for k in ("epochs", "warmup_epochs"):
        rec.pop(k)
    blob = json.dumps([settings.to_dict(), source.fingerprint(), rec, extra], sort_keys=True, default=str)
    return f"template-{hashlib.sha1(blob.encode()).hexdigest()[:10]}"


def train_template(data: Any, settings: TemplateSettings, *, recipe: Recipe, out_dir: str | Path, clip: Any = None,
                   length_scale: float | None = None, kl_weight: float = 1.0, arch_lr: float = 0.05,
                   plan: Any = None, seed: int = 0, max_failures: int = 1, tracking_uri: str | None = None,
                   mlflow_run_id: str | None = None, say=print) -> TemplateResult:
    """Train the template on ``data`` (a VideoDataset with its ``clip``, or a source of
    :mod:`pipeline.train.data`) for ``recipe.epochs`` epochs; log each epoch's metrics and per-layer unit
    posteriors into the MLflow run ``mlflow_run_id`` when given."""
    import ray

    from pipeline.train import plan_resources
    from pipeline.train.trainer import build_trainer

    if not ray.is_initialized():
        ray.init()
    source = as_source(data, clip, seed=seed)
    if settings.kt > source.frames:
        raise ValueError(f"template kt={settings.kt} exceeds the clip's {source.frames} frames")
    plan = plan or plan_resources(1)
    k = float(length_scale) if length_scale else default_length_scale(recipe, source.n_train)
    name = run_name(settings, source, recipe, {"k": k, "kl_weight": kl_weight, "arch_lr": arch_lr, "seed": seed})
    storage = Path(out_dir).expanduser().resolve() / "template"
    callbacks = []
    if tracking_uri and mlflow_run_id:
        from pipeline.tracking import WorkerMetricsLogger

        callbacks.append(WorkerMetricsLogger(tracking_uri, mlflow_run_id))
    config = {"template": settings.to_dict(), "recipe": recipe.to_dict(), "num_classes": source.num_classes,
              "n_train": source.n_train, "steps_per_epoch": steps_per_epoch(source.n_train, plan.num_workers,
                                                                          recipe.batch_size),
              "length_scale": k, "kl_weight": kl_weight, "arch_lr": arch_lr, "seed": seed,
              "torch_threads": plan.torch_threads, "callbacks": callbacks}
    resumed = (storage / name).exists()
    say(f"[fusion] template {settings.blocks}x{settings.layers_per_block} layers, growth {settings.growth}, "
        f"{recipe.epochs} epochs on {source.n_train} clips ({'resuming ' if resumed else ''}{storage / name})")
    t0 = time.perf_counter()
    trainer = build_trainer(loop_config=config, datasets={"train": source.train(), "val": source.val()}, plan=plan,
                            run_name=name, storage_path=storage, max_failures=max_failures,
                            train_loop_per_worker=template_loop)
    fit = trainer.fit()
    if fit.error is not None:
        raise fit.error
    if fit.checkpoint is None:
        raise RuntimeError("the template finished without a checkpoint")
    return read_result(fit.checkpoint.path, wall_s=time.perf_counter() - t0, length_scale=k, run_dir=storage / name)


def read_result(checkpoint_dir: str | Path, *, wall_s: float = 0.0, length_scale: float = math.nan,
                run_dir: str | Path = "") -> TemplateResult:
    from pipeline.train.checkpoint import load_state

    state = load_state(checkpoint_dir)
    history = list(state["history"])
    return TemplateResult(layout=[tuple(x) for x in state["layout"]],
                          drop_p=[np.asarray(p, dtype=np.float64) for p in state["drop_p"]], history=history,
                          settings=TemplateSettings.from_dict(state["settings"]), length_scale=length_scale,
                          wall_s=wall_s, cpu_s=float(sum(h.get("cpu_s", 0.0) for h in history)), run_dir=str(run_dir))
