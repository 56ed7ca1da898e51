"""Predicting with a trained network: e3d predict, batch inference on Ray Data (the job's own multi-view top-1
reproduced exactly, a killed run resumed, bad files reported), jobs/predict.py's input checks."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")
import torch  # noqa: E402

from e3d import zoo  # noqa: E402
from e3d.export import randomize_weights  # noqa: E402
from e3d.model import build_model  # noqa: E402
from e3d.model_folder import Preprocessing, write_model_folder  # noqa: E402
from e3d.model_source import open_model  # noqa: E402
from pipeline.predict.batch import BatchOptions, ResumeError, run_batch  # noqa: E402
from pipeline.predict.inputs import list_videos  # noqa: E402
from pipeline.predict.single import predict_videos  # noqa: E402
from pipeline.predict.views import clip_config, video_views  # noqa: E402
from pipeline.video.clip import ClipConfig  # noqa: E402
from pipeline.video.formats import load_dataset  # noqa: E402
from video_fixtures import UCF_DIR, make_small_dataset, needs_ucf  # noqa: E402

CLIP = ClipConfig(frames=4, sampling_rate=2, size=32, train_scale=(32, 36), hflip=False, batch_size=4)
UCF_CLASSES = ["Archery", "BasketballDunk", "HorseRace", "PlayingPiano", "PlayingViolin", "Surfing"]
QUIET = dict(say=lambda *a: None)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = make_small_dataset(tmp_path_factory.mktemp("data") / "syn", clips_per_class=6)
    return root, load_dataset(root)


@pytest.fixture(scope="module")
def trained(ray_cluster, data, tmp_path_factory):
    """One candidate trained for one epoch on the synthetic videos, evaluated 2 clips x 3 crops by the job."""
    from pipeline.train import Recipe, plan_resources, train_one

    root, ds = data
    out = tmp_path_factory.mktemp("job") / "train"  # the main job's layout: <out>/train/candidates/<run>
    ds.save_label_map(out / "label_map.json")  # as jobs/train.py writes it: the candidate's class names
    recipe = Recipe.paper("sthsth").scaled(epochs=1, batch_size=8, lr=0.05, init="torch")
    result = train_one(zoo.get("E3D-init-S"), ds, clip=CLIP, recipe=recipe, out_dir=out, eval_clips=2, eval_crops=3,
                       run_name="tiny", plan=plan_resources(1), seed=0)
    assert result.ok, result.error
    return out / "candidates" / "tiny", result


@pytest.fixture(scope="module")
def val_predictions(trained, data, tmp_path_factory):
    folder, _ = trained
    found = open_model(folder)
    out = tmp_path_factory.mktemp("pred")
    report = run_batch(found.model, found.preprocessing, list_videos(data[0], split="val"), out,
                       BatchOptions(block_size=3, batch_size=5), **QUIET)
    return report, pq.read_table(out / "predictions.parquet")


def test_views_are_the_jobs_evaluation_rows(data):
    """video_views gives the arrays the job's evaluation dataset decodes (its map function, called directly)."""
    from pipeline.video.ray_data import _eval_batch

    _, ds = data
    items = ds.val[:3]
    batch = {"path": np.array([it.path for it in items]), "label": np.arange(3), "video_id": np.arange(3)}
    (rows,) = list(_eval_batch(batch, CLIP, 2, 3, log=None))  # good files: the skip log is not touched
    pre = Preprocessing(frames=4, size=32, sampling_rate=2, labels=ds.classes, clips=2, crops=3)
    for i, item in enumerate(items):
        views = video_views(item.path, clip_config(pre), 2, 3)
        assert views.shape == (6, 3, 4, 32, 32)
        mine = rows["clip"][rows["video_id"] == i]
        assert np.array_equal(rows["view"][rows["video_id"] == i], np.arange(6)) and np.array_equal(views, mine)


def test_candidate_opens_with_the_jobs_clip_views_and_names(trained, data):
    folder, result = trained
    found = open_model(folder)
    pre = found.preprocessing
    assert (pre.frames, pre.size, pre.sampling_rate, pre.clips, pre.crops) == (4, 32, 2, 2, 3)
    assert list(pre.labels) == data[1].classes and not found.notes
    assert found.card.results["mv_top1"] == result.mv_top1 and found.card.recipe["epochs"] == 1
    job = open_model(folder.parent.parent)  # the job's output folder: its champion
    assert job.kind == "job champion" and job.path == folder


