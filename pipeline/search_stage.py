"""The main job's search stage: read a finished outcome back, else run (or resume) any strategy and log its
outcome to MLflow (the same parameter names for every strategy)."""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from e3d.strategy import SearchContext, SearchOutcome, SearchRequest, get_strategy
from pipeline.context import RayTrainer


def run_search(config: Any, out: Path, tracking: Any, dataset: Any, *, say=print,
               checkpoint_dir: str | None = None) -> SearchOutcome:
    """The search stage of the job ``config`` (a :class:`pipeline.search_and_train.JobConfig`): read a finished
    outcome back, else run (or resume) the strategy and log it.
    ``checkpoint_dir``: where the island search checkpoints and writes its files (default ``out/search``;
    a pyarrow URI allowed); the outcome files always go to ``out/search``."""
    from e3d.search_io import read_outcome, write_outcome  # noqa: PLC0415

    search_dir = out / "search"
    done = read_outcome(search_dir, say=say)  # a corrupt one is reported, set aside and redone
    if done is not None and done.strategy == config.strategy:
        say(f"[search] {done.strategy}: done before (best {done.best.score:.3f}); reading {search_dir}")
        done.extra["resumed"] = True
        return done
    strategy = get_strategy(config.strategy)
    request = config.search_request(str(search_dir), len(dataset.classes))
    b = request.budget
    say(f"[search] {strategy.name} by {request.score}: budget {b.flops / 1e9 if b.flops else math.inf:.3g} GFLOPs, "
        f"{b.layers or 'any'} layers at {request.clip.frames}x{request.clip.size}^2")
    with tracking.run(f"search-{strategy.name}", tags={"e3d.stage": "search", "e3d.strategy": strategy.name}) as run:
        context = SearchContext(evolution_backend=config.islands, tracking=tracking, run_id=run.info.run_id,
                                trainer=RayTrainer(), progress=False)
        on_islands = getattr(strategy, "runs_on_islands", None)
        if checkpoint_dir and on_islands is not None and on_islands(request, context):  # they checkpoint on the store
            request = replace(request, out_dir=checkpoint_dir)
        if request.budget.latency_ms is not None:
            from e3d.options import latency_predictor  # noqa: PLC0415

            context.latency = latency_predictor(config.latency, request)
        if "data" in strategy.needs:  # the strategies that train see the job's data, clip and recipe
            context.dataset, context.clip, context.recipe = dataset, config.clip, config.recipe
        outcome = strategy.search(request, context)
        files = write_outcome(search_dir, outcome)
        log_outcome(tracking.client(), outcome, request, files)
    say(f"[search] best {outcome.best.score:.3f} ({outcome.best.flops / 1e9:.4f} GFLOPs) in {outcome.wall_s:.1f} s")
    return outcome


def log_outcome(mlflow: Any, outcome: SearchOutcome, request: SearchRequest, files: dict[str, Path]) -> None:
    """The search run: settings as params, best/median per history step as metrics, outcome files."""
    from pipeline.tracking import spec_params  # noqa: PLC0415

    params = {"strategy": outcome.strategy, "score": outcome.score_name, "seed": request.seed,
              "budget_gflops": request.budget.flops / 1e9 if request.budget.flops else "none",
              "budget_mparams": request.budget.params / 1e6 if request.budget.params else "none",
              "max_layers": request.budget.layers or "none", "clip": f"{request.clip.frames}x{request.clip.size}^2"}
    params |= {f"option.{k}": json.dumps(v) if isinstance(v, (list, tuple, dict)) else v
               for k, v in request.options.items()}
    params |= spec_params(outcome.best.spec)  # the candidate runs' names: the comparison views line them up
    mlflow.log_params(params)
    for i, row in enumerate(outcome.history):
        step = int(row.get("total_iterations", row.get("step", i + 1)))
        metrics = {k: float(row[k]) for k in ("best", "median", "acceptance_rate") if k in row
                   and math.isfinite(float(row[k]))}
        if metrics:
            mlflow.log_metrics(metrics, step=step)
    mlflow.log_metrics({"best_score": outcome.best.score, "search_wall_s": outcome.wall_s}
                       | ({"search_cpu_s": outcome.cpu_s} if outcome.cpu_s is not None else {}))
    for path in files.values():
        mlflow.log_artifact(str(path), artifact_path="search")
