"""Several candidates: one Ray Tune trial per candidate, each running its own ``trainer.fit()``.

``Tuner(TorchTrainer)`` is refused by Train V2, so the trial is a *function* trainable (reserving no
resources itself) that calls :func:`pipeline.train.trainer.train_one`; the Train workers then take the
CPUs/GPUs of the :class:`ResourcePlan`, and ``max_concurrent_trials = plan.concurrent`` lets exactly as many
candidates train at once as the cluster holds (never so many that Ray Data is starved). When the plan fits
only one candidate at a time (a laptop, a 2-CPU machine), the driver trains them one after the other itself:
the same ``train_one`` calls, the same folders and records, without a Tune trial actor per candidate (about
7 CPU-seconds each here). Each candidate is one MLflow child run; the summary table goes to the parent run.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from e3d.spec import ArchSpec
from e3d.statefile import set_aside
from pipeline.faults import check_free_space, raise_if_out_of_space

from .data import VideoSource, as_source
from .recipe import Recipe
from .report import CandidateResult, write_summary
from .resources import ResourcePlan, plan_resources
from .trainer import RESULT_FILE, default_run_name, train_one, trained_spec

# What a trial itself reserves: it only drives its trainer (the Train controller takes no CPU and the
# workers have their own placement group), so no CPU -- Tune refuses an empty request, hence 1 byte of memory.
# A sliver of the head node's own resource (as Ray pins its Train state actor) keeps every trial on the head,
# beside the driver: the candidate records a trial writes into the job's folder are where the driver reads
# them even when that folder is local to the head, and losing a worker node never takes a trial with it.
TRIAL_RESOURCES = {"cpu": 0, "memory": 1, "node:__internal_head__": 0.001}


def _candidate_trial(config: dict[str, Any], *, specs: list[dict], source: Any, run_names: list[str],
                     kwargs: dict[str, Any]) -> None:
    from ray import tune

    i = int(config["candidate"])
    result = train_one(ArchSpec.from_dict(specs[i]), source, run_name=run_names[i], **kwargs)
    tune.report({"candidate": i, "ok": int(result.ok), "epoch": result.epochs, "val_top1": result.val_top1,
                 "mv_top1": result.mv_top1, "mv_top5": result.mv_top5, "train_time_s": result.train_time_s})


def run_names(specs: Sequence[ArchSpec], source: Any, recipe: Recipe, eval_views: tuple[int, int], *,
              resume: bool = True) -> list[str]:
    """Ray Train run names of the candidates: deterministic (so a re-run resumes), distinct when the same
    spec comes twice, with a timestamp when ``resume`` is off."""
    names = [default_run_name(s, source, recipe, eval_views) for s in specs]
    seen: Counter = Counter()
    for i, n in enumerate(names):
        seen[n] += 1
        if seen[n] > 1:
            names[i] = f"{n}-{seen[n]}"
    if not resume:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        names = [f"{n}-{stamp}" for n in names]
    return names


def train_candidates(specs: Sequence[ArchSpec], dataset: Any, *, clip: Any = None, recipe: Recipe | None = None,
                     tracking: Any = None, out_dir: str | Path = "runs/train", eval_clips: int = 10,
                     eval_crops: int = 3, max_concurrent: int | None = None, plan: ResourcePlan | None = None,
                     resume: bool = True, max_failures: int = 1, seed: int = 0, log_model: bool = True,
                     log_every: int = 10, verbose: int = 0, storage: str | None = None) -> list[CandidateResult]:
    """Train every spec on ``dataset`` (a ``VideoDataset`` + ``clip``, or a source) and evaluate it multi-view.

    Candidates run as Tune trials, ``plan.concurrent`` at a time (one at a time: in this process; ``plan``
    defaults to ``plan_resources(len(specs), max_concurrent=max_concurrent)`` on the running cluster). ``tracking``'s
    ``parent_run_id`` is the run the candidates nest under and where the summary (CSV, JSON, text table,
    curves of all candidates) is logged. Results come back in the order of ``specs``; a failed candidate
    has ``error`` set and does not stop the others. Summary files are also written to ``<out_dir>/summary``.
    ``storage``: where Ray Train keeps the checkpoints (default ``<out_dir>/train``; a pyarrow URI allowed).
    """
    import ray

    if not specs:
        raise ValueError("no candidates to train")
    source = as_source(dataset, clip, seed=seed)
    recipe = recipe or Recipe.paper("sthsth")
    out_dir = Path(out_dir).expanduser().resolve()
    for spec in specs:  # refuse a spec that cannot be trained at this clip size before starting anything
        trained_spec(spec, source)
    if not ray.is_initialized():
        ray.init()
    if isinstance(source, VideoSource):  # the driver owns the skip record, so it outlives the trials adding to it
        from pipeline.video.ray_data import skip_log

        skip_log()
    plan = plan or plan_resources(len(specs), max_concurrent=max_concurrent)
    names = run_names(specs, source, recipe, (eval_clips, eval_crops), resume=resume)
    kwargs = dict(recipe=recipe, tracking=tracking, out_dir=out_dir, eval_clips=eval_clips, eval_crops=eval_crops,
                  plan=plan, resume=True, max_failures=max_failures, seed=seed, log_model=log_model,
                  log_every=log_every, storage=storage)
    print(f"[train] {len(specs)} candidate(s): {plan.describe()}")
    check_free_space(out_dir, checkpoint_need(specs, source, log_model), f"training {len(specs)} candidate(s) "
                     f"(2 checkpoints each, the models)")

    if plan.concurrent > 1 and len(specs) > 1:
        results = _run_tune(specs, source, names, kwargs, plan, out_dir, verbose)
    else:  # one at a time: from the driver, one after the other (a Tune trial per candidate would only add actors)
        results = []
        for i, (spec, name) in enumerate(zip(specs, names)):
            if len(specs) > 1:
                print(f"[train] candidate {i + 1}/{len(specs)}: {spec.name}")
            results.append(train_one(spec, source, run_name=name, **kwargs))
    raise_if_out_of_space(r.error for r in results)  # one line and exit 28 (pipeline.faults), not N failures
    _log_summary(results, tracking, out_dir / "summary", source)
    return results


def _run_tune(specs, source, names, kwargs, plan, out_dir, verbose) -> list[CandidateResult]:
    from ray import tune

    from .progress import EpochProgress

    trainable = tune.with_parameters(_candidate_trial, specs=[s.to_dict() for s in specs], source=source,
                                     run_names=names, kwargs=kwargs)
    tuner = tune.Tuner(
        tune.with_resources(trainable, TRIAL_RESOURCES),
        param_space={"candidate": tune.grid_search(list(range(len(specs))))},
        tune_config=tune.TuneConfig(max_concurrent_trials=plan.concurrent,
                                    trial_name_creator=lambda t: names[t.config["candidate"]],
                                    trial_dirname_creator=lambda t: names[t.config["candidate"]]),
        run_config=tune.RunConfig(name=f"candidates-{time.strftime('%Y%m%d-%H%M%S')}",
                                  storage_path=str(out_dir / "tune"), verbose=verbose,
                                  callbacks=[EpochProgress([s.name for s in specs], kwargs["recipe"].epochs)]),
    )
    grid = tuner.fit()
    errors = {}
    for r in grid:
        if r.error is not None and r.config:
            errors[int(r.config["candidate"])] = f"{type(r.error).__name__}: {r.error}"
    results = []
    for i, (spec, name) in enumerate(zip(specs, names)):
        path = out_dir / "candidates" / name / RESULT_FILE
        record = _read_result(path) if i not in errors else None
        if record is not None:
            results.append(record)
        else:  # the trial died before train_one could record anything
            results.append(CandidateResult(name=spec.name, run_name=name, spec=spec.to_dict(), trained_spec={},
                                           error=errors.get(i, f"no result at {path}")))
    return results


def _read_result(path: Path) -> CandidateResult | None:
    """A candidate's ``result.json`` (None when absent; a corrupt one is set aside and reported)."""
    if not path.is_file():
        return None
    try:
        return CandidateResult.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        print(f"[train] {path} is corrupt ({type(exc).__name__}): set aside as {set_aside(path).name}")
        return None


