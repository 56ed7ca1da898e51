"""prepare.py / jobs/prepare_data.py: re-encoding keeps frames, labels and splits; resumes; reports bad files."""
from __future__ import annotations

import importlib.util
import json
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.video import prepare as prep
from pipeline.video.decode import decode_clip, decode_clips
from pipeline.video.formats import load_dataset
from pipeline.video.prepare import (PrepareSettings, check_frames, prepare_dataset, prepare_video,
                                    read_manifest)
from pipeline.video.synthetic import render_clip
from video_fixtures import ODD_DIR, full_decode, needs_odd

FRAMES, FPS, H, W = 40, 15, 48, 72  # small long-GOP clips (3:2, short side 48)
SETTINGS = PrepareSettings(short_side=32, keyint=8)
CLASSES = ("left", "right")
REPO = Path(__file__).resolve().parents[1]


def write_clip(path: Path, name: str, seed: int, *, gop: int = 250, pts: list[int] | None = None,
               time_base: Fraction = Fraction(1, FPS), codec: str = "libx264") -> Path:
    """A synthetic clip ``[FRAMES, H, W]`` encoded with one keyframe every ``gop`` frames (x264: 250)."""
    clip = render_clip(name, np.random.default_rng(seed), size=W, frames=FRAMES)[:, :H]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.time_base = stream.codec_context.time_base = time_base
        stream.codec_context.gop_size = gop
        stream.options = {"threads": "1", "crf": "18"} | ({"preset": "veryfast"} if codec == "libx264" else {})
        for i, rgb in enumerate(clip):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p", threads=1)
            frame.pts, frame.time_base = (i if pts is None else pts[i]), time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def keyframes(path: Path) -> list[int]:
    with av.open(str(path)) as c:
        return [i for i, p in enumerate(p for p in c.demux(video=0) if p.size) if p.is_keyframe]


