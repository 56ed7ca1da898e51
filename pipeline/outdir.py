"""The job's output folder: a local ``--out``, or a pyarrow filesystem URI with a local working copy synced to it
(:class:`OutDir`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any


class OutDir:
    """Where the job writes. A local ``--out`` is used as it is. A pyarrow filesystem URI (``s3://bucket/prefix``,
    ``gs://...``, ``file://...``) is the job's store and ``local`` its working copy (``cache_dir``): the search
    checkpoints (island search) and Ray Train's checkpoints are written to the store directly; the other files
    (``job.json``, the search outcome, the candidates' records, summaries, the synthetic data, and a snapshot of
    the MLflow SQLite store) are written locally and copied to the store after each stage (:meth:`push`); a
    rerun, on any machine, first fetches what its working copy lacks (:meth:`pull`)."""

    DIRECT = ("search/checkpoint/", "train/train/")  # read and written on the store by the search and Ray Train
    NOT_PULLED = DIRECT + ("mlruns/mlartifacts/",)  # MLflow reads its artifacts where they are
    DB = "mlruns/mlflow.db"

    def __init__(self, out_dir: str, cache_dir: str | None = None):
        import hashlib
        import os

        self.uri = out_dir.rstrip("/") if "://" in str(out_dir) else None
        self._seen: dict[str, tuple[int, int]] = {}
        self._dirs: set[str] = set()
        if self.uri is None:
            self.local = Path(out_dir).expanduser().resolve()
            self.fs = self.root = None
        else:
            from pipeline.search import resolve_fs

            self.fs, self.root = resolve_fs(self.uri)
            scheme, rest = self.uri.split("://", 1)
            base = Path(cache_dir or Path(os.environ.get("E3D_CACHE_DIR", "~/.cache/e3d-ray")) / "out").expanduser()
            name = "".join(c if c.isalnum() or c in "._-" else "_" for c in rest.split("?")[0])[-80:]
            self.local = (base / scheme / f"{name}-{hashlib.sha1(self.uri.encode()).hexdigest()[:8]}").resolve()
        self.local.mkdir(parents=True, exist_ok=True)

    @property
    def remote(self) -> bool:
        return self.uri is not None

    def where(self, sub: str) -> str:
        """``sub`` on the store (a URI), or the local path."""
        return f"{self.uri}/{sub}" if self.uri else str(self.local / sub)

    def _files(self) -> list[Any]:
        from pyarrow.fs import FileSelector, FileType

        infos = self.fs.get_file_info(FileSelector(self.root, recursive=True, allow_not_found=True))
        return [i for i in infos if i.type == FileType.File]

    def pull(self) -> int:
        """Fetch the store's files that the working copy lacks (or holds older, different ones of)."""
        if not self.remote:
            return 0
        fetched = 0
        for info in self._files():
            rel = info.path[len(self.root):].lstrip("/")
            if rel.startswith(self.NOT_PULLED) or rel.endswith(".tmp") or ".tmp-" in rel:
                continue
            dest = self.local / rel
            if dest.exists():
                st = dest.stat()
                newer = info.mtime is not None and info.mtime.timestamp() > st.st_mtime + 1
                if rel == self.DB or st.st_size == info.size or not newer:
                    self._mark(rel)
                    continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            with self.fs.open_input_stream(info.path) as src:
                dest.write_bytes(src.read())
            self._mark(rel)
            fetched += 1
        return fetched

    def push(self) -> int:
        """Copy new and changed local files to the store (the MLflow store as a consistent snapshot)."""
        if not self.remote:
            return 0
        import sqlite3
        import tempfile

        sent = 0
        for path in sorted(p for p in self.local.rglob("*") if p.is_file()):
            rel = path.relative_to(self.local).as_posix()
            if rel.startswith(self.DB) or path.suffix == ".tmp" or self._seen.get(rel) == self._stat(path):
                continue
            stat = self._stat(path)
            self._write(rel, path.read_bytes())
            self._seen[rel] = stat
            sent += 1
        db = self.local / self.DB
        if db.exists() and self._seen.get(self.DB) != self._stat(db):
            stat = self._stat(db)
            with tempfile.TemporaryDirectory() as tmp:
                snap = Path(tmp) / "mlflow.db"
                with sqlite3.connect(db) as src, sqlite3.connect(snap) as dst:
                    src.backup(dst)
                self._write(self.DB, snap.read_bytes())
            self._seen[self.DB] = stat
            sent += 1
        return sent

    def _write(self, rel: str, data: bytes) -> None:
        from pipeline.search.checkpoint import write_bytes_atomic

        path = f"{self.root}/{rel}"
        parent = path.rsplit("/", 1)[0]
        if parent not in self._dirs and self.fs.type_name not in ("s3", "gcs"):  # object stores need no
            self.fs.create_dir(parent, recursive=True)  # folders (and would get marker objects above --out)
            self._dirs.add(parent)
        write_bytes_atomic(self.fs, path, data)

    @staticmethod
    def _stat(path: Path) -> tuple[int, int]:
        st = path.stat()
        return st.st_size, st.st_mtime_ns

    def _mark(self, rel: str) -> None:
        path = self.local / rel
        if path.exists():
            self._seen[rel] = self._stat(path)

    def tracking(self, experiment: str) -> Any:
        """The job's MLflow store when no tracking URI is given: SQLite in the working copy (``mlruns/``);
        artifacts on the store for ``s3://``/``gs://`` (MLflow writes there itself), else in the working copy
        (copied by :meth:`push`)."""
        from pipeline.tracking import Tracking, default_tracking_uri

        if not self.remote:
            return Tracking.local(self.local / "mlruns", experiment)
        native = self.uri.split("://", 1)[0] in ("s3", "gs") and "?" not in self.uri
        artifacts = f"{self.uri}/mlruns/mlartifacts" if native else (self.local / "mlruns" / "mlartifacts").as_uri()
        return Tracking(default_tracking_uri(self.local / "mlruns"), experiment, artifacts)
