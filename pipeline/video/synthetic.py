"""A synthetic labelled video dataset written as real H.264 MP4 files with PyAV.

Every class is a kind of motion of one bright object over a random dark, noisy background, with a
random colour, shape, position, size and speed, so a single frame does not tell the class: the
direction, sense of rotation or growth has to be seen over time. Positions wrap around the frame,
so where the object is says nothing about where it goes.

Classes (the first ``num_classes`` of this list are used): right, left, down, up (a square or disk
moving), clockwise, anticlockwise (a bar spinning about a point), growing, shrinking (a disk).
Left/right and the two rotations swap under a horizontal flip: train these with flips off.

The rendered frames are a deterministic function of ``seed``; the encoded bytes can differ slightly
between runs (x264 is not bit-exact from run to run here), the decoded clips by less than one
level on average.

Layout (the "folder" format with a given split): ``root/{train,val}/<class>/<class>_<k>.mp4``;
the last quarter (rounded, at least one) of each class's clips goes to val. Class indices are the
sorted class names, as for any folder dataset. ``root/synthetic.json`` records the parameters; calling
again with the same parameters reuses the files.
"""
from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

CLASSES = ("right", "left", "down", "up", "clockwise", "anticlockwise", "growing", "shrinking")
_DIRECTIONS = {"right": (0, 1), "left": (0, -1), "down": (1, 0), "up": (-1, 0)}


def make_synthetic_dataset(root: str | os.PathLike, *, num_classes: int = 4, clips_per_class: int = 24,
                           size: int = 64, frames: int = 32, fps: int = 15, seed: int = 0) -> Path:
    """Write ``num_classes`` x ``clips_per_class`` clips of ``frames`` frames, ``size``x``size`` pixels.

    Deterministic for a given ``seed``. Returns ``root`` (readable by ``formats.load_dataset``).
    """
    if not 1 <= num_classes <= len(CLASSES):
        raise ValueError(f"num_classes must be in [1, {len(CLASSES)}], got {num_classes}")
    if size < 16 or size % 2 or frames < 2 or clips_per_class < 1 or fps < 1:
        raise ValueError("need an even size >= 16, frames >= 2, clips_per_class >= 1, fps >= 1")
    root = Path(root)
    params = dict(num_classes=num_classes, clips_per_class=clips_per_class, size=size, frames=frames, fps=fps,
                  seed=seed, classes=list(CLASSES[:num_classes]), layout="{train,val}/<class>/<class>_<k>.mp4")
    meta = root / "synthetic.json"
    if meta.is_file() and json.loads(meta.read_text()) == params:
        return root
    num_val = max(1, round(clips_per_class / 4)) if clips_per_class > 1 else 0
    for label, name in enumerate(CLASSES[:num_classes]):
        for k in range(clips_per_class):
            rng = np.random.default_rng([seed, label, k])
            split = "val" if k >= clips_per_class - num_val else "train"
            path = root / split / name / f"{name}_{k:03d}.mp4"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_video(path, render_clip(name, rng, size=size, frames=frames), fps=fps)
    meta.write_text(json.dumps(params, indent=2))
    return root


def render_clip(name: str, rng: np.random.Generator, *, size: int, frames: int) -> np.ndarray:
    """One clip of class ``name``: uint8 ``[frames, size, size, 3]``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    background = rng.integers(0, 90, size=3)
    colour = rng.integers(150, 256, size=3)
    cy, cx = rng.uniform(0, size, size=2)
    t = np.arange(frames, dtype=np.float32)
    if name in _DIRECTIONS:
        dy, dx = _DIRECTIONS[name]
        speed = rng.uniform(0.04, 0.08) * size / 2  # pixels per frame
        half = rng.uniform(0.08, 0.14) * size
        disk = rng.random() < 0.5

        def mask(i: int) -> np.ndarray:
            # offsets to the object's centre on the torus, so the object wraps around the edges
            oy = (yy - (cy + dy * speed * t[i]) + size / 2) % size - size / 2
            ox = (xx - (cx + dx * speed * t[i]) + size / 2) % size - size / 2
            return oy ** 2 + ox ** 2 <= half ** 2 if disk else (np.abs(oy) <= half) & (np.abs(ox) <= half)
    elif name in ("clockwise", "anticlockwise"):
        cy, cx = size / 2 + rng.uniform(-0.15, 0.15, size=2) * size
        omega = rng.uniform(0.08, 0.16) * (1 if name == "clockwise" else -1)  # radians per frame; y points down
        theta0 = rng.uniform(0, np.pi)
        length, width = rng.uniform(0.3, 0.42) * size, rng.uniform(0.05, 0.08) * size

        def mask(i: int) -> np.ndarray:
            c, s = np.cos(theta0 + omega * t[i]), np.sin(theta0 + omega * t[i])
            along, across = (xx - cx) * c + (yy - cy) * s, -(xx - cx) * s + (yy - cy) * c
            return (np.abs(along) <= length) & (np.abs(across) <= width)
    elif name in ("growing", "shrinking"):
        r_small, r_big = sorted(rng.uniform(0.06, 0.4, size=2) * size)
        r_big = max(r_big, r_small + 0.15 * size)
        radii = np.linspace(r_small, r_big, frames) if name == "growing" else np.linspace(r_big, r_small, frames)

        def mask(i: int) -> np.ndarray:
            oy, ox = (yy - cy + size / 2) % size - size / 2, (xx - cx + size / 2) % size - size / 2
            return oy ** 2 + ox ** 2 <= radii[i] ** 2
    else:
        raise ValueError(f"unknown class {name!r}; expected one of {CLASSES}")
    clip = np.empty((frames, size, size, 3), np.uint8)
    for i in range(frames):
        frame = background + rng.normal(0, 12, size=(size, size, 1))
        frame[mask(i)] = colour
        clip[i] = np.clip(frame, 0, 255)
    return clip


def write_video(path: str | os.PathLike, clip: np.ndarray, *, fps: int, gop: int = 8) -> None:
    """Encode uint8 ``[T, H, W, 3]`` as H.264 (yuv420p, B-frames, a keyframe every ``gop`` frames)."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = clip.shape[2], clip.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        stream.options = {"preset": "veryfast", "crf": "18", "threads": "1"}
        for i, rgb in enumerate(clip):
            # converted here with one thread: libswscale's threaded conversion (what encode() would do)
            # does not give the same bytes every time, and the files should be reproducible
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p", threads=1)
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
