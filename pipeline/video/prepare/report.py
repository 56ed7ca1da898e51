"""What a preparation reports: a line per file, the summary (``prepare.json``) with the check that the prepared
copy loads with the source's classes, labels and splits, and the summary's lines."""
from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

from ..formats import VideoDataset, load_dataset
from .settings import PrepareSettings


def progress_line(k: int, n: int, r: dict) -> str:
    """The line of the ``k``-th finished file of ``n`` (its record ``r``)."""
    if r["status"] == "ok":
        return (f"[{k}/{n}] ok     {r['output']}: {r['frames_out']} frames, {r['width_out']}x{r['height_out']}, "
                f"{r['bytes_out'] / 1e6:.2f} MB, {r['cpu_seconds']:.2f} CPU-s")
    return f"[{k}/{n}] FAILED {r['source']} ({r['kind']}): {r['reason']}"


def compare_datasets(src: VideoDataset, dst: VideoDataset, records: list[dict], root: Path) -> list[str]:
    """Differences in classes, labels or splits between a source and its copy prepared into ``root``
    (empty: the same)."""
    problems = []
    if dst.classes != src.classes:
        lost = sorted(set(src.classes) - set(dst.classes))
        problems.append(f"classes differ (lost: {lost})" if lost else "classes differ")
    where = {os.path.realpath(it.path): (split, dst.classes[it.label])
             for split, items in (("train", dst.train), ("val", dst.val)) for it in items}
    for r in records:
        if r["status"] != "ok":
            continue
        got = where.get(os.path.realpath(root / r["output"]))
        if got != (r["split"], src.classes[r["label"]]):
            problems.append(f"{r['output']}: {got} instead of {(r['split'], src.classes[r['label']])}")
    return problems


def make_summary(ds: VideoDataset, dst: Path, records: list[dict], todo: list[dict], wall: float,
             settings: PrepareSettings, split: int) -> dict:
    """The summary of a preparation of ``ds`` into ``dst`` (what ``prepare.json`` holds): counts, sizes, this run's
    time, failures, and whether the prepared copy keeps the classes, labels and splits."""
    ok = [r for r in records if r["status"] == "ok"]
    failed = [r for r in records if r["status"] != "ok"]
    redone = {r["source"] for r in todo}
    this_run = [r for r in records if r["source"] in redone]
    cpu = sum(r.get("cpu_seconds") or 0 for r in this_run)
    try:
        problems = compare_datasets(ds, load_dataset(dst, ds.format, split=split), records, dst)
    except ValueError as e:  # DatasetError included: e.g. nothing was prepared
        problems = [f"prepared dataset does not load: {e}"]
    return {
        "source": ds.root, "destination": str(dst), "format": ds.format, "settings": asdict(settings),
        "videos": len(records), "ok": len(ok), "failed": len(failed), "prepared_now": len(this_run),
        "skipped_done": len(records) - len(this_run), "missing_in_source": len(ds.missing),
        "vfr": sum(1 for r in ok if r.get("vfr")), "retimed": sum(1 for r in ok if r.get("timing") == "retimed"),
        "bytes_in": sum(r.get("bytes_in") or 0 for r in ok), "bytes_out": sum(r.get("bytes_out") or 0 for r in ok),
        "wall_seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
        "videos_per_cpu_second": round(len(this_run) / cpu, 3) if cpu else None,
        "labels_and_splits_preserved": not problems, "problems": problems[:20],
        "failures": [{"source": r["source"], "kind": r["kind"], "reason": r["reason"]} for r in failed],
    }


def summary_lines(s: dict) -> list[str]:
    """The summary in a few lines for the console."""
    lines = [f"prepared {s['ok']}/{s['videos']} videos into {s['destination']} ({s['prepared_now']} now, "
             f"{s['skipped_done']} already done); failed {s['failed']}"]
    if s["prepared_now"]:
        lines.append(f"this run: {s['wall_seconds']:.1f} s wall, {s['cpu_seconds']:.1f} CPU-s, "
                     f"{s['videos_per_cpu_second']} videos per CPU-second")
    if s["bytes_in"]:
        lines.append(f"size: {s['bytes_in'] / 1e6:.1f} MB -> {s['bytes_out'] / 1e6:.1f} MB; "
                     f"variable frame rate kept: {s['vfr']}, retimed: {s['retimed']}")
    lines += [f"failed: {f['source']} ({f['kind']}): {f['reason']}" for f in s["failures"]]
    lines.append("labels and splits: " + ("preserved" if s["labels_and_splits_preserved"]
                                          else "DIFFER: " + "; ".join(s["problems"])))
    return lines