def load_job():
    spec = importlib.util.spec_from_file_location("prepare_data", REPO / "jobs" / "prepare_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stems(items) -> list[tuple[str, int]]:
    return sorted((Path(it.path).stem, it.label) for it in items)


# ---------------------------------------------------------------- a folder dataset, end to end on Ray

@pytest.fixture(scope="module")
def prepared(ray_cluster, tmp_path_factory):
    """Long-GOP folder dataset (6 clips + 2 broken files) and its prepared copy."""
    src = tmp_path_factory.mktemp("src")
    for k in range(6):
        name = CLASSES[k % 2]
        write_clip(src / ("val" if k >= 4 else "train") / name / f"{name}_{k}.mp4", name, k)
    (src / "train" / "left" / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    whole = (src / "train" / "right" / "right_1.mp4").read_bytes()
    (src / "val" / "right" / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    dst = tmp_path_factory.mktemp("prepared") / "out"
    lines: list[str] = []
    summary = prepare_dataset(src, dst, settings=SETTINGS, progress=lines.append)
    return src, dst, summary, lines


def test_prepared_dataset_keeps_frames_labels_splits(prepared):
    src, dst, summary, lines = prepared
    assert (summary["videos"], summary["ok"], summary["failed"]) == (8, 6, 2)
    assert summary["labels_and_splits_preserved"], summary["problems"]
    a, b = load_dataset(src), load_dataset(dst)
    assert b.format == "folder" and b.classes == a.classes
    ok = {Path(it.path).stem for it in b.train + b.val}
    assert len(ok) == 6
    assert stems(b.train) == [s for s in stems(a.train) if s[0] in ok]
    assert stems(b.val) == [s for s in stems(a.val) if s[0] in ok]
    rows = {Path(r["source"]).name: r for r in read_manifest(dst)}
    assert len(rows) == 8 and any(line.startswith("[") and " ok " in line for line in lines)
    for name in ("garbage.mp4", "truncated.mp4"):  # reported with a reason, no output
        assert rows[name]["status"] == "failed" and rows[name]["kind"] == "open" and rows[name]["reason"]
        assert not (dst / rows[name]["output"]).exists()
    for row in rows.values():
        if row["status"] == "ok":
            out = dst / row["output"]
            assert row["frames_in"] == row["frames_out"] == FRAMES == len(full_decode(out))
            assert (row["height_out"], row["width_out"], row["fps_out"], row["timing"]) == (32, 48, FPS, "cfr")
            assert keyframes(out) == list(range(0, FRAMES, 8))
            with av.open(str(out)) as c:
                assert [s.type for s in c.streams] == ["video"]
            assert row["min_psnr"] >= SETTINGS.min_psnr and row["checked_frames"] > 0
    assert not list(dst.rglob("*.part"))


def test_prepared_clips_match_the_source_and_seek(prepared):
    src, dst, _, _ = prepared
    source, output = src / "train/left/left_0.mp4", dst / "train/left/left_0.mp4"
    for position in (0.0, 0.6, 1.0):
        stats_src, stats_out = {}, {}
        a = decode_clip(str(source), 8, 3, position, size=32, stats=stats_src).astype(np.float32)
        b = decode_clip(str(output), 8, 3, position, size=32, stats=stats_out).astype(np.float32)
        assert a.shape == b.shape == (8, 32, 48, 3)
        assert 10 * np.log10(255 ** 2 / np.mean((a - b) ** 2)) > 25  # encoding noise only
    assert keyframes(source) == [0] and stats_src["seeks"] == 0  # long GOP: decoded from frame 0
    assert stats_out["seeks"] >= 1 and stats_out["decoded"] < stats_src["decoded"]  # short GOP: seeks


def test_rerun_skips_done_files_and_redoes_a_killed_one(prepared):
    src, dst, _, _ = prepared
    outputs = sorted(dst.rglob("*.mp4"))
    mtimes = {p: p.stat().st_mtime_ns for p in outputs}
    again = prepare_dataset(src, dst, settings=SETTINGS, progress=None)
    assert (again["prepared_now"], again["skipped_done"], again["ok"]) == (0, 8, 6)  # failed ones not retried
    assert {p: p.stat().st_mtime_ns for p in outputs} == mtimes
    # a kill while writing one file: no output, no record, a partial .part file
    victim = dst / "train/right/right_1.mp4"
    victim.unlink()
    prep.records.record_path(dst, str(src / "train/right/right_1.mp4")).unlink()
    Path(str(victim) + ".part").write_bytes(b"half a file")
    resumed = prepare_dataset(src, dst, settings=SETTINGS, progress=None)
    assert (resumed["prepared_now"], resumed["ok"], resumed["failed"]) == (1, 6, 2)
    assert victim.is_file() and len(full_decode(victim)) == FRAMES and not list(dst.rglob("*.part"))
    assert {p: p.stat().st_mtime_ns for p in outputs if p != victim} == {k: v for k, v in mtimes.items() if k != victim}
    retried = prepare_dataset(src, dst, settings=SETTINGS, retry_failed=True, progress=None)
    assert (retried["prepared_now"], retried["failed"]) == (2, 2)  # only the two bad files are redone


# ---------------------------------------------------------------- other formats keep labels and splits

def _make_format(kind: str, root: Path) -> None:
    clips = [(CLASSES[k % 2], k) for k in range(4)]
    root.mkdir(parents=True)
    if kind == "csv":  # no split column: a seeded split, written out explicitly
        for name, k in clips:
            write_clip(root / "clips" / f"{name}_{k}.mp4", name, k)
        (root / "labels.csv").write_text("path,label,fps\n" + "".join(f"clips/{n}_{k}.mp4,{n},15\n" for n, k in clips))
    elif kind == "ucf101":  # Xvid-like AVI (MPEG-4 part 2), classInd + official split lists
        lists = root / "ucfTrainTestlist"
        lists.mkdir()
        (lists / "classInd.txt").write_text("1 Right\n2 Left\n")
        train, test = [], []
        for n, k in clips:
            rel = f"{n.title()}/v_{n.title()}_g0{k}_c01.avi"
            write_clip(root / "UCF-101" / rel, n, k, codec="mpeg4", gop=12)
            (train if k < 2 else test).append(f"{rel} {1 + (n == 'left')}" if k < 2 else rel)
        (lists / "trainlist01.txt").write_text("\n".join(train) + "\n")
        (lists / "testlist01.txt").write_text("\n".join(test) + "\n")
    elif kind == "kinetics":
        rows = [f"{n},vid{k},{k},{k + 3},{'train' if k < 3 else 'validate'}" for n, k in clips]
        (root / "train.csv").write_text("label,youtube_id,time_start,time_end,split\n" + "\n".join(rows) + "\n")
        for n, k in clips:
            write_clip(root / "clips" / n / f"vid{k}_{k:06d}_{k + 3:06d}.mp4", n, k)
    elif kind == "ssv2":  # VP9 WebM named <id>.webm
        (root / "labels.json").write_text(json.dumps({"Moving something left": "0", "Moving something right": "1"}))
        entries = [{"id": str(100 + k), "template": f"Moving [something] {n}"} for n, k in clips]
        (root / "train.json").write_text(json.dumps(entries[:3]))
        (root / "validation.json").write_text(json.dumps(entries[3:]))
        for n, k in clips:
            write_clip(root / "videos" / f"{100 + k}.webm", n, k, codec="libvpx-vp9", time_base=Fraction(1, 1000),
                       pts=[round(i * 1000 / FPS) for i in range(FRAMES)])


@pytest.mark.parametrize("kind", ["csv", "ucf101", "kinetics", "ssv2"])
def test_formats_keep_labels_and_splits(ray_cluster, tmp_path, kind):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _make_format(kind, src)
    summary = prepare_dataset(src, dst, format=kind, settings=SETTINGS, progress=None)
    assert (summary["ok"], summary["failed"]) == (4, 0) and summary["labels_and_splits_preserved"]
    a, b = load_dataset(src, kind), load_dataset(dst)
    assert b.format == kind and b.classes == a.classes
    assert stems(b.train) == stems(a.train) and stems(b.val) == stems(a.val)
    assert all(len(full_decode(it.path)) == FRAMES for it in b.train + b.val)


# ---------------------------------------------------------------- one file: timing, odd files, verification

def test_variable_frame_rate_is_kept_and_reported(tmp_path):
    steps = [67, 67, 133, 67, 200] * 8  # ms: 15 fps with dropped frames
    pts = [int(x) for x in np.cumsum([0] + steps[: FRAMES - 1])]
    source = write_clip(tmp_path / "vfr.mp4", "right", 0, pts=pts, time_base=Fraction(1, 1000))
    record = prepare_video(str(source), str(tmp_path / "out.mp4"), settings=SETTINGS)
    assert record["status"] == "ok" and record["vfr"] is True and record["timing"] == "vfr kept"

    def seconds(path: Path) -> list[float]:
        with av.open(str(path)) as c:
            return [round(float(f.time), 3) for f in c.decode(video=0)]

    assert record["frames_out"] == FRAMES and seconds(tmp_path / "out.mp4") == seconds(source)
    cfr = prepare_video(str(write_clip(tmp_path / "cfr.mp4", "left", 1)), str(tmp_path / "cfr_out.mp4"),
                        settings=SETTINGS)
    assert (cfr["vfr"], cfr["timing"], cfr["fps_in"], cfr["fps_out"]) == (False, "cfr", FPS, FPS)


@needs_odd
def test_odd_videos_prepared_or_reported(tmp_path):
    expected_failures = {"corrupted_h264.mp4": "decode", "empty.webm": "open", "truncated_no_moov.mp4": "open"}
    for path in sorted(p for p in ODD_DIR.iterdir() if p.suffix != ".md"):
        out = tmp_path / (path.stem + ".mp4")
        record = prepare_video(str(path), str(out), settings=PrepareSettings(short_side=64))
        if path.name in expected_failures:
            assert (record["status"], record["kind"]) == ("failed", expected_failures[path.name]), record
            assert record["reason"] and not out.exists()
        else:
            assert record["status"] == "ok", record
            assert record["frames_in"] == record["frames_out"] == len(full_decode(out))
            assert min(record["height_out"], record["width_out"]) <= 64
    rotated = full_decode(tmp_path / "rotated_90.mp4")[0]
    assert rotated.shape[0] > rotated.shape[1]  # portrait, as players show it, without rotation metadata


def test_check_frames_flags_shifted_and_garbled_frames():
    clip = render_clip("right", np.random.default_rng(3), size=32, frames=12)
    refs = {i: clip[i] for i in range(12)}
    noisy = {i: np.clip(clip[i] + np.random.default_rng(i).normal(0, 3, clip[i].shape), 0, 255).astype(np.uint8)
             for i in range(1, 11)}
    worst, problem = check_frames(noisy, refs, min_psnr=25)
    assert problem is None and 30 < worst < 45
    _, problem = check_frames({i: refs[i + 1] for i in range(1, 10)}, refs, min_psnr=10)
    assert problem and "shifted" in problem
    _, problem = check_frames({5: 255 - clip[5]}, refs, min_psnr=25)
    assert problem and "PSNR" in problem


def test_a_verification_mismatch_marks_the_file_failed(tmp_path, monkeypatch):
    def off_by_one(path, frames, rate, *, start_indices, **kw):  # a decoder that returns the next frame
        return decode_clips(path, frames, rate, start_indices=[i + 1 for i in start_indices], short="pad", **kw)

    monkeypatch.setattr(prep.verify, "decode_clips", off_by_one)
    source = write_clip(tmp_path / "a.mp4", "right", 0)
    record = prepare_video(str(source), str(tmp_path / "out.mp4"), settings=SETTINGS)
    assert (record["status"], record["kind"]) == ("failed", "verify") and "differs" in record["reason"]
    assert not list(tmp_path.glob("out.mp4*"))


# ---------------------------------------------------------------- the job script

def test_bad_arguments_exit_2_with_one_line_before_any_work(tmp_path, capsys):
    main = load_job().main
    src = tmp_path / "src"
    write_clip(src / "a" / "x.mp4", "left", 0)
    cases = {
        (): "SRC",
        (str(src),): "--out",
        (str(tmp_path / "nope"), "--out", str(tmp_path / "o")): "SRC",
        (str(src), "--out", str(tmp_path / "o"), "--format", "webdataset"): "--format",
        (str(src), "--out", str(src / "prepared")): "--out",
        (str(src), "--out", str(tmp_path / "o"), "--short-side", "0"): "--short-side",
        (str(src), "--out", str(tmp_path / "o"), "--keyint", "-2"): "--keyint",
        (str(src), "--out", str(tmp_path / "o"), "--crf", "60"): "--crf",
        (str(src), "--out", str(tmp_path / "o"), "--preset", "quick"): "--preset",
        (str(src), "--out", str(src / "a" / "x.mp4")): "--out",
    }
    for argv, option in cases.items():
        with pytest.raises(SystemExit) as exit_info:
            main(list(argv))
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1 and option in err, (argv, err)
    assert not (tmp_path / "o").exists() and not (src / "prepared").exists()


def test_job_script_prepares_and_reports(ray_cluster, tmp_path, capsys):
    main = load_job().main
    src = tmp_path / "src"
    for k in range(2):
        write_clip(src / CLASSES[k] / f"c{k}.mp4", CLASSES[k], k)
    for k in (2, 4):
        shutil.copyfile(src / "left" / "c0.mp4", src / "left" / f"c{k}.mp4")
    (src / "right" / "bad.mp4").write_bytes(b"\0" * 100)
    assert main([str(src), "--out", str(tmp_path / "dst"), "--short-side", "32"]) == 0
    out = capsys.readouterr().out
    assert "prepared 4/5 videos" in out and "bad.mp4 (open)" in out and "labels and splits: preserved" in out
    summary = json.loads((tmp_path / "dst" / "prepare.json").read_text())
    keyints = {r["keyint"] for r in read_manifest(tmp_path / "dst")}
    assert summary["settings"]["keyint"] is None and keyints == {FPS, None}  # one a second; None: failed


def test_output_size_is_even_and_never_upscaled():
    assert prep.output_size(240, 320, 256) == (240, 320)
    assert prep.output_size(720, 1280, 256) == (256, 456)  # 455.1 -> even
    assert prep.output_size(1080, 1920, 320) == (320, 568)
    assert prep.output_size(1, 1, 256) == (2, 2) and prep.output_size(35, 61, 256) == (34, 60)
