"""One file's re-encoding: the output's size and timestamps (from a probe and a demux pass), one sequential decode,
each frame scaled (area filter, rotation baked in) and encoded with x264; the frames that verification checks are
kept as RGB references."""
from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

import av
import numpy as np

from ..decode import VideoDecodeError, clip_indices, probe
from .settings import PrepareError, PrepareSettings

CHECK_FRAMES, CHECK_RATE = 16, 5  # the training clip whose frames are checked (docs/video.md's default)
VFR_TOLERANCE = 0.25  # an interval this far off the median (relative) makes a stream variable-rate
CONTAINERS = {".mp4": "mp4", ".webm": "matroska"}  # SSv2 needs <id>.webm: Matroska holding H.264


def output_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) of the output: the short side scaled to ``short_side`` when larger, each side then
    rounded to the nearest even number (down when not scaled; at least 2, as yuv420p needs)."""
    scale = min(1.0, short_side / min(height, width))

    def even(x: float) -> int:
        return max(2, int(x * scale / 2 + (0.5 if scale < 1 else 0.0)) * 2)

    return even(height), even(width)


@dataclass(frozen=True)
class Timing:
    """The output's timestamps, decided from the source's packets."""

    rate: Fraction  # frames per second (nominal)
    policy: str  # "cfr", "vfr kept" or "retimed"
    vfr: bool | None  # None when the timestamps are unusable
    time_base: Fraction  # of the output's timestamps
    pts: list[int] | None  # the kept timestamps ("vfr kept"), else frame i has pts i


def _timing(path: str) -> Timing:
    """Decide the output timestamps from a demux pass over the source's packets."""
    with av.open(path, metadata_errors="ignore") as c:
        stream = c.streams.video[0]
        pts = [p.pts for p in c.demux(stream) if p.size > 0]
        tb, guessed, average = stream.time_base, stream.guessed_rate, stream.average_rate
    rate = next((Fraction(r) for r in (guessed, average) if r and 0.5 <= r <= 1000), None)
    usable = bool(pts) and None not in pts and len(set(pts)) == len(pts) and tb is not None
    if not usable:
        rate = rate or Fraction(25)
        return Timing(rate, "retimed", None, 1 / rate, None)
    pts = sorted(pts)
    steps = np.diff(pts)
    median = float(np.median(steps)) if len(steps) else 0.0
    vfr = bool(len(steps)) and bool(np.any(np.abs(steps - median) > max(1.0, VFR_TOLERANCE * median)))
    if rate is None:  # no rate in the header: the median interval
        rate = Fraction(1 / (median * tb)).limit_denominator(1001) if median else Fraction(25)
    if vfr:
        return Timing(rate, "vfr kept", True, Fraction(tb), [p - pts[0] for p in pts])
    return Timing(rate, "cfr", False, 1 / rate, None)


