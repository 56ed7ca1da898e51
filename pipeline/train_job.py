"""The training job (``jobs/train.py``): given specs trained and evaluated on one dataset with one recipe, each a Tune
trial running its own TorchTrainer (:func:`pipeline.train.train_candidates`), under an MLflow parent run; prints
the table.

    code = run_train_job(TrainJob(specs, clip, recipe, out), dataset, tracking, start_ray=...)
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from e3d.spec import ArchSpec
from pipeline.options import TrainResources


@dataclass(frozen=True)
class TrainJob:
    """One run of the training job, checked by the options layer. ``params``: the job's settings, logged with its
    MLflow run."""

    specs: Sequence[ArchSpec]
    clip: Any  # pipeline.video.clip.ClipConfig
    recipe: Any  # pipeline.train.recipe.Recipe
    out: Path
    eval_clips: int = 2
    eval_crops: int = 3
    resources: TrainResources = field(default_factory=TrainResources)
    resume: bool = True
    seed: int = 0
    log_model: bool = True
    params: Mapping[str, str] = field(default_factory=dict)


def run_train_job(job: TrainJob, dataset: Any, tracking: Any, *, start_ray: Callable[[], Any]) -> int:
    """Train and evaluate; exit status 1 when a candidate failed. ``start_ray()`` starts (or joins) Ray."""
    t0 = time.perf_counter()
    clip, recipe, specs = job.clip, job.recipe, job.specs
    print(f"[train] {len(specs)} candidate(s) {', '.join(s.name for s in specs)} on {dataset.root} "
          f"({len(dataset.classes)} classes, {len(dataset.train)} train / {len(dataset.val)} val videos), "
          f"clips {clip.frames}x{clip.size}x{clip.size} every {clip.sampling_rate} frames; "
          f"{recipe.epochs} epochs, batch {recipe.batch_size}/worker")
    start_ray()
    from pipeline.train import format_table, train_candidates  # noqa: PLC0415

    plan = job.resources.plan(len(specs))
    dataset.save_label_map(job.out / "label_map.json")  # the class names, for e3d predict on the candidates
    common = dict(clip=clip, recipe=recipe, out_dir=job.out, eval_clips=job.eval_clips, eval_crops=job.eval_crops,
                  plan=plan, resume=job.resume, max_failures=job.resources.max_failures, seed=job.seed,
                  log_model=job.log_model)
    if tracking is None:
        results = train_candidates(specs, dataset, tracking=None, **common)
    else:
        with tracking.run(f"train-{time.strftime('%Y%m%d-%H%M%S')}", tags={"e3d.kind": "train-job"}) as parent:
            mlflow = tracking.client()
            mlflow.log_params(dict(job.params) | {"job.candidates": ",".join(s.name for s in specs),
                                                  "job.plan": plan.describe()})
            mlflow.log_artifact(str(job.out / "label_map.json"), "data")
            results = train_candidates(specs, dataset, tracking=tracking.child(parent.info.run_id), **common)
            ok = [r for r in results if r.ok]
            if ok:
                best = max(ok, key=lambda r: r.mv_top1)
                mlflow.log_metrics({"best_top1": best.mv_top1, "job_time_s": time.perf_counter() - t0})
                mlflow.set_tag("e3d.best", best.name)
    print()
    print(format_table(results))
    print(f"\nwall time {time.perf_counter() - t0:.0f} s; outputs in {job.out}")
    if tracking is not None:
        from pipeline.tracking import ui_hint  # noqa: PLC0415

        print(f"MLflow UI:\n{ui_hint(tracking)}")
    return 0 if all(r.ok for r in results) else 1
