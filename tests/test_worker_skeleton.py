"""The worker skeleton every Ray Train loop stands on (pipeline.train.worker), without Ray Train: resume restores the
exact state and step, a corrupt checkpoint is refused, batches, the all-reduce (world 1 and two gloo processes),
and the MLflow worker logger's chunks."""
import math

import numpy as np
import pytest
import torch

from e3d import zoo
from pipeline.tracking import WorkerMetricsLogger
from pipeline.train.checkpoint import STATE_FILE, CorruptCheckpoint, save_state
from pipeline.train.loop import TrainState, setup, train_epoch
from pipeline.train.recipe import Recipe
from pipeline.train.worker import Placement, all_reduce_sum, batches, resume, sum_over_workers, tensor_batches

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Shard:
    """What a Ray Data shard offers a loop: ``iter_batches`` of read-only numpy ``clip``/``label``."""

    def __init__(self, x, y):
        self.x, self.y = x, y
        self.x.flags.writeable = False

    def iter_batches(self, batch_size, batch_format="numpy", prefetch_batches=1):
        for i in range(0, len(self.x), batch_size):
            yield {"clip": self.x[i:i + batch_size], "label": self.y[i:i + batch_size]}


class Checkpoint:
    """A ``ray.train.Checkpoint`` as the skeleton uses it."""

    def __init__(self, path):
        self.path = path

    def as_directory(self):
        import contextlib

        return contextlib.nullcontext(str(self.path))


def _config(seed=0):
    spec = zoo.get("E3D-init-S").with_input(frames=4, size=32).with_num_classes(3)
    recipe = Recipe.paper("sthsth").scaled(epochs=3, batch_size=4, lr=0.05)
    return {"spec": spec.to_dict(), "recipe": recipe.to_dict(), "steps_per_epoch": 2, "seed": seed}


def _shard(seed=0, n=8):
    rng = np.random.default_rng(seed)
    return Shard(rng.normal(size=(n, 3, 4, 32, 32)).astype(np.float32), np.arange(n) % 3)


def _flat(module):
    return torch.cat([t.detach().reshape(-1).double() for t in module.state_dict().values()])


def test_resume_restores_the_exact_state_and_step(tmp_path):
    state = setup(_config())
    for epoch in (0, 1):
        state.history.append(train_epoch(state, _shard(), epoch))
    save_state(tmp_path, state.state_dict(2), {"epoch": 2})
    resumed = setup(_config(seed=123))  # other initial weights: everything must come from the checkpoint
    assert not torch.equal(_flat(resumed.core), _flat(state.core))
    resume(resumed, Checkpoint(tmp_path))
    assert isinstance(resumed, TrainState) and resumed.start_epoch == 2 and resumed.history == state.history
    assert resumed.scheduler.last_epoch == state.scheduler.last_epoch == 4
    assert resumed.optimizer.param_groups[0]["lr"] == state.optimizer.param_groups[0]["lr"]
    assert torch.equal(_flat(resumed.core), _flat(state.core))
    assert resumed.final is None  # epochs are left: no evaluation stands yet
    # the next epoch on the same batches (and dropout draws) is the same epoch for both: momentum came back too
    torch.manual_seed(5)
    a = train_epoch(state, _shard(), 2)
    torch.manual_seed(5)
    b = train_epoch(resumed, _shard(), 2)
    assert a["train_loss"] == b["train_loss"] and a["lr"] == b["lr"]
    assert torch.equal(_flat(resumed.core), _flat(state.core))


def test_a_corrupt_checkpoint_is_refused_and_the_state_kept(tmp_path):
    state = setup(_config())
    state.history.append(train_epoch(state, _shard(), 0))
    save_state(tmp_path, state.state_dict(1), {"epoch": 1})
    path = tmp_path / STATE_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    path.write_bytes(bytes(data))
    fresh = setup(_config(seed=123))
    before = _flat(fresh.core)
    with pytest.raises(CorruptCheckpoint, match="checksum mismatch"):
        resume(fresh, Checkpoint(tmp_path))
    assert fresh.start_epoch == 0 and fresh.history == [] and torch.equal(_flat(fresh.core), before)
    resume(fresh, None)  # no checkpoint: a fresh start
    assert fresh.start_epoch == 0


