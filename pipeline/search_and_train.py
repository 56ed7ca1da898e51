"""The whole pipeline: any search strategy -> top-K distinct candidates -> Ray Train -> multi-view evaluation.

    from pipeline.search_and_train import JobConfig, run_job
    result = run_job(JobConfig())          # the embedded demo: synthetic data, small search, 2 candidates

The job consumes the strategy's :class:`e3d.strategy.SearchOutcome` and nothing else: which strategy made
the specs never matters downstream. One MLflow experiment per job: a parent run for the job, a child run
for the search (settings, best and median score per step, the outcome files) and one per trained candidate
(DESIGN.md). Everything lands under ``out_dir``: the generated dataset, the search outputs (and the
strategy's checkpoints), the training runs and checkpoints, and ``summary.json``. Re-running the same
command with the same ``out_dir`` resumes: a finished search is read back, an unfinished one continues from
its checkpoint, each candidate from its last epoch. The search stage is :mod:`pipeline.search_stage`; an
``out_dir`` on a pyarrow filesystem is :class:`pipeline.outdir.OutDir`.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from e3d.latency_options import LatencySettings
from e3d.spec import ArchSpec
from e3d.statefile import CorruptFile, read_json, set_aside, write_json
from e3d.strategy import Budget, Clip, SearchOutcome, SearchRequest, get_strategy, top_k_distinct
from pipeline.context import IslandBackend
from pipeline.options import DEMO, DEMO_DATA, DEMO_RECIPE, TrainResources
from pipeline.outdir import OutDir
from pipeline.search_stage import run_search
from pipeline.train.recipe import Recipe
from pipeline.video.clip import ClipConfig


@dataclass(frozen=True)
class DataConfig:
    """A dataset folder in any supported format, or None for the synthetic dataset generated under
    ``<out>/data`` with the ``synthetic`` settings (:func:`pipeline.video.synthetic.make_synthetic_dataset`)."""

    path: str | None = None
    format: str | None = None
    synthetic: dict[str, Any] = field(default_factory=lambda: dict(DEMO_DATA))


@dataclass(frozen=True)
class Selection:
    """Which candidates are trained: the ``top_k`` best whose specs differ in ``distinct_by``, plus ``extra``
    zoo names or spec files (trained at the job's clip)."""

    top_k: int = 2
    distinct_by: tuple[str, ...] = ("kernels", "depths")
    extra: tuple[str, ...] = ()
    select: str = "top"  # "top": the best-ranked; "pareto": spread along the score/FLOPs/params front


def demo_request(strategy: str = "evolution") -> SearchRequest:
    """The demo's search: 0.08 GFLOPs, 41 layers, population 64, 20k iterations (samples for random)."""
    takes = get_strategy(strategy).cli_options
    options: dict[str, Any] = {takes[k]: getattr(DEMO, k) for k in ("preset", "iterations", "population") if k in takes}
    return SearchRequest(budget=Budget(flops=DEMO.budget_flops, layers=DEMO.max_layers),
                         clip=Clip(DEMO.frames, DEMO.size, DEMO.sampling_rate), options=options)


def demo_clip() -> ClipConfig:
    return ClipConfig(frames=DEMO.frames, sampling_rate=DEMO.sampling_rate or 4, size=DEMO.size,
                      train_scale=(DEMO.size, int(DEMO.size * 1.15)), hflip=False)


def demo_recipe() -> Recipe:
    return Recipe.paper("sthsth").scaled(**DEMO_RECIPE)


@dataclass(frozen=True)
class JobConfig:
    """Everything one run of the pipeline needs; the defaults are the embedded demo.

    ``request`` is the search (budget, score, seed, the strategy's options); its clip is always ``clip``'s
    (the networks are searched at the input they are trained at). ``islands``: the island actors lent to a
    strategy that runs on them (``evolution``; None: it runs in this process). ``out_dir``: a folder, or a
    pyarrow filesystem URI (``s3://bucket/prefix``: see :class:`OutDir`; ``cache_dir`` is then the local
    working copy, default under ``~/.cache/e3d-ray``).
    ``resources``: how the candidates train on Ray Train (:class:`pipeline.options.TrainResources`).
    """

    out_dir: str = "outputs/search_and_train"
    data: DataConfig = field(default_factory=DataConfig)
    clip: ClipConfig = field(default_factory=demo_clip)
    strategy: str = "evolution"
    request: SearchRequest = field(default_factory=demo_request)
    islands: IslandBackend | None = field(default_factory=IslandBackend)
    selection: Selection = field(default_factory=Selection)
    recipe: Recipe = field(default_factory=demo_recipe)
    eval_clips: int = 2
    eval_crops: int = 3
    resources: TrainResources = field(default_factory=TrainResources)
    cache_dir: str | None = None
    tracking_uri: str | None = None
    experiment: str = "e3d-search-and-train"
    log_model: bool = True
    latency: LatencySettings | None = None  # the latency table's settings with a latency budget

    @property
    def seed(self) -> int:
        return self.request.seed

    def search_request(self, out_dir: str | None = None, num_classes: int | None = None) -> SearchRequest:
        clip = Clip(self.clip.frames, self.clip.size, self.clip.sampling_rate)
        return replace(self.request, clip=clip, out_dir=out_dir, num_classes=num_classes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["request"] = {"budget": self.request.budget.to_dict(), "seed": self.request.seed,
                        "score": self.request.score, "options": dict(self.request.options)}
        return d


@dataclass
class JobResult:
    best_spec: ArchSpec
    outcome: SearchOutcome
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
                "candidates": [{"name": c.name, "gflops": round((c.train_flops or c.flops) / 1e9, 4),
                                "input": c.train_input or c.input, "mparams": round(c.params / 1e6, 4),
                                "stentr": c.stentr, "mv_top1": c.mv_top1, "mv_top5": c.mv_top5,
                                "val_top1": c.val_top1, "train_time_s": round(c.train_time_s, 1),
                                "error": c.error} for c in self.candidates]}


def quick(config: JobConfig) -> JobConfig:
    """A minimal end-to-end run (smoke tests, cluster checks): tiny data, search and training."""
    options = dict(config.request.options) | dict(getattr(get_strategy(config.strategy), "quick_options", {}))
    request = replace(config.request, budget=replace(config.request.budget, flops=0.03e9), options=options)
    islands = replace(config.islands, chunk_iterations=100) if config.islands is not None else None
    return replace(config, data=replace(config.data, synthetic={"num_classes": 2, "clips_per_class": 6, "frames": 16,
                                                                "size": 48}),
                   clip=replace(config.clip, frames=8, size=40, sampling_rate=2, train_scale=(40, 46)),
                   recipe=config.recipe.scaled(epochs=1, lr=0.02, batch_size=4), eval_clips=1,
                   selection=replace(config.selection, top_k=1), request=request, islands=islands, log_model=False)


def load_data(data: DataConfig, out: Path, *, seed: int = 0):
    """The dataset to train on: the user's folder, or the synthetic one generated once under ``out/data``."""
    from pipeline.video.formats import load_dataset
    from pipeline.video.synthetic import make_synthetic_dataset

    if data.path:
        return load_dataset(data.path, data.format, seed=seed)
    root = out / "data"
    if not (root / "_SUCCESS").exists():
        make_synthetic_dataset(root, seed=seed, **data.synthetic)
        (root / "_SUCCESS").write_text("done\n")
    return load_dataset(root, seed=seed)


def select_candidates(outcome: SearchOutcome, config: JobConfig) -> list[ArchSpec]:
    """The top-K structurally distinct specs of the outcome, named by rank, plus the extra ones at the clip."""
    from e3d.zoo import resolve_specs

    if config.selection.select == "pareto":  # spread along the score/FLOPs/params front
        from e3d.pareto import pareto_front, spread

        front = top_k_distinct([outcome.candidates[i] for i in pareto_front(outcome.candidates)], len(outcome.candidates),
                               by=config.selection.distinct_by)
        chosen = [front[i] for i in spread(front, range(len(front)), config.selection.top_k)]
    else:
        chosen = top_k_distinct(outcome.candidates, config.selection.top_k, by=config.selection.distinct_by)
    specs = [c.spec.replace(name=f"cand{rank + 1}") for rank, c in enumerate(chosen)]
    specs += [s.with_input(config.clip.frames, config.clip.size) for s in resolve_specs(config.selection.extra)]
    return specs


def register_best(results: list[Any], tracking: Any, config: JobConfig) -> str | None:
    """Register the best trained candidate (multi-view top-1) in the model registry, alias ``champion``:
    ``models:/<experiment>@champion``. None when no candidate logged a model."""
    from pipeline.tracking import register_champion

    ok = sorted((r for r in results if r.ok and getattr(r, "mlflow_run_id", None)), key=lambda r: -r.mv_top1)
    for r in ok:
        version = register_champion(tracking, r.mlflow_run_id, config.experiment)
        if version is not None:
            return f"{config.experiment} v{version} ({r.name}) as @champion"
    return None


def read_job_state(path: Path, say=print) -> dict[str, Any]:
    """``job.json`` (the job's MLflow parent run); a corrupt one is set aside and the job starts a new run."""
    try:
        return read_json(path) or {}
    except CorruptFile as exc:
        say(f"[out] {path} is corrupt ({exc.reason}): set aside as {set_aside(path).name}; a new MLflow job run "
            f"is started (the search and the candidates resume from their checkpoints)")
        return {}


def run_job(config: JobConfig, *, verbose: bool = True) -> JobResult:
    """Search, select, train and evaluate; log everything to MLflow; return the summary."""
    import ray

    from pipeline.tracking import Tracking, log_dict_json, ui_hint
    from pipeline.train import format_table, train_candidates
    from pipeline.train.resources import autoscaled_training
    from pipeline.video.ray_data import skipped_report

    start = time.time()
    say = print if verbose else (lambda *a, **k: None)
    store = OutDir(config.out_dir, config.cache_dir)
    out = store.local  # the job's files; with a remote --out, its working copy
    if store.remote:
        say(f"[out] {store.uri}: working copy {out} (fetched {store.pull()} file(s) from the store)")
    if not ray.is_initialized():
        ray.init(include_dashboard=False)

    tracking = (Tracking(config.tracking_uri, config.experiment) if config.tracking_uri
                else store.tracking(config.experiment))
    state_path = out / "job.json"
    state = read_job_state(state_path, say)

    dataset = load_data(config.data, out, seed=config.seed)
    say(f"[data] {len(dataset.classes)} classes, {len(dataset.train)} train / {len(dataset.val)} val videos")
    if dataset.ignored:
        shown = ", ".join(Path(p).name for p in dataset.ignored[:5]) + (", ..." if len(dataset.ignored) > 5 else "")
        say(f"[data] ignored {len(dataset.ignored)} files that are not videos by their extension: {shown} "
            f"(all listed in summary.json; `python jobs/inspect_data.py` checks the rest)")

    with tracking.run("search_and_train", run_id=state.get("parent_run_id"), system_metrics=True) as parent:
        state["parent_run_id"] = parent.info.run_id
        write_json(state_path, state)
        mlflow = tracking.client()
        if not state.get("params_logged"):
            b = config.request.budget
            mlflow.log_params({"data": config.data.path or "synthetic", "classes": len(dataset.classes),
                               "train_videos": len(dataset.train), "val_videos": len(dataset.val),
                               "clip": f"{config.clip.frames}x{config.clip.size}x{config.clip.size}"
                                       f"/{config.clip.sampling_rate}",
                               "strategy": config.strategy, "score": config.request.score,
                               "top_k": config.selection.top_k, "epochs": config.recipe.epochs,
                               "budget_gflops": b.flops / 1e9 if b.flops else "none"})
            log_dict_json(mlflow, config.to_dict(), "job_config.json")
            state["params_logged"] = True
            write_json(state_path, state)
        child = tracking.child(parent.info.run_id)

        # 1. search (any strategy) -> 2. candidates -> 3. training and multi-view evaluation
        outcome = run_search(config, out, child, dataset, say=say,
                             checkpoint_dir=store.where("search") if store.remote else None)
        store.push()
        specs = select_candidates(outcome, config)
        say("[select] " + ", ".join(f"{s.name} {s.kernel_pattern} depths {list(s.depths)}" for s in specs))
        # the train nodes: asked of the autoscaler (when there is one) for the training, released after
        resources = config.resources
        with autoscaled_training(resources.units(len(specs)), train_resource=resources.train_resource,
                                 timeout_s=resources.train_wait_s, say=say) as scaled:
            plan = resources.plan(len(specs))
            results = train_candidates(specs, dataset, clip=config.clip, recipe=config.recipe, tracking=child,
                                       out_dir=out / "train", eval_clips=config.eval_clips,
                                       eval_crops=config.eval_crops, plan=plan, max_failures=resources.max_failures,
                                       seed=config.seed, log_model=config.log_model,
                                       storage=store.where("train/train") if store.remote else None)
        store.push()
        table = format_table(results)
        try:
            skipped = skipped_report(log=False)
        except Exception as exc:  # a report, never a reason to fail the job (its actor may be on a lost node)
            skipped = {"error": f"{type(exc).__name__}: {exc}"}
        for r in results:
            if r.ok:
                mlflow.log_metric(f"{r.name}_mv_top1", r.mv_top1)
        champion = register_best(results, tracking, config) if config.log_model else None
        if champion:
            mlflow.set_tag("e3d.champion", champion)
            say(f"[mlflow] registered {champion}")
        from pipeline.predict.champion import write_champion_folder  # <out>/model: config, safetensors, card
        from pipeline.tracking import log_model_folder

        folder = write_champion_folder(results, config, dataset, out, say=say)
        if folder is not None and config.log_model and folder[1].mlflow_run_id:
            log_model_folder(tracking, folder[1].mlflow_run_id, folder[0])
        result = JobResult(best_spec=outcome.best.spec, outcome=outcome, candidates=results,
                           search_summary=outcome.summary(), table=table, tracking_uri=tracking.tracking_uri,
                           parent_run_id=parent.info.run_id, out_dir=store.uri or str(out),
                           wall_s=time.time() - start)
        summary = result.summary() | {"skipped_files": skipped, "ignored_files": dataset.ignored,
                                      "restarts": restarts(outcome, results),
                                      "placement": {"train": plan.to_dict(), "autoscale": scaled.to_dict()}}
        if store.remote:
            summary["work_dir"] = str(out)
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        (out / "summary.txt").write_text(table + "\n")
        mlflow.log_artifact(str(out / "summary.json"))
        mlflow.log_artifact(str(out / "summary.txt"))
        mlflow.log_metric("wall_s", result.wall_s)
    store.push()  # the finished MLflow runs, the summaries

    say("\n" + table)
    if skipped.get("skipped"):
        say(f"[data] skipped {skipped['skipped']} clips from {skipped['files']} undecodable files "
            f"(see summary.json)")
    if dataset.ignored:
        say(f"[data] ignored {len(dataset.ignored)} files that are not videos (see summary.json)")
    say(f"\nCompare the candidates in the MLflow UI:\n{ui_hint(tracking)}")
    return result


def restarts(outcome: SearchOutcome, results: list[Any]) -> dict[str, Any]:
    """What was restarted: island actors (respawned from the search checkpoint after a death) and training
    sessions (each candidate's epochs run in sessions; every session after the first resumed from a checkpoint,
    after a lost worker or node, or a rerun of the job). ``sessions`` lists the epochs each candidate's
    sessions started from."""
    sessions = {}
    for r in results:
        starts = sorted({int(h.get("session_start_epoch", 0)) for h in (r.history or [])})
        sessions[r.name] = starts
    return {"search_islands": int(outcome.extra.get("restarts", 0) or 0),
            "training_sessions": sum(max(0, len(s) - 1) for s in sessions.values()), "sessions": sessions}
