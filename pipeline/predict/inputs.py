"""The videos to label: a split of any dataset format (labelled), or a folder or file of unlabelled videos.

    videos = list_videos("../shared/data/ucf101-6class", split="val")   # Videos(paths, labels, classes, ...)
    videos = list_videos("incoming/", format="files")                    # every video file under the folder

No Ray; reads indexes and folder listings only (nothing is decoded).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.video.formats import FORMATS, DatasetError, load_dataset

INPUT_FORMATS = FORMATS + ("files",)
SPLITS = ("all", "train", "val")


@dataclass
class Videos:
    """Paths in a fixed order with their true class names (None: unlabelled)."""

    paths: list[str]
    labels: list[str] | None
    description: str
    missing: list[str] = field(default_factory=list)   # listed by the dataset, not on disk
    ignored: list[str] = field(default_factory=list)   # files that are not videos by their extension


def _video_files(root: Path) -> list[str]:
    from pipeline.video.formats import VIDEO_EXTENSIONS

    if root.is_file():
        return [os.path.abspath(root)]
    return sorted(os.path.abspath(Path(d, f)) for d, _, files in os.walk(root) for f in files
                  if f.lower().endswith(VIDEO_EXTENSIONS) and not f.startswith("."))


def list_videos(data: str | os.PathLike, *, format: str | None = None, split: str = "all",
                seed: int = 0) -> Videos:
    """The videos of ``data``. A dataset (``format`` one of ``pipeline.video.formats.FORMATS`` or detected) gives
    its ``split`` ("val" and "train" are the job's split for the same ``seed``; "all": both) with labels;
    ``format="files"``, a single video file, or a folder whose format is not recognised gives every video file
    under it, unlabelled. Raises ``DatasetError`` when there is nothing to label."""
    root = Path(data).expanduser()
    if not root.exists():
        raise DatasetError(f"{root}: no such file or folder")
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {SPLITS}, got {split!r}")
    if format == "files" or (format is None and root.is_file() and root.suffix.lower() != ".csv"):
        paths = _video_files(root)
        if not paths:
            raise DatasetError(f"{root}: no video files")
        return Videos(paths, None, f"{len(paths)} unlabelled videos under {root}")
    try:
        ds = load_dataset(root, format, seed=seed)
    except DatasetError:
        if format is not None or not root.is_dir():
            raise
        paths = _video_files(root)
        if not paths:
            raise
        return Videos(paths, None, f"{len(paths)} unlabelled videos under {root}")
    items = {"all": ds.train + ds.val, "train": ds.train, "val": ds.val}[split]
    if not items:
        raise DatasetError(f"{root}: the {split} split is empty")
    return Videos([it.path for it in items], [ds.classes[it.label] for it in items],
                  f"{len(items)} videos of {ds.root} ({ds.format}, split {split}: {ds.split})", ds.missing, ds.ignored)
