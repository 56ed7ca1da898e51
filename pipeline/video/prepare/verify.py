"""Verification of one prepared file: it decodes fully with the source's frame count (and rate), and the clip
decoder, which seeks as training does, returns the source's frames at the check indices within encoding noise."""
from __future__ import annotations

import time

import av
import numpy as np

from ..decode import VideoDecodeError, decode_clips
from .encode import Encoded
from .settings import PrepareError, PrepareSettings

NEIGHBOUR_FACTOR = 0.5  # a frame is "shifted" when a neighbouring source frame has under this x its MSE


def check_frames(decoded: dict[int, np.ndarray], references: dict[int, np.ndarray], *,
                 min_psnr: float) -> tuple[float, str | None]:
    """(lowest PSNR, None) when every decoded frame matches its source frame, else (…, the reason).

    A frame matches when its PSNR against the source frame at the same index is at least ``min_psnr``
    and no neighbouring source frame (index +-1) has under ``NEIGHBOUR_FACTOR`` x its squared error.
    """
    worst = float("inf")
    for i, frame in sorted(decoded.items()):
        ref = references[i]
        if frame.shape != ref.shape:
            return worst, f"frame {i}: shape {frame.shape} != source {ref.shape}"
        mse = _mse(frame, ref)
        psnr = 10 * np.log10(255.0 ** 2 / mse) if mse > 0 else float("inf")
        worst = min(worst, psnr)
        if psnr < min_psnr:
            return worst, f"frame {i}: PSNR {psnr:.1f} dB < {min_psnr:g} dB"
        for j in (i - 1, i + 1):
            if j in references and _mse(frame, references[j]) < NEIGHBOUR_FACTOR * mse:
                return worst, f"frame {i} matches source frame {j} better (shifted frames)"
    return worst, None


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    d = a.astype(np.float32) - b.astype(np.float32)
    return float(np.mean(d * d))


def verify(path: str, enc: Encoded, settings: PrepareSettings, deadline: float) -> dict:
    """Full decode (frame count, rate), then the clip decoder at the check indices; raises PrepareError."""
    try:
        with av.open(path) as c:
            stream = c.streams.video[0]
            rate, streams = stream.guessed_rate, len(c.streams)
            count = sum(1 for _ in c.decode(stream))
    except av.error.FFmpegError as e:
        raise PrepareError(f"output does not decode: {e}") from None
    if count != enc.frames:
        raise PrepareError(f"output has {count} frames, source {enc.frames}")
    if streams != 1:
        raise PrepareError(f"output has {streams} streams, expected 1 (video)")
    if enc.timing.vfr is False and (not rate or abs(float(rate) / float(enc.timing.rate) - 1) > 1e-3):
        raise PrepareError(f"output frame rate {rate} != source {enc.timing.rate}")
    remaining = max(1.0, deadline - time.monotonic())
    try:
        clips = decode_clips(path, 1, 1, start_indices=enc.checks, timeout=remaining)
    except VideoDecodeError as e:
        raise PrepareError(f"clip decoder fails on the output: {e.reason}") from None
    worst, problem = check_frames({i: c[0] for i, c in zip(enc.checks, clips)}, enc.references,
                                  min_psnr=settings.min_psnr)
    if problem:
        raise PrepareError(f"output differs from the source: {problem}")
    return {"frames_out": count, "fps_out": float(rate) if rate else None,
            "min_psnr": round(min(float(worst), 100.0), 2), "checked_frames": len(enc.checks)}  # 100: identical
