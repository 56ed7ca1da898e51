"""transforms.py: crops, flips and normalisation on uint8 [T, H, W, 3] clips."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.video.transforms import (center_crop, eval_views, hflip, normalize, random_crop, three_crops,
                                       train_view)


def coord_clip(t=3, h=6, w=10) -> np.ndarray:
    """A clip whose pixel (t, y, x) holds (y, x, t): crops can be located exactly."""
    t_, y, x = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
    return np.stack([y, x, t_], axis=-1).astype(np.uint8)


def origin(view: np.ndarray) -> tuple[int, int]:
    return int(view[0, 0, 0, 0]), int(view[0, 0, 0, 1])


def test_random_crop_is_uniform_and_shared_by_all_frames():
    clip = coord_clip()
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(300):
        view = random_crop(clip, 4, rng)
        assert view.shape == (3, 4, 4, 3)
        top, left = origin(view)
        assert 0 <= top <= 2 and 0 <= left <= 6
        assert np.array_equal(view, clip[:, top:top + 4, left:left + 4])  # one window for every frame
        seen.add((top, left))
    assert len(seen) == 3 * 7  # every placement happens


def test_center_and_three_crops():
    clip = coord_clip(h=6, w=10)
    assert origin(center_crop(clip, 4)) == (1, 3)
    assert [origin(v) for v in three_crops(clip, 6)] == [(0, 0), (0, 2), (0, 4)]  # left, centre, right
    tall = coord_clip(h=10, w=6)
    assert [origin(v) for v in three_crops(tall, 6)] == [(0, 0), (2, 0), (4, 0)]  # top, centre, bottom
    views = three_crops(clip, 6)
    covered = np.zeros((6, 10), bool)
    for v in views:
        covered[v[0, :, :, 0], v[0, :, :, 1]] = True
    assert covered.all()  # with the short side = crop size, the three crops cover the frame
    assert [origin(v) for v in eval_views(clip, 4, crops=1)] == [(1, 3)]
    with pytest.raises(ValueError):
        eval_views(clip, 4, crops=2)
    with pytest.raises(ValueError):
        center_crop(clip, 7)


def test_hflip():
    clip = coord_clip()
    flipped = hflip(clip)
    assert np.array_equal(flipped[:, :, 0, 1], clip[:, :, -1, 1])
    assert np.array_equal(hflip(flipped), clip)


def test_train_view_flips_half_the_time_and_never_when_off():
    clip = coord_clip(h=4, w=4)
    rng = np.random.default_rng(1)
    flips = sum(int(train_view(clip, 4, rng)[0, 0, 0, 1]) == 3 for _ in range(400))
    assert 160 < flips < 240
    assert all(int(train_view(clip, 4, rng, flip=False)[0, 0, 0, 1]) == 0 for _ in range(100))


def test_normalize_values_layout_and_channels():
    clip = np.zeros((2, 3, 4, 3), np.uint8)
    clip[..., 0] = 255  # red full, green 0, blue 51
    clip[..., 2] = 51
    mean, std = (0.5, 0.25, 0.1), (0.5, 0.25, 0.2)
    out = normalize(clip, mean, std)
    assert out.shape == (3, 2, 3, 4) and out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out[0], (1.0 - 0.5) / 0.5, rtol=1e-6)
    np.testing.assert_allclose(out[1], (0.0 - 0.25) / 0.25, rtol=1e-6)
    np.testing.assert_allclose(out[2], (0.2 - 0.1) / 0.2, rtol=1e-5)
    rand = np.random.default_rng(0).integers(0, 256, (3, 5, 6, 3), dtype=np.uint8)
    expected = ((rand / 255.0 - np.array(mean)) / np.array(std)).transpose(3, 0, 1, 2)
    np.testing.assert_allclose(normalize(rand, mean, std), expected, rtol=1e-5, atol=1e-5)
