"""The whole pipeline: search (Ray islands) -> top-K distinct candidates -> Ray Train -> multi-view eval.

    from pipeline.search_and_train import JobConfig, run_job
    result = run_job(JobConfig())          # the embedded default: synthetic data, small search, 2 candidates

One MLflow experiment per job, a parent run for the job, a child run for the search and one per trained
candidate (DESIGN.md). Everything lands under ``out_dir``: the dataset (when generated), the search outputs
and checkpoints, the training runs and checkpoints, and ``summary.json``. Re-running the same command with
the same ``out_dir`` resumes: the search from its last round, each candidate from its last epoch.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from e3d.evolution import SearchConfig, top_k_distinct
from e3d.spec import ArchSpec

# The embedded default: a search sized for training on a laptop CPU at the demo clip size (8 x 56^2: at
# 8 x 64^2 a 3x3x3 stage would see an 8x8x8 map, where STEntr is infinite), candidates shallow enough to
# learn in a short run, and the short-run recipe of pipeline.train.cli (PyTorch's init, a fixed lr).
DEMO_CLIP = {"frames": 8, "size": 56, "sampling_rate": 4}
DEMO_SEARCH = {"budget_flops": 0.08e9, "population_size": 64, "iterations": 20_000, "max_layers": 41}
DEMO_TRAIN = {"lr": 0.02, "init": "torch"}


@dataclass
class JobConfig:
    """Everything one run of the pipeline needs; the defaults are the embedded demo."""

    out_dir: str = "outputs/search_and_train"
    # data: a dataset folder in any supported format, or None for the generated synthetic dataset
    data: str | None = None
    data_format: str | None = None
    synthetic: dict[str, Any] = field(default_factory=lambda: {"num_classes": 4, "clips_per_class": 24})
    frames: int = DEMO_CLIP["frames"]
    size: int = DEMO_CLIP["size"]
    sampling_rate: int = DEMO_CLIP["sampling_rate"]
    hflip: bool | None = None  # None: off for the generated data (direction-sensitive classes), else on
    # search
    search: SearchConfig = field(default_factory=lambda: SearchConfig.from_preset(
        "S", frames=DEMO_CLIP["frames"], size=DEMO_CLIP["size"], **DEMO_SEARCH))
    actors: int | None = None
    chunk_iterations: int | None = None
    # candidates and training
    top_k: int = 2
    extra_candidates: Sequence[str] = ()  # zoo names (or spec files) trained beside the found ones
    epochs: int = 15
    batch_size: int = 8
    lr: float | None = DEMO_TRAIN["lr"]  # None: the recipe's, scaled linearly to the global batch
    init: str = DEMO_TRAIN["init"]  # "model" (e3d.model's) or "torch" (PyTorch defaults): recipe.INITS
    recipe: str = "sthsth"
    eval_clips: int = 2
    eval_crops: int = 3
    max_concurrent: int | None = None
    seed: int = 0
    tracking_uri: str | None = None
    experiment: str = "e3d-search-and-train"
    log_model: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["search"] = self.search.to_dict()
        return d


@dataclass
class JobResult:
    best_spec: ArchSpec
    candidates: list[Any]  # pipeline.train.CandidateResult, in training order
    search_summary: dict[str, Any]
    table: str
    tracking_uri: str | None
    parent_run_id: str | None
    out_dir: str
    wall_s: float

    def summary(self) -> dict[str, Any]:
        return {"best": self.best_spec.name, "search": self.search_summary, "out_dir": self.out_dir,
                "tracking_uri": self.tracking_uri, "parent_run_id": self.parent_run_id,
                "wall_s": round(self.wall_s, 1),
                "candidates": [{"name": c.name, "gflops": round(c.flops / 1e9, 4), "mparams": round(c.params / 1e6, 4),
                                "stentr": c.stentr, "mv_top1": c.mv_top1, "mv_top5": c.mv_top5,
                                "val_top1": c.val_top1, "train_time_s": round(c.train_time_s, 1),
                                "error": c.error} for c in self.candidates]}


def quick(config: JobConfig) -> JobConfig:
    """A minimal end-to-end run (smoke tests, cluster checks): tiny data, search and training."""
    return replace(config, synthetic={"num_classes": 2, "clips_per_class": 6, "frames": 16, "size": 48},
                   frames=8, size=40, sampling_rate=2, epochs=1, lr=0.02, batch_size=4, eval_clips=1, top_k=1,
                   search=replace(config.search, frames=8, size=40, budget_flops=0.03e9, population_size=16,
                                  iterations=400), chunk_iterations=100, log_model=False)


def prepare_data(config: JobConfig, out: Path):
    """The dataset to train on: the user's folder, or the synthetic one generated under ``out/data``."""
    from pipeline.video.formats import load_dataset
    from pipeline.video.synthetic import make_synthetic_dataset

    if config.data:
        return load_dataset(config.data, config.data_format, seed=config.seed)
    root = out / "data"
    if not (root / "_SUCCESS").exists():
        make_synthetic_dataset(root, seed=config.seed, **config.synthetic)
        (root / "_SUCCESS").write_text("done\n")
    return load_dataset(root, seed=config.seed)


