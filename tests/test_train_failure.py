"""Worker loss: FailureConfig restarts the worker group and training continues from the last checkpoint."""
import os

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

ray = pytest.importorskip("ray")
mlflow = pytest.importorskip("mlflow")

from e3d import zoo  # noqa: E402
from pipeline.tracking import Tracking  # noqa: E402
from pipeline.train import Recipe, TensorSource, train_one  # noqa: E402
from pipeline.train.callbacks import KillWorkerOnce  # noqa: E402

SPEC = zoo.get("E3D-init-S")
RECIPE = Recipe.paper("sthsth").scaled(epochs=2, batch_size=16, lr=0.05)


@pytest.fixture(scope="module")
def source():
    return TensorSource.synthetic(num_classes=4, n_train=32, n_val=8, frames=4, size=32, seed=5)


@pytest.mark.slow  # a Ray Train worker killed and restarted (~50 s idle); `make test-slow`, run by CI
def test_worker_killed_mid_run_resumes_from_checkpoint(ray_cluster, source, tmp_path):
    marker = tmp_path / "killed"
    r = train_one(SPEC, source, recipe=RECIPE, out_dir=tmp_path, eval_clips=1, eval_crops=1, run_name="chaos",
                  max_failures=1, loop_callbacks=[KillWorkerOnce(epoch=1, marker=str(marker))])
    assert marker.is_file()  # the worker really died (at the start of epoch index 1)
    assert r.ok, r.error
    assert [h["epoch"] for h in r.history] == [1, 2]
    assert r.history[0]["session_start_epoch"] == 0
    assert r.history[1]["session_start_epoch"] == 1  # the restarted worker began at epoch 1, from the checkpoint


@pytest.mark.slow
def test_worker_loss_beyond_max_failures_fails_the_candidate(ray_cluster, source, tmp_path):
    tracking = Tracking.local(tmp_path / "mlruns", "test-failure")
    r = train_one(SPEC, source, recipe=RECIPE, tracking=tracking, out_dir=tmp_path, eval_clips=1, eval_crops=1,
                  run_name="doomed", max_failures=0,
                  loop_callbacks=[KillWorkerOnce(epoch=1, marker=str(tmp_path / "killed"))])
    assert not r.ok and r.error
    assert (tmp_path / "candidates" / "doomed" / "error.txt").is_file()
    run = mlflow.tracking.MlflowClient(tracking.tracking_uri).get_run(r.mlflow_run_id)
    assert run.info.status == "FAILED" and "e3d.error" in run.data.tags
