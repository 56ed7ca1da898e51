"""How every video is re-encoded (:class:`PrepareSettings`) and the error of a file that was not prepared."""
from __future__ import annotations

from dataclasses import asdict, dataclass

X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


class PrepareError(Exception):
    """A file that was decoded but not prepared (``kind``: "verify", "encode", "timeout")."""

    def __init__(self, reason: str, kind: str = "verify"):
        super().__init__(reason)
        self.reason, self.kind = reason, kind


@dataclass(frozen=True)
class PrepareSettings:
    """How every video is re-encoded (a changed setting makes a rerun redo the files).

    ``short_side``: output short side in pixels (rounded to even, never upscaled). ``keyint``: frames
    between keyframes (None: the source's frame rate, one per second). ``crf``: x264 quality (0-51,
    lower is better and bigger). ``preset``: x264 speed preset. ``fast_decode``: x264's fastdecode
    tuning. ``min_psnr``: verification threshold in dB. ``timeout``: seconds allowed per file.
    """

    short_side: int = 256
    keyint: int | None = None
    crf: int = 23
    preset: str = "veryfast"
    fast_decode: bool = True
    min_psnr: float = 25.0
    timeout: float = 600.0

    def __post_init__(self):
        if self.short_side < 2:
            raise ValueError(f"short_side must be >= 2, got {self.short_side}")
        if self.keyint is not None and self.keyint < 1:
            raise ValueError(f"keyint must be >= 1, got {self.keyint}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf must be in [0, 51], got {self.crf}")
        if self.preset not in X264_PRESETS:
            raise ValueError(f"preset must be one of {X264_PRESETS}, got {self.preset!r}")
        if self.min_psnr <= 0 or self.timeout <= 0:
            raise ValueError("min_psnr and timeout must be positive")

    def identity(self) -> dict:
        """The settings that decide the output's bytes and checks (not the timeout)."""
        return {k: v for k, v in asdict(self).items() if k != "timeout"}

