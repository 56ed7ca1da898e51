"""The ``parsec`` strategy's search: train the supernet and the distribution on Ray Train, return the most
probable architectures as a :class:`~e3d.strategy.SearchOutcome`.

    outcome = run_parsec(request, context, settings)   # context.dataset (+ .clip), request.out_dir

The Ray Train run is ``<out_dir>/parsec/<run name>``; its name hashes everything but the number of epochs, so
calling again with the same ``out_dir`` resumes from the last epoch's checkpoint (weights, alpha, both
optimizers, history), and asking for more epochs extends the search. The candidates are the ``top_k`` most
probable distinct architectures under the final distribution, best first, each ranked by its
log-probability (``score``), with the mode first. ``<out_dir>/distribution.json`` holds every variable's
probabilities (also an artifact of the search's MLflow run).
"""
from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from e3d.parsec.distribution import ArchDistribution, k_most_probable
from e3d.parsec.space import TwoStreamSpace
from e3d.strategies.parsec import ParsecSettings
from e3d.strategy import Candidate, RequestError, SearchContext, SearchOutcome, SearchRequest

REFERENCE_LR, REFERENCE_BATCH = 0.4, 256  # Table 2: the weights' rate for the sparse stream, batch 256
FINAL_DRAWS = 2000  # draws for the final expected FLOPs


def run_name(settings: ParsecSettings, fingerprint: str, request: SearchRequest, num_classes: int) -> str:
    """``parsec-<hash>`` of everything that defines the search except its length (so it can be extended)."""
    d = settings.to_dict()
    d.pop("epochs")
    blob = json.dumps([d, fingerprint, request.seed, request.clip.frames, request.clip.size, num_classes],
                      sort_keys=True, default=str)
    return f"parsec-{hashlib.sha1(blob.encode()).hexdigest()[:10]}"


def weights_lr(settings: ParsecSettings, workers: int) -> float:
    """The option ``lr``, else Table 2's 0.4 at batch 256 scaled linearly to the global batch."""
    return settings.lr if settings.lr is not None else REFERENCE_LR * settings.batch_size * workers / REFERENCE_BATCH


def run_parsec(request: SearchRequest, context: SearchContext, settings: ParsecSettings) -> SearchOutcome:
    import ray
    import torch

    from pipeline.train.checkpoint import load_state
    from pipeline.train.data import as_source, steps_per_epoch
    from pipeline.train.resources import plan_resources
    from pipeline.train.trainer import build_trainer

    from .engine import mode_summary
    from .loop import parsec_loop_per_worker

    start, cpu0 = time.perf_counter(), time.process_time()
    if not ray.is_initialized():
        ray.init(include_dashboard=False)
    source = as_source(context.dataset, context.clip, seed=request.seed)
    frames, size = request.clip.frames, request.clip.size
    if (source.frames, source.size) != (frames, size):
        raise RequestError("clip", f"strategy 'parsec': the data gives {source.frames}x{source.size}^2 clips, the "
                                   f"request searches at {frames}x{size}^2")
    num_classes = source.num_classes
    space = TwoStreamSpace(settings.space, frames=frames, size=size, num_classes=num_classes)
    plan = plan_resources(1, workers=settings.workers)
    lr = weights_lr(settings, plan.num_workers)
    out = Path(request.out_dir) if request.out_dir else Path(tempfile.mkdtemp(prefix="parsec-"))
    out.mkdir(parents=True, exist_ok=True)
    name = run_name(settings, source.fingerprint(), request, num_classes)
    tracking = context.tracking
    loop_config = {"settings": settings.to_dict(), "frames": frames, "size": size, "num_classes": num_classes,
                   "seed": request.seed, "lr": lr, "torch_threads": plan.torch_threads,
                   "steps_per_epoch": steps_per_epoch(source.n_train, plan.num_workers, settings.batch_size),
                   "tracking_uri": getattr(tracking, "tracking_uri", None),
                   "run_id": context.run_id}
    datasets = {"train": source.train(), "val": source.val()}
    trainer = build_trainer(loop_config=loop_config, datasets=datasets, plan=plan, run_name=name,
                            storage_path=out / "parsec", max_failures=1, train_loop_per_worker=parsec_loop_per_worker)
    fit = trainer.fit()
    if fit.error is not None:
        raise fit.error
    if fit.checkpoint is None:
        raise RuntimeError("the PARSEC search finished without a checkpoint")
    state = load_state(fit.checkpoint.path)
    history = list(state["history"])

    dist = ArchDistribution(space.sizes)
    with torch.no_grad():
        dist.alpha.copy_(state["alpha"])
        log_probs = [lp.double().tolist() for lp in dist.log_probs()]
    top_k = settings.top_k or settings.samples
    best = k_most_probable(log_probs, top_k)
    prefix = request.name or "parsec"
    candidates = []
    for rank, (index, logp) in enumerate(best):
        spec = space.decode(index, prefix if rank == 0 else f"{prefix}-{rank:03d}")
        f = space.flops(index)
        candidates.append(Candidate.of(spec, logp, source="parsec", info={
            "rank": rank, "log_prob": logp, "prob": math.exp(logp), "index": list(index),
            "in_band": bool(settings.t_min <= f <= settings.t_max)}))
    draws = dist.sample(FINAL_DRAWS, torch.Generator().manual_seed(request.seed))
    expected = sum(space.flops(r) for r in draws.tolist()) / FINAL_DRAWS
    mode_flops = space.flops(best[0][0])
    summary = mode_summary(space, state["alpha"])
    (out / "distribution.json").write_text(json.dumps(summary, indent=2) + "\n")
    _log_artifact(tracking, context.run_id, out / "distribution.json")

    worker_cpu = sum(float(h.get("cpu_s", 0.0)) for h in history)
    settings_d = settings.to_dict() | {"lr_resolved": lr, "variables": [v.name for v in space.variables],
                                      "space_size": space.size_of_space(), "plan": plan.to_dict(), "run_name": name,
                                      "clip": {"frames": frames, "size": size}, "num_classes": num_classes}
    extra = {"epochs": len(history), "mode_gflops": round(mode_flops / 1e9, 6),
             "expected_gflops": round(expected / 1e9, 6), "t_min_gflops": settings.t_min / 1e9,
             "t_max_gflops": settings.t_max / 1e9, "mode_in_band": bool(settings.t_min <= mode_flops <= settings.t_max),
             "entropy": summary["_entropy"], "beta": settings.beta, "samples": settings.samples,
             "search_steps": int(state["total_steps"]), "worker_cpu_s": round(worker_cpu, 3)}
    return SearchOutcome(strategy="parsec", score_name="log_prob", candidates=candidates, history=history,
                         settings=settings_d, wall_s=time.perf_counter() - start,
                         cpu_s=time.process_time() - cpu0 + worker_cpu, extra=extra)


def _log_artifact(tracking: Any, run_id: str | None, path: Path) -> None:
    if tracking is None or not run_id:
        return
    try:
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking.tracking_uri).log_artifact(run_id, str(path), "parsec")
    except Exception as exc:  # the file is on disk anyway
        print(f"[parsec] could not log {path.name} to MLflow: {exc!r}")
