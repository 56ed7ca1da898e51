"""Video dataset formats -> (absolute path, label index) lists with a train/val split.

Formats (``load_dataset(root, format=None)`` detects the format when it is None; docs/video.md has
examples), one module each, registered in :data:`base.DATASET_FORMATS` (discovered: a new format is one module):

- "folder":   ``root/<class>/**/<video>``, or ``root/train/<class>/...`` + ``root/val/<class>/...``
              (``root/train/<class>/...`` alone is split like ``root/<class>/...``)
- "csv":      a CSV with a ``path,label`` header (other columns ignored, optional ``split`` column),
              or ``train.csv`` + ``val.csv``; relative paths are relative to the CSV's folder
- "kinetics": the Kinetics CSVs (``label,youtube_id,time_start,time_end,split``) with clips named
              ``<youtube_id>_<start:06d>_<end:06d>.<ext>`` (or ``<youtube_id>.<ext>``) anywhere under root
- "ssv2":     Something-Something v2: labels JSON, train/validation JSON, ``<id>.webm`` files
- "ucf101":   ``classInd.txt`` + ``trainlist0N.txt``/``testlist0N.txt`` (split N) and the videos

Each format (a :class:`base.DatasetFormat`) says how to detect it, load it, and write the index of a prepared
copy (:mod:`pipeline.video.prepare`). Class indices are deterministic: the dataset's own numbering where it has
one (UCF101 classInd, SSv2 labels JSON), else the sorted class names. Formats without a split get a stratified,
seeded split: per class, the videos sorted by path are permuted with ``numpy.random.default_rng([seed, class
index])`` and the first ``round(n * val_fraction)`` (at most n - 1) go to val. Listed videos that are not on
disk are left out and recorded in ``VideoDataset.missing``. Nothing here imports torch or PyAV.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
from pathlib import Path

from .base import DATASET_FORMATS, DatasetError, DatasetFormat, VideoDataset, VideoItem
from .files import VIDEO_EXTENSIONS

for _module in pkgutil.iter_modules(__path__):  # every format module registers its format
    importlib.import_module(f"{__name__}.{_module.name}")

FORMATS: tuple[str, ...] = tuple(sorted(DATASET_FORMATS.names(), key=lambda n: DATASET_FORMATS.get(n).detect_order))
"""The names of the registered formats, in the order :func:`detect_format` tries them."""


def get_format(name: str) -> DatasetFormat:
    """The registered format ``name``; raises DatasetError naming the known ones."""
    if name not in DATASET_FORMATS:
        raise DatasetError(f"unknown format {name!r}; expected one of {FORMATS}")
    return DATASET_FORMATS.get(name)


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
    ds = get_format(format).load(root, val_fraction=val_fraction, seed=seed, split=split)
    if not ds.train and not ds.val:
        raise DatasetError(f"{root}: no videos found for format {format!r}"
                           + (f" ({len(ds.missing)} listed but missing)" if ds.missing else ""))
    return ds


def detect_format(root: Path) -> str:
    """Guess the format of ``root`` (a folder or a CSV file); raises ``DatasetError``."""
    if root.is_file() and root.suffix.lower() != ".csv":
        raise DatasetError(f"{root}: a dataset is a folder or a .csv file")
    for name in FORMATS:
        if DATASET_FORMATS.get(name).detect(root):
            return name
    raise DatasetError(f"{root}: cannot detect the dataset format (looked for {', '.join(FORMATS)})")


__all__ = ["FORMATS", "VIDEO_EXTENSIONS", "DatasetError", "DatasetFormat", "VideoDataset", "VideoItem",
           "detect_format", "get_format", "load_dataset"]
