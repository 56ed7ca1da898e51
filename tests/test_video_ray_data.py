"""ray_data.py: one row per clip, new clips and order every pass, multi-view eval, bad files skipped and reported."""
from __future__ import annotations

import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from pipeline.video.formats import VideoItem, load_dataset  # noqa: E402
from pipeline.video.ray_data import ClipConfig, eval_dataset, skipped_report, train_dataset  # noqa: E402
from video_fixtures import ODD_DIR, make_small_dataset, needs_odd, odd_files  # noqa: E402

CFG = ClipConfig(frames=8, sampling_rate=2, size=24, train_scale=(24, 30), hflip=False, batch_size=3)


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    if ray.is_initialized():  # a session left over by another module
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """10 good videos, labelled by their own index (so rows can be traced), and two bad files."""
    root = tmp_path_factory.mktemp("ray")
    ds = load_dataset(make_small_dataset(root / "syn", clips_per_class=3, frames=24))
    good = [VideoItem(it.path, i) for i, it in enumerate((ds.train + ds.val)[:10])]
    (root / "garbage.mp4").write_bytes(b"not a video at all" * 100)
    (root / "empty.mp4").write_bytes(b"")
    bad = [VideoItem(str(root / "garbage.mp4"), 98), VideoItem(str(root / "empty.mp4"), 99)]
    return good, bad


def one_pass(ds) -> dict[int, np.ndarray]:
    rows = {}
    order = []
    for batch in ds.iter_batches(batch_size=4, batch_format="numpy"):
        assert batch["clip"].dtype == np.float32 and batch["label"].dtype == np.int64
        assert batch["clip"].shape[1:] == (3, 8, 24, 24)
        for clip, label in zip(batch["clip"], batch["label"]):
            assert int(label) not in rows  # one row per video per pass
            rows[int(label)] = clip
            order.append(int(label))
    return rows, order


def test_train_rows_new_clips_and_order_every_pass_bad_files_skipped(videos):
    good, bad = videos
    skipped_report(reset=True, log=False)
    ds = train_dataset(good + bad, CFG, seed=0)
    first, order1 = one_pass(ds)
    second, order2 = one_pass(ds)
    assert set(first) == set(second) == set(range(10))  # every good video once, bad ones dropped
    changed = sum(not np.array_equal(first[k], second[k]) for k in first)
    assert changed >= 8  # new random clips (position, scale, crop) in the second pass
    assert order1 != order2  # file-level shuffle redone every pass
    # normalised with the Kinetics mean/std: roughly centred values
    assert -2.5 < float(np.mean([c.mean() for c in first.values()])) < 2.5
    report = skipped_report(reset=True, log=False)
    assert report["skipped"] == 4 and report["files"] == 2 and report["by_stage"] == {"train": 4}
    assert report["by_kind"] == {"open": 4}
    assert {i["path"] for i in report["items"]} == {b.path for b in bad}
    assert all(i["count"] == 2 and i["reason"] for i in report["items"])


def test_eval_views(videos):
    good, bad = videos
    skipped_report(reset=True, log=False)
    items = good[:4] + bad
    ds = eval_dataset(items, CFG, num_clips=2, crops=3)
    rows = ds.take_all()
    assert len(rows) == 4 * 2 * 3
    assert Counter(r["video_id"] for r in rows) == {0: 6, 1: 6, 2: 6, 3: 6}
    assert all(sorted(r["view"] for r in rows if r["video_id"] == v) == list(range(6)) for v in range(4))
    assert all(r["label"] == items[r["video_id"]].label and r["clip"].shape == (3, 8, 24, 24) for r in rows)
    again = {(r["video_id"], r["view"]): r["clip"] for r in ds.take_all()}
    assert all(np.array_equal(again[(r["video_id"], r["view"])], r["clip"]) for r in rows)  # deterministic
    views = {r["view"]: r["clip"] for r in rows if r["video_id"] == 0}
    assert not np.array_equal(views[0], views[3])  # clip 0 and clip 1 (views = clip * 3 + crop) differ in time
    report = skipped_report(reset=True, log=False)
    assert report["by_stage"] == {"eval": 4} and report["files"] == 2  # two passes over two bad files


def test_timeout_is_a_reported_skip(videos):
    good, _ = videos
    skipped_report(reset=True, log=False)
    cfg = ClipConfig(frames=8, sampling_rate=2, size=24, train_scale=(24, 24), decode_timeout=1e-9)
    assert train_dataset(good[:3], cfg).count() == 0
    assert skipped_report(reset=True, log=False)["by_kind"] == {"timeout": 3}


@needs_odd
def test_every_odd_video_gives_a_clip_or_a_reported_skip():
    skipped_report(reset=True, log=False)
    files = odd_files()
    items = [VideoItem(str(p), i) for i, p in enumerate(files)]
    cfg = ClipConfig(frames=16, sampling_rate=4, size=32, train_scale=(32, 40), batch_size=4, decode_timeout=20)
    rows = train_dataset(items, cfg).take_all()
    assert all(r["clip"].shape == (3, 16, 32, 32) and np.isfinite(r["clip"]).all() for r in rows)
    decoded = {files[r["label"]].name for r in rows}
    skipped = {i["path"].split("/")[-1]: i["kind"] for i in skipped_report(reset=True, log=False)["items"]}
    assert decoded.isdisjoint(skipped) and len(decoded) + len(skipped) == len(files)
    # 16 frames every 4th need the last of the 50 frames: corrupted_h264 fails at frame 28
    assert skipped == {"empty.webm": "open", "truncated_no_moov.mp4": "open", "corrupted_h264.mp4": "decode"}


def test_clip_config_validation():
    with pytest.raises(ValueError):
        ClipConfig(size=224, train_scale=(200, 320))
    with pytest.raises(ValueError):
        ClipConfig(short="mirror")
    assert ClipConfig().clip_shape() == (3, 16, 224, 224)


def test_decoding_modules_do_not_import_ray():
    code = ("import sys; import pipeline.video.decode, pipeline.video.transforms, pipeline.video.formats, "
            "pipeline.video.synthetic, pipeline.video.health; assert 'ray' not in sys.modules, 'ray imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_skip_log_outlives_the_call_that_created_it():
    """A named actor ends once its creator holds no handle; the report's actor must last the whole job."""
    import gc
    import time

    from pipeline.video.ray_data import SKIP_LOG_NAME

    skipped_report(reset=True, log=False)
    gc.collect()
    time.sleep(1.0)  # the actor, if released, is gone well within this
    assert ray.get(ray.get_actor(SKIP_LOG_NAME).summary.remote())["skipped"] == 0