def test_batches_are_writable_and_none_is_empty():
    shard = _shard(n=6)
    got = list(batches(shard, 4))
    assert [len(b["label"]) for b in got] == [4, 2] and all(b["clip"].flags.writeable for b in got)
    x, y = next(tensor_batches(shard, 4, torch.device("cpu")))
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape == (4, 3, 4, 32, 32)
    assert list(batches(None, 4)) == []


def test_all_reduce_without_a_process_group_is_the_value():
    t = torch.tensor([1.5, 2.0], dtype=torch.float64)
    assert all_reduce_sum(t) is t
    assert sum_over_workers(3.25, torch.device("cpu")) == 3.25
    assert Placement().prepare(torch.nn.Linear(2, 2)).weight.device.type == "cpu"


def _two_workers(rank: int, init: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        t = torch.tensor([float(rank + 1), 10.0 * rank], dtype=torch.float64)
        summed = all_reduce_sum(t)
        cpu = sum_over_workers(0.5 + rank, torch.device("cpu"))
        torch.save({"summed": summed, "kept": t, "cpu": cpu}, f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(300)
def test_all_reduce_sums_over_two_gloo_processes(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_two_workers, args=(f"file://{tmp_path}/rendezvous", str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"{rank}.pt")
        assert got["summed"].tolist() == [3.0, 10.0] and got["cpu"] == 2.0
        assert got["kept"].tolist() == [float(rank + 1), 10.0 * rank]  # the input is not summed in place


class FakeClient:
    def __init__(self, fail=False):
        self.calls, self.fail = [], fail

    def log_batch(self, run_id, metrics):
        if self.fail:
            raise RuntimeError("store is down")
        self.calls.append(list(metrics))


class Rank0:
    rank, epochs = 0, 3


def _logger(**kw):
    logger = WorkerMetricsLogger("sqlite:///unused.db", "run", **kw)
    logger._client = FakeClient()
    return logger


def test_the_worker_logger_writes_in_chunks_mlflow_accepts():
    logger = _logger()
    metrics = {f"m{i}": float(i) for i in range(2000)} | {"nan": math.nan, "text": "x", "flag": True, "epoch": 2}
    logger.on_epoch_end(Rank0(), metrics)
    calls = logger._client.calls
    assert [len(c) for c in calls] == [900, 900, 201]
    logged = {m.key: (m.value, m.step) for c in calls for m in c}
    assert len(logged) == 2001 and logged["m1999"] == (1999.0, 2) and logged["epoch"] == (2.0, 2)
    assert not {"nan", "text", "flag"} & set(logged)


def test_the_worker_logger_keeps_step_metrics_until_the_epoch_ends():
    logger = _logger(prefix="epoch_")
    for step in (1, 2, 3):
        logger.add({"loss": 0.5 * step}, step)
    assert logger._client.calls == []
    logger.on_epoch_end(Rank0(), {"epoch": 1, "step": 1, "best": -3.0})
    (call,) = logger._client.calls
    assert [(m.key, m.step) for m in call] == [("loss", 1), ("loss", 2), ("loss", 3), ("epoch_best", 1)]
    logger.on_evaluation(Rank0(), {"mv_top1": 50.0})
    assert [(m.key, m.step) for m in logger._client.calls[-1]] == [("mv_top1", 3)]


def test_the_worker_logger_off_rank_0_or_failing_never_raises():
    off = WorkerMetricsLogger("sqlite:///unused.db", "run")  # on_start made no client: not rank 0
    off.on_epoch_end(Rank0(), {"epoch": 1, "loss": 1.0})
    failing = _logger()
    failing._client = FakeClient(fail=True)
    failing.on_epoch_end(Rank0(), {"epoch": 1, "loss": 1.0})  # warns, training goes on
    assert failing._pending == []
