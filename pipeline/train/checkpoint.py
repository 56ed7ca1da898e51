"""A training checkpoint on disk: ``state.pt`` (everything to resume) and ``meta.json`` (epoch, metrics, and the
SHA-256 and size of ``state.pt``), and the check of a Ray Train run's folder before it resumes.

``state.pt`` holds ``model``, ``optimizer``, ``scheduler``, ``scaler`` (state dicts), ``epoch`` (completed),
``history`` (every epoch's metrics), ``final`` (the multi-view evaluation, once done), ``spec``, ``recipe``
and ``dropout``: enough to rebuild the trained network without the run's config.

:func:`repair_run` runs before ``trainer.fit()`` resumes a run (``build_trainer`` calls it, for every loop): a
checkpoint folder whose ``state.pt`` does not match its checksum (a copy cut short, a full disk) is set aside
(renamed ``*.corrupt-<time>``, never deleted), and when that leaves Ray Train's checkpoint-manager snapshot
pointing at it, or the snapshot itself does not parse (Ray writes it in place: a full disk leaves it empty),
the snapshot is set aside and rebuilt from the checkpoints that verify, so Ray resumes from the last good one
(Ray keeps two per run). :func:`finished_checkpoint` then tells a run that is already done.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from e3d.model import build_model
from e3d.spec import ArchSpec

STATE_FILE = "state.pt"
META_FILE = "meta.json"
SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"  # Ray Train V2's record of the run's checkpoints


class CorruptCheckpoint(RuntimeError):
    """A checkpoint folder whose state does not read back; the message names the folder and why."""


def save_state(folder: str | os.PathLike, state: dict[str, Any], metrics: dict[str, Any]) -> None:
    path = Path(folder) / STATE_FILE
    torch.save(state, path)
    meta = {"epoch": state["epoch"], "metrics": metrics, "state_sha256": _sha256(path),
            "state_bytes": path.stat().st_size}
    (Path(folder) / META_FILE).write_text(json.dumps(meta, default=str))


def load_state(checkpoint_dir: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """The checkpoint's state; :class:`CorruptCheckpoint` (naming the folder) when it does not verify."""
    problem = verify_checkpoint(checkpoint_dir)
    if problem:
        raise CorruptCheckpoint(f"checkpoint {checkpoint_dir} is corrupt: {problem}")
    return torch.load(Path(checkpoint_dir) / STATE_FILE, map_location=map_location, weights_only=False)


