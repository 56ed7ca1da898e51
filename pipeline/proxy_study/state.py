"""The study's state under ``out``, read back on resume: JSON files written atomically (NaN as null), ``study.json``
checked against the settings, and the training results already finished."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from .analysis import finite
from .config import StudyConfig, StudyError
from .models import Model


def clean_json(obj: Any) -> Any:
    """NaN/inf -> None and tuples -> lists, so the JSON is standard."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    return obj


def read_json(path: Path, default: Any) -> Any:
    """A state file of the study (``default`` when absent); a corrupt one is set aside and what it held redone."""
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        from e3d.statefile import set_aside  # noqa: PLC0415

        print(f"[study] {path} is corrupt ({exc}): set aside as {set_aside(path).name}; redoing what it held")
        return default


def write_json(path: Path, data: Any) -> Path:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(clean_json(data), indent=2) + "\n")
    tmp.replace(path)
    return path


def check_state(config: StudyConfig, out: Path) -> dict[str, Any]:
    """``study.json``: created on the first run, checked on the next ones."""
    path = out / "study.json"
    state = read_json(path, None)
    key = config.models_key()
    if state is None:
        state = {"models_key": key, "config": config.to_dict(), "created": time.strftime("%Y-%m-%d %H:%M:%S")}
        write_json(path, state)
        return state
    old = state.get("models_key", {})
    changed = sorted(k for k in set(old) | set(key) if old.get(k) != key.get(k))
    if changed:
        diff = ", ".join(f"{k}: {old.get(k)!r} -> {key.get(k)!r}" for k in changed)
        raise StudyError("out", f"{out} holds a study with other settings ({diff}); "
                         f"use another --out, or the same settings to resume it")
    return state


def finished_results(train_dir: Path, models: Sequence[Model], epochs: int) -> dict[str, Any]:
    """Training results already on disk with all ``epochs`` and a multi-view evaluation, by model name."""
    from pipeline.train import CandidateResult

    wanted = {json.dumps(m.spec.to_dict(), sort_keys=True): m.name for m in models}
    found: dict[str, Any] = {}
    for path in sorted(train_dir.glob("candidates/*/result.json")):
        try:
            r = CandidateResult.from_dict(json.loads(path.read_text()))
        except (ValueError, TypeError, KeyError):
            continue
        name = wanted.get(json.dumps(r.spec, sort_keys=True))
        if name and r.ok and r.epochs == epochs and finite(r.mv_top1):
            found[name] = r
    return found
