"""Every model with every score: forward proxies averaged over seeds, NASWOT on a fixed batch of training clips,
as parallel Ray tasks (one CPU and one torch thread each)."""
from __future__ import annotations

import math
import random
import time
from typing import Any, Mapping, Sequence

import numpy as np

from e3d.scores import get_score
from e3d.spec import ArchSpec

from .config import StudyConfig, StudyError
from .models import Model


def naswot_clips(dataset: Any, config: StudyConfig, n: int, seed: int = 0) -> np.ndarray:
    """``n`` training clips (centre views at the clip size, normalised), one video each, seeded: the batch
    NASWOT scores every model on. ``(n, 3, T, S, S)`` float32."""
    from pipeline.video.decode import decode_clip
    from pipeline.video.transforms import center_crop, normalize

    clip = config.clip()
    items = list(dataset.train)
    random.Random(seed).shuffle(items)
    clips = []
    for item in items:
        try:
            raw = decode_clip(item.path, clip.frames, clip.sampling_rate, 0.5, size=clip.size, short=clip.short,
                              timeout=clip.decode_timeout)
        except Exception as exc:  # a bad file is skipped, as in training
            print(f"[proxy-study] naswot batch: skipping {item.path}: {exc}")
            continue
        clips.append(normalize(center_crop(raw, clip.size), clip.mean, clip.std))
        if len(clips) == n:
            return np.stack(clips)
    raise StudyError("naswot_batch", f"only {len(clips)} decodable training clips for the NASWOT batch of {n}")


def score_spec(spec_dict: dict[str, Any], names: Sequence[str], repeats: int, seed: int,
               batch: np.ndarray | None) -> dict[str, dict[str, Any]]:
    """Every score of ``names`` for one spec (one torch thread): ``{score: {mean, std, values}}`` or
    ``{score: {error}}`` when it cannot be computed."""
    import torch

    torch.set_num_threads(1)
    spec = ArchSpec.from_dict(spec_dict)
    tensor = None if batch is None else torch.from_numpy(np.array(batch))  # a writable copy of the shared batch
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        score = get_score(name)
        start = time.perf_counter()
        try:
            v = score.evaluate(spec, repeats=repeats, seed=seed, batch=tensor)
            out[name] = {"mean": v.mean, "std": v.std, "values": list(v.values),
                         "seconds": time.perf_counter() - start}
        except ValueError as exc:  # e.g. an infinite STEntr for a zoo network at this clip
            out[name] = {"error": str(exc), "mean": math.nan}
    return out


def score_models(models: Sequence[Model], names: Sequence[str], *, repeats: int, seed: int,
                 batch: np.ndarray | None, done: Mapping[str, dict]) -> dict[str, dict]:
    """Scores of every model (those missing from ``done``), as parallel Ray tasks (one CPU each)."""
    import ray

    out = {m: dict(v) for m, v in done.items()}
    todo = [(m, [n for n in names if n not in out.get(m.name, {})]) for m in models]
    todo = [(m, ns) for m, ns in todo if ns]
    if not todo:
        return out
    print(f"[proxy-study] scoring {len(todo)} model(s) with {', '.join(names)}")
    task = ray.remote(num_cpus=1)(score_spec)
    batch_ref = ray.put(batch)
    refs = [(m, task.remote(m.spec.to_dict(), ns, repeats, seed, batch_ref)) for m, ns in todo]
    for m, ref in refs:
        out.setdefault(m.name, {}).update(ray.get(ref))
    return out
