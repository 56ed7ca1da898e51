"""Open a trained network from whatever a user holds: a model folder, a candidate folder or a job's output folder.

    found = open_model("outputs/search_and_train")      # the job's champion (its model folder when written)
    found = open_model("runs/x/candidates/rank1-ab12cd34")  # one trained candidate
    found.model, found.preprocessing, found.card, found.kind, found.notes

- A **model folder** (``config.json`` + ``model.safetensors``, :mod:`e3d.model_folder`) holds everything.
- A **job's output folder** (``jobs/search_and_train.py``'s or ``jobs/train.py``'s ``--out``): its ``model/`` folder
  when the job wrote one, else its champion: the trained candidate with the best multi-view top-1 among
  ``train/candidates/*/result.json`` (or ``candidates/*/result.json``).
- A **candidate folder** (``result.json`` naming the final checkpoint), a Ray Train run or checkpoint folder, or
  a ``state.pt``: the network from the checkpoint (:func:`e3d.export.find_checkpoint`); the clip and sampling
  rate from its trained spec, the views as ``result.json`` records them (``eval_clips`` x ``eval_crops``; older
  records: from the count its evaluation averaged, ``clips x 3`` when it divides by 3, else ``clips x 1``), the
  class names from the nearest ``label_map.json`` above it (``jobs/train.py``
  writes one), the search that found it from the job's ``search/outcome.json``.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .model_folder import (CardInfo, ModelFolderError, Preprocessing, is_model_folder, labels_or_indices, load,
                           read_config)

RESULT_FILE = "result.json"
LABEL_MAP_FILE = "label_map.json"
CANDIDATE_GLOBS = ("train/candidates/*/" + RESULT_FILE, "candidates/*/" + RESULT_FILE)


@dataclass
class FoundModel:
    """A network ready to predict: eval mode on the CPU, how to feed it, what its card says, where it came from."""

    model: Any
    preprocessing: Preprocessing
    card: CardInfo
    kind: str  # "model folder", "candidate", "job champion"
    path: Path
    notes: list[str] = field(default_factory=list)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFolderError(f"{path}: unreadable ({exc})") from None


def _score(result: dict[str, Any]) -> float:
    try:
        v = float(result.get("mv_top1"))
    except (TypeError, ValueError):
        return -math.inf
    return v if math.isfinite(v) else -math.inf


def champion_candidate(job: Path) -> Path | None:
    """The candidate folder of ``job``'s best trained candidate (multi-view top-1), or None when it has none."""
    found = []
    for pattern in CANDIDATE_GLOBS:
        for result in sorted(job.glob(pattern)):
            try:
                data = json.loads(result.read_text())
            except (OSError, json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(data, dict) and not data.get("error") and data.get("checkpoint"):
                found.append((_score(data), result.stat().st_mtime, result.parent))
    return max(found, key=lambda t: (t[0], t[1]))[2] if found else None


def views_from_count(views: float | int | None) -> tuple[int, int] | None:
    """``(clips, crops)`` for an evaluation that averaged ``views`` views per video (3 crops when it divides)."""
    try:
        n = int(round(float(views)))
    except (TypeError, ValueError):
        return None
    if n < 1:
        return None
    return (n // 3, 3) if n % 3 == 0 else (n, 1)


def _ancestors(path: Path, levels: int = 4) -> list[Path]:
    path = path.resolve()
    return [path, *list(path.parents)[:levels]]


def find_label_map(start: Path) -> dict[str, Any] | None:
    for folder in _ancestors(start):
        f = folder / LABEL_MAP_FILE
        if f.is_file():
            try:
                data = json.loads(f.read_text())
            except (OSError, json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(data, dict) and isinstance(data.get("classes"), list):
                return data
    return None


def find_provenance(start: Path) -> dict[str, Any]:
    """Strategy, score, budget and seed of the search in the nearest job folder above ``start``."""
    for folder in _ancestors(start):
        f = folder / "search" / "outcome.json"
        if f.is_file():
            try:
                doc = json.loads(f.read_text())
            except (OSError, json.JSONDecodeError, UnicodeDecodeError):
                return {}
            settings = doc.get("settings") or {}
            return {k: v for k, v in {"strategy": doc.get("strategy"), "score": doc.get("score_name"),
                                      "budget": settings.get("budget"), "seed": settings.get("seed")}.items()
                    if v is not None}
    return {}


def candidate_model(path: Path, *, labels: list[str] | None = None) -> FoundModel:
    """A trained candidate (candidate/run/checkpoint folder or ``state.pt``) with its preprocessing and card."""
    import torch

    from .export import ExportError, find_checkpoint
    from .model import build_model
    from .spec import ArchSpec

    try:
        ckpt = find_checkpoint(path)
    except ExportError as exc:
        raise ModelFolderError(str(exc)) from None
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file
        raise ModelFolderError(f"{ckpt}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or "model" not in state or "spec" not in state:
        raise ModelFolderError(f"{ckpt}: not a training checkpoint (expected a dict with 'model' and 'spec')")
    spec = ArchSpec.from_dict(state["spec"], where=f"{ckpt}:spec")
    dropout = float(state.get("dropout", 0.5))
    model = build_model(spec, dropout=dropout)
    model.load_state_dict(state["model"])
    model.eval()
    notes: list[str] = []
    result = _read_json(path / RESULT_FILE) if path.is_dir() and (path / RESULT_FILE).is_file() else {}
    final = state.get("final") or {}
    views = ((int(result["eval_clips"]), int(result["eval_crops"])) if result.get("eval_clips")
             else views_from_count(final.get("mv_views_per_video") or result.get("mv_views_per_video")))
    if views is None:
        views = (1, 1)
        notes.append("the evaluation views are not recorded: 1 clip x 1 crop (set --clips/--crops)")
    label_map = None if labels else find_label_map(path)
    if labels is None and label_map is not None:
        labels = [str(c) for c in label_map["classes"]]
    if not labels or len(labels) != spec.num_classes:
        notes.append(f"class names not recorded: the {spec.num_classes} outputs are named 0..{spec.num_classes - 1}"
                     " (give --labels)")
    pre = Preprocessing(frames=spec.frames, size=spec.size, sampling_rate=spec.sampling_rate or 1,
                        labels=labels_or_indices(labels, spec.num_classes), clips=views[0], crops=views[1])
    history = state.get("history") or []
    results = {"mv_top1": final.get("mv_top1", result.get("mv_top1")),
               "mv_top5": final.get("mv_top5", result.get("mv_top5")),
               "mv_videos": final.get("mv_videos", result.get("mv_videos")),
               "val_top1": (history[-1].get("val_top1") if history else result.get("val_top1")),
               "epochs": state.get("epoch", result.get("epochs"))}
    dataset: dict[str, Any] = {}
    if label_map and label_map.get("root"):
        dataset = {"name": Path(str(label_map["root"])).name, "root": label_map["root"],
                   "format": label_map.get("format"), "split": label_map.get("split")}
    provenance = find_provenance(path if path.is_dir() else path.parent)
    if result.get("name"):
        provenance["candidate"] = result["name"]
    card = CardInfo(name=result.get("name") or spec.name, provenance=provenance, recipe=dict(state.get("recipe") or {}),
                    results={k: v for k, v in results.items() if v is not None}, dataset=dataset)
    model.labels = list(pre.labels)
    return FoundModel(model, pre, card, "candidate", path, notes)


def open_model(path: str | os.PathLike, *, labels: list[str] | None = None, clips: int | None = None,
               crops: int | None = None) -> FoundModel:
    """The network at ``path`` (see the module doc); ``labels``/``clips``/``crops`` override what it records.
    Raises :class:`~e3d.model_folder.ModelFolderError` with a one-line message."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelFolderError(f"{path}: no such file or folder")
    if is_model_folder(path) or (path / "model").is_dir() and is_model_folder(path / "model"):
        folder = path if is_model_folder(path) else path / "model"
        model, pre = load(folder)
        config = read_config(folder)
        card = CardInfo(name=config.get("name"), provenance=config.get("provenance") or {},
                        recipe=config.get("recipe") or {}, results=config.get("results") or {},
                        dataset=config.get("dataset") or {}, latency_ms=(config.get("cost") or {}).get("latency_ms"),
                        weights=config.get("weights", "trained"))
        found = FoundModel(model, pre, card, "model folder" if folder == path else "job champion", folder)
    elif path.is_dir() and not (path / RESULT_FILE).is_file() and not (path / "state.pt").is_file() \
            and any(path.glob(g) for g in CANDIDATE_GLOBS):
        champion = champion_candidate(path)
        if champion is None:
            raise ModelFolderError(f"{path}: no candidate of this job finished training")
        found = candidate_model(champion, labels=labels)
        found.kind = "job champion"
    else:
        found = candidate_model(path, labels=labels)
    if labels is not None:
        if len(labels) != found.model.spec.num_classes:
            raise ModelFolderError(f"{len(labels)} label names for a network with {found.model.spec.num_classes} "
                                   "outputs")
        found.preprocessing = replace(found.preprocessing, labels=tuple(labels))
        found.notes = [n for n in found.notes if not n.startswith("class names")]
    if clips or crops:
        found.preprocessing = found.preprocessing.with_views(clips, crops)
        found.notes = [n for n in found.notes if not n.startswith("the evaluation views")]
    found.model.labels = list(found.preprocessing.labels)
    return found


def read_labels(path: str | os.PathLike) -> list[str]:
    """Class names from a ``label_map.json`` (its ``classes``), a model folder's ``config.json`` or a text file with
    one name per line."""
    p = Path(path)
    if not p.is_file():
        raise ModelFolderError(f"{p}: no such file")
    if p.suffix == ".json":
        data = _read_json(p)
        if isinstance(data, dict) and isinstance(data.get("classes"), list):
            return [str(c) for c in data["classes"]]
        if isinstance(data, dict) and isinstance(data.get("id2label"), dict):
            return [str(data["id2label"][k]) for k in sorted(data["id2label"], key=int)]
        if isinstance(data, list):
            return [str(c) for c in data]
        raise ModelFolderError(f"{p}: expected a list, or an object with 'classes' or 'id2label'")
    return [line.strip() for line in p.read_text().splitlines() if line.strip()]


__all__ = ["FoundModel", "open_model", "candidate_model", "champion_candidate", "views_from_count", "read_labels",
           "find_label_map", "find_provenance"]
