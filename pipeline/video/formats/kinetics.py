"""The "kinetics" format: the Kinetics CSVs (``label,youtube_id,time_start,time_end,split``) with clips named
``<youtube_id>_<start:06d>_<end:06d>.<ext>`` (or ``<youtube_id>.<ext>``) anywhere under root; test rows are left
out. Classes are the sorted labels."""
from __future__ import annotations

import csv
import os
from pathlib import Path

from .base import DatasetError, DatasetFormat, VideoDataset, VideoItem, register_format
from .files import TRAIN_NAMES, VAL_NAMES, abs_path, by_label, copy_into, csv_header, csvs_in, is_video, split_of

KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end")


def is_kinetics_csv(path: Path) -> bool:
    return set(KINETICS_COLUMNS) <= set(csv_header(path))


def kinetics_csvs(root: Path) -> list[Path]:
    """The Kinetics CSVs of ``root`` (itself when it is one)."""
    return [root] if root.is_file() else [p for p in csvs_in(root) if is_kinetics_csv(p)]


class Kinetics(DatasetFormat):
    name = "kinetics"
    description = "Kinetics CSVs (label,youtube_id,time_start,time_end,split) and the clips under root"
    detect_order = 30

    def detect(self, root: Path) -> bool:
        return is_kinetics_csv(root) if root.is_file() else any(is_kinetics_csv(p) for p in csvs_in(root))

    def load(self, root: Path, *, val_fraction: float, seed: int, split: int) -> VideoDataset:
        csv_files = kinetics_csvs(root)
        if not csv_files:
            raise DatasetError(f"{root}: no Kinetics CSV (columns {', '.join(KINETICS_COLUMNS)})")
        clip_root = root.parent if root.is_file() else root
        on_disk: dict[str, str] = {}
        for d, _, files in os.walk(clip_root):
            for f in files:
                if is_video(f):
                    on_disk.setdefault(os.path.splitext(f)[0], os.path.join(d, f))
        rows: list[tuple[str, str, str]] = []  # (file on disk or the missing clip's name, label, split)
        missing = []
        for file in csv_files:
            with open(file, newline="") as f:
                for r in csv.DictReader(f):
                    r = {k.strip().lower(): (v or "").strip() for k, v in r.items() if k}
                    split_name = r.get("split") or (file.stem if file.stem.lower() in TRAIN_NAMES | VAL_NAMES
                                                    else "train")
                    if split_name.lower() in {"test", "testing"}:
                        continue  # Kinetics' test split: not used for training or validation
                    yid = r["youtube_id"]
                    name = f"{yid}_{int(float(r['time_start'])):06d}_{int(float(r['time_end'])):06d}"
                    path = on_disk.get(name) or on_disk.get(yid)
                    if path is None:
                        missing.append(name)
                    else:
                        rows.append((path, r["label"], split_of(split_name, str(file))))
        classes = sorted({lab for _, lab, _ in rows})
        index = {c: i for i, c in enumerate(classes)}
        items = {s: [VideoItem(abs_path(Path(p)), index[lab]) for p, lab, sp in rows if sp == s]
                 for s in ("train", "val")}
        return VideoDataset(abs_path(root), self.name, classes, by_label(items["train"]), by_label(items["val"]),
                            split="given: the CSVs' split column (test rows left out)", missing=sorted(missing))

    def write_index(self, ds: VideoDataset, dst: Path, done: list[dict]) -> list[Path]:
        """The Kinetics CSVs, copied (the prepared clips keep their names)."""
        return [copy_into(dst, ds.folder, f) for f in kinetics_csvs(Path(ds.root))]


register_format(Kinetics())
