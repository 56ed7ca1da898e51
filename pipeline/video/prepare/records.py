"""What a preparation leaves in the destination besides the videos: one record per finished file under
``DST/.prepare/records/`` (written atomically by the file's task; a rerun skips files whose record still matches)
and ``DST/manifest.parquet`` (every file's record)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

from ..formats import DatasetError
from ..formats.files import write_text
from .settings import PrepareSettings

RECORDS_DIR = Path(".prepare") / "records"
MANIFEST = "manifest.parquet"
MANIFEST_COLUMNS = ("source", "output", "label", "split", "status", "kind", "reason", "frames_in", "frames_out",
                    "width_out", "height_out", "fps_in", "fps_out", "vfr", "timing", "keyint", "min_psnr",
                    "checked_frames", "bytes_in", "bytes_out", "seconds", "cpu_seconds")


def record_path(dst: Path, source: str) -> Path:
    """Where the record of ``source`` lives."""
    return dst / RECORDS_DIR / (hashlib.sha1(source.encode()).hexdigest()[:20] + ".json")


def save_record(dst: Path, record: dict) -> None:
    """Write ``record`` (atomically) where :func:`record_path` says."""
    write_text(record_path(dst, record["source"]), json.dumps(record))


def load_records(dst: Path, say: Callable[[str], None] = print) -> dict[str, dict]:
    """The records of earlier runs; a corrupt one is set aside (``*.corrupt-<time>``) and its file redone."""
    from e3d.statefile import set_aside  # noqa: PLC0415

    out, bad = {}, []
    for path in sorted((dst / RECORDS_DIR).glob("*.json")):
        try:
            record = json.loads(path.read_text())
            out[record["source"]] = record
        except (ValueError, KeyError, TypeError):
            bad.append(set_aside(path))
    if bad:
        say(f"{len(bad)} corrupt record(s) under {dst / RECORDS_DIR} set aside (e.g. {bad[0].name}); their videos "
            f"are prepared again")
    return out


def source_id(path: str) -> dict:
    """The size and mtime of a source file, which its record must match for the file to count as done."""
    try:
        st = os.stat(path)
        return {"source_size": st.st_size, "source_mtime_ns": st.st_mtime_ns}
    except OSError:
        return {"source_size": None, "source_mtime_ns": None}


def is_done(row: dict, record: dict | None, dst: Path, settings: PrepareSettings, retry_failed: bool) -> bool:
    """Whether the planned ``row`` needs no work: its ``record`` matches the output, the settings and the source, and
    the output is there (a failed file counts as done unless ``retry_failed``)."""
    if record is None or record.get("output") != row["output"] or record.get("settings") != settings.identity():
        return False
    if any(record.get(k) != v for k, v in source_id(row["source"]).items()):
        return False
    if record["status"] != "ok":
        return not retry_failed
    out = dst / row["output"]
    return out.is_file() and out.stat().st_size == record.get("bytes_out")


def write_manifest(path: Path, records: list[dict]) -> None:
    """``records`` as the Parquet manifest (columns ``MANIFEST_COLUMNS``, page checksums), atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([{k: r.get(k) for k in MANIFEST_COLUMNS} for r in records])
    tmp = path.with_name(path.name + ".part")
    pq.write_table(table, tmp, write_page_checksum=True)
    os.replace(tmp, path)


def read_manifest(dst: str | os.PathLike) -> list[dict]:
    """The manifest of a prepared dataset as a list of records."""
    import pyarrow.parquet as pq

    path = Path(dst) / MANIFEST
    try:
        return pq.read_table(path, page_checksum_verification=True).to_pylist()
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError; FileNotFoundError an OSError
        raise DatasetError(f"{path}: unreadable manifest ({exc}); rerun jobs/prepare_data.py to rewrite it") from None
