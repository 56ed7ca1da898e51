"""Where each prepared video goes: the source and destination checked, one row per video (source, output
relative to the destination, label, split), named as the dataset's format asks (``DatasetFormat.prepared_path``
and ``prepared_suffix``)."""
from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path

from ..formats import DatasetError, VideoDataset, get_format


def check_paths(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """FileNotFoundError when SRC is missing; ValueError when DST and SRC's folder overlap (DST inside
    SRC or around it) or DST is a file."""
    src_path = Path(os.path.realpath(src))
    if not src_path.exists():
        raise FileNotFoundError(f"{src}: no such file or directory")
    src_dir = src_path if src_path.is_dir() else src_path.parent
    dst_path = Path(os.path.realpath(dst))
    if dst_path == src_dir or src_dir in dst_path.parents:
        raise ValueError(f"{dst} is inside the source dataset {src_dir}")
    if dst_path in src_dir.parents:
        raise ValueError(f"{dst} contains the source dataset {src_dir}")
    if dst_path.exists() and not dst_path.is_dir():
        raise ValueError(f"{dst} exists and is not a folder")


def plan(ds: VideoDataset) -> list[dict]:
    """One row per video: source, output (relative to DST), label, split. Raises DatasetError on clashes.

    folder: ``{train,val}/<class>/<path below the class folder>``; ssv2: the same relative path
    (``<id>.webm``); others: the path relative to the dataset's folder (outside it: ``external/``).
    The suffix becomes .mp4 (ssv2 keeps .webm); files whose names differ only in their extension (``a.avi``,
    ``a.webm``) keep it before the new one (``a.avi.mp4``, ``a.webm.mp4``).
    """
    fmt = get_format(ds.format)
    base, rows = ds.folder, []
    suffix = fmt.prepared_suffix
    for split, items in (("train", ds.train), ("val", ds.val)):
        for item in items:
            rel = fmt.prepared_path(Path(os.path.relpath(item.path, base)), split, ds.classes[item.label])
            if rel.parts[0] == "..":
                rel = Path("external", hashlib.sha1(item.path.encode()).hexdigest()[:10], rel.name)
            rows.append({"source": item.path, "output": rel, "label": item.label, "split": split})
    stems = Counter(r["output"].with_suffix(suffix) for r in rows)
    seen: dict[str, str] = {}
    for r in rows:
        rel = r["output"]
        out = (rel.with_suffix(suffix) if stems[rel.with_suffix(suffix)] == 1 else rel.with_name(rel.name + suffix))
        r["output"] = out.as_posix()
        if r["output"] in seen:
            raise DatasetError(f"{r['source']} and {seen[r['output']]} would both be written to {r['output']}")
        seen[r["output"]] = r["source"]
    return rows
