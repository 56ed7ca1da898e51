"""The main job's champion as a model folder: ``<out>/model`` (config.json, model.safetensors, README.md).

:func:`write_champion_folder` is called by :func:`pipeline.search_and_train.run_job` after training: the trained
candidate with the best multi-view top-1, with the job's clip, evaluation views, class names, the search that
found it and its results on the card. No Ray; MLflow only through :func:`pipeline.tracking.log_model_folder`.
"""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

CHAMPION_DIR = "model"


def champion(results: Sequence[Any]) -> Any | None:
    """The trained candidate with the best multi-view top-1 (as ``register_best`` ranks them), or None."""
    ok = [r for r in results if r.ok and r.checkpoint and math.isfinite(float(r.mv_top1))]
    return max(ok, key=lambda r: r.mv_top1) if ok else None


def write_champion_folder(results: Sequence[Any], config: Any, dataset: Any, out: Path, *,
                          say=print) -> tuple[Path, Any] | None:
    """Write the champion's model folder under ``out``; ``(folder, its CandidateResult)``, or None when no candidate
    trained or its checkpoint is not on this machine (a remote ``--out``: ``e3d export`` it from the store)."""
    best = champion(results)
    if best is None:
        return None
    if "://" in str(best.checkpoint):
        say(f"[model] the champion's checkpoint is on {best.checkpoint}: no model folder written here")
        return None
    try:
        return _write(best, config, dataset, out, say)
    except Exception as exc:  # the job's results stand without it
        say(f"[model] could not write the champion's model folder: {type(exc).__name__}: {exc}")
        return None


def _write(best: Any, config: Any, dataset: Any, out: Path, say) -> tuple[Path, Any]:
    from e3d.model_folder import write_model_folder
    from e3d.model_source import candidate_model

    found = candidate_model(out / "train" / "candidates" / best.run_name, labels=list(dataset.classes))
    clip = config.clip
    pre = replace(found.preprocessing, clips=config.eval_clips, crops=config.eval_crops, resize=clip.eval_scale,
                  mean=clip.mean, std=clip.std, short=clip.short, sampling_rate=clip.sampling_rate)
    request = config.request
    card = replace(found.card, name=best.name, provenance={
        "strategy": config.strategy, "score": request.score, "budget": request.budget.to_dict(),
        "seed": request.seed, "candidate": best.name, "stentr": best.stentr},
        dataset={"name": Path(config.data.path).name if config.data.path else "synthetic",
                 "root": str(getattr(dataset, "root", "")), "format": getattr(dataset, "format", None),
                 "split": getattr(dataset, "split", None)})
    folder = write_model_folder(out / CHAMPION_DIR, found.model, pre, card=card)
    say(f"[model] champion {best.name} (top-1 {best.mv_top1:.1f} %) as a model folder: {folder} "
        f"(e3d predict {folder} VIDEO)")
    return folder, best
