"""Checkpoints of the island search as Parquet on any pyarrow filesystem.

Layout under ``<out_dir>/checkpoint/`` (``out_dir`` is a local path, a URI that
``pyarrow.fs.FileSystem.from_uri`` understands, or a path on an explicit ``pyarrow.fs.FileSystem``)::

    state.parquet                 one row per island: round, RNG state and counters (JSON); the file's
                                  schema metadata ``e3d.search`` holds the settings, the search config, the
                                  names of the two files below and the MLflow run id. Written last: the commit.
    population-r000012.parquet    every island's members in order (role "member"), and the migrants waiting
                                  to enter each island at the next round (role "immigrant"), one row each:
                                  the genome (stem, stages, head), score, FLOPs, params, layers,
                                  insertion number. (The specs as JSON are in the final population.parquet.)
    history-r000012.parquet       one row per island and round plus one per round for the whole search
                                  (island = -1).

Each file is written to a temporary name and then moved over its final name (an atomic rename on a local
disk), with Parquet's page checksums. ``state.parquet`` names the population and history files of its round,
and older rounds' files are deleted only after it is committed, so a reader always sees one complete round,
whenever the writer died. The round before stays too (``state-prev.parquet`` and its files): when the last
round does not read back (a copy cut short, a disk fault), :func:`read_meta` sets it aside (renamed
``*.corrupt-<time>``, never deleted) and the search resumes from the round before.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .island import Member

FORMAT_VERSION = 1
META_KEY = b"e3d.search"
CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.parquet"
PREVIOUS_FILE = "state-prev.parquet"  # the round before the last, kept to fall back to


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, or does not match the search being resumed."""


