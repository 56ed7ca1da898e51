"""A video -> its evaluation views: what the training job's multi-view evaluation feeds the network.

:func:`video_views` calls the same functions with the same arguments as ``pipeline.video.ray_data``'s evaluation
dataset (``decode_clips`` at ``uniform_positions(clips)`` with the short side at ``eval_scale or size``, then
``eval_views`` and ``normalize``), so the views are identical to the job's ``"test"`` rows (tests/test_predict.py
compares them). No Ray here.
"""
from __future__ import annotations

import numpy as np

from e3d.model_folder import Preprocessing
from pipeline.video.clip import ClipConfig
from pipeline.video.decode import decode_clips, uniform_positions
from pipeline.video.transforms import eval_views, normalize


def clip_config(pre: Preprocessing, *, decode_timeout: float = 30.0) -> ClipConfig:
    """The :class:`ClipConfig` a job evaluates with, for a model's preprocessing."""
    return ClipConfig(frames=pre.frames, sampling_rate=pre.sampling_rate, size=pre.size,
                      train_scale=(pre.short_side, pre.short_side), eval_scale=pre.resize, mean=pre.mean,
                      std=pre.std, short=pre.short, decode_timeout=decode_timeout)


def video_views(path: str, cfg: ClipConfig, clips: int, crops: int) -> np.ndarray:
    """float32 ``[clips * crops, 3, frames, size, size]``, ordered clip by clip (view ``clip * crops + crop``);
    raises ``pipeline.video.decode.VideoDecodeError`` (or another exception) for a file that does not decode."""
    decoded = decode_clips(path, cfg.frames, cfg.sampling_rate, uniform_positions(clips),
                           size=cfg.eval_scale or cfg.size, short=cfg.short, min_frames=cfg.min_frames,
                           timeout=cfg.decode_timeout)
    return np.stack([normalize(v, cfg.mean, cfg.std) for clip in decoded for v in eval_views(clip, cfg.size, crops)])


def error_line(exc: BaseException) -> str:
    """One line saying why a file gave no views."""
    reason = getattr(exc, "reason", None)
    kind = getattr(exc, "kind", None)
    if reason:
        return f"{kind}: {reason}" if kind else str(reason)
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
