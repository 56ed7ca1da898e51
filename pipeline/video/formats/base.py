"""What every dataset format uses: the dataset types, the format contract and the registry of formats."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from e3d.registry import Registry


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

    @property
    def folder(self) -> Path:
        """The dataset's folder (``root``, or the folder of a CSV file given as root)."""
        root = Path(self.root)
        return root if root.is_dir() else root.parent


class DatasetFormat:
    """One dataset format: how to recognise it, read it, and write the index of a prepared copy.

    A format module subclasses this and registers an instance (``register_format(Folder())``);
    ``formats.detect_format`` asks the registered formats in increasing ``detect_order`` (specific layouts first,
    the plain class folders last), ``formats.load_dataset`` calls ``load``, and ``pipeline.video.prepare`` names
    the prepared videos with ``prepared_path``/``prepared_suffix`` and writes ``write_index``.
    """

    name: str
    description: str
    detect_order: int
    prepared_suffix = ".mp4"  # the container of the prepared videos (mp4 or webm)

    def detect(self, root: Path) -> bool:
        """True when ``root`` (a folder, or a .csv file) holds a dataset of this format."""
        raise NotImplementedError

    def load(self, root: Path, *, val_fraction: float, seed: int, split: int) -> VideoDataset:
        """The dataset at ``root``: ``val_fraction``/``seed`` split formats without a split of their own, ``split``
        picks an official split where there are several. Raises :class:`DatasetError`."""
        raise NotImplementedError

    def prepared_path(self, rel: Path, split: str, class_name: str) -> Path:
        """Where a prepared video goes below the destination, from its ``rel`` path below the dataset's folder
        (before the suffix is changed): by default the same place."""
        return rel

    def write_index(self, ds: VideoDataset, dst: Path, done: list[dict]) -> list[Path]:
        """Write the index files that make ``dst`` a dataset of this format holding the prepared videos ``done``
        (records with ``source``, ``output`` relative to ``dst``, ``label``, ``split``); returns the files."""
        return []

    def __repr__(self) -> str:
        return f"<dataset format {self.name}>"


DATASET_FORMATS: Registry[DatasetFormat] = Registry("dataset format")


def register_format(fmt: DatasetFormat) -> DatasetFormat:
    """Register an instance under ``fmt.name``."""
    return DATASET_FORMATS.add(fmt.name, fmt, fmt.description)
