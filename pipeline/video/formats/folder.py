"""The "folder" format: ``root/<class>/**/<video>``, or ``root/train/<class>/...`` + ``root/val/<class>/...``
(``root/train/<class>/...`` alone is split like ``root/<class>/...``); classes are the sorted folder names."""
from __future__ import annotations

from pathlib import Path

from .base import DatasetFormat, VideoDataset, VideoItem, register_format
from .files import abs_path, by_label, not_videos_under, seeded_description, seeded_split, subdirs, videos_under


class Folder(DatasetFormat):
    name = "folder"
    description = "root/<class>/**/<video>, or root/train/<class>/... + root/val/<class>/..."
    detect_order = 90  # any folder of folders with videos: the last guess

    def detect(self, root: Path) -> bool:
        return root.is_dir() and any(videos_under(d) for d in subdirs(root))

    def load(self, root: Path, *, val_fraction: float, seed: int, split: int) -> VideoDataset:
        video_dirs = {d.name: d for d in subdirs(root) if videos_under(d)}
        if "train" in video_dirs and set(video_dirs) <= {"train", "val", "validation"}:  # split folders
            val_dir = video_dirs.get("val", video_dirs.get("validation"))
            if val_dir is None:  # train/<class>/... alone: split it like root/<class>/...
                return self.load(video_dirs["train"], val_fraction=val_fraction, seed=seed, split=split)
            parts = {"train": video_dirs["train"], "val": val_dir}
            classes = sorted({d.name for p in parts.values() for d in subdirs(p) if videos_under(d)})
            index = {c: i for i, c in enumerate(classes)}
            out = {name: [VideoItem(abs_path(v), index[d.name]) for d in subdirs(p) if d.name in index
                          for v in videos_under(d)] for name, p in parts.items()}
            return VideoDataset(abs_path(root), self.name, classes, by_label(out["train"]), by_label(out["val"]),
                                split=f"given: {parts['train'].name}/ and {parts['val'].name}/ folders",
                                ignored=not_videos_under(parts.values()))
        class_dirs = list(video_dirs.values())
        classes = [d.name for d in class_dirs]
        samples = [(abs_path(v), i) for i, d in enumerate(class_dirs) for v in videos_under(d)]
        train, val = seeded_split(samples, len(classes), val_fraction, seed)
        return VideoDataset(abs_path(root), self.name, classes, train, val,
                            split=seeded_description(val_fraction, seed), ignored=not_videos_under(subdirs(root)))

    def prepared_path(self, rel: Path, split: str, class_name: str) -> Path:
        """``<split>/<class>/<path below the class folder>``: the layout is the index."""
        parts = rel.parts
        k = parts.index(class_name) if class_name in parts[:-1] else len(parts) - 1
        return Path(split, class_name, *parts[k + 1:])


register_format(Folder())
