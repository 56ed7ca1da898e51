"""Spatial clip transforms in plain numpy (torchvision does not import with the CPU torch here).

Clips are uint8 ``[T, H, W, 3]`` as ``decode.decode_clip`` returns them; the short-side resize (and
so the training scale jitter) is done by the decoder's libswscale on the kept frames only
(``decode_clip(size=...)``), so these transforms only crop, flip and normalise.

- training: ``random_crop`` + optional ``hflip`` (off for direction-sensitive classes such as
  Something-Something's "pushing left to right") after a random short side in the jitter range;
- evaluation: ``center_crop`` or ``three_crops`` (start, centre, end of the long side) after a
  short-side resize to the crop size;
- ``normalize``: uint8 ``[T, H, W, 3]`` -> float32 ``[3, T, H, W]``, ``(x / 255 - mean) / std``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

KINETICS_MEAN = (0.45, 0.45, 0.45)
KINETICS_STD = (0.225, 0.225, 0.225)


def _check(clip: np.ndarray, size: int) -> tuple[int, int]:
    if clip.ndim != 4 or clip.shape[-1] != 3:
        raise ValueError(f"expected a [T, H, W, 3] clip, got shape {clip.shape}")
    h, w = clip.shape[1:3]
    if h < size or w < size:
        raise ValueError(f"clip {h}x{w} is smaller than the crop {size}")
    return h, w


def crop(clip: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    """The ``size``x``size`` window at (top, left): ``[T, size, size, 3]`` (a view)."""
    return clip[:, top:top + size, left:left + size]


def random_crop(clip: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly placed ``size``x``size`` crop of every frame (same window for the whole clip)."""
    h, w = _check(clip, size)
    return crop(clip, int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1)), size)


def center_crop(clip: np.ndarray, size: int) -> np.ndarray:
    """The central ``size``x``size`` crop."""
    h, w = _check(clip, size)
    return crop(clip, (h - size) // 2, (w - size) // 2, size)


def three_crops(clip: np.ndarray, size: int) -> list[np.ndarray]:
    """Three ``size``x``size`` crops along the long side: left/centre/right (top/centre/bottom if tall).

    With the short side resized to ``size`` they cover the whole frame (the evaluation protocol of
    SlowFast/X3D/E3D).
    """
    h, w = _check(clip, size)
    if w >= h:
        return [crop(clip, (h - size) // 2, left, size) for left in (0, (w - size) // 2, w - size)]
    return [crop(clip, top, (w - size) // 2, size) for top in (0, (h - size) // 2, h - size)]


def hflip(clip: np.ndarray) -> np.ndarray:
    """Mirror every frame left-right."""
    return clip[:, :, ::-1]


def normalize(clip: np.ndarray, mean: Sequence[float] = KINETICS_MEAN,
              std: Sequence[float] = KINETICS_STD) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` -> float32 ``[3, T, H, W]`` with ``(x / 255 - mean) / std`` per channel."""
    std_a = np.asarray(std, dtype=np.float32).reshape(3, 1, 1, 1)
    mean_a = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1, 1)
    out = np.ascontiguousarray(clip.transpose(3, 0, 1, 2)).astype(np.float32)  # transpose the uint8: 6x faster
    out *= 1.0 / (255.0 * std_a)
    out -= mean_a / std_a
    return out


def train_view(clip: np.ndarray, size: int, rng: np.random.Generator, *, flip: bool = True) -> np.ndarray:
    """Random crop, then a horizontal flip with probability 1/2 when ``flip``: uint8 ``[T, size, size, 3]``."""
    out = random_crop(clip, size, rng)
    return hflip(out) if flip and rng.random() < 0.5 else out


def eval_views(clip: np.ndarray, size: int, crops: int = 3) -> list[np.ndarray]:
    """``crops`` evaluation views: 1 (centre) or 3 (along the long side), each uint8 ``[T, size, size, 3]``."""
    if crops == 1:
        return [center_crop(clip, size)]
    if crops == 3:
        return three_crops(clip, size)
    raise ValueError(f"crops must be 1 or 3, got {crops}")
