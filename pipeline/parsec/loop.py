"""``parsec_loop_per_worker``: the PARSEC search inside Ray Train (``pipeline.train.build_trainer``'s loop), on the
skeleton of :mod:`pipeline.train.worker` (resume, a report with a checkpoint every epoch, the final report).

    state = setup(config, placement(config))               # the ParsecEngine: supernet, alpha, both optimizers
    one epoch:                                              # run(state, one_epoch, [MLflow logger])
        row = engine.run_epoch(train shard) | engine.validate(val shard)

``config`` keys: ``settings`` (``ParsecSettings.to_dict()``), ``frames``, ``size``, ``num_classes``, ``seed``,
``lr``, ``steps_per_epoch``, ``torch_threads``, ``tracking_uri`` and ``run_id`` (the search's MLflow run; None:
no logging). Per step: ``entropy``, ``expected_gflops``, ``sampled_gflops``, ``data_nll``, ``cost_term``,
``loss``, ``penalty``, ``weighted_ce`` (step = the step count); per epoch: ``epoch_<name>`` for every
number of the epoch's history row (step = the epoch).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from e3d.parsec.space import TwoStreamSpace
from e3d.strategies.parsec import ParsecSettings
from pipeline.tracking import WorkerMetricsLogger
from pipeline.train.worker import (Placement, WorkerState, all_reduce_sum, dataset_shard, placement, run,
                                   sum_over_workers, tensor_batches)

from .engine import ParsecEngine

log = logging.getLogger("pipeline.parsec")
STEP_METRICS = ("entropy", "expected_gflops", "sampled_gflops", "data_nll", "cost_term", "loss", "penalty",
                "weighted_ce")


@dataclass(kw_only=True)
class ParsecState(WorkerState):
    """The engine on this worker (``model``: its supernet, not DDP-wrapped: each step runs K subnetworks and the
    engine sums gradients itself); ``history`` is the engine's."""

    engine: ParsecEngine

    def state_dict(self, epoch: int) -> dict[str, Any]:
        return self.engine.state_dict()

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.engine.load_state_dict(saved)
        self.start_epoch, self.history = self.engine.epoch, self.engine.history

    def end_epoch(self, metrics: dict[str, Any]) -> None:
        self.engine.end_epoch(metrics)


def setup(config: dict[str, Any], where: Placement = Placement()) -> ParsecState:
    settings = ParsecSettings.from_dict(config["settings"])
    space = TwoStreamSpace(settings.space, frames=int(config["frames"]), size=int(config["size"]),
                           num_classes=int(config["num_classes"]))
    engine = ParsecEngine(settings, space, seed=int(config.get("seed", 0)), lr=float(config["lr"]),
                          steps_per_epoch=int(config["steps_per_epoch"]), device=where.device,
                          all_reduce=all_reduce_sum if where.world > 1 else None)
    return ParsecState(rank=where.rank, world=where.world, device=where.device, model=engine.supernet,
                       epochs=settings.epochs, label="[parsec] search", history=engine.history, engine=engine)


def one_epoch(state: ParsecState, epoch: int, train: Any, val: Any,
              logger: WorkerMetricsLogger | None = None) -> dict[str, Any]:
    """The engine's epoch and the validation of its mode; the CPU-seconds of all workers and (several workers)
    their spread of alpha and of the weights (0 unless something is wrong); the console line."""
    engine, batch_size = state.engine, state.engine.settings.batch_size
    on_step = None
    if logger is not None:
        on_step = lambda step, stats: logger.add({k: stats[k] for k in STEP_METRICS if k in stats}, step)  # noqa: E731
    row = engine.run_epoch(tensor_batches(train, batch_size, state.device), on_step=on_step)
    if val is not None:
        row |= engine.validate(tensor_batches(val, batch_size, state.device))
    row["cpu_s"] = sum_over_workers(row["cpu_s"], state.device)
    row["session_start_epoch"] = state.start_epoch
    if state.world > 1:
        weights = torch.cat([p.detach().flatten() for p in engine.supernet.parameters()])
        for key, values in (("alpha_spread", engine.dist.alpha.detach()), ("weights_spread", weights)):
            mean = all_reduce_sum(values.double()) / state.world
            row[key] = float(all_reduce_sum(((values.double() - mean) ** 2).sum()))
    if state.rank == 0:
        log.info(f"{state.label} epoch {row['epoch']}/{state.epochs} ({row['part']}, alpha "
                 f"{'learning' if row['arch_updates'] else 'frozen'}): nll {row['data_nll']:.3f} entropy "
                 f"{row['entropy']:.2f} mode {row['mode_gflops']:.4f} G expected {row['expected_gflops']:.4f} G")
    return row


def parsec_loop_per_worker(config: dict[str, Any]) -> None:
    state = setup(config, placement(config))
    logger = None
    if config.get("tracking_uri") and config.get("run_id"):
        logger = WorkerMetricsLogger(config["tracking_uri"], config["run_id"], prefix="epoch_")
    train, val = dataset_shard("train"), dataset_shard("val")
    run(state, lambda s, epoch: one_epoch(s, epoch, train, val, logger), [logger] if logger else [])