def model_from_checkpoint(checkpoint_dir: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """The trained network (eval mode, CPU) and the checkpoint's state dict."""
    state = load_state(checkpoint_dir)
    spec = ArchSpec.from_dict(state["spec"])
    model = build_model(spec, dropout=state.get("dropout", 0.5))
    model.load_state_dict(state["model"])
    return model.eval(), state


# -- verification ------------------------------------------------------------------------------------------
def _sha256(path: Path, fs: Any = None) -> str:
    h = hashlib.sha256()
    with (fs.open_input_stream(str(path)) if fs is not None else open(path, "rb")) as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def read_meta(folder: str | os.PathLike, fs: Any = None) -> dict[str, Any] | None:
    """A checkpoint's ``meta.json`` (None when absent or unreadable); ``fs``: a pyarrow filesystem."""
    try:
        if fs is None:
            raw = (Path(folder) / META_FILE).read_bytes()
        else:
            with fs.open_input_stream(f"{folder}/{META_FILE}") as fh:
                raw = fh.read()
        meta = json.loads(raw)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def verify_checkpoint(folder: str | os.PathLike, fs: Any = None) -> str | None:
    """None when the checkpoint reads back, else what is wrong: ``state.pt`` against the size and SHA-256 in
    ``meta.json`` (checkpoints written before checksums: a complete zip archive with intact CRCs)."""
    meta = read_meta(folder, fs)
    if meta is None:
        return f"{META_FILE} missing or not JSON"
    state = f"{folder}/{STATE_FILE}"
    try:
        if fs is None:
            size = os.path.getsize(state)
        else:
            from pyarrow.fs import FileType

            info = fs.get_file_info(state)
            if info.type != FileType.File:
                raise FileNotFoundError(state)
            size = info.size
    except OSError:
        return f"{STATE_FILE} missing"
    if "state_sha256" in meta:
        if size != meta.get("state_bytes", size):
            return f"{STATE_FILE} has {size} bytes, {meta['state_bytes']} were written"
        if _sha256(Path(state), fs) != meta["state_sha256"]:
            return f"{STATE_FILE} checksum mismatch"
        return None
    try:  # an older checkpoint: torch.save's zip archive must be whole
        with (fs.open_input_file(state) if fs is not None else open(state, "rb")) as fh, zipfile.ZipFile(fh) as z:
            bad = z.testzip()
        return f"{STATE_FILE}: damaged member {bad}" if bad else None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        return f"{STATE_FILE} is not a complete archive ({exc})"


# -- a Ray Train run's folder before it resumes ---------------------------------------------------------------
def _checkpoint_folders(fs: Any, run_dir: str) -> list[str]:
    """The checkpoint folders of a run (not those set aside), in listing order."""
    from pyarrow.fs import FileSelector, FileType

    if fs.get_file_info(run_dir).type != FileType.Directory:
        return []

    def is_checkpoint(info: Any) -> bool:
        return info.type == FileType.Directory and ".corrupt-" not in info.base_name and any(
            fs.get_file_info(f"{info.path}/{f}").type == FileType.File for f in (META_FILE, STATE_FILE))

    return [i.path for i in fs.get_file_info(FileSelector(run_dir)) if is_checkpoint(i)]


def finished_checkpoint(fs: Any, run_dir: str, epochs: int) -> str | None:
    """The run's final checkpoint when it is done: ``epochs`` epochs trained and the multi-view evaluation
    reported (the latest checkpoint, reported as final at that epoch); else None. Call it after :func:`repair_run`,
    which has set aside every checkpoint that does not verify (and :func:`load_state` checks it again on reading).
    A rerun reads such a run back instead of starting Ray Train to report it again."""
    metas = [(meta, folder) for folder in _checkpoint_folders(fs, run_dir)
             if (meta := read_meta(folder, fs)) is not None]
    if not metas:
        return None
    meta, folder = max(metas, key=lambda mf: _checkpoint_order(mf[0], mf[1]))
    done = int(meta.get("epoch", -1)) == int(epochs) and bool((meta.get("metrics") or {}).get("is_final"))
    return folder if done else None


def _set_aside(fs: Any, path: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    new, n = f"{path}.corrupt-{stamp}", 1
    from pyarrow.fs import FileType

    while fs.get_file_info(new).type != FileType.NotFound:
        n += 1
        new = f"{path}.corrupt-{stamp}-{n}"
    fs.move(path, new)
    return new


def _checkpoint_order(meta: dict[str, Any], name: str) -> tuple:
    """Report order: by epoch, an epoch's final evaluation after its epoch checkpoint."""
    return int(meta.get("epoch", 0)), int(bool((meta.get("metrics") or {}).get("is_final"))), name


def _snapshot_names(fs: Any, path: str) -> tuple[list[str] | None, str | None]:
    """The checkpoint folder names a snapshot lists (None and why when it does not parse)."""
    try:
        with fs.open_input_stream(path) as fh:
            raw = fh.read()
        doc = json.loads(raw)
        names = [r["checkpoint_dir_name"] for r in doc["checkpoint_results"]]
        if doc.get("latest_checkpoint_result"):
            names.append(doc["latest_checkpoint_result"]["checkpoint_dir_name"])
        return names, None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, ("empty" if not locals().get("raw") else f"not a snapshot ({type(exc).__name__}: {exc})")


def _snapshot_json(good: list[tuple[str, dict[str, Any]]]) -> str:
    """Ray Train's checkpoint-manager snapshot listing ``good`` (name, meta) in report order, the last one
    latest: what Ray itself writes after reporting them."""
    from ray.train.v2._internal.execution.checkpoint.checkpoint_manager import (_CheckpointManagerState,
                                                                                _TrainingResultState)

    results = [_TrainingResultState(checkpoint_dir_name=name, metrics=dict(meta.get("metrics") or {}))
               for name, meta in good]
    return _CheckpointManagerState(
        checkpoint_results=results, checkpoint_report_indices=list(range(len(results))),
        latest_checkpoint_result=results[-1], pending_training_results=[], pending_validation_specs=[],
        current_report_index=len(results), validated_checkpoint_dir_names=[],
        timed_out_validation_checkpoint_dir_names=[], failed_validation_checkpoint_dir_names=[]).json()


def repair_run(fs: Any, run_dir: str, say: Callable[[str], None] = print) -> list[str]:
    """Check the Ray Train run under ``run_dir`` (on the pyarrow filesystem ``fs``) before it resumes; returns
    what was set aside. Corrupt checkpoint folders and a snapshot that does not parse or lists a missing or
    corrupt checkpoint are renamed ``*.corrupt-<time>``; the snapshot is then rebuilt from the checkpoints that
    verify (none: the run starts over)."""
    from pyarrow.fs import FileType

    if fs.get_file_info(run_dir).type != FileType.Directory:
        return []
    name_of = lambda p: p.rstrip("/").rsplit("/", 1)[-1]  # noqa: E731
    folders = _checkpoint_folders(fs, run_dir)
    moved: list[str] = []
    good: list[tuple[str, dict[str, Any]]] = []
    for folder in folders:
        problem = verify_checkpoint(folder, fs)
        if problem:
            moved.append(_set_aside(fs, folder))
            say(f"[train] checkpoint {folder} is corrupt ({problem}): set aside as {name_of(moved[-1])}")
        else:
            good.append((name_of(folder), read_meta(folder, fs) or {}))
    good.sort(key=lambda t: _checkpoint_order(t[1], t[0]))
    snapshot = f"{run_dir}/{SNAPSHOT_FILE}"
    if fs.get_file_info(snapshot).type != FileType.File:
        return moved
    names, problem = _snapshot_names(fs, snapshot)
    have = {n for n, _ in good}
    if problem is None:
        lost = [n for n in names if n not in have]
        if not lost:
            return moved
        problem = f"lists {', '.join(sorted(set(lost)))}, missing or corrupt"
    moved.append(_set_aside(fs, snapshot))
    if not good:
        say(f"[train] {snapshot} {problem}: set aside as {name_of(moved[-1])}; no checkpoint verifies, the "
            f"candidate starts over")
        return moved
    try:
        text = _snapshot_json(good)
    except ImportError:  # pragma: no cover - another Ray: the run starts over rather than failing
        say(f"[train] {snapshot} {problem}: set aside; this Ray cannot be told the checkpoints, starting over")
        return moved
    from pipeline.search.checkpoint import write_bytes_atomic

    write_bytes_atomic(fs, snapshot, text.encode())
    say(f"[train] {snapshot} {problem}: set aside as {name_of(moved[-1])}; resuming from {good[-1][0]}")
    return moved
