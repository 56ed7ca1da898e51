"""Video datasets on Ray Data: rows of (path, label) decoded to clips in ``map_batches``.

- ``train_dataset``: file-level shuffle, then per video one random clip (random temporal position,
  short-side scale jitter, random crop, optional flip), normalised to float32 ``[3, T, size, size]``.
  The shuffle and the per-row random numbers are reseeded on every execution of the dataset (Ray's
  ``RandomSeedConfig``/``random()`` with ``reseed_after_execution``), so every pass over it (every
  epoch) sees a new order and new clips; ``seed=None`` uses system randomness.
- ``eval_dataset``: per video ``num_clips`` uniformly placed clips x ``crops`` crops, each a row with
  its ``video_id`` (the video's position in ``items``) and ``view`` (``clip * crops + crop``).
- Bad files: a video that fails (``decode.VideoDecodeError``: open, stream, decode, short, timeout;
  or any other exception) gives no row; the task logs a warning with path and reason and records
  it in a named Ray actor. ``skipped_report()`` returns (and logs) the summary.
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from typing import Iterator, Sequence

import numpy as np
import ray
from ray.data import RandomSeedConfig
from ray.data.expressions import random as random_column

from .clip import ClipConfig  # noqa: F401 - re-exported: pipeline.video.ray_data.ClipConfig
from .decode import VideoDecodeError, decode_clip, decode_clips, uniform_positions
from .formats import VideoItem
from .transforms import eval_views, normalize, train_view

logger = logging.getLogger(__name__)
SKIP_LOG_NAME = "e3d-video-skips"


@ray.remote(num_cpus=0)
class SkipLog:
    """Collects the files that decode tasks skipped: (stage, path, kind, reason) events."""

    def __init__(self):
        self.events: list[tuple[str, str, str, str]] = []

    def add(self, events: list[tuple[str, str, str, str]]) -> None:
        self.events.extend(events)

    def summary(self) -> dict:
        per_file = Counter((stage, path, kind, reason) for stage, path, kind, reason in self.events)
        return {
            "skipped": len(self.events),
            "files": len({path for _, path, _, _ in self.events}),
            "by_kind": dict(Counter(kind for _, _, kind, _ in self.events)),
            "by_stage": dict(Counter(stage for stage, _, _, _ in self.events)),
            "items": [{"stage": s, "path": p, "kind": k, "reason": r, "count": n}
                      for (s, p, k, r), n in sorted(per_file.items())],
        }

    def reset(self) -> None:
        self.events = []


_HELD_SKIP_LOG: tuple[tuple[str, str], "ray.actor.ActorHandle"] | None = None


def skip_log() -> "ray.actor.ActorHandle":
    """The job's ``SkipLog`` actor, created on first use and held by this process.

    A named, non-detached actor ends once its creator holds no handle to it (a handle from
    ``get_actor`` does not count), so without the held handle the actor dies between the dataset that
    created it and the ``skipped_report`` after it. It is held per Ray session and job, so a new
    ``ray.init`` in the same process gets a new actor. Call it in the driver before any other process (a
    Tune trial) does, or the record ends with that process.
    """
    global _HELD_SKIP_LOG
    ctx = ray.get_runtime_context()
    key = (ctx.get_session_name(), ctx.get_job_id())
    if _HELD_SKIP_LOG is None or _HELD_SKIP_LOG[0] != key:
        # on the head, never on an autoscaled node: a live actor keeps its node from going idle (issue 23)
        _HELD_SKIP_LOG = (key, SkipLog.options(name=SKIP_LOG_NAME, get_if_exists=True,
                                               resources={"node:__internal_head__": 0.001}).remote())
    return _HELD_SKIP_LOG[1]


def skipped_report(*, reset: bool = False, log: bool = True) -> dict:
    """Summary of the files skipped so far by this job's video datasets.

    ``{"skipped": events, "files": distinct paths, "by_kind": {...}, "by_stage": {...},
    "items": [{"stage", "path", "kind", "reason", "count"}, ...]}``; logged when ``log``;
    ``reset`` clears the record afterwards.
    """
    actor = skip_log()
    summary = ray.get(actor.summary.remote())
    if reset:
        ray.get(actor.reset.remote())
    if log:
        if summary["skipped"]:
            lines = "\n".join(f"  [{i['stage']}] {i['path']}: {i['reason']} (x{i['count']})" for i in summary["items"])
            logger.warning("skipped %d clips from %d files (%s):\n%s", summary["skipped"], summary["files"],
                           summary["by_kind"], lines)
        else:
            logger.info("no video files skipped")
    return summary


def _items_dataset(items: Sequence[VideoItem], batch_size: int) -> ray.data.Dataset:
    if not items:
        raise ValueError("no videos given")
    rows = [{"path": it.path, "label": int(it.label), "video_id": i} for i, it in enumerate(items)]
    return ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / batch_size)))


def _record_skips(log, stage: str, failures: list[tuple[str, Exception]]) -> None:
    events = []
    for path, e in failures:
        kind, reason = (e.kind, e.reason) if isinstance(e, VideoDecodeError) else ("error", repr(e))
        logger.warning("skipping %s (%s): %s", path, kind, reason)
        events.append((stage, str(path), kind, reason))
    if events:
        ray.get(log.add.remote(events))  # wait, so a report right after the pass sees them


def _train_batch(batch: dict, cfg: ClipConfig, log) -> Iterator[dict]:
    clips, labels, failures = [], [], []
    for path, label, u in zip(batch["path"], batch["label"], batch["rand"]):
        rng = np.random.default_rng(int(u * 2 ** 53))
        scale = int(rng.integers(cfg.train_scale[0], cfg.train_scale[1] + 1))
        try:
            clip = decode_clip(path, cfg.frames, cfg.sampling_rate, float(rng.random()), size=scale,
                               short=cfg.short, min_frames=cfg.min_frames, timeout=cfg.decode_timeout)
            clips.append(normalize(train_view(clip, cfg.size, rng, flip=cfg.hflip), cfg.mean, cfg.std))
            labels.append(label)
        except Exception as e:  # a bad file must never stop the job
            failures.append((path, e))
    _record_skips(log, "train", failures)
    if clips:  # a batch whose files all failed yields nothing
        yield {"clip": np.stack(clips), "label": np.asarray(labels, np.int64)}


def _eval_batch(batch: dict, cfg: ClipConfig, num_clips: int, crops: int, log) -> Iterator[dict]:
    out: dict[str, list] = {"clip": [], "label": [], "video_id": [], "view": []}
    failures = []
    for path, label, video_id in zip(batch["path"], batch["label"], batch["video_id"]):
        try:
            clips = decode_clips(path, cfg.frames, cfg.sampling_rate, uniform_positions(num_clips),
                                 size=cfg.eval_scale or cfg.size, short=cfg.short, min_frames=cfg.min_frames,
                                 timeout=cfg.decode_timeout)
            views = [normalize(v, cfg.mean, cfg.std) for clip in clips for v in eval_views(clip, cfg.size, crops)]
        except Exception as e:  # a bad file must never stop the job
            failures.append((path, e))
            continue
        out["clip"] += views
        out["label"] += [label] * len(views)
        out["video_id"] += [video_id] * len(views)
        out["view"] += list(range(len(views)))
    _record_skips(log, "eval", failures)
    if out["clip"]:
        yield {"clip": np.stack(out["clip"]), "label": np.asarray(out["label"], np.int64),
               "video_id": np.asarray(out["video_id"], np.int64), "view": np.asarray(out["view"], np.int64)}


def train_dataset(items: Sequence[VideoItem], cfg: ClipConfig = ClipConfig(), *,
                  seed: int | None = 0) -> ray.data.Dataset:
    """Training clips: rows ``{"clip": float32 [3, T, size, size], "label": int64}``, one per video per pass.

    Shuffled at file level; every pass (epoch) draws a new order and new clips. Failed files are
    skipped (see ``skipped_report``).
    """
    shuffle_seed = RandomSeedConfig(seed=seed, reseed_after_execution=True)
    ds = _items_dataset(items, cfg.batch_size).random_shuffle(seed=shuffle_seed)
    ds = ds.with_column("rand", random_column(seed=seed, reseed_after_execution=True))
    return ds.map_batches(_train_batch, batch_size=cfg.batch_size, batch_format="numpy", num_cpus=cfg.num_cpus,
                          fn_kwargs={"cfg": cfg, "log": skip_log()})


def eval_dataset(items: Sequence[VideoItem], cfg: ClipConfig = ClipConfig(), *, num_clips: int = 10,
                 crops: int = 3) -> ray.data.Dataset:
    """Evaluation views: rows ``{"clip": float32 [3, T, size, size], "label", "video_id", "view"}`` (int64).

    ``num_clips`` clips at ``decode.uniform_positions`` x ``crops`` (1: centre, 3: along the long
    side) per video, so ``num_clips * crops`` rows per decodable video; average a video's
    predictions over its rows (grouped by ``video_id``, the index in ``items``).
    """
    if num_clips < 1:
        raise ValueError("num_clips must be >= 1")
    eval_views(np.zeros((1, cfg.size, cfg.size, 3), np.uint8), cfg.size, crops)  # validates crops early
    return _items_dataset(items, cfg.batch_size).map_batches(  # one video per call: num_clips * crops rows
        _eval_batch, batch_size=1, batch_format="numpy", num_cpus=cfg.num_cpus,
        fn_kwargs={"cfg": cfg, "num_clips": num_clips, "crops": crops, "log": skip_log()})
