"""Hooks of the worker loops (:func:`pipeline.train.worker.run`): what is not training itself.

Callbacks travel in the loop's config (``config["callbacks"]``, pickled to every worker) and run on every
rank; a callback that should act once checks ``state.rank``. MLflow's per-epoch logging is one
(:class:`pipeline.tracking.WorkerMetricsLogger`); :class:`KillWorkerOnce` injects a fault for tests.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from .worker import WorkerState

log = logging.getLogger("pipeline.train")


class LoopCallback:
    """Subclass and override what you need (any object with these four methods will do)."""

    def on_start(self, state: "WorkerState") -> None:
        """After set-up and resume, before the first epoch of this session."""

    def on_step(self, state: "WorkerState", epoch: int, loss: "torch.Tensor") -> None:
        """After every training iteration (``epoch`` counts from 0; ``state.scheduler.last_epoch`` is the
        iteration count)."""

    def on_epoch_end(self, state: "WorkerState", metrics: dict[str, Any]) -> None:
        """After an epoch's validation, before its checkpoint is reported."""

    def on_evaluation(self, state: "WorkerState", metrics: dict[str, Any]) -> None:
        """After the final multi-view evaluation (not called when a resumed run already had it)."""


@dataclass(frozen=True)
class KillWorkerOnce(LoopCallback):
    """Fault injection for tests: rank 0 exits hard after its first iteration of epoch ``epoch`` (0-based)
    unless ``marker`` exists, and writes ``marker`` first, so the restarted worker group trains on. It waits
    ``delay_s`` before dying so that Train's controller (polling every 2 s) has collected the last report."""

    epoch: int
    marker: str
    delay_s: float = 5.0

    def on_step(self, state: "WorkerState", epoch: int, loss: "torch.Tensor") -> None:
        if epoch == self.epoch and state.rank == 0 and not os.path.exists(self.marker):
            time.sleep(self.delay_s)
            Path(self.marker).write_text(f"worker killed during epoch index {epoch}\n")
            log.warning("[train] KillWorkerOnce: killing this worker during epoch %d", epoch)
            os._exit(1)