def checkpoint_need(specs: Sequence[ArchSpec], source: Any, log_model: bool) -> float:
    """Bytes the candidates' training writes, roughly: per candidate three checkpoints at once (Ray keeps two and
    writes the next; each holds the weights and SGD's momentum, 8 bytes per parameter), the logged model, and
    32 MB for records and the MLflow store."""
    from e3d.cost import cost

    params = sum(cost(trained_spec(s, source)).params for s in specs)
    return params * (3 * 8 + (4 if log_model else 0)) + 32e6


def _log_summary(results: list[CandidateResult], tracking: Any, folder: Path, source: Any = None) -> None:
    paths = write_summary(results, folder)
    if isinstance(source, VideoSource):  # the files the decode tasks had to skip, if any
        try:
            from pipeline.video.ray_data import skipped_report

            skipped = skipped_report(log=True)
            (folder / "skipped.json").write_text(json.dumps(skipped, indent=2) + "\n")
            paths.append(folder / "skipped.json")
        except Exception as exc:  # a report, never a reason to fail the job
            print(f"[train] no skipped-files report: {exc!r}")
    if tracking is None or not tracking.parent_run_id:
        return
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking.tracking_uri)
        for p in paths:
            client.log_artifact(tracking.parent_run_id, str(p), "summary")
    except Exception as exc:  # the files are on disk anyway
        print(f"[train] could not log the summary to MLflow run {tracking.parent_run_id}: {exc!r}")
