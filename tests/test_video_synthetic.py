"""synthetic.py: real H.264 files, the folder layout, determinism, and classes that need time."""
from __future__ import annotations

import hashlib
import time

import av
import numpy as np
import pytest

from pipeline.video.decode import decode_clip
from pipeline.video.formats import load_dataset
from pipeline.video.synthetic import CLASSES, make_synthetic_dataset, render_clip
from video_fixtures import full_decode, make_small_dataset


def digest(root) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.mp4"))}


def test_layout_and_video_properties(tmp_path):
    root = make_small_dataset(tmp_path / "a", frames=24, size=32, fps=15)
    ds = load_dataset(root)
    assert ds.format == "folder" and ds.split.startswith("given")
    assert sorted(ds.classes) == sorted(CLASSES[:4])
    assert len(ds.train) == 12 and len(ds.val) == 4  # every 4th clip of a class in val
    with av.open(ds.train[0].path) as c:
        s = c.streams.video[0]
        packets = [p for p in c.demux(s) if p.size]
        assert (s.codec_context.name, s.width, s.height, float(s.average_rate)) == ("h264", 32, 32, 15.0)
    assert len(packets) == 24
    assert sum(p.is_keyframe for p in packets) >= 3  # a keyframe every 8 frames
    assert any(p.pts != p.dts for p in packets[1:])  # B-frames: decode order != presentation order


def test_deterministic_and_cached(tmp_path):
    """Same seed, same frames rendered; x264 may still vary a few bits between runs, so compare decodes."""
    rng_clips = [render_clip(name, np.random.default_rng(7), size=32, frames=6) for name in CLASSES for _ in "ab"]
    assert all(np.array_equal(a, b) for a, b in zip(rng_clips[::2], rng_clips[1::2]))
    a = make_small_dataset(tmp_path / "a", seed=3)
    b = make_small_dataset(tmp_path / "b", seed=3)
    assert digest(a).keys() == digest(b).keys()
    for p in sorted(a.rglob("*.mp4")):
        fa, fb = np.stack(full_decode(p)), np.stack(full_decode(b / p.relative_to(a)))
        assert fa.shape == fb.shape and np.abs(fa.astype(int) - fb).mean() < 1.0
    other = np.stack(full_decode(sorted(make_small_dataset(tmp_path / "c", seed=4).rglob("*.mp4"))[0]))
    first = np.stack(full_decode(sorted(a.rglob("*.mp4"))[0]))
    assert np.abs(other.astype(int) - first).mean() > 10  # another seed, other clips
    before = digest(a)
    start = time.perf_counter()
    make_small_dataset(tmp_path / "a", seed=3)  # same parameters: reused, not rewritten
    assert time.perf_counter() - start < 0.1 and digest(a) == before


def test_default_dataset_is_quick(tmp_path):
    start = time.perf_counter()
    root = make_synthetic_dataset(tmp_path)
    elapsed = time.perf_counter() - start
    ds = load_dataset(root)
    assert len(ds.train) + len(ds.val) == 4 * 24
    assert decode_clip(ds.train[0].path, 16, 2).shape == (16, 64, 64, 3)
    assert elapsed < 20, f"default synthetic dataset took {elapsed:.1f} s"


def object_mask(clip: np.ndarray) -> np.ndarray:
    """The bright object: pixels whose brightest channel is well above the dark background."""
    return clip.max(axis=-1) > 135


def motion(clip: np.ndarray) -> tuple[float, float]:
    """Summed frame-to-frame shift (dy, dx) of the object, on the torus the object moves on."""
    mask = object_mask(clip).astype(np.float32)
    total = np.zeros(2)
    for a, b in zip(mask[:-1], mask[1:]):
        shifts = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)]
        total += min(shifts, key=lambda s: np.abs(np.roll(a, s, axis=(0, 1)) - b).sum())
    return float(total[0]), float(total[1])


def orientation(mask: np.ndarray) -> float:
    y, x = np.nonzero(mask)
    y, x = y - y.mean(), x - x.mean()
    return 0.5 * np.arctan2(2 * (x * y).mean(), (x * x).mean() - (y * y).mean())


def spin(clip: np.ndarray) -> float:
    """Summed change of the bar's orientation (image axes, y down: positive is clockwise on screen)."""
    angles = [orientation(m) for m in object_mask(clip)]
    return float(sum((b - a + np.pi / 2) % np.pi - np.pi / 2 for a, b in zip(angles[:-1], angles[1:])))


@pytest.fixture(scope="module")
def all_classes(tmp_path_factory):
    root = make_synthetic_dataset(tmp_path_factory.mktemp("syn"), num_classes=8, clips_per_class=3, size=48,
                                  frames=16)
    ds = load_dataset(root)
    return ds, {it.path: decode_clip(it.path, 16, 1, start_index=0) for it in ds.train + ds.val}


def test_each_class_shows_its_motion(all_classes):
    ds, clips = all_classes
    for it in ds.train + ds.val:
        name, clip = ds.classes[it.label], clips[it.path]
        dy, dx = motion(clip)
        area = object_mask(clip).sum(axis=(1, 2))
        expected = {"right": dx > 8, "left": dx < -8, "down": dy > 8, "up": dy < -8,
                    "clockwise": spin(clip) > 0.5, "anticlockwise": spin(clip) < -0.5,
                    "growing": area[-1] > 1.5 * area[0], "shrinking": area[0] > 1.5 * area[-1]}
        assert expected[name], f"{it.path}: motion {dy, dx}, spin {spin(clip):.2f}, area {area[0]}->{area[-1]}"


def test_order_of_frames_carries_the_label(all_classes):
    """Reversed in time, each clip shows the opposite class: the frames alone do not give the label."""
    ds, clips = all_classes
    for it in ds.train + ds.val:
        name, clip = ds.classes[it.label], clips[it.path]
        if name in ("right", "left", "down", "up"):
            assert np.sign(motion(clip[::-1])) .tolist() == (-np.sign(motion(clip))).tolist()
        elif name in ("clockwise", "anticlockwise"):
            assert np.sign(spin(clip[::-1])) == -np.sign(spin(clip))
