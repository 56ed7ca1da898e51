"""The job: prepare every video of a dataset on Ray Data, resumably (:func:`prepare_dataset`)."""
from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from ..formats import get_format, load_dataset
from ..formats.files import write_text
from .layout import check_paths, plan
from .records import MANIFEST, is_done, load_records, record_path, save_record, source_id, write_manifest
from .report import make_summary, progress_line, summary_lines
from .settings import PrepareSettings
from .video import file_size, prepare_video_bounded

SUMMARY = "prepare.json"


def prepare_dataset(src: str | os.PathLike, dst: str | os.PathLike, *, format: str | None = None,
                    settings: PrepareSettings = PrepareSettings(), split: int = 1, val_fraction: float = 0.2,
                    seed: int = 0, retry_failed: bool = False, num_cpus: float = 1.0,
                    progress: Callable[[str], None] | None = print,
                    start_ray: Callable[[], Any] | None = None) -> dict:
    """Prepare every video of ``src`` into ``dst`` on Ray Data; returns the summary (also in prepare.json).

    ``format``/``split``/``val_fraction``/``seed`` read the source as ``formats.load_dataset``.
    Uses the running Ray session or starts one (``start_ray``, e.g. the jobs' quiet ``init_ray``; default a local
    Ray) when there are files to prepare. ``progress`` gets one line per file.
    Raises ``formats.DatasetError`` / ValueError for an unreadable source or bad paths, before any work.
    """
    check_paths(src, dst)
    ds = load_dataset(src, format, val_fraction=val_fraction, seed=seed, split=split)
    rows = plan(ds)
    dst = Path(os.path.abspath(dst))
    say = progress or (lambda _: None)
    records = load_records(dst, say)
    todo = [r for r in rows if not is_done(r, records.get(r["source"]), dst, settings, retry_failed)]
    say(f"{len(rows)} videos ({ds.format}, {len(ds.classes)} classes): {len(rows) - len(todo)} already done, "
        f"{len(todo)} to prepare")
    if todo:  # outputs are about the sources' size (docs/video.md: 0.5-0.6x at 256 short side)
        from pipeline.faults import check_free_space  # noqa: PLC0415

        check_free_space(dst, sum(file_size(r["source"]) or 0 for r in todo) + 16e6, f"preparing {len(todo)} videos",
                         say=say)
    for r in todo:  # a file whose output moves (e.g. another split seed): drop the old output
        old = records.get(r["source"], {}).get("output")
        if old and old != r["output"]:
            (dst / old).unlink(missing_ok=True)
    start = time.perf_counter()
    records.update(_run(todo, dst, settings, num_cpus, say, start_ray) if todo else {})
    wall = time.perf_counter() - start
    current = [records[r["source"]] | r for r in rows]
    _remove_stale(dst, {r["source"] for r in rows}, records)
    ok = [r for r in current if r["status"] == "ok"]
    get_format(ds.format).write_index(ds, dst, ok)
    write_manifest(dst / MANIFEST, current)
    summary = make_summary(ds, dst, current, todo, wall, settings, split)
    write_text(dst / SUMMARY, json.dumps(summary, indent=2))
    for line in summary_lines(summary):
        say(line)
    return summary


def _run(todo: list[dict], dst: Path, settings: PrepareSettings, num_cpus: float,
         say: Callable[[str], None], start_ray: Callable[[], Any] | None = None) -> dict[str, dict]:
    """One Ray Data task per file; returns the records by source (crashed tasks get a failed record)."""
    import ray

    started = not ray.is_initialized()
    if started:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        start_ray() if start_ray is not None else ray.init(include_dashboard=False)
    ctx = ray.data.DataContext.get_current()
    saved = ctx.enable_progress_bars, ctx.max_errored_blocks
    ctx.enable_progress_bars, ctx.max_errored_blocks = False, -1  # our own progress; a crashed task is one file
    out: dict[str, dict] = {}
    try:
        with warnings.catch_warnings():  # Ray 2.60's map() has no named max_retries; its default (-1) would
            warnings.simplefilter("ignore", DeprecationWarning)  # retry a file that kills its worker forever
            data = ray.data.from_items(todo, override_num_blocks=len(todo)).map(
                _prepare_row, fn_kwargs={"dst": str(dst), "settings": asdict(settings)}, num_cpus=num_cpus,
                max_retries=1)
        for row in data.iter_rows():
            record = json.loads(row["record"])
            out[record["source"]] = record
            say(progress_line(len(out), len(todo), record))
    finally:
        ctx.enable_progress_bars, ctx.max_errored_blocks = saved
        if started:
            ray.shutdown()
    for row in todo:
        if row["source"] not in out:  # the task died (worker crash) twice: report, do not stop
            record = row | {"status": "failed", "kind": "crash", "reason": "task crashed (worker died) twice",
                            "settings": settings.identity(), **source_id(row["source"])}
            Path(dst, row["output"] + ".part").unlink(missing_ok=True)
            save_record(dst, record)
            out[row["source"]] = record
            say(progress_line(len(out), len(todo), record))
    return out


def _remove_stale(dst: Path, planned: set[str], records: dict[str, dict]) -> None:
    """Outputs and records of sources no longer in the dataset (never anything this job did not write)."""
    for source, record in records.items():
        if source not in planned:
            if record.get("output"):
                (dst / record["output"]).unlink(missing_ok=True)
            record_path(dst, source).unlink(missing_ok=True)


def _prepare_row(row: dict, *, dst: str, settings: dict) -> dict:
    """Ray Data task body: prepare one file, record it; the record travels back as one JSON column."""
    s = PrepareSettings(**settings)
    record = prepare_video_bounded(row["source"], str(Path(dst, row["output"])), settings=s)
    record.update(row, settings=s.identity(), **source_id(row["source"]))
    save_record(Path(dst), record)
    return {"record": json.dumps(record)}
