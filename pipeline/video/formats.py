"""Video dataset formats -> (absolute path, label index) lists with a train/val split.

Formats (``load_dataset(root, format=None)`` detects the format when it is None; docs/video.md has
examples):

- "folder":   ``root/<class>/**/<video>``, or ``root/train/<class>/...`` + ``root/val/<class>/...``
              (``root/train/<class>/...`` alone is split like ``root/<class>/...``)
- "csv":      a CSV with a ``path,label`` header (other columns ignored, optional ``split`` column),
              or ``train.csv`` + ``val.csv``; relative paths are relative to the CSV's folder
- "kinetics": the Kinetics CSVs (``label,youtube_id,time_start,time_end,split``) with clips named
              ``<youtube_id>_<start:06d>_<end:06d>.<ext>`` (or ``<youtube_id>.<ext>``) anywhere under root
- "ssv2":     Something-Something v2: labels JSON, train/validation JSON, ``<id>.webm`` files
- "ucf101":   ``classInd.txt`` + ``trainlist0N.txt``/``testlist0N.txt`` (split N) and the videos

Class indices are deterministic: the dataset's own numbering where it has one (UCF101 classInd,
SSv2 labels JSON), else the sorted class names. Formats without a split get a stratified, seeded
split: per class, the videos sorted by path are permuted with ``numpy.random.default_rng([seed, class
index])`` and the first ``round(n * val_fraction)`` (at most n - 1) go to val. Listed videos that
are not on disk are left out and recorded in ``VideoDataset.missing``.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

FORMATS = ("folder", "csv", "kinetics", "ssv2", "ucf101")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv",
                    ".ogv", ".3gp")
KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end")
_TRAIN = {"train", "training"}
_VAL = {"val", "valid", "validate", "validation", "test", "testing"}


class DatasetError(ValueError):
    """The dataset itself cannot be read (unknown layout, missing index files, no videos)."""


@dataclass(frozen=True)
class VideoItem:
    """One video: absolute ``path`` and class index ``label``."""

    path: str
    label: int


@dataclass
class VideoDataset:
    """A labelled video collection: ``classes[label]`` names each class index."""

    root: str
    format: str
    classes: list[str]
    train: list[VideoItem]
    val: list[VideoItem]
    split: str  # how train/val were made
    missing: list[str] = field(default_factory=list)  # listed videos not found on disk
    ignored: list[str] = field(default_factory=list)  # files found where videos are looked for, not videos

    def label_map(self) -> dict:
        """The class <-> index mapping with where it came from (what ``save_label_map`` writes)."""
        return {"format": self.format, "root": self.root, "split": self.split, "classes": self.classes,
                "class_to_index": {c: i for i, c in enumerate(self.classes)}}

    def save_label_map(self, path: str | os.PathLike) -> Path:
        """Write ``label_map()`` as JSON to ``path``; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.label_map(), indent=2))
        return path

    def counts(self) -> dict[str, dict[str, int]]:
        """Videos per class name in each split."""
        out = {}
        for name, items in (("train", self.train), ("val", self.val)):
            per = np.bincount([it.label for it in items], minlength=len(self.classes))
            out[name] = {c: int(n) for c, n in zip(self.classes, per)}
        return out


def load_dataset(root: str | os.PathLike, format: str | None = None, *, val_fraction: float = 0.2,
                 seed: int = 0, split: int = 1) -> VideoDataset:
    """Read a dataset in one of ``FORMATS`` (detected when ``format`` is None).

    ``val_fraction``/``seed`` make the split of formats without one; ``split`` picks UCF101's
    official split (1-3). Raises ``DatasetError`` when the dataset cannot be read.
    """
    root = Path(os.path.abspath(os.fspath(root)))
    if not root.exists():
        raise DatasetError(f"{root}: no such file or directory")
    format = format or detect_format(root)
    loaders = {"folder": _load_folder, "csv": _load_csv, "kinetics": _load_kinetics, "ssv2": _load_ssv2,
               "ucf101": lambda r, f, s: _load_ucf101(r, split)}
    if format not in loaders:
        raise DatasetError(f"unknown format {format!r}; expected one of {FORMATS}")
    ds = loaders[format](root, val_fraction, seed)
    if not ds.train and not ds.val:
        raise DatasetError(f"{root}: no videos found for format {format!r}"
                           + (f" ({len(ds.missing)} listed but missing)" if ds.missing else ""))
    return ds


