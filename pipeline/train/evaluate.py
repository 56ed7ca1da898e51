"""Accuracy: single-view validation (top-1/top-5 counts, summed across workers) and multi-view
evaluation (K clips x 3 crops per video, softmax averaged over a video's views, then top-1/top-5).

Everything here is plain torch; the distributed part is a sum (validation) or a gather of per-video
sums (multi-view), so each worker evaluates its own shard of the views and rank 0 reports the result.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from .worker import all_reduce_sum


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: Iterable[int] = (1, 5)) -> dict[int, int]:
    """Number of rows whose label is among the ``k`` largest logits, for each ``k`` (capped at the number
    of classes, so top-5 of a 4-class problem is always right)."""
    num_classes = logits.shape[-1]
    ks = tuple(ks)
    kmax = min(max(ks), num_classes)
    top = logits.topk(kmax, dim=-1).indices  # (B, kmax), best first
    hit = top == labels.view(-1, 1)
    return {k: int(hit[:, :min(k, num_classes)].any(dim=1).sum()) for k in ks}


@dataclass
class Meter:
    """Sums of loss, top-1/top-5 hits and samples; ``as_tensor``/``from_tensor`` for an all-reduce."""

    loss_sum: float = 0.0
    top1: float = 0.0
    top5: float = 0.0
    count: float = 0.0

    def update(self, logits: torch.Tensor, labels: torch.Tensor, loss_sum: float) -> None:
        hits = topk_correct(logits.detach().float(), labels)
        self.loss_sum += float(loss_sum)
        self.top1 += hits[1]
        self.top5 += hits[5]
        self.count += int(labels.numel())

    def as_tensor(self) -> torch.Tensor:
        return torch.tensor([self.loss_sum, self.top1, self.top5, self.count], dtype=torch.float64)

    @classmethod
    def from_tensor(cls, t: torch.Tensor) -> "Meter":
        a, b, c, d = (float(x) for x in t.tolist())
        return cls(a, b, c, d)

    def summary(self, prefix: str) -> dict[str, float]:
        n = max(self.count, 1.0)
        return {f"{prefix}_loss": self.loss_sum / n, f"{prefix}_top1": 100.0 * self.top1 / n,
                f"{prefix}_top5": 100.0 * self.top5 / n, f"{prefix}_samples": int(self.count)}


@dataclass
class ViewAccumulator:
    """Per-video sum of softmax probabilities over its views (clips x crops).

    ``add`` takes a batch of views (logits, labels, video ids); ``merge`` combines the accumulators of
    several workers; ``result`` averages each video's probabilities and scores the average.
    """

    num_classes: int
    probs: dict[int, np.ndarray] = field(default_factory=dict)
    views: dict[int, int] = field(default_factory=dict)
    labels: dict[int, int] = field(default_factory=dict)

    def add(self, logits: torch.Tensor, labels: Any, video_ids: Any) -> None:
        p = F.softmax(logits.detach().float(), dim=-1).cpu().numpy().astype(np.float64)
        labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).reshape(-1)
        video_ids = np.asarray(video_ids.cpu() if isinstance(video_ids, torch.Tensor) else video_ids).reshape(-1)
        if not (len(p) == len(labels) == len(video_ids)):
            raise ValueError(f"batch sizes differ: {len(p)} logits, {len(labels)} labels, {len(video_ids)} ids")
        for row, label, vid in zip(p, labels.tolist(), video_ids.tolist()):
            self._add_one(vid, row, int(label), 1)

    def _add_one(self, vid: Any, prob_sum: np.ndarray, label: int, n: int) -> None:
        if vid in self.probs:
            if self.labels[vid] != label:
                raise ValueError(f"video {vid!r} has views with labels {self.labels[vid]} and {label}")
            self.probs[vid] = self.probs[vid] + prob_sum
            self.views[vid] += n
        else:
            self.probs[vid] = np.array(prob_sum, dtype=np.float64)
            self.views[vid] = n
            self.labels[vid] = label

    def merge(self, other: "ViewAccumulator") -> "ViewAccumulator":
        for vid, s in other.probs.items():
            self._add_one(vid, s, other.labels[vid], other.views[vid])
        return self

    def state(self) -> dict[str, Any]:
        """Plain-Python form (for ``all_gather_object``)."""
        return {"num_classes": self.num_classes, "probs": self.probs, "views": self.views, "labels": self.labels}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "ViewAccumulator":
        return cls(state["num_classes"], dict(state["probs"]), dict(state["views"]), dict(state["labels"]))

    def video_probs(self) -> tuple[list[Any], np.ndarray, np.ndarray]:
        """(video ids, averaged probabilities (N, C), labels (N,)), ordered by video id."""
        ids = sorted(self.probs)
        if not ids:
            return [], np.zeros((0, self.num_classes)), np.zeros((0,), np.int64)
        avg = np.stack([self.probs[v] / self.views[v] for v in ids])
        return ids, avg, np.array([self.labels[v] for v in ids], np.int64)

    def predictions(self) -> dict[str, list[int]]:
        """Per video, ordered by id: ``video_id``, the predicted class (``pred``, argmax of the averaged
        probabilities) and the ``label``: what paired comparisons of networks on the same videos need."""
        ids, avg, labels = self.video_probs()
        return {"video_id": [int(v) for v in ids], "pred": [int(p) for p in avg.argmax(axis=1)] if ids else [],
                "label": [int(y) for y in labels]}

    def result(self) -> dict[str, float]:
        ids, avg, labels = self.video_probs()
        if not ids:
            return {"mv_top1": float("nan"), "mv_top5": float("nan"), "mv_videos": 0, "mv_views_per_video": 0.0}
        hits = topk_correct(torch.from_numpy(avg), torch.from_numpy(labels))
        n = len(ids)
        return {"mv_top1": 100.0 * hits[1] / n, "mv_top5": 100.0 * hits[5] / n, "mv_videos": n,
                "mv_views_per_video": float(np.mean([self.views[v] for v in ids]))}


def gather_views(acc: ViewAccumulator) -> ViewAccumulator:
    """Merge every worker's accumulator (all ranks get the merged result); no-op without a process group."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return acc
    states: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(states, acc.state())
    merged = ViewAccumulator(acc.num_classes)
    for s in states:
        merged.merge(ViewAccumulator.from_state(s))
    return merged


def all_reduce_meter(meter: Meter, device: torch.device | None = None) -> Meter:
    """Sum a meter over all workers (no-op without a process group)."""
    return Meter.from_tensor(all_reduce_sum(meter.as_tensor().to(device or torch.device("cpu"))).cpu())


@torch.no_grad()
def evaluate_views(model: torch.nn.Module, batches: Iterable[Mapping[str, Any]], *, num_classes: int,
                   device: torch.device = torch.device("cpu"), autocast: Any = None) -> ViewAccumulator:
    """Run ``model`` (eval mode) over batches ``{"clip", "label", "video_id"}`` and accumulate softmax per
    video. ``autocast``: a context-manager factory (mixed precision on GPU) or None."""
    model.eval()
    acc = ViewAccumulator(num_classes)
    for batch in batches:
        x = torch.as_tensor(batch["clip"]).to(device, non_blocking=True)
        if autocast is not None:
            with autocast():
                logits = model(x)
        else:
            logits = model(x)
        acc.add(logits, batch["label"], batch["video_id"])
    return acc
