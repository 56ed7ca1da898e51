"""Shared helpers for the video tests: where the shared clips are, small generated datasets, full decodes."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
UCF_DIR = SHARED / "data" / "ucf101-6class-dev"
ODD_DIR = SHARED / "data" / "odd-videos"

needs_ucf = pytest.mark.skipif(not UCF_DIR.is_dir(), reason=f"{UCF_DIR} not present")
needs_odd = pytest.mark.skipif(not ODD_DIR.is_dir(), reason=f"{ODD_DIR} not present")


def odd_files() -> list[Path]:
    return sorted(p for p in ODD_DIR.iterdir() if p.suffix != ".md") if ODD_DIR.is_dir() else []


def full_decode(path: str | Path) -> list[np.ndarray]:
    """Every frame of a sequential decode, as RGB: the reference for frame-exactness."""
    with av.open(str(path), metadata_errors="ignore") as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def make_small_dataset(root: Path, **kw) -> Path:
    """A fast synthetic dataset: 4 classes x 4 clips, 32x32, 24 frames (override with kw)."""
    from pipeline.video.synthetic import make_synthetic_dataset

    args = dict(num_classes=4, clips_per_class=4, size=32, frames=24, fps=15, seed=0) | kw
    return make_synthetic_dataset(root, **args)