def test_batch_reproduces_the_jobs_multiview_accuracy_exactly(trained, val_predictions):
    _, result = trained
    report, table = val_predictions
    m = report.metrics
    assert m["scored"] == result.mv_videos == table.num_rows and not report.undecodable
    assert m["top1"] == result.mv_top1 and m["top5"] == result.mv_top5
    rows = table.to_pylist()
    assert all(r["views"] == 6 and r["top1"] == r["topk"][0] and len(r["topk"]) == 4 for r in rows)
    assert all(abs(sum(r["probs"]) - 1) < 1e-6 for r in rows)  # 4 classes: top-k holds them all
    assert (Path(report.out) / "confusion.png").stat().st_size > 0
    assert report.videos_now == len(rows) and report.videos_per_s > 0 and report.cpu_s > 0


def test_single_video_predict_agrees_with_batch(trained, val_predictions):
    folder, _ = trained
    found = open_model(folder)
    row = val_predictions[1].to_pylist()[0]
    (p,) = predict_videos(found.model, found.preprocessing, [row["path"]], topk=4)
    assert p.topk == row["topk"] and np.allclose(p.probs, row["probs"], atol=1e-6) and p.views == 6


@pytest.mark.slow  # batch inference killed and resumed (Ray Data actors twice); `make test-slow`, run by CI
def test_killed_batch_inference_resumes(trained, data, val_predictions, tmp_path):
    folder, _ = trained
    found = open_model(folder)
    videos = list_videos(data[0], split="val")
    options = BatchOptions(block_size=3, batch_size=5)

    class Killed(Exception):
        pass

    def kill_after_first(block):
        raise Killed(block)

    with pytest.raises(Killed):
        run_batch(found.model, found.preprocessing, videos, tmp_path, options, on_block=kill_after_first, **QUIET)
    parts = sorted((tmp_path / "parts").glob("part-*.parquet"))
    assert len(parts) == 1 and not (tmp_path / "predictions.parquet").exists()
    done_block = int(parts[0].stem.split("-")[1])
    stamp = parts[0].stat().st_mtime_ns
    (tmp_path / "parts" / ".part-00001.parquet.tmp").write_bytes(b"half a file")  # killed while writing
    redone = []
    report = run_batch(found.model, found.preprocessing, videos, tmp_path, options, on_block=redone.append, **QUIET)
    assert sorted(redone) == [b for b in range(3) if b != done_block] and report.blocks_now == 2
    assert parts[0].stat().st_mtime_ns == stamp
    assert not list((tmp_path / "parts").glob(".*.tmp"))
    resumed = pq.read_table(tmp_path / "predictions.parquet")
    whole = val_predictions[1]
    assert resumed.column("path").to_pylist() == whole.column("path").to_pylist()
    assert resumed.column("topk").to_pylist() == whole.column("topk").to_pylist()
    assert np.allclose(np.array(resumed.column("probs").to_pylist()), np.array(whole.column("probs").to_pylist()))
    again = []
    run_batch(found.model, found.preprocessing, videos, tmp_path, options, on_block=again.append, **QUIET)
    assert again == []  # nothing left to do
    with pytest.raises(ResumeError, match="topk"):
        run_batch(found.model, found.preprocessing, videos, tmp_path, BatchOptions(block_size=3, topk=2), **QUIET)


