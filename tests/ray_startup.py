"""Starting a local Ray node in tests on a busy machine: Ray waits a fixed 30 s for a new raylet to register with
the GCS ("timed out during startup"), which parallel test workers starting nodes at once can exceed. Used by the
simulated clusters (tests/cluster/sim.py) and, under pytest-xdist, by every ``ray.init`` (tests/conftest.py)."""
from __future__ import annotations

import contextlib
import functools
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

T = TypeVar("T")


def kill_pids(pids: list[int], timeout: float = 10.0) -> None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL: these pids only."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [p for p in alive if _alive(p)]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


STARTUP_TRIES = 3  # Ray waits a fixed 30 s for a new raylet to register: too short on a loaded 2-core machine


def started(start: Callable[[], T], what: str) -> T:
    """``start()``, tried again (up to :data:`STARTUP_TRIES` times) when Ray gives up on a node whose raylet did
    not register with the GCS within its fixed 30 s ("timed out during startup"); the processes that attempt
    started (this process's new children) are ended by pid first, so no half-started node joins later."""
    import psutil

    for attempt in range(1, STARTUP_TRIES + 1):
        before = {c.pid for c in psutil.Process().children(recursive=True)}
        try:
            return start()
        except Exception as exc:  # noqa: BLE001 - only Ray's startup timeout is retried
            if "timed out during startup" not in str(exc) or attempt == STARTUP_TRIES:
                raise
            new = [c.pid for c in psutil.Process().children(recursive=True) if c.pid not in before]
            print(f"[ray-start] {what}: the raylet did not register within Ray's 30 s (attempt {attempt}); "
                  f"ending its {len(new)} processes and starting it again")
            kill_pids(new)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def retrying_init(init: Callable[..., Any]) -> Callable[..., Any]:
    """``ray.init`` that starts its local node again (see :func:`started`) when the raylet did not register."""

    @functools.wraps(init)
    def start(*args: Any, **kwargs: Any) -> Any:
        return started(lambda: init(*args, **kwargs), "ray.init")

    return start
