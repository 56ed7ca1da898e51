"""decode.py: frame-exactness against a full decode, seeking, short videos, odd and broken files, timeouts."""
from __future__ import annotations

import csv
import time

import numpy as np
import pytest

from pipeline.video import decode
from pipeline.video.decode import VideoDecodeError, clip_indices, decode_clip, decode_clips, probe, uniform_positions
from video_fixtures import ODD_DIR, UCF_DIR, full_decode, make_small_dataset, needs_odd, needs_ucf, odd_files

ERROR_KINDS = {"open", "stream", "decode", "short", "timeout"}


def assert_frame_exact(path, frames, rate, positions, ref=None) -> list[dict]:
    """decode_clip at each position equals the full decode at its clip_indices; returns the decode stats.

    The indices come from the frame count the decoder worked with (the packet count, or the decoded
    count when the stream ended before it).
    """
    ref = full_decode(path) if ref is None else ref
    all_stats = []
    for pos in positions:
        stats: dict = {}
        clip = decode_clip(path, frames, rate, pos, stats=stats)
        idx = clip_indices(stats["num_frames"], frames, rate, pos)
        assert idx.max() < len(ref)
        assert clip.shape == (frames, *ref[0].shape) and clip.dtype == np.uint8
        for j, i in enumerate(idx):
            assert np.array_equal(clip[j], ref[i]), f"{path} pos {pos} rate {rate}: clip frame {j} != frame {i}"
        all_stats.append(stats)
    return all_stats


def test_clip_indices_long_video():
    assert clip_indices(100, 4, 5, 0.0).tolist() == [0, 5, 10, 15]
    assert clip_indices(100, 4, 5, 1.0).tolist() == [84, 89, 94, 99]
    assert clip_indices(100, 4, 5, 0.5).tolist() == [42, 47, 52, 57]
    assert clip_indices(100, 3, 2, start_index=10).tolist() == [10, 12, 14]


def test_clip_indices_short_video_pad_and_loop():
    assert clip_indices(7, 5, 2, 0.7).tolist() == [0, 2, 4, 6, 6]
    assert clip_indices(7, 5, 2, 0.7, short="loop").tolist() == [0, 2, 4, 6, 1]
    assert clip_indices(1, 3, 4).tolist() == [0, 0, 0]
    with pytest.raises(ValueError):
        clip_indices(10, 4, 1, 1.5)
    with pytest.raises(ValueError):
        clip_indices(10, 4, 1, short="mirror")


def test_uniform_positions():
    assert uniform_positions(1) == [0.5]
    assert uniform_positions(4) == [0.125, 0.375, 0.625, 0.875]


@needs_ucf
@pytest.mark.parametrize("path", sorted((UCF_DIR / "Archery").glob("*.avi")) if UCF_DIR.is_dir() else [],
                         ids=lambda p: p.name)
def test_frame_exact_on_archery_clips(path):
    """Xvid with packed B-frames and wrong timestamps: clips must equal a full decode's frames."""
    ref = full_decode(path)
    stats = assert_frame_exact(path, 16, 5, [0.0, 0.3, 0.77, 1.0], ref)
    assert_frame_exact(path, 8, 1, [0.5, 1.0], ref)
    assert all(s["num_frames"] == len(ref) for s in stats)
    # the comparison has teeth: neighbouring frames differ, so an off-by-one clip would fail
    assert any(not np.array_equal(ref[i], ref[i + 1]) for i in range(len(ref) - 1))


@needs_ucf
def test_seeking_is_exact_and_skips_work():
    """HorseRace clips have a keyframe every 12 frames: clips late in the video seek instead of decoding all."""
    path = UCF_DIR / "HorseRace" / "v_HorseRace_g12_c01.avi"
    ref = full_decode(path)
    stats = assert_frame_exact(path, 16, 5, [0.2, 0.6, 1.0], ref)
    assert all(s["seeks"] >= 1 for s in stats)
    assert stats[-1]["decoded"] < 0.5 * len(ref)  # the clip spans 76 of 327 frames
    assert all(s["converted"] == 16 for s in stats)  # only the kept frames are converted


@needs_ucf
def test_frame_count_and_probe_match_dataset_metadata():
    rows = list(csv.DictReader(open(UCF_DIR / "labels.csv")))[::10]
    for row in rows:
        info = probe(str(UCF_DIR / row["path"]))
        assert info.num_frames == int(row["frames"])
        assert info.fps == pytest.approx(float(row["fps"]), rel=1e-3)
        assert (info.width, info.height, info.rotation) == (320, 240, 0)


def test_frame_exact_on_h264_with_b_frames(tmp_path):
    root = make_small_dataset(tmp_path, num_classes=2, clips_per_class=2, frames=40)
    paths = sorted(root.rglob("*.mp4"))
    seeks = 0
    for path in paths:
        for rate in (1, 2, 3):
            seeks += sum(s["seeks"] for s in assert_frame_exact(path, 8, rate, [0.0, 0.4, 0.9, 1.0]))
    assert seeks > 0  # keyframes every 8 frames: the seek path was exercised


def test_decode_clips_equals_single_clips(tmp_path):
    path = sorted(make_small_dataset(tmp_path, num_classes=1, clips_per_class=1, frames=40).rglob("*.mp4"))[0]
    positions = uniform_positions(3)
    clips = decode_clips(path, 6, 2, positions, size=20)
    assert len(clips) == 3
    for clip, pos in zip(clips, positions):
        assert np.array_equal(clip, decode_clip(path, 6, 2, pos, size=20))


