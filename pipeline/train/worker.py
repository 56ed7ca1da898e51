"""The skeleton every Ray Train worker loop of the project stands on: the candidates' training
(:mod:`pipeline.train.loop`), the dnas and PARSEC supernet searches and the fusion template.

A loop module is a setup function and an epoch function on top of it, in the style of Ray's examples::

    def train_loop_per_worker(config):
        state = setup(config, placement(config))              # the loop's WorkerState on this rank and device
        train, val = dataset_shard("train"), dataset_shard("val")
        run(state, lambda state, epoch: one_epoch(state, epoch, train, val), callbacks)

    run(state, one_epoch, callbacks):
        resume(state, ray.train.get_checkpoint())            # checksummed: a corrupt checkpoint raises
        for epoch in range(state.start_epoch, state.epochs):
            metrics = one_epoch(state, epoch)                 # the loop's own: train, validate, its console line
            state.end_epoch(metrics)                          # into state.history
            callbacks' on_epoch_end(state, metrics)           # MLflow (pipeline.tracking.WorkerMetricsLogger), tests
            report(state, metrics, epoch + 1, "epoch_NNNN")   # metrics + checkpoint written by rank 0
        finish(state)                                         # e.g. the candidates' multi-view evaluation
        report(state, state.final_metrics(), ..., "final_NNNN_<time>")

Every checkpoint is :mod:`pipeline.train.checkpoint`'s ``state.pt`` + ``meta.json`` (SHA-256): a resume never loads
one that does not verify (and a candidate's run folder is checked by :func:`~pipeline.train.checkpoint.repair_run`
before it resumes). Setup functions take a :class:`Placement`, so they run without Ray too (tests: ``Placement()``, rank 0 of 1
on the CPU). Sums over the workers go through :func:`all_reduce_sum` (no-op without a process group).
"""
from __future__ import annotations

import logging
import numbers
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence, TypeVar

import numpy as np
import torch
from torch import nn

from .checkpoint import load_state, save_state

log = logging.getLogger("pipeline.train")


def unwrap(model: nn.Module) -> nn.Module:
    """The network without its DDP wrapper."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@dataclass(frozen=True)
class Placement:
    """Where a worker runs: its rank among ``world`` workers, its device, and ``wrap`` (Ray Train's
    ``prepare_model``: to the device, DDP when ``world > 1``; None: moved to ``device`` as it is)."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    wrap: Callable[[nn.Module], nn.Module] | None = None

    def prepare(self, model: nn.Module) -> nn.Module:
        return self.wrap(model) if self.wrap is not None else model.to(self.device)


def placement(config: dict[str, Any]) -> Placement:
    """This Ray Train worker's placement; sets torch's threads to ``config["torch_threads"]`` when given."""
    import ray.train
    import ray.train.torch

    if config.get("torch_threads"):
        torch.set_num_threads(int(config["torch_threads"]))
    ctx = ray.train.get_context()
    return Placement(ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device(),
                     ray.train.torch.prepare_model)


@dataclass(kw_only=True)
class WorkerState:
    """What every loop's state holds: where it runs, the (wrapped) network, the number of epochs asked for,
    ``start_epoch`` (where this session began) and ``history`` (every finished epoch's metrics, all sessions), both
    from the checkpoint on resume. ``label`` starts its console lines (``[train] E3D-S``). A loop subclasses it
    with its optimizers and the rest, and says what its checkpoint holds (:meth:`state_dict`, with ``epoch``)."""

    rank: int
    world: int
    device: torch.device
    model: nn.Module  # DDP-wrapped when world > 1
    epochs: int
    label: str
    start_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def core(self) -> nn.Module:
        """The network without DDP (evaluation uses it: uneven shards must not wait for collectives)."""
        return unwrap(self.model)

    def state_dict(self, epoch: int) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Restore everything, ``start_epoch`` and ``history`` included."""
        raise NotImplementedError

    def end_epoch(self, metrics: dict[str, Any]) -> None:
        self.history.append(metrics)

    def final_metrics(self) -> dict[str, Any]:
        """The final report: the last epoch's metrics."""
        return (dict(self.history[-1]) if self.history else {}) | {"is_final": 1}


