"""How clips are cut from videos: :class:`ClipConfig` (no Ray: job options build it before Ray starts)."""
from __future__ import annotations

from dataclasses import dataclass

from .decode import SHORT_POLICIES
from .transforms import KINETICS_MEAN, KINETICS_STD


@dataclass(frozen=True)
class ClipConfig:
    """How clips are sampled and augmented.

    A clip is ``frames`` frames, one every ``sampling_rate`` decoded frames, ``size`` x ``size``
    pixels. Training scales the short side to a random integer in ``train_scale`` (inclusive) then
    crops; evaluation scales it to ``eval_scale`` (None: ``size``) then takes 1 or 3 crops.
    ``hflip``: random horizontal flips in training (turn off for direction-sensitive classes).
    ``short``/``min_frames``: short-video policy and the fewest frames a usable video has (see
    ``decode.decode_clip``). ``decode_timeout``: seconds before a file counts as hung.
    ``batch_size``: videos per ``map_batches`` call; ``num_cpus``: CPUs per decode task.
    """

    frames: int = 16
    sampling_rate: int = 5
    size: int = 224
    train_scale: tuple[int, int] = (256, 320)
    eval_scale: int | None = None
    hflip: bool = True
    mean: tuple[float, float, float] = KINETICS_MEAN
    std: tuple[float, float, float] = KINETICS_STD
    short: str = "pad"
    min_frames: int = 1
    decode_timeout: float = 30.0
    batch_size: int = 8
    num_cpus: float = 1.0

    def __post_init__(self):
        if min(self.frames, self.sampling_rate, self.size, self.batch_size) < 1:
            raise ValueError("frames, sampling_rate, size and batch_size must be >= 1")
        lo, hi = self.train_scale
        if not self.size <= lo <= hi:
            raise ValueError(f"train_scale {self.train_scale} must satisfy size ({self.size}) <= low <= high")
        if self.eval_scale is not None and self.eval_scale < self.size:
            raise ValueError(f"eval_scale {self.eval_scale} is smaller than size {self.size}")
        if self.short not in SHORT_POLICIES:
            raise ValueError(f"short must be one of {SHORT_POLICIES}, got {self.short!r}")
        if self.decode_timeout <= 0:
            raise ValueError("decode_timeout must be positive")

    def clip_shape(self) -> tuple[int, int, int, int]:
        """``(3, frames, size, size)``: the shape of one output clip."""
        return (3, self.frames, self.size, self.size)
