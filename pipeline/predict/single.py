"""Top-k labels of a few videos in this process (``e3d predict``): decode the views, run the network, average.

    found = e3d.model_source.open_model("outputs/search_and_train")
    for p in predict_videos(found.model, found.preprocessing, ["a.mp4", "b.avi"], topk=5):
        print(p.path, p.top1, p.topk, p.probs, p.error)

The softmax is averaged over a video's views exactly as the job's evaluation averages it
(:class:`pipeline.train.evaluate.ViewAccumulator`). A file that does not decode gives a prediction with
``error`` set (one line), never an exception. No Ray.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from e3d.model_folder import Preprocessing

from .views import clip_config, error_line, video_views


@dataclass
class Prediction:
    """One video: the ``topk`` class names best first with their averaged probabilities, or an ``error``."""

    path: str
    topk: list[str] = field(default_factory=list)
    probs: list[float] = field(default_factory=list)
    views: int = 0
    seconds: float = 0.0
    error: str | None = None

    @property
    def top1(self) -> str | None:
        return self.topk[0] if self.topk else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"top1": self.top1}


def average_probs(logits: Any, num_classes: int) -> np.ndarray:
    """float64 ``[num_classes]``: the softmax of each view's logits averaged over the views (the job's way)."""
    import torch

    from pipeline.train.evaluate import ViewAccumulator

    acc = ViewAccumulator(num_classes)
    logits = torch.as_tensor(logits)
    acc.add(logits, np.zeros(len(logits), np.int64), np.zeros(len(logits), np.int64))
    return acc.video_probs()[1][0]


def top_k(probs: np.ndarray, labels: Sequence[str], k: int) -> tuple[list[str], list[float]]:
    """The ``k`` most probable class names and their probabilities, best first (``torch.topk``'s order, as the
    job's top-1/top-5 count them)."""
    import torch

    k = min(k, len(labels))
    top = torch.from_numpy(np.asarray(probs, np.float64)).topk(k)
    return [labels[i] for i in top.indices.tolist()], [float(v) for v in top.values.tolist()]


def predict_videos(model: Any, pre: Preprocessing, paths: Iterable[str], *, topk: int = 5, batch_size: int = 16,
                   decode_timeout: float = 30.0) -> Iterable[Prediction]:
    """One :class:`Prediction` per path, in order (a generator: each is yielded as soon as it is known)."""
    import torch

    cfg = clip_config(pre, decode_timeout=decode_timeout)
    labels = list(pre.labels)
    model.eval()
    for path in paths:
        t0 = time.perf_counter()
        try:
            views = video_views(str(path), cfg, pre.clips, pre.crops)
        except Exception as exc:  # one line per bad file, never a traceback
            yield Prediction(str(path), error=error_line(exc), seconds=time.perf_counter() - t0)
            continue
        with torch.no_grad():
            logits = torch.cat([model(torch.from_numpy(views[i:i + batch_size]))
                                for i in range(0, len(views), batch_size)])
        names, probs = top_k(average_probs(logits, len(labels)), labels, topk)
        yield Prediction(str(path), names, probs, views=len(views), seconds=time.perf_counter() - t0)


def format_prediction(p: Prediction) -> str:
    """A few lines: the path, then ``rank  probability  class`` rows (or the error)."""
    if p.error:
        return f"{p.path}: cannot decode ({p.error})"
    rows = [f"{p.path}  ({p.views} views, {p.seconds:.2f} s)"]
    rows += [f"  {i + 1}  {prob:6.1%}  {name}" for i, (name, prob) in enumerate(zip(p.topk, p.probs))]
    return "\n".join(rows)
