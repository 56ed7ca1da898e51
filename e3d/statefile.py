"""State files a job reads back: written whole or not at all, checked when read, set aside when corrupt.

    write_json(path, data)          # temp file, fsync, rename; a SHA-256 of the content travels inside
    data = read_json(path)          # None when absent; CorruptFile when it does not parse or its checksum differs
    new = set_aside(path)           # path -> path.corrupt-<UTC time>: kept for a look, never deleted
    file_sha256(path)               # of any file (Parquet tables, checkpoints), streamed

A file written before checksums existed (no ``_sha256`` key) is trusted when it parses. Nothing here imports
Ray, MLflow or torch: the search's outcome files (:mod:`e3d.search_io`) use it as well as the pipeline.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

CHECKSUM_KEY = "_sha256"


class CorruptFile(ValueError):
    """A state file that does not read back (truncated, not JSON, wrong checksum); ``path`` names it."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


def _canonical(data: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=default).encode()


def _digest(data: Any, default: Callable[[Any], Any] | None = None) -> str:
    return hashlib.sha256(_canonical(data, default)).hexdigest()


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, flush it to the disk and rename it over ``path``:
    a reader sees the old file or the new one, never a part (a full disk leaves the old one in place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, data: dict[str, Any], *, indent: int | None = 2,
               default: Callable[[Any], Any] | None = None) -> Path:
    """Write the dict ``data`` as JSON with its checksum (key ``_sha256``), atomically."""
    plain = json.loads(_canonical(data, default))  # what a reader will parse (tuples as lists, defaults applied)
    doc = dict(plain) | {CHECKSUM_KEY: _digest(plain)}
    return write_bytes(path, (json.dumps(doc, indent=indent) + "\n").encode())


def read_json(path: str | os.PathLike) -> dict[str, Any] | None:
    """The dict written by :func:`write_json` (without its checksum key); None when ``path`` is absent.
    Raises :class:`CorruptFile` when it does not parse, is not an object, or its checksum differs."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        reason = "empty" if not raw.strip() else f"not JSON ({getattr(exc, 'msg', exc)})"
        raise CorruptFile(path, f"{reason}, {len(raw)} bytes") from None
    if not isinstance(doc, dict):
        raise CorruptFile(path, f"expected a JSON object, found {type(doc).__name__}")
    stored = doc.pop(CHECKSUM_KEY, None)
    if stored is not None and stored != _digest(doc):
        raise CorruptFile(path, "checksum mismatch (the content changed after it was written)")
    return doc


def file_sha256(path: str | os.PathLike, *, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def set_aside(path: str | os.PathLike) -> Path:
    """Rename a corrupt file or folder to ``<name>.corrupt-<UTC time>`` beside it (never deleted); returns
    the new path."""
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    new = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while new.exists():
        n += 1
        new = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    os.replace(path, new)
    return new
