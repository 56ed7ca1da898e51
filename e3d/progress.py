"""A minimal progress bar (no tqdm): ``37%|███▋      | 185000/500000 [00:05<00:08, 37012 it/s, best=210.3]``.

It redraws at most ten times a second on one line of ``stream`` (stderr), and is silent when the stream is
not a terminal unless ``enabled=True``. Code that prints other lines while a bar is drawn (the job's
forwarded worker lines) prints them inside :func:`suspended`, so the bar is cleared first and redrawn after.
"""
from __future__ import annotations

import contextlib
import sys
import time
from typing import Any, Iterator, TextIO

_DRAWN: list["Progress"] = []  # bars on screen now


@contextlib.contextmanager
def suspended() -> Iterator[None]:
    """Clear every bar on screen, run the block (which prints), then redraw the bars below its lines."""
    bars = list(_DRAWN)
    for bar in bars:
        bar.clear()
    try:
        yield
    finally:
        for bar in bars:
            if bar.enabled:
                bar._draw()


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    def __init__(self, total: int, enabled: bool | None = None, stream: TextIO | None = None,
                 unit: str = "it", width: int = 20, min_interval: float = 0.1):
        self.stream = stream or sys.stderr
        self.enabled = enabled if enabled is not None else bool(getattr(self.stream, "isatty", lambda: False)())
        self.total, self.unit, self.width, self.min_interval = total, unit, width, min_interval
        self.done, self.fields, self._shown, self._width = 0, {}, -1, 0
        self.start = self._last = time.perf_counter()

    def line(self) -> str:
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        frac = self.done / self.total if self.total else 1.0
        filled = frac * self.width
        full = int(filled)
        partial = " ▏▎▍▌▋▊▉"[int((filled - full) * 8)] if full < self.width else ""
        bar = ("█" * full + partial).ljust(self.width)
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        extra = "".join(f", {k}={v}" for k, v in self.fields.items())
        speed = f"{1 / rate:.1f} s/{self.unit}" if 0 < rate < 1 else f"{rate:.0f} {self.unit}/s"
        return (f"{100 * frac:3.0f}%|{bar}| {self.done}/{self.total} "
                f"[{_clock(elapsed)}<{_clock(eta)}, {speed}{extra}]")

    def update(self, n: int = 1, **fields: Any) -> None:
        self.done += n
        self.fields.update(fields)
        now = time.perf_counter()
        if self.enabled and (now - self._last >= self.min_interval or self.done >= self.total):
            self._last = now
            self._draw()

    def _draw(self) -> None:
        text = self.line()
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._shown, self._width = self.done, len(text)
        if self not in _DRAWN:
            _DRAWN.append(self)

    def clear(self) -> None:
        """Blank the bar's line and return the cursor to its start (the bar is redrawn on the next update)."""
        if self in _DRAWN:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._shown = -1

    def close(self) -> None:
        if self.enabled:
            if self._shown != self.done:
                self._draw()
            self.stream.write("\n")
            self.stream.flush()
            self.enabled = False
        if self in _DRAWN:
            _DRAWN.remove(self)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
