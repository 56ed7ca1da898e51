"""The "ucf101" format: ``classInd.txt`` + ``trainlist0N.txt``/``testlist0N.txt`` (official split N) and the
videos; class indices are classInd's."""
from __future__ import annotations

from pathlib import Path

from .base import DatasetError, DatasetFormat, VideoDataset, VideoItem, register_format
from .files import abs_path, by_label, copy_into, find_file, write_text


def list_name(path: str) -> str:
    """``<class folder>/<file>`` of a UCF101 path (how its lists name videos)."""
    return "/".join(Path(path.replace("\\", "/")).parts[-2:])


class Ucf101(DatasetFormat):
    name = "ucf101"
    description = "UCF101: classInd.txt, trainlist0N.txt/testlist0N.txt (official split N) and the videos"
    detect_order = 20

    def detect(self, root: Path) -> bool:
        return root.is_dir() and find_file(root, "classInd.txt") is not None

    def load(self, root: Path, *, val_fraction: float, seed: int, split: int) -> VideoDataset:
        class_ind = find_file(root, "classInd.txt")
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
        video_dir = next((root / d for d in ("UCF-101", "UCF101", "videos", "") if (root / d / first).is_file()),
                         root)
        out: dict[str, list[VideoItem]] = {"train": [], "val": []}
        missing = []
        for part, rel_paths in entries.items():
            for rel in rel_paths:
                label = index.get(rel.replace("\\", "/").split("/")[0].lower())
                if label is None:
                    raise DatasetError(f"{root}: {rel}: class folder not in classInd.txt")
                path = video_dir / rel
                if path.is_file():
                    out[part].append(VideoItem(abs_path(path), label))
                else:
                    missing.append(abs_path(path))
        return VideoDataset(abs_path(root), self.name, classes, by_label(out["train"]), by_label(out["val"]),
                            split=f"given: official split {split} ({train_list.name} / {test_list.name})",
                            missing=sorted(missing))

    def write_index(self, ds: VideoDataset, dst: Path, done: list[dict]) -> list[Path]:
        """``classInd.txt`` copied and every split list rewritten to the prepared videos (the others left out)."""
        base = ds.folder
        class_ind = find_file(Path(ds.root), "classInd.txt")
        written = [copy_into(dst, base, class_ind)]
        renamed = {list_name(r["source"]): r["output"] for r in done}
        for lst in sorted(class_ind.parent.glob("*list0[0-9].txt")):
            kept = []
            for line in lst.read_text().splitlines():
                parts = line.split()
                if parts and list_name(parts[0]) in renamed:
                    kept.append(" ".join([list_name(renamed[list_name(parts[0])])] + parts[1:]))
            written.append(write_text(dst / lst.relative_to(base), "\n".join(kept) + "\n"))
        return written


register_format(Ucf101())
