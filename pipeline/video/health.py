"""Dataset health check before a long run: what is there, what decodes, how fast (no Ray).

``check_dataset`` probes every video (or a seeded sample), decodes one training-style clip from it
(random position, short side ``size``, random ``size``x``size`` crop, normalised) and summarises:
counts per class, decodable/undecodable files with reasons, duration/fps/resolution, and clip
throughput. Bad files are findings in the report, never exceptions; only a dataset that cannot be
read at all raises (``formats.DatasetError``).
"""
from __future__ import annotations

import os
import time
import zlib
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .decode import VideoDecodeError, decode_clip, probe
from .formats import load_dataset
from .transforms import normalize, train_view


def check_file(path: str, frames: int, sampling_rate: int, size: int, timeout: float, seed: int) -> dict:
    """Probe one file and time one training clip from it: a JSON-ready dict with ``ok`` and, if not, why."""
    out: dict[str, Any] = {"path": path}
    rng = np.random.default_rng([seed, zlib.crc32(path.encode())])
    try:
        info = probe(path, timeout=timeout)
        out.update(frames=info.num_frames, fps=info.fps, duration=info.duration, width=info.width,
                   height=info.height, codec=info.codec, pix_fmt=info.pix_fmt)
        start = time.perf_counter()
        clip = decode_clip(path, frames, sampling_rate, float(rng.random()), size=size, timeout=timeout)
        normalize(train_view(clip, size, rng))
        out.update(ok=True, clip_s=time.perf_counter() - start)
    except Exception as e:  # every failure is a finding
        kind, reason = (e.kind, e.reason) if isinstance(e, VideoDecodeError) else ("error", repr(e))
        out.update(ok=False, kind=kind, reason=reason)
    return out


def _stats(values: list[float]) -> dict | None:
    if not values:
        return None
    a = np.asarray(values, dtype=float)
    return {"min": float(a.min()), "median": float(np.median(a)), "mean": float(a.mean()), "max": float(a.max())}


def check_dataset(root: str, format: str | None = None, *, frames: int = 16, sampling_rate: int = 5,
                  size: int = 224, limit: int | None = None, workers: int = 1, timeout: float = 30.0,
                  seed: int = 0) -> dict:
    """The health report of the dataset at ``root`` (see the module docstring); JSON-ready.

    ``limit`` checks a seeded random sample of that many videos; ``workers`` > 1 checks files in
    that many processes.
    """
    ds = load_dataset(root, format)
    items = [(split, it) for split, part in (("train", ds.train), ("val", ds.val)) for it in part]
    if limit is not None and limit < len(items):
        pick = np.random.default_rng(seed).choice(len(items), size=limit, replace=False)
        items = [items[i] for i in sorted(pick)]
    args = [(it.path, frames, sampling_rate, size, timeout, seed) for _, it in items]
    start = time.perf_counter()
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(check_file, *zip(*args), chunksize=4)) if args else []
    else:
        results = [check_file(*a) for a in args]
    wall = time.perf_counter() - start
    for (split, it), r in zip(items, results):
        r.update(split=split, label=ds.classes[it.label])
    good = [r for r in results if r["ok"]]
    bad = [r for r in results if not r["ok"]]
    span = (frames - 1) * sampling_rate + 1
    probed = [r for r in results if "frames" in r]
    return {
        "dataset": {"root": ds.root, "format": ds.format, "num_classes": len(ds.classes), "classes": ds.classes,
                    "split": ds.split, "train": len(ds.train), "val": len(ds.val),
                    "missing": len(ds.missing), "missing_examples": ds.missing[:20],
                    "ignored": len(ds.ignored), "ignored_files": ds.ignored,
                    "ignored_by_extension": dict(Counter(Path(p).suffix.lower() or "(none)" for p in ds.ignored))},
        "counts": ds.counts(),
        "clip": {"frames": frames, "sampling_rate": sampling_rate, "size": size, "span_frames": span},
        "files": {"checked": len(results), "decodable": len(good), "undecodable": len(bad),
                  "by_kind": dict(Counter(r["kind"] for r in bad)),
                  "shorter_than_clip": sum(1 for r in probed if r["frames"] < span)},
        "bad_files": [{"path": r["path"], "kind": r["kind"], "reason": r["reason"]} for r in bad],
        "videos": {
            "frames": _stats([r["frames"] for r in probed]),
            "duration_s": _stats([r["duration"] for r in probed if r["duration"] is not None]),
            "fps": _stats([r["fps"] for r in probed if r["fps"]]),
            "width": _stats([r["width"] for r in probed]),
            "height": _stats([r["height"] for r in probed]),
            "resolutions": dict(Counter(f"{r['width']}x{r['height']}" for r in probed).most_common(10)),
            "codecs": dict(Counter(r["codec"] for r in probed)),
            "pix_fmts": dict(Counter(str(r["pix_fmt"]) for r in probed)),
        },
        "throughput": {
            "clips_per_s_per_core": len(good) / sum(r["clip_s"] for r in good) if good else None,
            "clips_per_s": len(good) / wall if good and wall > 0 else None,
            "workers": max(1, workers), "wall_s": wall,
        },
    }


def format_report(report: dict) -> str:
    """A short human-readable rendering of ``check_dataset``'s report."""
    d, f, v, t = report["dataset"], report["files"], report["videos"], report["throughput"]
    lines = [f"dataset {d['root']} ({d['format']}): {d['num_classes']} classes, {d['train']} train / {d['val']} val"
             f" videos; split {d['split']}"]
    if d["missing"]:
        lines.append(f"  {d['missing']} listed videos missing on disk, e.g. {d['missing_examples'][:3]}")
    if d.get("ignored"):
        lines.append(f"  {d['ignored']} files ignored (not a video extension: {d['ignored_by_extension']}):")
        lines.extend(f"    IGNORED {p}" for p in d["ignored_files"][:20])
        if d["ignored"] > 20:
            lines.append(f"    ... and {d['ignored'] - 20} more (all in the JSON report)")
    width = max((len(c) for c in d["classes"]), default=5)
    lines.append(f"  {'class':{width}s}  train    val")
    for c in d["classes"]:
        lines.append(f"  {c:{width}s} {report['counts']['train'][c]:6d} {report['counts']['val'][c]:6d}")
    lines.append(f"files: {f['checked']} checked, {f['decodable']} decodable, {f['undecodable']} undecodable"
                 f" {f['by_kind'] or ''}; {f['shorter_than_clip']} shorter than the clip"
                 f" ({report['clip']['span_frames']} frames)")
    for b in report["bad_files"]:
        lines.append(f"  BAD {b['path']} [{b['kind']}] {b['reason']}")
    for key in ("frames", "duration_s", "fps", "width", "height"):
        s = v[key]
        if s:
            lines.append(f"  {key:10s} min {s['min']:.4g}  median {s['median']:.4g}  max {s['max']:.4g}")
    lines.append(f"  resolutions {v['resolutions']}  codecs {v['codecs']}  pixel formats {v['pix_fmts']}")
    if t["clips_per_s_per_core"]:
        lines.append(f"throughput: {t['clips_per_s_per_core']:.1f} clips/s per core, {t['clips_per_s']:.1f} clips/s"
                     f" with {t['workers']} worker(s)")
    return "\n".join(lines)


def default_workers() -> int:
    """One checking process per available core."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
