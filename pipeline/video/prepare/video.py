"""One file (no Ray): :func:`prepare_video` re-encodes and verifies it, never raising for a bad source;
:func:`prepare_video_bounded` does it in a child process killed past a hard wall-clock bound."""
from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from ..decode import VideoDecodeError
from .encode import CONTAINERS, encode
from .settings import PrepareError, PrepareSettings
from .verify import verify


def prepare_video(source: str, output: str, *, settings: PrepareSettings = PrepareSettings()) -> dict:
    """Re-encode ``source`` to ``output`` and verify it; returns its manifest record (never raises
    for a bad source: ``status`` is "ok" or "failed" with ``kind`` and ``reason``).

    The output appears only when verified (written as ``output + ".part"``, then renamed); its
    container follows its suffix (.mp4: MP4; .webm: Matroska).
    """
    wall, cpu = time.perf_counter(), time.process_time()
    record: dict = {"source": source, "status": "failed", "kind": None, "reason": None,
                    "bytes_in": file_size(source), "bytes_out": None, "frames_in": None, "frames_out": None}
    tmp = output + ".part"
    try:
        suffix = Path(output).suffix.lower()
        if suffix not in CONTAINERS:
            raise PrepareError(f"unsupported output suffix {suffix!r}", "encode")
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + settings.timeout
        enc = encode(source, tmp, CONTAINERS[suffix], settings, deadline)
        record.update(frames_in=enc.frames, height_out=enc.size[0], width_out=enc.size[1],
                      fps_in=float(enc.timing.rate), vfr=enc.timing.vfr, timing=enc.timing.policy,
                      keyint=enc.keyint)
        record.update(verify(tmp, enc, settings, deadline))
        os.replace(tmp, output)
        record.update(status="ok", bytes_out=os.path.getsize(output))
    except VideoDecodeError as e:
        record.update(kind=e.kind, reason=e.reason)
    except PrepareError as e:
        record.update(kind=e.kind, reason=e.reason)
    except Exception as e:  # any other failure is this file's, never the job's
        record.update(kind="error", reason=f"{type(e).__name__}: {e}")
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    record.update(seconds=round(time.perf_counter() - wall, 4), cpu_seconds=round(time.process_time() - cpu, 4))
    return record


HARD_GRACE_S = 30.0  # past the timeout the per-frame checks enforce, the child process is killed


def run_bounded(fn: Callable, args: tuple, timeout: float) -> tuple[str, Any]:
    """``fn(*args)`` in a child process (forkserver: a clean process, never a fork of a threaded Ray worker)
    killed after ``timeout`` seconds of wall clock: ("ok", result), ("timeout", None) or ("crash", exit code).
    Bounds what Python's own checks cannot: an FFmpeg call that never returns."""
    import multiprocessing  # noqa: PLC0415

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, fn, args), daemon=True)
    proc.start()
    send.close()
    try:
        if receive.poll(timeout):
            try:
                return "ok", receive.recv()
            except EOFError:  # the child died without an answer
                proc.join(5)
                return "crash", proc.exitcode
        return "timeout", None
    finally:
        receive.close()
        if proc.is_alive():
            proc.kill()
        proc.join()


def _child(send: Any, fn: Callable, args: tuple) -> None:
    send.send(fn(*args))
    send.close()


def _prepare_plain(source: str, output: str, settings: dict) -> dict:
    return prepare_video(source, output, settings=PrepareSettings(**settings))


def prepare_video_bounded(source: str, output: str, *, settings: PrepareSettings = PrepareSettings()) -> dict:
    """:func:`prepare_video` with a hard wall-clock bound: ``settings.timeout`` plus :data:`HARD_GRACE_S`, after
    which the file's process is killed and the file marked failed ("timeout")."""
    limit = settings.timeout + HARD_GRACE_S
    status, value = run_bounded(_prepare_plain, (source, output, asdict(settings)), limit)
    if status == "ok":
        return value
    Path(output + ".part").unlink(missing_ok=True)
    reason = (f"timeout: killed after {limit:g} s (the encoder or decoder hung)" if status == "timeout"
              else f"the file's process died (exit code {value})")
    return {"source": source, "status": "failed", "kind": "timeout" if status == "timeout" else "crash",
            "reason": reason, "bytes_in": file_size(source), "bytes_out": None, "frames_in": None,
            "frames_out": None, "seconds": limit if status == "timeout" else None, "cpu_seconds": None}


def file_size(path: str) -> int | None:
    """The size of ``path`` in bytes, None when it cannot be read."""
    try:
        return os.path.getsize(path)
    except OSError:
        return None
