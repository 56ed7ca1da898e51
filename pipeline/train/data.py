"""Where training clips come from: a thin, picklable layer between the training code and Ray Data.

A *source* knows its classes and sizes and makes three Ray Datasets for a run:

- ``train()``: rows ``{"clip": float32 [3, T, S, S], "label": int64}``, new random clips (and order) every
  time the dataset is iterated, i.e. every epoch;
- ``val()``:  one centre view per validation video (the per-epoch validation), or None;
- ``test(clips, crops)``: ``clips x crops`` views per validation video with ``video_id`` (the multi-view
  evaluation).

:class:`VideoSource` wraps ``pipeline.video`` (PyAV decoding on Ray Data); :class:`TensorSource` holds
in-memory clips (tests, benchmarks, or features already decoded).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class VideoSource:
    """A ``pipeline.video.formats.VideoDataset`` decoded with a ``pipeline.video.ray_data.ClipConfig``."""

    def __init__(self, dataset: Any, clip: Any, *, seed: int | None = 0):
        if not dataset.train:
            raise ValueError(f"{dataset.root}: the dataset has no training videos")
        self.dataset, self.clip, self.seed = dataset, clip, seed

    @property
    def classes(self) -> list[str]:
        return list(self.dataset.classes)

    @property
    def num_classes(self) -> int:
        return len(self.dataset.classes)

    @property
    def n_train(self) -> int:
        return len(self.dataset.train)

    @property
    def n_val(self) -> int:
        return len(self.dataset.val)

    @property
    def frames(self) -> int:
        return self.clip.frames

    @property
    def size(self) -> int:
        return self.clip.size

    @property
    def sampling_rate(self) -> int | None:
        return self.clip.sampling_rate

    def train(self):
        from pipeline.video.ray_data import train_dataset

        return train_dataset(self.dataset.train, self.clip, seed=self.seed)

    def val(self):
        from pipeline.video.ray_data import eval_dataset

        return eval_dataset(self.dataset.val, self.clip, num_clips=1, crops=1) if self.dataset.val else None

    def test(self, clips: int, crops: int):
        from pipeline.video.ray_data import eval_dataset

        return eval_dataset(self.dataset.val, self.clip, num_clips=clips, crops=crops) if self.dataset.val else None

    def params(self) -> dict[str, Any]:
        c = self.clip
        return {"data.root": self.dataset.root, "data.format": self.dataset.format, "data.classes": self.num_classes,
                "data.train_videos": self.n_train, "data.val_videos": self.n_val, "data.split": self.dataset.split,
                "clip.frames": c.frames, "clip.sampling_rate": c.sampling_rate, "clip.size": c.size,
                "clip.train_scale": f"{c.train_scale[0]}-{c.train_scale[1]}", "clip.hflip": c.hflip}

    def fingerprint(self) -> str:
        items = [(it.path, it.label) for it in self.dataset.train] + [("val",)] + \
                [(it.path, it.label) for it in self.dataset.val]
        blob = json.dumps([self.classes, items, repr(self.clip)], default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    def save_label_map(self, path) -> Any:
        return self.dataset.save_label_map(path)


@dataclass
class TensorSource:
    """Clips held in memory: ``train_x`` (N, 3, T, S, S) float32 with ``train_y`` (N,), the same for val.

    Every pass over ``train()`` adds new Gaussian noise of std ``train_noise`` (a stand-in for random
    clips) in a new order, both drawn from ``seed`` and the pass's index (Ray's ``reseed_after_execution``, as
    :func:`pipeline.video.ray_data.train_dataset` does), so the same seed gives the same passes (``seed=None``:
    system randomness); ``test(clips, crops)`` makes ``clips * crops`` views of each validation clip with
    view noise ``view_noise`` (seeded per view, so deterministic).
    """

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    classes: list[str] = field(default_factory=list)
    train_noise: float = 0.0
    view_noise: float = 0.0
    sampling_rate: int | None = None
    seed: int | None = 0

    def __post_init__(self):
        self.train_x = np.ascontiguousarray(self.train_x, np.float32)
        self.val_x = np.ascontiguousarray(self.val_x, np.float32)
        self.train_y = np.asarray(self.train_y, np.int64)
        self.val_y = np.asarray(self.val_y, np.int64)
        if self.train_x.ndim != 5 or self.train_x.shape[1] != 3 or self.train_x.shape[3] != self.train_x.shape[4]:
            raise ValueError(f"train_x must be (N, 3, T, S, S), got {self.train_x.shape}")
        if len(self.train_x) != len(self.train_y) or len(self.val_x) != len(self.val_y):
            raise ValueError("clips and labels differ in length")
        if not self.classes:
            n = int(max(self.train_y.max(initial=0), self.val_y.max(initial=0))) + 1
            self.classes = [f"class{i}" for i in range(n)]

    @classmethod
    def synthetic(cls, *, num_classes: int = 4, n_train: int = 64, n_val: int = 16, frames: int = 4,
                  size: int = 32, signal: float = 1.0, seed: int = 0, train_noise: float = 0.5,
                  view_noise: float = 0.5) -> "TensorSource":
        """A learnable toy problem: each class adds its own fixed random per-channel colour and temporal
        flicker (amplitude ``signal``) to unit Gaussian noise. Balanced classes."""
        rng = np.random.default_rng(seed)
        colour = rng.normal(0, 1, size=(num_classes, 3, 1, 1, 1))
        flicker = rng.normal(0, 1, size=(num_classes, 1, frames, 1, 1))
        pattern = signal * (colour + flicker)

        def make(n: int):
            y = np.arange(n) % num_classes
            x = rng.normal(0, 1, size=(n, 3, frames, size, size)) + pattern[y]
            return x.astype(np.float32), y

        tx, ty = make(n_train)
        vx, vy = make(n_val)
        return cls(tx, ty, vx, vy, [f"class{i}" for i in range(num_classes)], train_noise, view_noise)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def n_train(self) -> int:
        return len(self.train_x)

    @property
    def n_val(self) -> int:
        return len(self.val_x)

    @property
    def frames(self) -> int:
        return int(self.train_x.shape[2])

    @property
    def size(self) -> int:
        return int(self.train_x.shape[3])

    def train(self):
        import ray.data
        from ray.data import RandomSeedConfig
        from ray.data.expressions import random as random_column

        ds = ray.data.from_items([{"i": i} for i in range(self.n_train)],
                                 override_num_blocks=max(1, min(8, self.n_train // 8)))
        ds = ds.random_shuffle(seed=RandomSeedConfig(seed=self.seed, reseed_after_execution=True))
        ds = ds.with_column("rand", random_column(seed=self.seed, reseed_after_execution=True))
        x, y, noise = self.train_x, self.train_y, self.train_noise

        def load(batch: dict) -> dict:
            idx = np.asarray(batch["i"])
            clip = x[idx].copy()
            if noise:
                for j, u in enumerate(batch["rand"]):  # each row's noise from its own random number
                    rng = np.random.default_rng(int(u * 2 ** 53))
                    clip[j] += rng.normal(0, noise, size=clip[j].shape).astype(np.float32)
            return {"clip": clip, "label": y[idx]}

        return ds.map_batches(load, batch_format="numpy", batch_size=8)

    def val(self):
        return self._views(1, 1) if self.n_val else None

    def test(self, clips: int, crops: int):
        return self._views(clips, crops) if self.n_val else None

    def _views(self, clips: int, crops: int):
        import ray.data

        views = clips * crops
        rows = [{"video_id": v, "view": k} for v in range(self.n_val) for k in range(views)]
        ds = ray.data.from_items(rows, override_num_blocks=max(1, min(8, len(rows) // 8)))
        x, y, noise = self.val_x, self.val_y, self.view_noise

        def load(batch: dict) -> dict:
            vid, view = np.asarray(batch["video_id"]), np.asarray(batch["view"])
            clip = x[vid].copy()
            if noise and views > 1:
                for j, (v, k) in enumerate(zip(vid.tolist(), view.tolist())):
                    clip[j] += np.random.default_rng([v, k]).normal(0, noise, size=clip[j].shape).astype(np.float32)
            return {"clip": clip, "label": y[vid], "video_id": vid.astype(np.int64), "view": view.astype(np.int64)}

        return ds.map_batches(load, batch_format="numpy", batch_size=8)

    def params(self) -> dict[str, Any]:
        return {"data.source": "tensors", "data.classes": self.num_classes, "data.train_videos": self.n_train,
                "data.val_videos": self.n_val, "clip.frames": self.frames, "clip.size": self.size}

    def fingerprint(self) -> str:
        h = hashlib.sha1()
        for a in (self.train_x, self.train_y, self.val_x, self.val_y):
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(json.dumps([self.classes, self.train_noise, self.view_noise]).encode())
        return h.hexdigest()[:12]


def as_source(data: Any, clip: Any = None, *, seed: int | None = 0):
    """``data`` as a source: a source as is, or a ``VideoDataset`` together with its ``ClipConfig``."""
    if hasattr(data, "train") and callable(getattr(data, "train")) and hasattr(data, "fingerprint"):
        return data
    if hasattr(data, "train") and hasattr(data, "classes"):
        if clip is None:
            from pipeline.video.ray_data import ClipConfig

            clip = ClipConfig()
        return VideoSource(data, clip, seed=seed)
    raise TypeError(f"cannot train on {type(data).__name__}: give a VideoDataset (with clip=ClipConfig(...)) "
                    "or a TensorSource/VideoSource")


def steps_per_epoch(n_train: int, workers: int, batch_size: int) -> int:
    """Iterations per epoch of each worker: Train splits ``"train"`` into equal shards (the remainder of
    ``n_train / workers`` is dropped), each iterated in batches of ``batch_size`` (last one partial)."""
    per_worker = max(1, n_train // max(1, workers))
    return max(1, -(-per_worker // batch_size))