State = TypeVar("State", bound=WorkerState)


# -- resume, data, sums, reports -----------------------------------------------------------------------------
def resume(state: WorkerState, checkpoint: Any) -> None:
    """Restore ``state`` from a ``ray.train.Checkpoint`` (None: nothing to do); a checkpoint that does not verify
    raises :class:`~pipeline.train.checkpoint.CorruptCheckpoint` and leaves ``state`` as it was."""
    if checkpoint is None:
        return
    with checkpoint.as_directory() as d:
        state.load_state_dict(load_state(d, map_location=state.device))
    if state.rank == 0:
        log.info(f"{state.label}: resumed from checkpoint at epoch {state.start_epoch}/{state.epochs}")


def dataset_shard(name: str) -> Any:
    """This worker's shard of the trainer's dataset ``name``; None when the trainer has no such dataset."""
    import ray.train

    try:
        return ray.train.get_dataset_shard(name)
    except (KeyError, ValueError):
        return None


def batches(shard: Any, batch_size: int) -> Iterator[dict[str, Any]]:
    """Numpy batches of a dataset shard (nothing for None), made writable (Ray hands out read-only views; torch
    wants to own)."""
    if shard is None:
        return
    for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=1):
        yield {k: (v if not isinstance(v, np.ndarray) or v.flags.writeable else v.copy()) for k, v in batch.items()}


def inputs(batch: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch's clips (float32, what the networks take) and labels (int64) on ``device``."""
    x = torch.as_tensor(batch["clip"], dtype=torch.float32).to(device, non_blocking=True)
    y = torch.as_tensor(batch["label"]).long().to(device, non_blocking=True)
    return x, y


def tensor_batches(shard: Any, batch_size: int, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(clips, labels)`` of each batch of a shard, on ``device``."""
    for batch in batches(shard, batch_size):
        yield inputs(batch, device)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over all workers (a new tensor); ``t`` itself without a process group or with one worker."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def sum_over_workers(value: float, device: torch.device) -> float:
    """A number summed over all workers (e.g. CPU-seconds: Train keeps rank 0's report only)."""
    return float(all_reduce_sum(torch.tensor([value], dtype=torch.float64, device=device)).item())


def report(state: WorkerState, metrics: dict[str, Any], epoch: int, name: str) -> None:
    """``ray.train.report`` the metrics that are numbers, with a checkpoint named ``name`` (rank 0 writes
    ``state.state_dict(epoch)``)."""
    import ray.train

    numeric = {k: v for k, v in metrics.items() if isinstance(v, numbers.Real) and not isinstance(v, bool)}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if state.rank == 0:
            save_state(tmp, state.state_dict(epoch), numeric)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(numeric, checkpoint=checkpoint, checkpoint_dir_name=name)


# -- the loop ------------------------------------------------------------------------------------------------
def run(state: State, one_epoch: Callable[[State, int], dict[str, Any]], callbacks: Sequence[Any] = (), *,
        finish: Callable[[State], None] | None = None) -> None:
    """Resume from Train's checkpoint, run the remaining epochs (a report with a checkpoint after each), then
    ``finish`` and the final report. ``callbacks``: loop callbacks (:class:`pipeline.train.callbacks.LoopCallback`)."""
    import ray.train

    resume(state, ray.train.get_checkpoint())
    for cb in callbacks:
        cb.on_start(state)
    for epoch in range(state.start_epoch, state.epochs):
        metrics = one_epoch(state, epoch)
        state.end_epoch(metrics)
        for cb in callbacks:
            cb.on_epoch_end(state, metrics)
        report(state, metrics | {"is_final": 0}, epoch + 1, f"epoch_{epoch + 1:04d}")
    if finish is not None:
        finish(state)
    report(state, state.final_metrics(), state.epochs, f"final_{state.epochs:04d}_{time.strftime('%Y%m%d-%H%M%S')}")
