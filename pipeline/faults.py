"""A full disk: checked before long work, one line and exit status 28 when a write fails, the same command resumes.

    @exits_on_out_of_space                          # a job's main(): OSError(ENOSPC or EDQUOT) anywhere below it,
    def main(argv=None) -> int: ...                 # Ray's wrapped worker errors and MLflow's SQLite "database or
                                                    # disk is full" print one line and return OUT_OF_SPACE_EXIT
    check_free_space(out, need_bytes, "2 checkpoints of each candidate")   # a warning when the estimate exceeds it

Every state file is written whole or not at all (:mod:`e3d.statefile`, the search checkpoint's renames, Ray
Train's checkpoint folders checked before a resume: :mod:`pipeline.train.checkpoint`), so after a full disk the
earlier results and checkpoints are intact: free some space and run the same command again. docs/faults.md.
"""
from __future__ import annotations

import errno
import functools
import logging
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

OUT_OF_SPACE_EXIT = 28  # ENOSPC's number: "no space left on device"
RECORDS_BYTES = 64e6  # a job's own records besides checkpoints: search checkpoints, Tune's state, the MLflow store
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_TEXT = re.compile(r"No space left on device|Disk quota exceeded|database or disk is full|\[Errno (?:28|122)\]", re.I)
_PATH = re.compile(r"(?:No space left on device|Disk quota exceeded)'?\)?:? ['\"]([^'\"]+)['\"]", re.I)


class OutOfSpace(OSError):
    """A write failed for lack of disk space or quota; ``path`` is where, when known."""

    def __init__(self, path: str | os.PathLike | None = None, detail: str = "no space left on device"):
        super().__init__(errno.ENOSPC, detail, None if path is None else str(path))
        self.path, self.detail = (None if path is None else str(path)), detail


def out_of_space(exc: BaseException | str | None) -> OutOfSpace | None:
    """The out-of-space fault behind ``exc`` (an exception with its causes and Ray's wrapped worker errors, or
    an error's text as Ray and Tune pass it on), else None. When several are chained (MLflow failing to mark a
    run FAILED while a checkpoint write failed), the first one raised as :class:`OutOfSpace`, else one that
    names its path, is the one reported."""
    found: list[OutOfSpace] = []
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OutOfSpace):
            return e
        if isinstance(e, OSError) and e.errno in NO_SPACE_ERRNOS:
            found.append(OutOfSpace(e.filename, os.strerror(e.errno).lower()))
        elif (match := _TEXT.search(e if isinstance(e, str) else f"{type(e).__name__}: {e}")) is not None:
            path = _PATH.search(e if isinstance(e, str) else str(e))
            detail = "database or disk is full (the MLflow store)" if "database or disk" in match.group(0) \
                else ("disk quota exceeded" if "quota" in match.group(0).lower() or "122" in match.group(0)
                      else "no space left on device")
            found.append(OutOfSpace(path.group(1) if path else None, detail))
        if isinstance(e, BaseException):
            stack += [e.__cause__, e.__context__, getattr(e, "cause", None), getattr(e, "orig", None)]
    return next((f for f in found if f.path), found[0] if found else None)


def free_bytes(path: str | os.PathLike) -> int | None:
    """Free bytes (for this user) on the filesystem holding ``path`` or its nearest existing parent."""
    p = Path(path).expanduser().absolute()
    for candidate in (p, *p.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def check_free_space(path: str | os.PathLike, need_bytes: float, what: str,
                     say: Callable[[str], None] = print) -> bool:
    """Warn (one ``[disk]`` line) when the filesystem of ``path`` has less free space than ``need_bytes``, the
    estimate of ``what``; True when it has enough (or cannot tell: a URI, an unreadable mount)."""
    if "://" in str(path):
        return True
    free = free_bytes(path)
    if free is None or free >= need_bytes:
        return True
    say(f"[disk] warning: {path} has {human(free)} free, {what} needs about {human(need_bytes)}: the run may stop "
        f"when the disk is full (exit status {OUT_OF_SPACE_EXIT}); free some space, then the same command resumes")
    return False


def message(fault: OutOfSpace, prog: str | None = None) -> str:
    """The one line a job prints for ``fault``."""
    prog = prog or os.path.basename(sys.argv[0]) or "e3d"
    where = f" writing {fault.path}" if fault.path else ""
    free = free_bytes(fault.path) if fault.path and "://" not in fault.path else None
    room = f" ({human(free)} free there)" if free is not None else ""
    return (f"{prog}: error: out of disk space{where}{room}: {fault.detail}. Free some space (or give another "
            f"--out), then run the same command again: it resumes from the last good checkpoint "
            f"(exit status {OUT_OF_SPACE_EXIT})")


def exits_on_out_of_space(main: Callable[..., int]) -> Callable[..., int]:
    """Decorate a job's ``main``: an out-of-space fault below it prints :func:`message` on stderr and returns
    :data:`OUT_OF_SPACE_EXIT`; every other exception passes."""

    @functools.wraps(main)
    def run(*args: Any, **kwargs: Any) -> int:
        quiet = _QuietWhenFull()
        handlers = [logging.getLogger(name) for name in _NOISY] + [
            h for name in ("", "mlflow") for h in logging.getLogger(name).handlers]
        for h in handlers:
            h.addFilter(quiet)
        try:
            return main(*args, **kwargs)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            fault = out_of_space(exc)
            if fault is None:
                raise
            print(message(fault), file=sys.stderr, flush=True)
            return OUT_OF_SPACE_EXIT
        finally:
            for h in handlers:
                h.removeFilter(quiet)

    return run


# the loggers (by name: MLflow may not be imported yet) that log each failed write with its traceback
_NOISY = ("mlflow.store.db.utils", "mlflow.system_metrics.system_metrics_monitor", "mlflow.tracking.fluent",
          "mlflow.utils.async_logging.async_logging_queue", "mlflow.tracking._tracking_service.client")


class _QuietWhenFull(logging.Filter):
    """Drops log records about a full disk (MLflow logs each failed write with its traceback, then fails to
    mark the run FAILED on the same disk): the job's one line says it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if out_of_space(record.getMessage()) is not None:
            return False
        return not (record.exc_info and out_of_space(record.exc_info[1]) is not None)


def raise_if_out_of_space(errors: Any) -> None:
    """Raise the first out-of-space fault among ``errors`` (exceptions or error texts, e.g. the candidates'
    ``error`` fields): one candidate that found the disk full means the others will too."""
    for error in errors:
        fault = out_of_space(error) if error else None
        if fault is not None:
            raise fault
