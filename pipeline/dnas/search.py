"""The ``dnas`` strategy's driver: split the data, run the supernet search on Ray Train, derive the candidates.

    outcome = run_dnas_search(request, context, settings)    # the strategy's runner (pipeline.context.RayTrainer)

The Train run is ``<request.out_dir>/supernet/<run name>``; the name hashes the space, the settings that change
the training, the data and the seed, so calling again with the same ``out_dir`` resumes from the last epoch's
checkpoint (a killed job re-runs an unfinished search) while a changed setting starts a new run.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from e3d.dnas.space import derive, expected_flops
from e3d.strategy import Candidate, SearchContext, SearchOutcome, SearchRequest

log = logging.getLogger("pipeline.dnas")

# settings that do not change what the supernet learns (a change keeps the run and its checkpoints)
_DERIVATION_ONLY = ("top_k", "path_score", "max_failures")


def run_name(space: Any, settings: dict[str, Any], fingerprint: str, seed: int) -> str:
    kept = {k: v for k, v in settings.items() if k not in _DERIVATION_ONLY}
    blob = json.dumps([space.to_dict(), kept, fingerprint, seed], sort_keys=True, default=str)
    return f"supernet-{hashlib.sha1(blob.encode()).hexdigest()[:10]}"


def run_dnas_search(request: SearchRequest, context: SearchContext, settings: Any) -> SearchOutcome:
    """Search (or resume) on ``context.dataset`` at ``request.clip``; the outcome's candidates are the
    ``settings.top_k`` best derived networks, those within the request's budget first."""
    import ray

    from pipeline.train import plan_resources
    from pipeline.train.checkpoint import load_state
    from pipeline.train.data import steps_per_epoch
    from pipeline.train.trainer import build_trainer

    from .data import search_data
    from .loop import search_loop_per_worker
    from .report import DnasMlflowLogger, arch_heatmap

    start, cpu0 = time.perf_counter(), time.process_time()
    if not ray.is_initialized():
        ray.init(include_dashboard=False)
    data = context.dataset
    if hasattr(data, "train_x") and (data.frames, data.size) != (request.clip.frames, request.clip.size):
        raise ValueError(f"the clips are {data.frames}x{data.size}^2, the request's {request.clip.frames}x"
                         f"{request.clip.size}^2")
    split = search_data(data, context.clip, settings.split, seed=request.seed)
    num_classes = request.num_classes or split.num_classes
    space = settings.space(request.clip.frames, request.clip.size, num_classes)
    batch_size = settings.batch_size or 8
    plan = plan_resources(1, workers=settings.workers)
    steps = steps_per_epoch(split.counts["train"], plan.num_workers, batch_size)
    run_settings = settings.to_dict() | {"batch_size": batch_size}
    out = Path(request.out_dir) if request.out_dir else Path(tempfile.mkdtemp(prefix="dnas-"))
    out.mkdir(parents=True, exist_ok=True)
    name = run_name(space, run_settings, split.fingerprint, request.seed)

    hooks = list(context.callbacks)
    run_id = context.run_id
    if context.tracking is not None and run_id:
        hooks.append(DnasMlflowLogger(context.tracking.tracking_uri, run_id))
    config = {"space": space.to_dict(), "settings": run_settings, "steps_per_epoch": steps, "seed": request.seed,
              "torch_threads": plan.torch_threads, "callbacks": hooks}
    log.info(f"[dnas] {space.paths()} width paths, {space.size_of_space():.3g} networks; data {split.counts}; "
             f"{plan.describe()}; run {out / 'supernet' / name}")
    trainer = build_trainer(loop_config=config, datasets=split.datasets(), plan=plan, run_name=name,
                            storage_path=out / "supernet", max_failures=settings.max_failures,
                            train_loop_per_worker=search_loop_per_worker)
    try:
        fit = trainer.fit()
    except Exception as exc:
        raise RuntimeError(f"strategy 'dnas': the supernet search failed ({type(exc).__name__}: {exc}); "
                           f"run it again with the same out_dir to resume from its last epoch") from exc
    if fit.error is not None:
        raise RuntimeError(f"strategy 'dnas': the supernet search failed: {fit.error}") from fit.error
    if fit.checkpoint is None:
        raise RuntimeError("strategy 'dnas': the search finished without a checkpoint")
    state = load_state(fit.checkpoint.path)
    alpha, beta = state["arch_weights"]
    history = [dict(h) for h in state["history"]]

    derived = derive(space, alpha, beta, k=settings.top_k, path_score=settings.path_score,
                     name=request.name or "dnas")
    expected = expected_flops(space, alpha, beta)
    (out / "arch_weights.json").write_text(json.dumps({"alpha": alpha, "beta": beta, "ops": list(space.ops),
                                                       "widths": [list(w) for w in space.widths]}) + "\n")
    try:
        arch_heatmap(space, alpha, beta, out / "arch_weights.png",
                     title=f"final: expected {expected / 1e9:.4g} GFLOPs, derived "
                           f"{derived[0].spec.name} (path {[w[j] for w, j in zip(space.widths, derived[0].path)]})")
    except Exception as exc:  # noqa: BLE001 - a plot must not lose a finished search
        log.warning("[dnas] heatmap failed: %r", exc)

    candidates = []
    for rank, d in enumerate(derived):
        fits = request.budget.violation(_cost(d.spec)) is None
        candidates.append(Candidate.of(d.spec, d.log_prob, source="dnas", info={
            "viterbi_rank": rank, "path_score": d.path_score, "fits_budget": fits,
            "widths": [w[j] for w, j in zip(space.widths, d.path)],
            "dilations": [st.get("dilations") for st in d.spec.stages], "expected_flops": expected}))
    candidates.sort(key=lambda c: not c.info["fits_budget"])  # stable: Viterbi order within each group
    if not candidates[0].info["fits_budget"]:
        log.warning(f"[dnas] no derived network fits the budget ({request.budget.violation(_cost(candidates[0].spec))}); "
                    f"raise lam to trade accuracy for FLOPs")
    cpu_s = sum(float(h.get("cpu_s", 0.0)) for h in history) + (time.process_time() - cpu0)
    history_rows = uniform_rows([h | {"step": int(h["epoch"])} for h in history])
    best = candidates[0]
    return SearchOutcome(
        strategy="dnas", score_name="path_log_prob", candidates=candidates, history=history_rows,
        settings=run_settings | {"space": space.to_dict(), "data": split.counts, "plan": plan.to_dict(),
                                 "run_name": name, "seed": request.seed},
        wall_s=time.perf_counter() - start, cpu_s=cpu_s,
        extra={"epochs": len(history), "expected_gflops": round(expected / 1e9, 6),
               "derived_gflops": round(best.flops / 1e9, 6), "width_paths": space.paths(),
               "space_size": float(space.size_of_space()), "supernet_wall_s": round(
                   sum(float(h.get("epoch_time_s", 0.0)) for h in history), 3)})


def uniform_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every row with every key (warm-up epochs have no ``arch_*``): NaN for a missing number, "" for a missing
    string. ``e3d.search_io`` writes the history with ``pa.Table.from_pylist``, which takes its columns from the
    first row only and would drop the architecture columns of every epoch."""
    keys: dict[str, Any] = {}
    for row in rows:
        for k, v in row.items():
            keys.setdefault(k, "" if isinstance(v, str) else math.nan)
    return [{k: row.get(k, blank) for k, blank in keys.items()} for row in rows]


def _cost(spec: Any):
    from e3d.cost import cost

    return cost(spec)