def detect_format(root: Path) -> str:
    """Guess the format of ``root`` (a folder or a CSV file); raises ``DatasetError``."""
    if root.is_file():
        if root.suffix.lower() == ".csv":
            return "kinetics" if _is_kinetics_csv(root) else "csv"
        raise DatasetError(f"{root}: a dataset is a folder or a .csv file")
    if _ssv2_files(root) is not None:
        return "ssv2"
    if _find_file(root, "classInd.txt") is not None:
        return "ucf101"
    csvs = sorted(root.glob("*.csv")) + sorted(root.glob("annotations/*.csv"))
    if any(_is_kinetics_csv(p) for p in csvs):
        return "kinetics"
    if any({"path", "label"} <= set(_csv_header(p)) for p in csvs):
        return "csv"
    if any(_videos_under(d) for d in _subdirs(root)):
        return "folder"
    raise DatasetError(f"{root}: cannot detect the dataset format (looked for {', '.join(FORMATS)})")


# ---------------------------------------------------------------- helpers

def _abs(path: Path) -> str:
    return os.path.abspath(path)


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _is_video(name: str) -> bool:
    return name.lower().endswith(VIDEO_EXTENSIONS)


def _videos_under(path: Path) -> list[Path]:
    return sorted(Path(d, f) for d, _, files in os.walk(path) for f in files if _is_video(f))


def _not_videos_under(paths: Iterable[Path]) -> list[str]:
    """Files under ``paths`` left out for their extension (``.gif``, ``.swf``, ...); hidden files are not
    counted (``.DS_Store``)."""
    return sorted(_abs(Path(d, f)) for p in paths for d, _, files in os.walk(p) for f in files
                  if not f.startswith(".") and not _is_video(f))


def _find_file(root: Path, name: str, subdirs: Iterable[str] = ("", "ucfTrainTestlist", "annotations",
                                                                  "splits", "labels")) -> Path | None:
    for sub in subdirs:
        if (root / sub / name).is_file():
            return root / sub / name
    return None


def _csv_header(path: Path) -> list[str]:
    with open(path, newline="") as f:
        return [c.strip().lower() for c in next(csv.reader(f), [])]


def _is_kinetics_csv(path: Path) -> bool:
    return set(KINETICS_COLUMNS) <= set(_csv_header(path))


def _split_of(value: str, where: str) -> str | None:
    v = value.strip().lower()
    if v in _TRAIN:
        return "train"
    if v in _VAL:
        return "val"
    raise DatasetError(f"{where}: unknown split {value!r}")