# -- filesystems -----------------------------------------------------------------------------------
def resolve_fs(out_dir: str | Path, filesystem: pafs.FileSystem | None = None) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path)`` for a local path, a URI (``s3://``, ``gs://``, ``file://``, ``mock://``...)
    or a path on an explicit ``filesystem``."""
    text = str(out_dir)
    if filesystem is not None:
        return filesystem, text.rstrip("/") or "/"
    if "://" in text:
        fs, path = pafs.FileSystem.from_uri(text)
        return fs, path.rstrip("/")
    return pafs.LocalFileSystem(), str(Path(text).expanduser().resolve())


def is_local(fs: pafs.FileSystem) -> bool:
    return isinstance(fs, pafs.LocalFileSystem)


def join(*parts: str) -> str:
    return "/".join([parts[0].rstrip("/")] + [p.strip("/") for p in parts[1:]])


def exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def write_table_atomic(fs: pafs.FileSystem, path: str, table: pa.Table) -> None:
    """Write ``table`` to a temporary file beside ``path`` and move it over ``path``."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        pq.write_table(table, tmp, filesystem=fs, write_page_checksum=True)
    except BaseException:  # e.g. a full disk: no half-written temporary left behind
        if exists(fs, tmp):
            fs.delete_file(tmp)
        raise
    try:
        fs.move(tmp, path)  # LocalFileSystem: rename(2), atomic and replacing
    except OSError:  # stores whose move refuses to replace
        if exists(fs, path):
            fs.delete_file(path)
        fs.move(tmp, path)


def write_bytes_atomic(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
    with fs.open_output_stream(tmp) as out:
        out.write(data)
    try:
        fs.move(tmp, path)
    except OSError:
        if exists(fs, path):
            fs.delete_file(path)
        fs.move(tmp, path)


# -- the checkpoint ------------------------------------------------------------------------------------
@dataclass
class Checkpoint:
    """The whole search state after ``round`` completed rounds.

    ``islands``: each island's ``Evolution.state_dict()`` (members as :class:`~pipeline.search.island.Member`);
    ``immigrants``: per island, the members that enter it at the start of the next round; ``history``: the rows of ``history.parquet`` so
    far; ``meta``: settings, config and bookkeeping (MLflow run id, restarts, elapsed time).
    """

    round: int
    islands: list[dict[str, Any]]
    immigrants: list[list[Member]]
    history: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)
    history_table: pa.Table | None = None  # the same rows, prebuilt (the driver appends to it round by round)

    @property
    def settings(self) -> dict[str, Any]:
        return self.meta["settings"]

    @property
    def config(self) -> dict[str, Any]:
        return self.meta["config"]


GENE = 5  # kt, k, out, bottleneck, layers
_STAGES_TYPE = pa.list_(pa.list_(pa.int32(), GENE))
_POP_SCHEMA = pa.schema([
    ("island", pa.int32()), ("role", pa.string()), ("position", pa.int32()), ("score", pa.float64()),
    ("flops", pa.int64()), ("params", pa.int64()), ("layers", pa.int32()), ("seq", pa.int64()),
    ("stem", pa.int32()), ("stages", _STAGES_TYPE), ("head", pa.int32()),
])


def _stages_array(stages: list[Any]) -> pa.Array:
    """``[[[kt, k, out, btn, layers], ...], ...]`` as list<fixed_size_list<int32, 5>>, via numpy (pyarrow's
    conversion of nested Python lists costs ~25 ms for 1000 members; this ~1 ms)."""
    counts = np.fromiter((len(s) for s in stages), dtype=np.int32, count=len(stages))
    flat: list[int] = []
    for s in stages:
        for gene in s:
            flat.extend(gene)
    flat = np.array(flat, dtype=np.int32)
    offsets = np.zeros(len(stages) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    return pa.ListArray.from_arrays(_int32(offsets), pa.FixedSizeListArray.from_arrays(_int32(flat), GENE))


def _int32(values: np.ndarray) -> pa.Array:
    """Zero-copy int32 Arrow array (``pa.array(ndarray)`` takes ~50 ms for 25k values with numpy 2.4 here)."""
    values = np.ascontiguousarray(values, dtype=np.int32)
    return pa.Array.from_buffers(pa.int32(), len(values), [None, pa.py_buffer(values)])


def population_table(islands: Sequence[dict[str, Any]], immigrants: Sequence[Sequence[Member]]) -> pa.Table:
    """One row per member (and waiting immigrant): the :class:`Member` fields plus island, role, position.

    Built column by column: this runs after every round, on the driver, while the islands compute.
    """
    cols: dict[str, list] = {name: [] for name in _POP_SCHEMA.names}
    for role, groups in (("member", [s["members"] for s in islands]), ("immigrant", immigrants)):
        for i, members in enumerate(groups):
            n = len(members)
            cols["island"] += [i] * n
            cols["role"] += [role] * n
            cols["position"] += range(n)
            if any(len(g) != GENE for m in members for g in m.stages):
                raise CheckpointError(f"island {i}: a stage gene is not [kt, k, out, bottleneck, layers]")
            for name, column in zip(Member._fields, zip(*members)):
                cols[name] += column
    arrays = [_stages_array(cols[name]) if name == "stages" else pa.array(cols[name], type=_POP_SCHEMA.field(name).type)
              for name in _POP_SCHEMA.names]
    return pa.Table.from_arrays(arrays, schema=_POP_SCHEMA)


def _state_table(ckpt: Checkpoint, files: dict[str, str]) -> pa.Table:
    rows = []
    for i, state in enumerate(ckpt.islands):
        rest = {k: v for k, v in state.items() if k != "members"}
        scores = [m.score for m in state["members"]]
        rows.append({
            "island": i, "round": ckpt.round, "iterations": int(state.get("iterations", 0)),
            "population": len(scores), "best": max(scores) if scores else None,
            "state_json": json.dumps(rest, separators=(",", ":")),
        })
    table = pa.Table.from_pylist(rows, schema=pa.schema([
        ("island", pa.int32()), ("round", pa.int32()), ("iterations", pa.int64()), ("population", pa.int32()),
        ("best", pa.float64()), ("state_json", pa.string())]))
    meta = dict(ckpt.meta) | {"format": FORMAT_VERSION, "round": ckpt.round, "islands": len(ckpt.islands),
                              "files": files}
    return table.replace_schema_metadata({META_KEY: json.dumps(meta, default=str).encode()})


def history_table(history: Sequence[dict[str, Any]]) -> pa.Table:
    if not history:
        return pa.table({"round": pa.array([], pa.int32()), "island": pa.array([], pa.int32())})
    return pa.Table.from_pylist(list(history))


def checkpoint_dir(root: str) -> str:
    return join(root, CHECKPOINT_DIR)


def save_checkpoint(fs: pafs.FileSystem, root: str, ckpt: Checkpoint) -> str:
    """Write ``ckpt`` under ``<root>/checkpoint`` (commit = ``state.parquet``); return the state file path."""
    cdir = checkpoint_dir(root)
    fs.create_dir(cdir, recursive=True)
    tag = f"r{ckpt.round:06d}"
    files = {"population": f"population-{tag}.parquet", "history": f"history-{tag}.parquet"}
    write_table_atomic(fs, join(cdir, files["population"]), population_table(ckpt.islands, ckpt.immigrants))
    history = ckpt.history_table if ckpt.history_table is not None else history_table(ckpt.history)
    write_table_atomic(fs, join(cdir, files["history"]), history)
    state_path = join(cdir, STATE_FILE)
    keep = set(files.values()) | {STATE_FILE, PREVIOUS_FILE}
    if exists(fs, state_path):  # the last committed round becomes the one to fall back to
        try:
            previous = _meta_of(pq.read_schema(state_path, filesystem=fs), state_path)
            write_bytes_atomic(fs, join(cdir, PREVIOUS_FILE), _read_bytes(fs, state_path))
            keep |= set(previous.get("files", {}).values())
        except (OSError, ValueError, CheckpointError):  # unreadable: nothing to fall back to
            pass
    elif exists(fs, join(cdir, PREVIOUS_FILE)):
        try:
            previous = _meta_of(pq.read_schema(join(cdir, PREVIOUS_FILE), filesystem=fs), cdir)
            keep |= set(previous.get("files", {}).values())
        except (OSError, ValueError, CheckpointError):
            pass
    write_table_atomic(fs, state_path, _state_table(ckpt, files))
    # the commit is done: older rounds' files (and temporaries of a writer that died) can go
    for info in fs.get_file_info(pafs.FileSelector(cdir)):
        if info.type == pafs.FileType.File and info.base_name not in keep:
            name = info.base_name
            if name.startswith(("population-r", "history-r")) or ".tmp-" in name:
                try:
                    fs.delete_file(info.path)
                except OSError:  # pragma: no cover - a concurrent cleanup
                    pass
    return state_path


def _read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as fh:
        return fh.read()


def _meta_of(schema: pa.Schema, path: str) -> dict[str, Any]:
    raw = (schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise CheckpointError(f"{path}: not an e3d search checkpoint (no {META_KEY.decode()} metadata)")
    return json.loads(raw)


def _verified_meta(fs: pafs.FileSystem, cdir: str, state_name: str) -> dict[str, Any]:
    """The metadata of ``state_name`` after reading it and the files it names in full (page checksums
    verified); raises (OSError, ValueError: pyarrow's ArrowInvalid; KeyError) when one does not read back."""
    path = join(cdir, state_name)
    meta = _meta_of(pq.read_schema(path, filesystem=fs), path)
    pq.read_table(path, filesystem=fs, page_checksum_verification=True)
    for name in (meta["files"]["population"], meta["files"]["history"]):
        pq.read_table(join(cdir, name), filesystem=fs, page_checksum_verification=True)
    return meta


def _set_aside(fs: pafs.FileSystem, path: str) -> str:
    import time  # noqa: PLC0415

    new = f"{path}.corrupt-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:4]}"
    fs.move(path, new)
    return new


def read_meta(fs: pafs.FileSystem, root: str) -> dict[str, Any] | None:
    """The committed checkpoint's metadata, or None when there is no checkpoint under ``root``.

    The checkpoint is read in full first: when it does not read back, its state file is set aside (renamed,
    never deleted) and the round before (``state-prev.parquet``) takes its place; when neither reads back,
    None (the search starts over). Each is reported on stderr, naming the file."""
    import sys  # noqa: PLC0415

    cdir = checkpoint_dir(root)
    path = join(cdir, STATE_FILE)
    for name in (STATE_FILE, PREVIOUS_FILE):
        candidate = join(cdir, name)
        if not exists(fs, candidate):
            continue
        try:
            meta = _verified_meta(fs, cdir, name)
        except CheckpointError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            moved = _set_aside(fs, candidate)
            print(f"[search] checkpoint {candidate} does not read back ({type(exc).__name__}: {exc}): set aside as "
                  f"{moved.rsplit('/', 1)[-1]}", file=sys.stderr)
            continue
        if name == PREVIOUS_FILE:  # the fallback becomes the checkpoint
            write_bytes_atomic(fs, path, _read_bytes(fs, candidate))
            print(f"[search] resuming from the checkpoint of round {meta.get('round')}", file=sys.stderr)
        return meta
    return None


def load_checkpoint(fs: pafs.FileSystem, root: str) -> Checkpoint | None:
    """The last committed checkpoint under ``root`` (None when there is none)."""
    meta = read_meta(fs, root)
    if meta is None:
        return None
    if meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint format {meta.get('format')!r} is not supported (expected {FORMAT_VERSION})")
    cdir = checkpoint_dir(root)
    state = pq.read_table(join(cdir, STATE_FILE), filesystem=fs, page_checksum_verification=True).to_pylist()
    n = int(meta["islands"])
    if sorted(r["island"] for r in state) != list(range(n)):
        raise CheckpointError(f"{cdir}/{STATE_FILE}: expected rows for islands 0..{n - 1}")
    try:
        pop = pq.read_table(join(cdir, meta["files"]["population"]), filesystem=fs,
                            page_checksum_verification=True).to_pylist()
        history_table = pq.read_table(join(cdir, meta["files"]["history"]), filesystem=fs,
                                      page_checksum_verification=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint under {cdir} is incomplete: {exc}") from None
    members: list[list[tuple[int, Member]]] = [[] for _ in range(n)]
    immigrants: list[list[tuple[int, Member]]] = [[] for _ in range(n)]
    for r in pop:
        member = Member(**{k: r[k] for k in Member._fields})
        (members if r["role"] == "member" else immigrants)[r["island"]].append((r["position"], member))
    history = history_table.to_pylist()
    history_table = history_table.replace_schema_metadata(None)
    islands = []
    for row in sorted(state, key=lambda r: r["island"]):
        island_state = json.loads(row["state_json"])
        island_state["members"] = [m for _, m in sorted(members[row["island"]], key=lambda t: t[0])]
        islands.append(island_state)
    incoming = [[m for _, m in sorted(rows, key=lambda t: t[0])] for rows in immigrants]
    return Checkpoint(round=int(meta["round"]), islands=islands, immigrants=incoming, history=history,
                      meta={k: v for k, v in meta.items() if k not in ("format", "round", "islands", "files")},
                      history_table=history_table)