def check_indices(num_frames: int, keyint: int) -> list[int]:
    """Frame indices verified on the output: three training clips, both ends, around three keyframes."""
    idx = {0, num_frames - 1}
    for position in (0.0, 0.5, 1.0):
        idx.update(clip_indices(num_frames, CHECK_FRAMES, CHECK_RATE, position).tolist())
    keys = list(range(keyint, num_frames, keyint))
    for k in {keys[0], keys[len(keys) // 2], keys[-1]} if keys else ():
        idx.update((k - 1, k, k + 1))
    return sorted(i for i in idx if 0 <= i < num_frames)


class _Scaler:
    """Source frame -> yuv420p frame of the output size (area filter, rotation baked in)."""

    def __init__(self, size: tuple[int, int], rotation: int):
        self.height, self.width = size
        self.turns = int(round(rotation / 90)) % 4
        self.scale = av.video.reformatter.VideoReformatter()
        self.to_rgb = av.video.reformatter.VideoReformatter()

    def __call__(self, frame) -> av.VideoFrame:
        if not self.turns:
            return self.scale.reformat(frame, width=self.width, height=self.height, format="yuv420p",
                                       interpolation="AREA", threads=1)
        h, w = (self.width, self.height) if self.turns % 2 else (self.height, self.width)  # coded
        rgb = self.scale.reformat(frame, width=w, height=h, format="rgb24", interpolation="AREA", threads=1)
        upright = np.ascontiguousarray(np.rot90(rgb.to_ndarray(), self.turns))
        return av.VideoFrame.from_ndarray(upright, format="rgb24").reformat(format="yuv420p", threads=1)

    def rgb(self, frame: av.VideoFrame) -> np.ndarray:
        """What decoding the encoder's input gives: the reference for verification."""
        return self.to_rgb.reformat(frame, format="rgb24", threads=1).to_ndarray()


def _encoder_options(settings: PrepareSettings, keyint: int) -> dict[str, str]:
    options = {"preset": settings.preset, "crf": str(settings.crf), "threads": "1",
               "x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0:bframes=0"}
    if settings.fast_decode:
        options["tune"] = "fastdecode"
    return options


@dataclass
class Encoded:
    """What encoding one file gave: what verification compares the output with."""

    frames: int
    size: tuple[int, int]  # (height, width)
    timing: Timing
    keyint: int
    references: dict[int, np.ndarray]  # index -> RGB of the encoder's input
    checks: list[int]


def encode(source: str, tmp: str, container_format: str, settings: PrepareSettings, deadline: float) -> Encoded:
    """Re-encode ``source`` into ``tmp`` (``container_format``); raises VideoDecodeError or PrepareError."""
    info = probe(source, timeout=settings.timeout)
    timing = _timing(source)
    size = output_size(info.height, info.width, settings.short_side)
    keyint = settings.keyint or max(1, round(float(timing.rate)))
    checks = check_indices(info.num_frames, keyint)
    keep = {j for i in checks for j in (i - 1, i, i + 1)}
    scaler, references, count = _Scaler(size, info.rotation), {}, 0
    options = {"movflags": "+faststart"} if container_format == "mp4" else {}
    with av.open(source, metadata_errors="ignore") as src, av.open(tmp, "w", format=container_format,
                                                                    options=options) as out:
        stream = src.streams.video[0]
        stream.codec_context.thread_count = 1
        encoder = out.add_stream("libx264", rate=timing.rate)
        encoder.height, encoder.width = size
        encoder.pix_fmt = "yuv420p"
        encoder.time_base = encoder.codec_context.time_base = timing.time_base
        encoder.options = _encoder_options(settings, keyint)
        try:
            for i, frame in enumerate(_decoded(source, src, stream)):
                if time.monotonic() > deadline:
                    raise PrepareError(f"timeout: not done after {settings.timeout:g} s (frame {i})", "timeout")
                yuv = scaler(frame)
                if i in keep:
                    references[i] = scaler.rgb(yuv)
                yuv.pts, yuv.duration = _pts(timing, i)
                yuv.time_base, yuv.pict_type = timing.time_base, av.video.frame.PictureType.NONE
                out.mux(encoder.encode(yuv))
                count = i + 1
            if count == 0:
                raise VideoDecodeError(source, "no decodable frame", "short")
            out.mux(encoder.encode(None))
        except av.error.FFmpegError as e:  # the decoder's errors are VideoDecodeError already
            raise PrepareError(f"encoding failed after frame {count}: {e}", "encode") from None
    return Encoded(count, size, timing, keyint, references, [c for c in checks if c < count])


def _decoded(path: str, container, stream) -> Iterator[av.VideoFrame]:
    """The frames of a sequential decode; a bit-stream error raises VideoDecodeError("decode")."""
    i = 0
    try:
        for frame in container.decode(stream):
            yield frame
            i += 1
    except av.error.FFmpegError as e:
        raise VideoDecodeError(path, f"decode error after frame {i}: {e}", "decode") from None


def _pts(timing: Timing, i: int) -> tuple[int, int]:
    """(pts, duration) of output frame ``i`` in ``timing.time_base``."""
    if timing.pts is None:
        return i, 1
    pts = timing.pts
    if i + 1 < len(pts):
        return pts[i], pts[i + 1] - pts[i]
    step = int(np.median(np.diff(pts))) if len(pts) > 1 else 1
    return (pts[i] if i < len(pts) else pts[-1] + step * (i - len(pts) + 1)), step