def _seeded_split(samples: list[tuple[str, int]], num_classes: int, val_fraction: float,
                  seed: int) -> tuple[list[VideoItem], list[VideoItem]]:
    """Stratified split: per class, permute the sorted paths with rng([seed, class]); first round(n*f) -> val."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    train, val = [], []
    for label in range(num_classes):
        paths = sorted(p for p, lab in samples if lab == label)
        order = np.random.default_rng([seed, label]).permutation(len(paths))
        n_val = min(int(round(len(paths) * val_fraction)), max(len(paths) - 1, 0))
        val += [VideoItem(paths[i], label) for i in sorted(order[:n_val])]
        train += [VideoItem(paths[i], label) for i in sorted(order[n_val:])]
    return train, val


def _sorted(items: list[VideoItem]) -> list[VideoItem]:
    return sorted(items, key=lambda it: (it.label, it.path))


# ---------------------------------------------------------------- formats

def _load_folder(root: Path, val_fraction: float, seed: int) -> VideoDataset:
    video_dirs = {d.name: d for d in _subdirs(root) if _videos_under(d)}
    if "train" in video_dirs and set(video_dirs) <= {"train", "val", "validation"}:  # split folders
        val_dir = video_dirs.get("val", video_dirs.get("validation"))
        if val_dir is None:  # train/<class>/... alone: split it like root/<class>/...
            return _load_folder(video_dirs["train"], val_fraction, seed)
        parts = {"train": video_dirs["train"], "val": val_dir}
        classes = sorted({d.name for p in parts.values() for d in _subdirs(p) if _videos_under(d)})
        index = {c: i for i, c in enumerate(classes)}
        out = {name: [VideoItem(_abs(v), index[d.name]) for d in _subdirs(p) if d.name in index
                      for v in _videos_under(d)] for name, p in parts.items()}
        return VideoDataset(_abs(root), "folder", classes, _sorted(out["train"]), _sorted(out["val"]),
                            split=f"given: {parts['train'].name}/ and {parts['val'].name}/ folders",
                            ignored=_not_videos_under(parts.values()))
    class_dirs = list(video_dirs.values())
    classes = [d.name for d in class_dirs]
    samples = [(_abs(v), i) for i, d in enumerate(class_dirs) for v in _videos_under(d)]
    train, val = _seeded_split(samples, len(classes), val_fraction, seed)
    return VideoDataset(_abs(root), "folder", classes, train, val,
                        split=f"seeded: {val_fraction:g} of each class to val, seed {seed}",
                        ignored=_not_videos_under(_subdirs(root)))


def _read_path_label_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return []
    header = [c.strip().lower() for c in rows[0]]
    if {"path", "label"} <= set(header):
        return [dict(zip(header, (c.strip() for c in r))) for r in rows[1:] if r]
    if set(header) & {"path", "label", "split"}:  # a header, without one of the columns that are needed
        missing = [c for c in ("path", "label") if c not in header]
        raise DatasetError(f"{path}: the header ({','.join(header)}) has no {' or '.join(repr(c) for c in missing)} "
                           f"column; expected 'path,label[,split]'")
    if len(header) >= 2:  # no header: path,label[,split]
        keys = ["path", "label", "split"][:len(header)]
        return [dict(zip(keys, (c.strip() for c in r))) for r in rows if r]
    raise DatasetError(f"{path}: expected 'path,label' columns")


def _load_csv(root: Path, val_fraction: float, seed: int) -> VideoDataset:
    if root.is_file():
        files = {"all": root}
    elif (root / "train.csv").is_file() and any((root / n).is_file() for n in ("val.csv", "validation.csv")):
        files = {"train": root / "train.csv",
                 "val": root / ("val.csv" if (root / "val.csv").is_file() else "validation.csv")}
    else:
        found = [p for p in sorted(root.glob("*.csv")) if {"path", "label"} <= set(_csv_header(p))]
        if not found:
            raise DatasetError(f"{root}: no CSV with a 'path,label' header")
        files = {"all": found[0]}
    rows: list[tuple[str, str, str | None]] = []  # (abs path, class name, split)
    for part, file in files.items():
        for r in _read_path_label_csv(file):
            split = part if part != "all" else (_split_of(r["split"], str(file)) if r.get("split") else None)
            rows.append((_abs(file.parent / r["path"]), r["label"], split))
    missing = sorted({p for p, _, _ in rows if not os.path.isfile(p)})
    rows = [r for r in rows if os.path.isfile(r[0])]
    classes = sorted({c for _, c, _ in rows})
    index = {c: i for i, c in enumerate(classes)}
    source = ", ".join(str(f) for f in files.values())
    if any(s is not None for _, _, s in rows):
        train = [VideoItem(p, index[c]) for p, c, s in rows if s == "train"]
        val = [VideoItem(p, index[c]) for p, c, s in rows if s == "val"]
        split = f"given: {source}"
    else:
        train, val = _seeded_split([(p, index[c]) for p, c, _ in rows], len(classes), val_fraction, seed)
        split = f"seeded: {val_fraction:g} of each class to val, seed {seed}"
    return VideoDataset(_abs(root), "csv", classes, _sorted(train), _sorted(val), split=split, missing=missing)


def _load_kinetics(root: Path, val_fraction: float, seed: int) -> VideoDataset:
    csv_files = [root] if root.is_file() else [
        p for p in sorted(root.glob("*.csv")) + sorted(root.glob("annotations/*.csv")) if _is_kinetics_csv(p)]
    if not csv_files:
        raise DatasetError(f"{root}: no Kinetics CSV (columns {', '.join(KINETICS_COLUMNS)})")
    clip_root = root.parent if root.is_file() else root
    on_disk: dict[str, str] = {}
    for d, _, files in os.walk(clip_root):
        for f in files:
            if _is_video(f):
                on_disk.setdefault(os.path.splitext(f)[0], os.path.join(d, f))
    rows: list[tuple[str, str, str]] = []  # (file on disk or the missing clip's name, label, split)
    missing = []
    for file in csv_files:
        with open(file, newline="") as f:
            for r in csv.DictReader(f):
                r = {k.strip().lower(): (v or "").strip() for k, v in r.items() if k}
                split_name = r.get("split") or (file.stem if file.stem.lower() in _TRAIN | _VAL else "train")
                if split_name.lower() in {"test", "testing"}:
                    continue  # Kinetics' test split: not used for training or validation
                yid = r["youtube_id"]
                name = f"{yid}_{int(float(r['time_start'])):06d}_{int(float(r['time_end'])):06d}"
                path = on_disk.get(name) or on_disk.get(yid)
                if path is None:
                    missing.append(name)
                else:
                    rows.append((path, r["label"], _split_of(split_name, str(file))))
    classes = sorted({lab for _, lab, _ in rows})
    index = {c: i for i, c in enumerate(classes)}
    items = {s: [VideoItem(_abs(Path(p)), index[lab]) for p, lab, sp in rows if sp == s] for s in ("train", "val")}
    return VideoDataset(_abs(root), "kinetics", classes, _sorted(items["train"]), _sorted(items["val"]),
                        split="given: the CSVs' split column (test rows left out)", missing=sorted(missing))


def _ssv2_files(root: Path) -> tuple[Path, Path, Path] | None:
    """(labels, train, validation) JSON files of Something-Something v2, if root has them."""
    for sub in ("", "labels", "annotations"):
        d = root / sub
        for prefix in ("something-something-v2-", ""):
            files = tuple(d / f"{prefix}{n}.json" for n in ("labels", "train", "validation"))
            if all(f.is_file() for f in files):
                return files  # type: ignore[return-value]
    return None


def _load_ssv2(root: Path, val_fraction: float, seed: int) -> VideoDataset:
    files = _ssv2_files(root)
    if files is None:
        raise DatasetError(f"{root}: no Something-Something v2 labels/train/validation JSON files")
    labels = json.loads(files[0].read_text())
    classes = [name for name, _ in sorted(labels.items(), key=lambda kv: int(kv[1]))]
    index = {c: i for i, c in enumerate(classes)}
    video_dir = next((root / d for d in ("20bn-something-something-v2", "videos") if (root / d).is_dir()), root)
    out: dict[str, list[VideoItem]] = {}
    missing = []
    for part, file in (("train", files[1]), ("val", files[2])):
        out[part] = []
        for entry in json.loads(file.read_text()):
            template = entry["template"].replace("[", "").replace("]", "")
            if template not in index:
                raise DatasetError(f"{file}: video {entry['id']} has a template not in {files[0].name}: {template!r}")
            path = video_dir / f"{entry['id']}.webm"
            if path.is_file():
                out[part].append(VideoItem(_abs(path), index[template]))
            else:
                missing.append(_abs(path))
    return VideoDataset(_abs(root), "ssv2", classes, _sorted(out["train"]), _sorted(out["val"]),
                        split=f"given: {files[1].name} / {files[2].name}", missing=sorted(missing))


def _load_ucf101(root: Path, split: int) -> VideoDataset:
    class_ind = _find_file(root, "classInd.txt")
    if class_ind is None:
        raise DatasetError(f"{root}: no classInd.txt")
    lists = class_ind.parent
    train_list, test_list = lists / f"trainlist0{split}.txt", lists / f"testlist0{split}.txt"
    for f in (train_list, test_list):
        if not f.is_file():
            raise DatasetError(f"{root}: split {split} needs {f}")
    numbered = [line.split() for line in class_ind.read_text().splitlines() if line.strip()]
    classes = [name for _, name in sorted(numbered, key=lambda x: int(x[0]))]
    index = {c.lower(): i for i, c in enumerate(classes)}
    entries = {part: [line.split()[0] for line in f.read_text().splitlines() if line.strip()]
               for part, f in (("train", train_list), ("val", test_list))}
    first = entries["train"][0] if entries["train"] else ""
    video_dir = next((root / d for d in ("UCF-101", "UCF101", "videos", "") if (root / d / first).is_file()), root)
    out: dict[str, list[VideoItem]] = {"train": [], "val": []}
    missing = []
    for part, rel_paths in entries.items():
        for rel in rel_paths:
            label = index.get(rel.replace("\\", "/").split("/")[0].lower())
            if label is None:
                raise DatasetError(f"{root}: {rel}: class folder not in classInd.txt")
            path = video_dir / rel
            if path.is_file():
                out[part].append(VideoItem(_abs(path), label))
            else:
                missing.append(_abs(path))
    return VideoDataset(_abs(root), "ucf101", classes, _sorted(out["train"]), _sorted(out["val"]),
                        split=f"given: official split {split} ({train_list.name} / {test_list.name})",
                        missing=sorted(missing))