def test_resize_short_side(tmp_path):
    path = sorted(make_small_dataset(tmp_path, num_classes=1, clips_per_class=1).rglob("*.mp4"))[0]
    assert decode_clip(path, 4, 1, size=48).shape == (4, 48, 48, 3)
    if UCF_DIR.is_dir():
        clip = decode_clip(UCF_DIR / "Surfing" / "v_Surfing_g08_c01.avi", 4, 5, size=96)
        assert clip.shape == (4, 96, 128, 3)


def test_short_video_pad_and_loop(tmp_path):
    path = sorted(make_small_dataset(tmp_path, num_classes=1, clips_per_class=1, frames=10).rglob("*.mp4"))[0]
    ref = full_decode(path)
    padded = decode_clip(path, 6, 3, 0.5)  # needs 16 frames, has 10
    assert all(np.array_equal(padded[j], ref[i]) for j, i in enumerate([0, 3, 6, 9, 9, 9]))
    looped = decode_clip(path, 6, 3, 0.5, short="loop")
    assert all(np.array_equal(looped[j], ref[i]) for j, i in enumerate([0, 3, 6, 9, 2, 5]))
    with pytest.raises(VideoDecodeError) as e:
        decode_clip(path, 6, 3, min_frames=11)
    assert e.value.kind == "short"


@pytest.mark.parametrize("content", [b"", b"this is not a video" * 10])
def test_unreadable_files_raise_clear_errors(tmp_path, content):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoDecodeError) as e:
        decode_clip(path, 4, 1)
    assert e.value.kind == "open" and e.value.path == str(path) and e.value.reason
    with pytest.raises(VideoDecodeError) as e:
        decode_clip(tmp_path / "missing.mp4", 4, 1)
    assert e.value.kind == "open" and "no such file" in e.value.reason


def test_timeout(tmp_path, monkeypatch):
    path = sorted(make_small_dataset(tmp_path, num_classes=1, clips_per_class=1).rglob("*.mp4"))[0]
    with pytest.raises(VideoDecodeError) as e:
        decode_clip(path, 4, 1, timeout=0.0)  # the deadline has passed before the first packet
    assert e.value.kind == "timeout"

    def hang(*args, **kwargs):  # a decoder stuck inside FFmpeg never returns
        time.sleep(30)

    monkeypatch.setattr(decode, "_decode", hang)
    start = time.monotonic()
    with pytest.raises(VideoDecodeError) as e:
        decode_clip(path, 4, 1, timeout=0.2)
    assert e.value.kind == "timeout" and "hung" in e.value.reason
    assert time.monotonic() - start < 5


def test_errors_pickle():
    import pickle

    e = pickle.loads(pickle.dumps(VideoDecodeError("/x.mp4", "broken", "decode")))
    assert (e.path, e.reason, e.kind) == ("/x.mp4", "broken", "decode")


# every file of ../shared/data/odd-videos: a correct clip or a clean, explained error
EXPECTED_ERRORS = {"empty.webm": "open", "truncated_no_moov.mp4": "open"}


@needs_odd
@pytest.mark.parametrize("path", odd_files(), ids=lambda p: p.name)
def test_odd_videos(path):
    for pos in (0.0, 0.5, 1.0):
        try:
            clip = decode_clip(path, 16, 2, pos, size=32, timeout=20)
        except VideoDecodeError as e:
            assert e.kind in ERROR_KINDS and e.path == str(path) and e.reason
            assert path.name in EXPECTED_ERRORS or path.name == "corrupted_h264.mp4", f"{path.name}: {e}"
            assert e.kind == EXPECTED_ERRORS.get(path.name, "decode")
            continue
        assert path.name not in EXPECTED_ERRORS
        assert clip.dtype == np.uint8 and clip.shape[0] == 16 and clip.shape[3] == 3
        assert min(clip.shape[1:3]) == 32


@needs_odd
@pytest.mark.parametrize("name", ["unordered_pts.avi", "bad_metadata_hmdb_cartwheel.avi", "h264_10bit.mp4",
                                  "vp9_no_duration.webm", "av1.mkv", "one_pixel.mp4"])
def test_odd_videos_frame_exact(name):
    """Out-of-order pts, a packet count one above the frame count, 10-bit, VP9 without duration, AV1, 1x1."""
    assert_frame_exact(ODD_DIR / name, 8, 3, [0.0, 0.5, 1.0])


@needs_odd
def test_corrupted_file_decodes_before_the_damage_only():
    path = ODD_DIR / "corrupted_h264.mp4"  # decoding fails at frame 28 of 50
    assert decode_clip(path, 8, 2, start_index=0).shape == (8, 720, 1280, 3)
    with pytest.raises(VideoDecodeError) as e:
        decode_clip(path, 8, 2, 1.0)
    assert e.value.kind == "decode" and "after frame 28" in e.value.reason


@needs_odd
def test_rotation_metadata_is_applied():
    path = ODD_DIR / "rotated_90.mov"  # coded 568x320 landscape, display matrix -90 degrees: portrait
    ref = full_decode(path)
    clip = decode_clip(path, 3, 1, 0.0)
    assert clip.shape == (3, 568, 320, 3)
    assert all(np.array_equal(clip[i], np.rot90(ref[i], -1)) for i in range(3))  # turned clockwise
    info = probe(path)
    assert (info.width, info.height, info.rotation) == (320, 568, -90)
    assert decode_clip(path, 2, 1, size=32).shape == (2, 57, 32, 3)
