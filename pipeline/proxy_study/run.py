"""The study from start to end: check, models and searches, scores, training, analysis and outputs; resumable."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from e3d.scores import get_score
from e3d.spec import ArchSpec

from .analysis import correlate
from .config import StudyConfig, StudyError, low_fidelity_names
from .mlflow_runs import log_mlflow, parent_run
from .models import Model, at_clip, cannot_run, make_models
from .report import write_outputs
from .scoring import naswot_clips, score_models
from .searches import run_searches, search_kwargs, search_request
from .state import check_state, finished_results, read_json, write_json
from .table import model_rows


@dataclass
class StudySummary:
    """What :func:`run_study` returns: the models, their rows, the correlations, the searches, and what this call
    trained or reused."""

    out: Path
    models: list[Model]
    rows: list[dict[str, Any]]
    correlations: dict[str, Any]
    searches: list[dict[str, Any]]
    trained: list[str] = field(default_factory=list)   # models trained (or resumed) by this call
    reused: list[str] = field(default_factory=list)    # finished models taken from an earlier call
    files: list[Path] = field(default_factory=list)
    parent_run_id: str | None = None


def check_study(config: StudyConfig, dataset: Any) -> list[Model]:
    """Everything that can be checked before any work: the data against the settings and the FLOPs range
    against the search space (samples the models, which takes well under a second). Raises
    :class:`StudyError` naming the setting; returns the sampled and zoo models."""
    if not dataset.train or not dataset.val:
        raise StudyError("data", f"{dataset.root}: needs training and validation videos, has "
                                 f"{len(dataset.train)} / {len(dataset.val)}")
    if any(get_score(p).needs_batch for p in config.score_list) and len(dataset.train) < config.naswot_batch:
        raise StudyError("naswot_batch", f"{config.naswot_batch} clips asked, the data has "
                                         f"{len(dataset.train)} training videos")
    from e3d.strategy import RequestError, get_strategy

    for score in config.search_scores:
        strategy, request = search_request(score, **search_kwargs(config, len(dataset.classes)))
        try:
            get_strategy(strategy).check(request)
        except RequestError as exc:
            field = {"budget.flops": "search_gflops", "budget.layers": "max_layers", "clip": "clip_size"}.get(
                exc.field, "search_scores")
            raise StudyError(field, f"search {score!r}: {exc}") from None
    return make_models(config, len(dataset.classes))


def run_study(config: StudyConfig, dataset: Any, out: str | os.PathLike, *, tracking: Any = None,
              models: Sequence[Model] | None = None, log: Callable[[str], None] = print) -> StudySummary:
    """Run (or resume) the study on ``dataset`` (a ``pipeline.video.formats.VideoDataset``), writing into
    ``out``; ``tracking`` (a :class:`pipeline.tracking.Tracking`) for MLflow, None for none; ``models``: what
    :func:`check_study` returned (else sampled again; a resumed study reads its own). Starts a local Ray (no
    dashboard) unless one is running."""
    import ray

    out = Path(out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    state = check_state(config, out)
    num_classes = len(dataset.classes)
    proxies = config.score_list
    t0 = time.perf_counter()

    # 1. models (sampled + zoo) and search winners, fixed on the first run
    specs_path = out / "specs.json"
    if specs_path.is_file():
        models = [Model.from_dict(d) for d in read_json(specs_path, [])]
    else:
        models = list(models) if models is not None else make_models(config, num_classes)
        write_json(specs_path, [m.to_dict() for m in models])
    if not ray.is_initialized():
        ray.init(include_dashboard=False)
    searches = run_searches(config, num_classes, read_json(out / "searches.json", {}))
    if config.search_scores:
        write_json(out / "searches.json", searches)
    names = {m.name for m in models}
    keys = {m.spec.key(): m.name for m in models}
    for s in config.search_scores:
        rec = searches[s]
        spec = at_clip(ArchSpec.from_dict(rec["spec"]), config, num_classes)
        if rec["winner"] in names:
            continue
        if spec.key() in keys:  # the search found a model already in the study: train it once
            log(f"[proxy-study] search {s}: winner is {keys[spec.key()]}")
            rec["winner"] = keys[spec.key()]
            continue
        problem = cannot_run(spec)
        if problem:
            log(f"[proxy-study] search {s}: winner cannot run at the clip, not trained: {problem}")
            rec["error"] = problem
            continue
        models.append(Model(rec["winner"], f"search:{s}", spec))
        names.add(rec["winner"])
        keys[spec.key()] = rec["winner"]
    log(f"[proxy-study] {len(models)} models ({sum(m.source == 'sample' for m in models)} sampled in "
        f"{config.gflops_range[0]:.4f}-{config.gflops_range[1]:.4f} GFLOPs at {config.clip_frames}x"
        f"{config.clip_size}^2, {len(config.zoo)} zoo, {len(config.search_scores)} search winners); proxies: "
        f"{', '.join(proxies)}")

    # 2. scores
    batch = None
    if any(get_score(p).needs_batch for p in proxies):
        batch_path = out / "naswot_batch.npy"
        if batch_path.is_file():
            batch = np.load(batch_path)
        else:
            batch = naswot_clips(dataset, config, config.naswot_batch, seed=config.seed)
            np.save(batch_path, batch)
    t_scores = time.perf_counter()
    scores = score_models(models, proxies, repeats=config.repeats, seed=config.seed, batch=batch,
                          done=read_json(out / "scores.json", {}))
    write_json(out / "scores.json", scores)
    log(f"[proxy-study] scores ready ({time.perf_counter() - t_scores:.0f} s; {time.perf_counter() - t0:.0f} s in)")

    # 3. training (inside the parent MLflow run, reused on resume)
    parent_ctx = parent_run(tracking, state, out, config)
    with parent_ctx as parent:
        parent_id = None if parent is None else parent.info.run_id
        train_dir = out / "train"
        finished = finished_results(train_dir, models, config.epochs)
        todo = [m for m in models if m.name not in finished]
        results = dict(finished)
        if finished:
            log(f"[proxy-study] {len(finished)} model(s) already trained for {config.epochs} epochs: "
                f"{', '.join(sorted(finished))}")
        if todo:
            from pipeline.train import train_candidates

            trained = train_candidates([m.spec for m in todo], dataset, clip=config.clip(), recipe=config.recipe(),
                                       tracking=None if tracking is None else tracking.child(parent_id),
                                       out_dir=train_dir, eval_clips=config.eval_clips, eval_crops=config.eval_crops,
                                       max_concurrent=config.max_concurrent, seed=config.seed, log_model=False)
            results.update({m.name: r for m, r in zip(todo, trained)})
            log(f"[proxy-study] trained {len(todo)} model(s) ({time.perf_counter() - t0:.0f} s in)")

        # 4. analysis and outputs
        rows = model_rows(models, scores, results, proxies, config.epochs)
        predictors = list(proxies) + low_fidelity_names(config.epochs)  # zero-cost proxies, then a first epoch
        corr = correlate(rows, predictors, epochs=config.epochs, bins=config.bins, n_boot=config.bootstrap,
                         seed=config.seed, top_k=config.top_k)
        search_list = [searches[s] for s in config.search_scores]
        files = write_outputs(out, rows, proxies, corr, search_list, config)
        if tracking is not None and parent is not None:
            log_mlflow(tracking, parent_id, rows, proxies, corr, results, files, scores, time.perf_counter() - t0)
    log(f"[proxy-study] done in {time.perf_counter() - t0:.0f} s; outputs in {out}")
    return StudySummary(out=out, models=models, rows=rows, correlations=corr, searches=search_list,
                        trained=[m.name for m in todo], reused=sorted(finished), files=files,
                        parent_run_id=parent_id)