def test_job_labels_a_folder_of_videos_and_reports_bad_files(trained, data, tmp_path, capsys):
    import importlib.util

    folder, _ = trained
    spec = importlib.util.spec_from_file_location("predict_job", Path(__file__).parents[1] / "jobs" / "predict.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    for item in data[1].val[:3]:
        os.symlink(item.path, incoming / Path(item.path).name)
    (incoming / "garbage.mp4").write_bytes(b"not a video" * 50)
    (incoming / "empty.mp4").write_bytes(b"")
    out = tmp_path / "pred"
    assert job.main(["--model", str(folder.parent.parent), "--data", str(incoming), "--out", str(out), "--logits",
                     "--topk", "2", "--block-size", "2"]) == 0
    table = pq.read_table(out / "predictions.parquet")
    assert "label" not in table.column_names and table.num_rows == 5
    rows = {Path(r["path"]).name: r for r in table.to_pylist()}
    assert rows["empty.mp4"]["error"].startswith("open") and rows["garbage.mp4"]["top1"] is None
    good = [r for r in rows.values() if not r["error"]]
    assert len(good) == 3 and all(len(r["topk"]) == 2 and len(r["logits"]) == 4 for r in good)
    printed = capsys.readouterr().out
    assert "2 undecodable file(s)" in printed and "videos/s" in printed and "Traceback" not in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["undecodable"] == 2 and "top1" not in metrics


@pytest.mark.parametrize("argv, option", [
    (["--model", "/nonexistent", "--data", ".", "--out", "o"], "--model"),
    (["--data", "/nonexistent", "--out", "o"], "--data"),
    (["--data", "DATA", "--out", "o", "--gpus-per-actor", "-1"], "--gpus-per-actor"),
    (["--data", "DATA", "--out", "o", "--labels", "/nonexistent.txt"], "--labels"),
])
def test_job_checks_inputs_before_work(argv, option, trained, data, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("predict_job", Path(__file__).parents[1] / "jobs" / "predict.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    argv = [str(data[0]) if a == "DATA" else a for a in argv]
    if "--model" not in argv:
        argv = ["--model", str(trained[0])] + argv
    with pytest.raises(SystemExit) as exc:
        job.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert option in err[-1]


def test_e3d_predict_on_synthetic_video_and_bad_file(trained, data, capsys):
    from e3d.cli import main

    folder, _ = trained
    video = data[1].val[0].path
    assert main(["predict", str(folder), video, "--topk", "2", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out.strip())
    assert doc["top1"] in data[1].classes and len(doc["probs"]) == 2 and doc["views"] == 6
    assert main(["predict", str(folder), "/nonexistent.mp4"]) == 1
    out = capsys.readouterr().out
    assert "/nonexistent.mp4: cannot decode (open: no such file)" in out and "Traceback" not in out
    assert main(["predict", "/nonexistent", video]) == 2
    assert capsys.readouterr().err.startswith("e3d predict: error: MODEL:")


@needs_ucf
def test_e3d_predict_on_ucf101_dev(tmp_path, capsys, one_torch_thread):
    torch.manual_seed(0)
    spec = zoo.get("E3D-init-S").with_input(8, 56).with_num_classes(6)
    model = randomize_weights(build_model(spec)).eval()
    folder = write_model_folder(tmp_path / "m", model, Preprocessing(frames=8, size=56, sampling_rate=4,
                                                                     labels=UCF_CLASSES, clips=2, crops=3),
                                measure_latency=False)
    videos = sorted(str(p) for p in UCF_DIR.glob("*/*.avi"))[:2]
    from e3d.cli import main

    assert main(["predict", str(folder), *videos]) == 0
    out = capsys.readouterr().out
    assert out.count("(6 views") == 2 and sum(name in out for name in UCF_CLASSES) >= 5


def test_main_job_writes_its_champion_as_a_model_folder(trained, data, val_predictions):
    from pipeline.predict.champion import write_champion_folder
    from pipeline.search_and_train import JobConfig

    folder, result = trained
    job = folder.parents[2]
    config = JobConfig(out_dir=str(job), clip=CLIP, eval_clips=2, eval_crops=3)
    said = []
    written, best = write_champion_folder([result], config, data[1], job, say=said.append)
    assert written == job / "model" and best is result and "e3d predict" in said[0]
    found = open_model(job)  # the job's folder now opens on its model folder
    assert found.kind == "job champion" and found.path == written
    pre = found.preprocessing
    assert (pre.frames, pre.size, pre.sampling_rate, pre.clips, pre.crops) == (4, 32, 2, 2, 3)
    assert list(pre.labels) == data[1].classes
    config_json = json.loads((written / "config.json").read_text())
    assert config_json["provenance"]["strategy"] == "evolution" and config_json["results"]["mv_top1"] == result.mv_top1
    row = val_predictions[1].to_pylist()[1]
    (p,) = predict_videos(found.model, pre, [row["path"]], topk=4)
    assert p.topk == row["topk"] and np.allclose(p.probs, row["probs"], atol=1e-6)
