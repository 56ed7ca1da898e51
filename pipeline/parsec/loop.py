"""``parsec_loop_per_worker``: the PARSEC search inside Ray Train (``pipeline.train.build_trainer``'s loop).

    engine = ParsecEngine(...)                              # resumed from Train's checkpoint when there is one
    for epoch in range(engine.epoch, settings.epochs):
        row = engine.run_epoch(train shard) | engine.validate(val shard)
        log row (and every step's metrics) to the search's MLflow run          # rank 0
        ray.train.report(row, checkpoint=weights + alpha + optimizers + history)

``config`` keys: ``settings`` (``ParsecSettings.to_dict()``), ``frames``, ``size``, ``num_classes``, ``seed``,
``lr``, ``steps_per_epoch``, ``torch_threads``, ``tracking_uri`` and ``run_id`` (the search's MLflow run; None:
no logging). Per step: ``entropy``, ``expected_gflops``, ``sampled_gflops``, ``data_nll``, ``cost_term``,
``loss``, ``penalty``, ``weighted_ce`` (step = the step count); per epoch: ``epoch_<name>`` for every
number of the epoch's history row (step = the epoch).
"""
from __future__ import annotations

import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from e3d.parsec.space import TwoStreamSpace
from e3d.strategies.parsec import ParsecSettings
from pipeline.train.loop import dataset_shard

from .engine import ParsecEngine

log = logging.getLogger("pipeline.parsec")
STATE_FILE = "parsec.pt"
STEP_METRICS = ("entropy", "expected_gflops", "sampled_gflops", "data_nll", "cost_term", "loss", "penalty",
                "weighted_ce")


def save_checkpoint(folder: str | Path, state: dict[str, Any]) -> None:
    torch.save(state, Path(folder) / STATE_FILE)


def load_checkpoint(folder: str | Path) -> dict[str, Any]:
    return torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=False)


class MlflowLogger:
    """Rank 0's metrics into the search run, buffered per epoch (one ``log_batch`` per epoch); failures warn."""

    def __init__(self, tracking_uri: str | None, run_id: str | None):
        self.client, self.run_id, self.buffer = None, run_id, []
        if tracking_uri and run_id:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri)

    def on_step(self, step: int, stats: dict[str, float]) -> None:
        if self.client is not None:
            self.buffer += [(k, float(stats[k]), step) for k in STEP_METRICS if k in stats]

    def on_epoch(self, row: dict[str, Any]) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric

        epoch = int(row["epoch"])
        self.buffer += [(f"epoch_{k}", float(v), epoch) for k, v in row.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("epoch", "step")]
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, s) for k, v, s in self.buffer if math.isfinite(v)]
        self.buffer = []
        try:
            for i in range(0, len(metrics), 900):  # MLflow takes at most 1000 metrics per batch
                self.client.log_batch(self.run_id, metrics=metrics[i:i + 900])
        except Exception as exc:  # tracking must never stop the search
            log.warning("[parsec] MLflow logging failed (%r); continuing", exc)


def batches(shard: Any, batch_size: int, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(clips, labels) tensors of a Ray Data shard."""
    for b in shard.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=1):
        clip = b["clip"] if b["clip"].flags.writeable else np.array(b["clip"])
        yield (torch.as_tensor(clip).to(device), torch.as_tensor(np.asarray(b["label"])).long().to(device))


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    t = t.clone()
    dist.all_reduce(t)
    return t


def report(engine: ParsecEngine, rank: int, metrics: dict[str, Any], name: str) -> None:
    import ray.train

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            save_checkpoint(tmp, engine.state_dict())
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report({k: v for k, v in metrics.items() if not isinstance(v, str)}, checkpoint=checkpoint,
                         checkpoint_dir_name=name)


def parsec_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if config.get("torch_threads"):
        torch.set_num_threads(int(config["torch_threads"]))
    settings = ParsecSettings.from_dict(config["settings"])
    space = TwoStreamSpace(settings.space, frames=int(config["frames"]), size=int(config["size"]),
                           num_classes=int(config["num_classes"]))
    device = ray.train.torch.get_device()
    engine = ParsecEngine(settings, space, seed=int(config.get("seed", 0)), lr=float(config["lr"]),
                          steps_per_epoch=int(config["steps_per_epoch"]), device=device,
                          all_reduce=_all_reduce if world > 1 else None)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            engine.load_state_dict(load_checkpoint(d))
        if rank == 0:
            log.info(f"[parsec] resumed at epoch {engine.epoch}/{settings.epochs}")
    logger = MlflowLogger(config.get("tracking_uri"), config.get("run_id")) if rank == 0 else MlflowLogger(None, None)
    train, val = dataset_shard("train"), dataset_shard("val")
    start = engine.epoch
    while engine.epoch < settings.epochs:
        row = engine.run_epoch(batches(train, settings.batch_size, device), on_step=logger.on_step)
        if val is not None:
            row |= engine.validate(batches(val, settings.batch_size, device))
        row["cpu_s"] = float(engine._sum(torch.tensor(row["cpu_s"], dtype=torch.float64)))  # all workers
        row["session_start_epoch"] = start
        if world > 1:  # every worker must hold the same alpha and weights (0 unless something is wrong)
            weights = torch.cat([p.detach().flatten() for p in engine.supernet.parameters()])
            for key, values in (("alpha_spread", engine.dist.alpha.detach()), ("weights_spread", weights)):
                mean = _all_reduce(values.double()) / world
                row[key] = float(_all_reduce(((values.double() - mean) ** 2).sum()))
        engine.end_epoch(row)
        logger.on_epoch(row)
        if rank == 0:
            log.info(f"[parsec] epoch {row['epoch']}/{settings.epochs} ({row['part']}, alpha "
                     f"{'learning' if row['arch_updates'] else 'frozen'}): nll {row['data_nll']:.3f} entropy "
                     f"{row['entropy']:.2f} mode {row['mode_gflops']:.4f} G expected {row['expected_gflops']:.4f} G")
        report(engine, rank, row, f"epoch_{engine.epoch:04d}")
    if engine.epoch == start:  # nothing left to do: report the finished state again so the run has its result
        report(engine, rank, dict(engine.history[-1]) if engine.history else {}, f"final_{engine.epoch:04d}")
