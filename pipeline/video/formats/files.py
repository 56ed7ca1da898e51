"""Helpers the dataset formats share: finding videos and index files, CSV headers, split names, the seeded split,
writing index files."""
from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path
from typing import Iterable

import numpy as np

from .base import DatasetError, VideoItem

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv",
                    ".ogv", ".3gp")
TRAIN_NAMES = {"train", "training"}
VAL_NAMES = {"val", "valid", "validate", "validation", "test", "testing"}


def abs_path(path: Path) -> str:
    return os.path.abspath(path)


def subdirs(path: Path) -> list[Path]:
    """The folders in ``path`` (hidden ones left out), sorted."""
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def is_video(name: str) -> bool:
    return name.lower().endswith(VIDEO_EXTENSIONS)


def videos_under(path: Path) -> list[Path]:
    return sorted(Path(d, f) for d, _, files in os.walk(path) for f in files if is_video(f))


def not_videos_under(paths: Iterable[Path]) -> list[str]:
    """Files under ``paths`` left out for their extension (``.gif``, ``.swf``, ...); hidden files are not
    counted (``.DS_Store``)."""
    return sorted(abs_path(Path(d, f)) for p in paths for d, _, files in os.walk(p) for f in files
                  if not f.startswith(".") and not is_video(f))


def find_file(root: Path, name: str, subfolders: Iterable[str] = ("", "ucfTrainTestlist", "annotations",
                                                                    "splits", "labels")) -> Path | None:
    """``root/<sub>/name`` for the first of ``subfolders`` that has it, else None."""
    for sub in subfolders:
        if (root / sub / name).is_file():
            return root / sub / name
    return None


def csv_header(path: Path) -> list[str]:
    """The first row of a CSV file, lower case."""
    with open(path, newline="") as f:
        return [c.strip().lower() for c in next(csv.reader(f), [])]


def csvs_in(root: Path) -> list[Path]:
    """The CSV files in the dataset folder ``root`` and its ``annotations/`` folder."""
    return sorted(root.glob("*.csv")) + sorted(root.glob("annotations/*.csv"))


def split_of(value: str, where: str) -> str:
    """"train" or "val" for a split name (``training``, ``validation``, ``test``, ...); raises DatasetError."""
    v = value.strip().lower()
    if v in TRAIN_NAMES:
        return "train"
    if v in VAL_NAMES:
        return "val"
    raise DatasetError(f"{where}: unknown split {value!r}")


def seeded_split(samples: list[tuple[str, int]], num_classes: int, val_fraction: float,
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


def by_label(items: list[VideoItem]) -> list[VideoItem]:
    """``items`` sorted by label, then path."""
    return sorted(items, key=lambda it: (it.label, it.path))


def seeded_description(val_fraction: float, seed: int) -> str:
    return f"seeded: {val_fraction:g} of each class to val, seed {seed}"


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` (via ``<path>.part``, renamed: never half a file), creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def copy_into(dst: Path, base: Path, path: Path) -> Path:
    """Copy ``path`` (below ``base``) to the same place below ``dst``; returns the copy."""
    target = dst / path.relative_to(base)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target)
    return target
