"""The "csv" format: a CSV with a ``path,label`` header (other columns ignored, optional ``split`` column; no
header: ``path,label[,split]``), or ``train.csv`` + ``val.csv``; relative paths are relative to the CSV's folder.
Classes are the sorted labels; without a split column the split is seeded."""
from __future__ import annotations

import csv
import os
from pathlib import Path

from .base import DatasetError, DatasetFormat, VideoDataset, VideoItem, register_format
from .files import (abs_path, by_label, csv_header, csvs_in, seeded_description, seeded_split, split_of,
                    write_text)


def has_path_label(path: Path) -> bool:
    return {"path", "label"} <= set(csv_header(path))


def read_path_label_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a ``path,label[,split]`` CSV as dicts (header or not); raises DatasetError."""
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


def csv_field(value: str) -> str:
    """``value`` quoted for a CSV cell when it needs it."""
    return '"' + value.replace('"', '""') + '"' if any(c in value for c in ',"\n') else value


class CsvTable(DatasetFormat):
    name = "csv"
    description = "a CSV of path,label[,split] (or train.csv + val.csv); paths relative to the CSV's folder"
    detect_order = 40  # after kinetics, whose CSVs are CSVs too

    def detect(self, root: Path) -> bool:
        return root.is_file() or any(has_path_label(p) for p in csvs_in(root))  # a file: detect_format saw .csv

    def load(self, root: Path, *, val_fraction: float, seed: int, split: int) -> VideoDataset:
        if root.is_file():
            files = {"all": root}
        elif (root / "train.csv").is_file() and any((root / n).is_file() for n in ("val.csv", "validation.csv")):
            files = {"train": root / "train.csv",
                     "val": root / ("val.csv" if (root / "val.csv").is_file() else "validation.csv")}
        else:
            found = [p for p in sorted(root.glob("*.csv")) if has_path_label(p)]
            if not found:
                raise DatasetError(f"{root}: no CSV with a 'path,label' header")
            files = {"all": found[0]}
        rows: list[tuple[str, str, str | None]] = []  # (abs path, class name, split)
        for part, file in files.items():
            for r in read_path_label_csv(file):
                split_name = part if part != "all" else (split_of(r["split"], str(file)) if r.get("split") else None)
                rows.append((abs_path(file.parent / r["path"]), r["label"], split_name))
        missing = sorted({p for p, _, _ in rows if not os.path.isfile(p)})
        rows = [r for r in rows if os.path.isfile(r[0])]
        classes = sorted({c for _, c, _ in rows})
        index = {c: i for i, c in enumerate(classes)}
        source = ", ".join(str(f) for f in files.values())
        if any(s is not None for _, _, s in rows):
            train = [VideoItem(p, index[c]) for p, c, s in rows if s == "train"]
            val = [VideoItem(p, index[c]) for p, c, s in rows if s == "val"]
            how = f"given: {source}"
        else:
            train, val = seeded_split([(p, index[c]) for p, c, _ in rows], len(classes), val_fraction, seed)
            how = seeded_description(val_fraction, seed)
        return VideoDataset(abs_path(root), self.name, classes, by_label(train), by_label(val), split=how,
                            missing=missing)

    def write_index(self, ds: VideoDataset, dst: Path, done: list[dict]) -> list[Path]:
        """``labels.csv``: ``path,label,split`` of the prepared videos."""
        lines = ["path,label,split"] + [f"{csv_field(r['output'])},{csv_field(ds.classes[r['label']])},{r['split']}"
                                        for r in done]
        return [write_text(dst / "labels.csv", "\n".join(lines) + "\n")]


register_format(CsvTable())
