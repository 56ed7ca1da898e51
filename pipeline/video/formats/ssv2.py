"""The "ssv2" format: Something-Something v2, its labels JSON, train/validation JSON and ``<id>.webm`` files;
class indices are the labels JSON's."""
from __future__ import annotations

import json
from pathlib import Path

from .base import DatasetError, DatasetFormat, VideoDataset, VideoItem, register_format
from .files import abs_path, by_label, copy_into


def ssv2_files(root: Path) -> tuple[Path, Path, Path] | None:
    """(labels, train, validation) JSON files of Something-Something v2, if root has them."""
    for sub in ("", "labels", "annotations"):
        d = root / sub
        for prefix in ("something-something-v2-", ""):
            files = tuple(d / f"{prefix}{n}.json" for n in ("labels", "train", "validation"))
            if all(f.is_file() for f in files):
                return files  # type: ignore[return-value]
    return None


class SomethingSomethingV2(DatasetFormat):
    name = "ssv2"
    description = "Something-Something v2: labels, train and validation JSON files, <id>.webm videos"
    detect_order = 10
    prepared_suffix = ".webm"  # the index names <id>.webm: Matroska holding H.264

    def detect(self, root: Path) -> bool:
        return root.is_dir() and ssv2_files(root) is not None

    def load(self, root: Path, *, val_fraction: float, seed: int, split: int) -> VideoDataset:
        files = ssv2_files(root)
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
                    raise DatasetError(f"{file}: video {entry['id']} has a template not in {files[0].name}: "
                                       f"{template!r}")
                path = video_dir / f"{entry['id']}.webm"
                if path.is_file():
                    out[part].append(VideoItem(abs_path(path), index[template]))
                else:
                    missing.append(abs_path(path))
        return VideoDataset(abs_path(root), self.name, classes, by_label(out["train"]), by_label(out["val"]),
                            split=f"given: {files[1].name} / {files[2].name}", missing=sorted(missing))

    def write_index(self, ds: VideoDataset, dst: Path, done: list[dict]) -> list[Path]:
        """The three JSON files, copied (the prepared videos keep their ``<id>.webm`` names)."""
        return [copy_into(dst, ds.folder, f) for f in ssv2_files(Path(ds.root)) or ()]


register_format(SomethingSomethingV2())
