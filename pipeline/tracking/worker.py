"""The Train workers' MLflow logging: :class:`WorkerMetricsLogger`, the loop callback through which rank 0 writes the
epochs (and per-iteration metrics) into a run, in chunks MLflow accepts."""
from __future__ import annotations

import logging
import math
import numbers
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

log = logging.getLogger("pipeline.tracking")


@dataclass
class WorkerMetricsLogger:
    """Rank 0's metrics into an MLflow run from inside the Train workers: the loop callback of every Ray Train loop
    (:mod:`pipeline.train.worker`). Each epoch's numbers at step = epoch (named ``<prefix><name>``; with a prefix
    the ``epoch`` and ``step`` counters are left out), the final evaluation's at step = the last epoch, and
    per-iteration metrics (:meth:`add`: ``train_loss_step``/``lr_step`` every ``log_every`` iterations, 0: never)
    at step = the iteration, written with the epoch's (at the latest every ``FLUSH_S`` seconds). Written in chunks
    that MLflow accepts (at most ``CHUNK`` per call); tracking never stops training: failures warn."""

    tracking_uri: str
    run_id: str
    log_every: int = 0
    prefix: str = ""

    CHUNK: ClassVar[int] = 900  # MLflow takes at most 1000 metrics per log_batch
    FLUSH_S: ClassVar[float] = 60.0

    def __post_init__(self) -> None:
        self._client: Any = None  # made on rank 0 in on_start (the logger is pickled to the workers)
        self._pending: list[Any] = []
        self._flushed = time.monotonic()

    def on_start(self, state: Any) -> None:
        if state.rank == 0:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(self.tracking_uri)

    def on_step(self, state: Any, epoch: int, loss: Any) -> None:
        step = state.scheduler.last_epoch
        if self.log_every and loss is not None and step % self.log_every == 0:
            self.add({"train_loss_step": float(loss.detach()), "lr_step": state.optimizer.param_groups[0]["lr"]},
                     step=step)

    def on_epoch_end(self, state: Any, metrics: dict[str, Any]) -> None:
        epoch = int(metrics["epoch"])
        if self.prefix:
            metrics = {f"{self.prefix}{k}": v for k, v in metrics.items() if k not in ("epoch", "step")}
        self.log(metrics, step=epoch)

    def on_evaluation(self, state: Any, metrics: dict[str, Any]) -> None:
        self.log(metrics, step=state.epochs)

    def add(self, metrics: Mapping[str, Any], step: int) -> None:
        """Keep the finite numbers of ``metrics`` at ``step`` for the next write."""
        if self._client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending += [Metric(k, float(v), now, step) for k, v in metrics.items()
                          if isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))]
        if time.monotonic() - self._flushed > self.FLUSH_S:
            self.flush()

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Write ``metrics`` at ``step`` now, with what was kept."""
        self.add(metrics, step)
        self.flush()

    def flush(self) -> None:
        pending, self._pending, self._flushed = self._pending, [], time.monotonic()
        try:
            for i in range(0, len(pending), self.CHUNK):
                self._client.log_batch(self.run_id, metrics=pending[i:i + self.CHUNK])
        except Exception as exc:  # tracking must never kill training
            log.warning("[train] MLflow logging failed (%r); continuing", exc)