def select_candidates(population: Sequence[Any], config: JobConfig) -> list[ArchSpec]:
    """The top-K structurally distinct specs of the search, named by rank, plus any extra candidates."""
    from pipeline.train.cli import resolve_specs

    chosen = top_k_distinct(population, config.top_k)
    specs = [ind.spec(f"cand{rank + 1}") for rank, ind in enumerate(chosen)]
    specs += resolve_specs(list(config.extra_candidates))
    return specs


def run_job(config: JobConfig, *, verbose: bool = True) -> JobResult:
    """Search, select, train and evaluate; log everything to MLflow; return the summary."""
    import ray

    from pipeline.search import run_distributed_search
    from pipeline.search.checkpoint import read_meta, resolve_fs
    from pipeline.tracking import Tracking, log_dict_json, ui_command
    from pipeline.train import Recipe, format_table, train_candidates
    from pipeline.video.ray_data import ClipConfig, skipped_report

    start = time.time()
    out = Path(config.out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    say = print if verbose else (lambda *a, **k: None)
    if not ray.is_initialized():
        ray.init(include_dashboard=False)

    tracking = (Tracking(config.tracking_uri, config.experiment) if config.tracking_uri
                else Tracking.local(out / "mlruns", config.experiment))
    state_path = out / "job.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}

    dataset = prepare_data(config, out)
    say(f"[data] {len(dataset.classes)} classes, {len(dataset.train)} train / {len(dataset.val)} val videos")
    search_cfg = replace(config.search, frames=config.frames, size=config.size, seed=config.seed)

    with tracking.run("search_and_train", run_id=state.get("parent_run_id")) as parent:
        state["parent_run_id"] = parent.info.run_id
        state_path.write_text(json.dumps(state))
        mlflow = tracking.client()
        if not state.get("params_logged"):
            mlflow.log_params({"data": config.data or "synthetic", "classes": len(dataset.classes),
                               "train_videos": len(dataset.train), "val_videos": len(dataset.val),
                               "clip": f"{config.frames}x{config.size}x{config.size}/{config.sampling_rate}",
                               "top_k": config.top_k, "epochs": config.epochs,
                               "budget_gflops": search_cfg.budget_flops / 1e9})
            log_dict_json(mlflow, config.to_dict(), "job_config.json")
            state["params_logged"] = True
            state_path.write_text(json.dumps(state))
        child = tracking.child(parent.info.run_id)

        # 1. search: resume it if a checkpoint is there, else start it
        search_dir = out / "search"
        resume = read_meta(*resolve_fs(str(search_dir))) is not None
        say(f"[search] {'resuming' if resume else 'starting'}: budget {search_cfg.budget_flops / 1e9:.3g} GFLOPs at "
            f"{search_cfg.frames}x{search_cfg.size}^2, population {search_cfg.population_size}, "
            f"{search_cfg.iterations} iterations")
        found = run_distributed_search(None if resume else search_cfg, out_dir=str(search_dir),
                                       actors=config.actors, chunk_iterations=config.chunk_iterations,
                                       tracking=child, resume=resume, progress=False)
        say(f"[search] best {found.best_score:.3f} ({found.iterations} iterations, {found.wall_s:.1f} s)")

        # 2. candidates
        specs = select_candidates(found.population, config)
        say("[select] " + ", ".join(f"{s.name} {s.kernel_pattern} depths {list(s.depths)}" for s in specs))

        # 3. training and multi-view evaluation
        clip = ClipConfig(frames=config.frames, sampling_rate=config.sampling_rate, size=config.size,
                          train_scale=(config.size, int(config.size * 1.15)),
                          hflip=config.hflip if config.hflip is not None else bool(config.data))
        recipe = Recipe.paper(config.recipe).scaled(epochs=config.epochs, batch_size=config.batch_size,
                                                    lr=config.lr, init=config.init)
        results = train_candidates(specs, dataset, clip=clip, recipe=recipe, tracking=child,
                                   out_dir=out / "train", eval_clips=config.eval_clips,
                                   eval_crops=config.eval_crops, max_concurrent=config.max_concurrent,
                                   seed=config.seed, log_model=config.log_model)
        table = format_table(results)
        skipped = skipped_report(log=False)
        for r in results:
            if r.ok:
                mlflow.log_metric(f"{r.name}_mv_top1", r.mv_top1)
        result = JobResult(best_spec=found.best, candidates=results, search_summary=found.summary(), table=table,
                           tracking_uri=tracking.tracking_uri, parent_run_id=parent.info.run_id, out_dir=str(out),
                           wall_s=time.time() - start)
        summary = result.summary() | {"skipped_files": skipped}
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        (out / "summary.txt").write_text(table + "\n")
        mlflow.log_artifact(str(out / "summary.json"))
        mlflow.log_artifact(str(out / "summary.txt"))
        mlflow.log_metric("wall_s", result.wall_s)

    say("\n" + table)
    if skipped.get("skipped"):
        say(f"[data] skipped {skipped['skipped']} clips from {skipped['files']} undecodable files "
            f"(see summary.json)")
    say(f"\nCompare the candidates in the MLflow UI:\n  {ui_command(tracking.tracking_uri)}")
    return result
