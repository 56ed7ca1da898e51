"""jobs/inspect_data.py and pipeline.video.health: the dataset health report."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from pipeline.video.health import check_dataset, format_report
from video_fixtures import ODD_DIR, UCF_DIR, make_small_dataset, needs_odd, needs_ucf

REPO = Path(__file__).resolve().parents[1]


def inspect_main():
    spec = importlib.util.spec_from_file_location("inspect_data", REPO / "jobs" / "inspect_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_report_with_a_bad_file(tmp_path, capsys):
    root = make_small_dataset(tmp_path / "data", clips_per_class=2)
    bad = root / "train" / "up" / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    assert inspect_main()([str(root), "--json", "--frames", "8", "--sampling-rate", "2", "--size", "32",
                           "--workers", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dataset"]["format"] == "folder" and report["dataset"]["num_classes"] == 4
    assert report["files"] == {"checked": 9, "decodable": 8, "undecodable": 1, "by_kind": {"open": 1},
                               "shorter_than_clip": 0}
    assert report["bad_files"][0]["path"] == str(bad) and report["bad_files"][0]["reason"]
    assert report["counts"]["train"]["up"] == 2 and report["counts"]["val"]["up"] == 1
    assert report["videos"]["frames"]["median"] == 24 and report["videos"]["fps"]["max"] == 15
    assert report["videos"]["resolutions"] == {"32x32": 8}
    assert report["throughput"]["clips_per_s_per_core"] > 1
    assert report["dataset"]["ignored"] == 0
    gif = root / "train" / "up" / "anim.gif"
    gif.write_bytes(b"GIF89a")
    assert inspect_main()([str(root), "--frames", "8", "--size", "32", "--workers", "2"]) == 0
    text = capsys.readouterr().out
    assert "BAD " + str(bad) in text and "1 undecodable" in text
    assert "1 files ignored (not a video extension: {'.gif': 1})" in text and "IGNORED " + str(gif) in text


def test_unreadable_dataset_exits_nonzero(tmp_path, capsys):
    assert inspect_main()([str(tmp_path / "nothing-here")]) == 2
    (tmp_path / "empty").mkdir()
    assert inspect_main()([str(tmp_path / "empty"), "--json"]) == 2
    assert "cannot read dataset" in capsys.readouterr().err


@needs_odd
def test_every_odd_video_is_reported(tmp_path):
    for p in ODD_DIR.iterdir():
        if p.suffix != ".md":
            (tmp_path / "odd").mkdir(exist_ok=True)
            shutil.copy(p, tmp_path / "odd" / p.name)
    report = check_dataset(str(tmp_path), "folder", frames=16, sampling_rate=5, size=32, timeout=20)
    bad = {Path(b["path"]).name: b["kind"] for b in report["bad_files"]}
    assert bad == {"empty.webm": "open", "truncated_no_moov.mp4": "open", "corrupted_h264.mp4": "decode"}
    assert report["files"]["decodable"] == 7
    assert "3 undecodable" in format_report(report)
    # under the 76 frames a clip spans: corrupted (50), h264_10bit (30), one_pixel (5), rotated (3), vp9 (74)
    assert report["files"]["shorter_than_clip"] == 5


@needs_ucf
def test_ucf_sample():
    report = check_dataset(str(UCF_DIR), frames=16, sampling_rate=5, size=64, limit=6)
    assert report["files"]["checked"] == 6 and report["files"]["decodable"] == 6
    assert report["videos"]["resolutions"] == {"320x240": 6} and report["videos"]["codecs"] == {"mpeg4": 6}
    assert 1 < report["videos"]["duration_s"]["median"] < 20
