"""formats.py: every dataset layout, format detection, deterministic labels and split, label maps."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipeline.video.formats import DatasetError, VideoItem, detect_format, load_dataset
from video_fixtures import UCF_DIR, needs_ucf


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")  # the loaders list files; they do not decode them
    return path


def names(items: list[VideoItem]) -> list[str]:
    return [Path(it.path).name for it in items]


def test_folder_with_seeded_stratified_split(tmp_path):
    for c in ("zebra", "apple", "mango"):
        for k in range(10):
            touch(tmp_path / c / ("sub" if k % 2 else "") / f"{c}_{k}.MP4")
    touch(tmp_path / "apple" / "notes.txt")
    ds = load_dataset(tmp_path)
    assert ds.format == "folder" and ds.classes == ["apple", "mango", "zebra"]
    assert len(ds.train) == 24 and len(ds.val) == 6
    assert ds.counts()["val"] == {"apple": 2, "mango": 2, "zebra": 2}
    assert all(os.path.isabs(it.path) and os.path.isfile(it.path) for it in ds.train + ds.val)
    assert all(Path(it.path).relative_to(tmp_path).parts[0] == ds.classes[it.label] for it in ds.train + ds.val)
    assert not set(names(ds.train)) & set(names(ds.val))
    again = load_dataset(tmp_path)
    assert again.train == ds.train and again.val == ds.val  # deterministic
    other = load_dataset(tmp_path, seed=1)
    assert other.val != ds.val and len(other.val) == 6  # the seed changes the split
    assert len(load_dataset(tmp_path, val_fraction=0.5).val) == 15
    assert ds.ignored == [str(tmp_path / "apple" / "notes.txt")]


def test_folder_lists_files_it_ignores(tmp_path):
    """.gif/.swf files, and a class folder holding only them, are left out and listed; hidden files are not."""
    for c in ("run", "jump"):
        for k in range(3):
            touch(tmp_path / c / f"{c}_{k}.avi")
    gif, swf = touch(tmp_path / "run" / "run_9.gif"), touch(tmp_path / "wave" / "wave_0.swf")
    touch(tmp_path / "jump" / ".DS_Store")
    ds = load_dataset(tmp_path)
    assert ds.classes == ["jump", "run"]  # 'wave' has no video at all
    assert ds.ignored == sorted([str(gif), str(swf)])


def test_folder_with_given_split(tmp_path):
    for split, n in (("train", 3), ("val", 1)):
        for c in ("b", "a"):
            for k in range(n):
                touch(tmp_path / split / c / f"{split}{k}.avi")
    ds = load_dataset(tmp_path, "folder")
    assert ds.classes == ["a", "b"] and len(ds.train) == 6 and len(ds.val) == 2
    assert set(names(ds.val)) == {"val0.avi"} and ds.split.startswith("given")
    for d in (tmp_path / "val").iterdir():
        for f in d.iterdir():
            f.unlink()
    only_train = load_dataset(tmp_path, "folder")  # train/<class>/ alone gets a seeded split
    assert only_train.classes == ["a", "b"] and len(only_train.train) + len(only_train.val) == 6
    assert only_train.split.startswith("seeded")


def test_csv_with_split_column_relative_paths_and_missing(tmp_path):
    touch(tmp_path / "clips" / "1.mp4")
    touch(tmp_path / "clips" / "2.mp4")
    touch(tmp_path / "clips" / "3.mp4")
    (tmp_path / "meta.csv").write_text(
        "path,label,split,extra\nclips/1.mp4,run,train,x\nclips/2.mp4,jump,val,y\nclips/3.mp4,jump,train,z\n"
        "clips/gone.mp4,run,train,w\n")
    ds = load_dataset(tmp_path)
    assert ds.format == "csv" and ds.classes == ["jump", "run"]
    assert [(Path(i.path).name, i.label) for i in ds.train] == [("3.mp4", 0), ("1.mp4", 1)]
    assert names(ds.val) == ["2.mp4"]
    assert ds.missing == [str(tmp_path / "clips" / "gone.mp4")]
    assert load_dataset(tmp_path / "meta.csv").train == ds.train  # the CSV file itself as root


def test_csv_without_split_and_without_header(tmp_path):
    for k in range(10):
        touch(tmp_path / f"v{k}.webm")
    (tmp_path / "list.csv").write_text("".join(f"{tmp_path / f'v{k}.webm'},{'ab'[k % 2]}\n" for k in range(10)))
    ds = load_dataset(tmp_path / "list.csv")
    assert ds.classes == ["a", "b"] and len(ds.train) == 8 and len(ds.val) == 2 and ds.split.startswith("seeded")


def test_csv_train_and_val_files(tmp_path):
    touch(tmp_path / "a.mp4")
    touch(tmp_path / "b.mp4")
    (tmp_path / "train.csv").write_text("path,label\na.mp4,x\n")
    (tmp_path / "val.csv").write_text("path,label\nb.mp4,y\n")
    ds = load_dataset(tmp_path, "csv")
    assert names(ds.train) == ["a.mp4"] and names(ds.val) == ["b.mp4"] and ds.classes == ["x", "y"]


def test_kinetics(tmp_path):
    header = "label,youtube_id,time_start,time_end,split\n"
    (tmp_path / "train.csv").write_text(header + '"playing guitar",abc,10,20,train\n'
                                        "abseiling,def,0,10,train\nabseiling,gone,5,15,train\n")
    (tmp_path / "validate.csv").write_text(header + "abseiling,ghi,30,40,val\n")
    (tmp_path / "test.csv").write_text(header + "abseiling,jkl,0,10,test\n")
    touch(tmp_path / "train" / "playing guitar" / "abc_000010_000020.mp4")
    touch(tmp_path / "train" / "abseiling" / "def_000000_000010.mp4")
    touch(tmp_path / "val" / "ghi_000030_000040.mkv")
    touch(tmp_path / "test" / "jkl_000000_000010.mp4")
    assert detect_format(tmp_path) == "kinetics"
    ds = load_dataset(tmp_path)
    assert ds.classes == ["abseiling", "playing guitar"]
    assert [(n, i.label) for n, i in zip(names(ds.train), ds.train)] == [("def_000000_000010.mp4", 0),
                                                                         ("abc_000010_000020.mp4", 1)]
    assert names(ds.val) == ["ghi_000030_000040.mkv"]
    assert ds.missing == ["gone_000005_000015"]


def test_ssv2(tmp_path):
    labels = {"Pushing something from left to right": "1", "Pushing something from right to left": "0"}
    (tmp_path / "something-something-v2-labels.json").write_text(json.dumps(labels))
    train = [{"id": "1", "label": "pushing a cup from left to right",
              "template": "Pushing [something] from left to right", "placeholders": ["a cup"]},
             {"id": "2", "label": "x", "template": "Pushing [something] from right to left", "placeholders": []},
             {"id": "9", "label": "x", "template": "Pushing [something] from right to left", "placeholders": []}]
    val = [{"id": "3", "label": "x", "template": "Pushing [something] from left to right", "placeholders": []}]
    (tmp_path / "something-something-v2-train.json").write_text(json.dumps(train))
    (tmp_path / "something-something-v2-validation.json").write_text(json.dumps(val))
    for i in ("1", "2", "3"):
        touch(tmp_path / "20bn-something-something-v2" / f"{i}.webm")
    ds = load_dataset(tmp_path)
    assert ds.format == "ssv2"
    assert ds.classes == ["Pushing something from right to left", "Pushing something from left to right"]
    assert [(n, i.label) for n, i in zip(names(ds.train), ds.train)] == [("2.webm", 0), ("1.webm", 1)]
    assert [(n, i.label) for n, i in zip(names(ds.val), ds.val)] == [("3.webm", 1)]
    assert ds.missing == [str(tmp_path / "20bn-something-something-v2" / "9.webm")]


def test_ucf101_official_splits(tmp_path):
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 HandstandPushups\n")
    (lists / "trainlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\n"
                                           "HandstandPushups/v_HandStandPushups_g08_c01.avi 2\r\n")
    (lists / "testlist01.txt").write_text("HandstandPushups/v_HandStandPushups_g01_c01.avi\n")
    for rel in ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "HandstandPushups/v_HandStandPushups_g08_c01.avi",
                "HandstandPushups/v_HandStandPushups_g01_c01.avi"):
        touch(tmp_path / "UCF-101" / rel)
    ds = load_dataset(tmp_path)
    assert ds.format == "ucf101" and ds.classes == ["ApplyEyeMakeup", "HandstandPushups"]
    assert [i.label for i in ds.train] == [0, 1] and [i.label for i in ds.val] == [1]
    assert ds.val[0].path == str(tmp_path / "UCF-101" / "HandstandPushups" / "v_HandStandPushups_g01_c01.avi")
    with pytest.raises(DatasetError, match="trainlist02"):
        load_dataset(tmp_path, split=2)


def test_label_map_is_saved(tmp_path):
    touch(tmp_path / "data" / "b" / "1.mp4")
    touch(tmp_path / "data" / "a" / "1.mp4")
    ds = load_dataset(tmp_path / "data")
    saved = json.loads(ds.save_label_map(tmp_path / "out" / "labels.json").read_text())
    assert saved["classes"] == ["a", "b"] and saved["class_to_index"] == {"a": 0, "b": 1}
    assert saved["format"] == "folder" and "seed 0" in saved["split"]


def test_unreadable_datasets(tmp_path):
    with pytest.raises(DatasetError):
        load_dataset(tmp_path / "nope")
    with pytest.raises(DatasetError):
        load_dataset(tmp_path)  # empty folder
    (tmp_path / "x.csv").write_text("path,label\nmissing.mp4,a\n")
    with pytest.raises(DatasetError, match="missing"):
        load_dataset(tmp_path / "x.csv")
    with pytest.raises(DatasetError, match="unknown format 'imagenet'; expected one of"):
        load_dataset(tmp_path, format="imagenet")


def test_every_format_is_a_registered_module_tried_in_detection_order():
    """A format is one module of pipeline/video/formats/ registering a DatasetFormat; FORMATS (the jobs' --format
    choices) lists them in the order detect_format tries them: specific layouts first, class folders last."""
    from pipeline.video.formats import FORMATS, get_format

    assert FORMATS == ("ssv2", "ucf101", "kinetics", "csv", "folder")
    for name in FORMATS:
        fmt = get_format(name)
        assert fmt.name == name and fmt.description and type(fmt).__module__ != "pipeline.video.formats.base"


@needs_ucf
def test_shared_ucf_dev_set():
    ds = load_dataset(UCF_DIR)
    assert ds.format == "csv"  # labels.csv: path,label,fps,frames,sha1
    assert ds.classes == sorted(p.name for p in UCF_DIR.iterdir() if p.is_dir())
    assert len(ds.train) + len(ds.val) == 60 and not ds.missing
    assert load_dataset(UCF_DIR, "folder").classes == ds.classes
