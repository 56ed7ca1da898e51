"""Several candidates on real (synthetic H.264) videos: one Tune trial each, trained concurrently when the
cluster has room, each one MLflow child run, the summary at the parent."""
import json
import os
from dataclasses import replace

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

ray = pytest.importorskip("ray")
mlflow = pytest.importorskip("mlflow")

from e3d import zoo  # noqa: E402
from e3d.spec import SpecError  # noqa: E402
from pipeline.tracking import PARENT_TAG, Tracking  # noqa: E402
from pipeline.train import Recipe, TensorSource, plan_resources, train_candidates, train_one  # noqa: E402
from pipeline.video.formats import VideoItem, load_dataset  # noqa: E402
from pipeline.video.ray_data import ClipConfig  # noqa: E402
from pipeline.video.synthetic import make_synthetic_dataset  # noqa: E402

CLIP = ClipConfig(frames=8, sampling_rate=2, size=32, train_scale=(32, 36), hflip=False, batch_size=4)
BASE = zoo.get("E3D-init-S")
NARROW = BASE.replace(name="narrow", head=BASE.head.__class__((1, 1, 1), 128), hidden=256)


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)  # room for 2 candidates at once
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = make_synthetic_dataset(tmp_path_factory.mktemp("videos"), num_classes=4, clips_per_class=8, size=32,
                                  frames=24)
    return load_dataset(root)


def test_unsuitable_spec_is_refused_before_training(videos, tmp_path):
    short = ClipConfig(frames=2, sampling_rate=2, size=32, train_scale=(32, 36))
    with pytest.raises(SpecError, match="temporal size 3 exceeds input frames 2"):
        train_candidates([BASE], videos, clip=short, out_dir=tmp_path)


@pytest.mark.slow  # two candidates at once as Tune trials on a 4-CPU Ray (~55 s idle); `make test-slow`, run by CI
def test_candidates_train_concurrently_and_nest_in_mlflow(cluster, videos, tmp_path):
    assert plan_resources(2).concurrent == 2
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video" * 50)  # skipped inside the trials; the driver's report must still list it
    videos = replace(videos, train=videos.train + [VideoItem(str(bad), 0)])
    tracking = Tracking.local(tmp_path / "mlruns", "test-candidates")
    with tracking.run("job") as parent:
        parent_id = parent.info.run_id
    recipe = Recipe.paper("sthsth").scaled(epochs=1, batch_size=8, lr=0.05)
    results = train_candidates([BASE, NARROW], videos, clip=CLIP, recipe=recipe, tracking=tracking.child(parent_id),
                               out_dir=tmp_path / "out", eval_clips=2, eval_crops=3, log_model=False)
    assert [r.name for r in results] == ["E3D-init-S", "narrow"]
    for r in results:
        assert r.ok, r.error
        assert r.train_input == "8x32x32" and r.epochs == 1
        assert r.history[0]["train_samples"] == len(videos.train) - 1 == 24
        assert r.mv_videos == len(videos.val) == 8 and r.mv_views_per_video == 6.0
    a, b = results
    assert a.started_at < b.finished_at and b.started_at < a.finished_at  # the two fits overlapped in time
    assert a.flops != b.flops

    client = mlflow.tracking.MlflowClient(tracking.tracking_uri)
    children = client.search_runs([client.get_run(parent_id).info.experiment_id],
                                  f"tags.`{PARENT_TAG}` = '{parent_id}'")
    assert sorted(c.info.run_name for c in children) == ["E3D-init-S", "narrow"]
    assert {c.info.run_id for c in children} == {r.mlflow_run_id for r in results}
    assert all(c.info.status == "FINISHED" for c in children)
    summary = {f.path for f in client.list_artifacts(parent_id, "summary")}
    assert summary == {"summary/summary.csv", "summary/summary.json", "summary/summary.txt", "summary/curves.png",
                       "summary/skipped.json"}
    skipped = json.loads((tmp_path / "out" / "summary" / "skipped.json").read_text())
    assert {i["path"] for i in skipped["items"]} == {str(bad)} and skipped["by_stage"] == {"train": 2}, skipped
    csv_text = (tmp_path / "out" / "summary" / "summary.csv").read_text()
    assert csv_text.splitlines()[0].startswith("candidate,gflops") and len(csv_text.splitlines()) == 3


@pytest.mark.slow  # a 4-CPU Ray and two Train workers (~40 s idle); `make test-slow`, run by CI
def test_two_workers_all_reduce_and_gather(cluster, tmp_path):
    """DDP over gloo with 2 workers: validation counts are summed over both shards and the multi-view
    evaluation gathers every video's views from both workers."""
    src = TensorSource.synthetic(num_classes=4, n_train=32, n_val=10, frames=4, size=32, seed=7)
    plan = plan_resources(1, workers=2, data_cpus=1)
    assert plan.num_workers == 2 and plan.cpus_per_worker == 1
    recipe = Recipe.paper("sthsth").scaled(epochs=1, batch_size=4, lr=0.05)
    r = train_one(BASE, src, recipe=recipe, out_dir=tmp_path, eval_clips=2, eval_crops=3, plan=plan,
                  run_name="ddp", log_model=False)
    assert r.ok, r.error
    h = r.history[0]
    assert h["train_samples"] == 32 and h["steps"] == 4  # 16 clips per worker, batch 4
    assert h["val_samples"] == 10  # 5 + 5 (or any split): the all-reduced total, not rank 0's shard
    assert r.mv_videos == 10 and r.mv_views_per_video == 6.0  # views of a video may sit on both workers
    assert r.resources["num_workers"] == 2


def test_trials_ask_for_the_head_node_and_no_cpu():
    """A trial only drives its trainer and writes the candidate's records into the job's folder: it must run
    beside the driver (the head) and take no CPU from training. (On the simulated cluster the scheduler also
    keeps them on the head without this; the request makes it a guarantee.)"""
    from ray import tune

    from pipeline.train.candidates import TRIAL_RESOURCES

    request = tune.with_resources(lambda config: None, TRIAL_RESOURCES)._resources.required_resources
    assert request.get("node:__internal_head__", 0) > 0 and request.get("CPU", 0) == 0, request
