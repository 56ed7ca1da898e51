"""A minimal progress bar (no tqdm): ``37%|███▋      | 185000/500000 [00:05<00:08, 37012 it/s, best=210.3]``.

It redraws at most ten times a second on one line of ``stream`` (stderr), and is silent when the stream is
not a terminal unless ``enabled=True``.
"""
from __future__ import annotations

import sys
import time
from typing import Any, TextIO


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
        return (f"{100 * frac:3.0f}%|{bar}| {self.done}/{self.total} "
                f"[{_clock(elapsed)}<{_clock(eta)}, {rate:.0f} {self.unit}/s{extra}]")

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

    def close(self) -> None:
        if self.enabled:
            if self._shown != self.done:
                self._draw()
            self.stream.write("\n")
            self.stream.flush()
            self.enabled = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
