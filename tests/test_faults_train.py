"""Faults in a candidate's Ray Train run: a full disk while a checkpoint is written (one clear fault, the rerun
resumes), and a corrupt latest checkpoint with an empty checkpoint-manager snapshot (set aside, the candidate
resumes from its previous checkpoint and finishes)."""
from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

ray = pytest.importorskip("ray")

from e3d import zoo  # noqa: E402
from pipeline.faults import OutOfSpace  # noqa: E402
from pipeline.train import Recipe, TensorSource, train_one  # noqa: E402
from pipeline.train.callbacks import LoopCallback  # noqa: E402
from pipeline.train.checkpoint import SNAPSHOT_FILE  # noqa: E402

SPEC = zoo.get("E3D-init-S")
RECIPE = Recipe.paper("sthsth").scaled(epochs=2, batch_size=16, lr=0.05)

import ray.cloudpickle  # noqa: E402

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the callback below travels to the workers


class DiskFullAtCheckpoint(LoopCallback):
    """Rank 0's checkpoint write of epoch index ``epoch`` fails with ENOSPC (once: ``marker``)."""

    def __init__(self, epoch: int, marker: str):
        self.epoch, self.marker = epoch, marker

    def on_epoch_end(self, state, metrics) -> None:
        if state.rank == 0 and metrics["epoch"] == self.epoch + 1 and not os.path.exists(self.marker):
            Path(self.marker).write_text("disk full\n")
            import pipeline.train.worker as worker

            def full(folder, *_a, **_k):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f"{folder}/state.pt")

            worker.save_state = full


@pytest.fixture(scope="module")
def source():
    return TensorSource.synthetic(num_classes=4, n_train=32, n_val=8, frames=4, size=32, seed=5)


@pytest.mark.slow  # three Ray Train runs (~60 s idle); `make test-slow`, run by CI; tests/test_faults.py has the fast ones
def test_full_disk_at_a_checkpoint_then_corrupt_files_the_candidate_finishes(ray_cluster, source, tmp_path):
    kw = dict(recipe=RECIPE, out_dir=tmp_path, eval_clips=1, eval_crops=1, run_name="cand", max_failures=0)
    # 1. the disk fills while epoch 2's checkpoint is written: one fault for the job to report, no FAILED record
    with pytest.raises(OutOfSpace) as err:
        train_one(SPEC, source, loop_callbacks=[DiskFullAtCheckpoint(1, str(tmp_path / "marker"))], **kw)
    assert err.value.path and err.value.path.endswith("state.pt")
    assert not (tmp_path / "candidates" / "cand" / "result.json").exists()
    # 2. space freed: the same call resumes from epoch 1's checkpoint and finishes
    first = train_one(SPEC, source, **kw)
    assert first.ok, first.error
    assert [h["epoch"] for h in first.history] == [1, 2] and first.history[1]["session_start_epoch"] == 1
    # 3. the latest checkpoint cut short and Ray's snapshot left empty: both set aside (kept), the candidate
    #    resumes from its previous checkpoint (epoch 2) and finishes again
    run = tmp_path / "train" / "cand"
    state = next(run.glob("final_*")) / "state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 3])
    (run / SNAPSHOT_FILE).write_text("")
    again = train_one(SPEC, source, **kw)
    assert again.ok, again.error
    assert [h["epoch"] for h in again.history] == [1, 2] and again.mv_videos == first.mv_videos
    assert list(run.glob("final_*.corrupt-*")) and list(run.glob(f"{SNAPSHOT_FILE}.corrupt-*"))
