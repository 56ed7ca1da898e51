"""Model folders: round trip (outputs equal), the card parsed by the hub's parser, e3d.load, e3d export --folder."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from conftest import REPO
from e3d import zoo
from e3d.export import randomize_weights
from e3d.model import build_model
from e3d.model_card import to_yaml
from e3d.model_folder import (CardInfo, ModelFolderError, Preprocessing, load, read_config, write_model_folder)
from e3d.model_source import open_model, read_labels, views_from_count

LABELS = ["right", "left", "down"]
SPEC = zoo.get("E3D-init-S").with_input(4, 32).with_num_classes(3)
PRE = Preprocessing(frames=4, size=32, sampling_rate=2, labels=LABELS, clips=2, crops=3)
CARD = CardInfo(name="tiny", provenance={"strategy": "evolution", "score": "stentr", "seed": 3,
                                         "budget": {"flops": 8e7, "layers": 41}},
                recipe={"epochs": 2, "lr": 0.05}, results={"mv_top1": 62.5, "mv_top5": 100.0, "mv_videos": 8,
                                                            "val_top1": 50.0, "epochs": 2},
                dataset={"name": "synthetic"}, latency_ms=1.25)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    torch.manual_seed(0)
    model = randomize_weights(build_model(SPEC, dropout=0.3), seed=1).eval()
    path = write_model_folder(tmp_path_factory.mktemp("mf") / "model", model, PRE, card=CARD)
    return path, model


def test_round_trip_outputs_equal(folder, one_torch_thread):
    path, model = folder
    loaded, pre = load(path)
    assert not loaded.training and pre == PRE and loaded.labels == LABELS
    x = torch.randn(3, 3, 4, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert [m.p for m in loaded.modules() if isinstance(m, torch.nn.Dropout)] == [0.3]
    for name, buf in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], buf), name


def test_config_holds_spec_preprocessing_and_cost(folder):
    path, _ = folder
    config = read_config(path)
    assert (config["spec"]["input"]["frames"], config["spec"]["input"]["size"]) == (4, 32)
    assert config["id2label"] == {"0": "right", "1": "left", "2": "down"}
    assert config["preprocessing"]["clips"] == 2 and config["preprocessing"]["crops"] == 3
    assert config["cost"]["latency_ms"] == 1.25 and config["cost"]["params"] > 0
    assert config["provenance"]["strategy"] == "evolution"
    assert (path / "model.safetensors").stat().st_mode & 0o044  # readable by others, as a shared folder


def test_card_parsed_by_the_hub_library(folder):
    hub = pytest.importorskip("huggingface_hub")
    path, _ = folder
    card = hub.ModelCard.load(path / "README.md")
    data = card.data
    assert data.library_name == "e3d-ray" and "video-classification" in data.tags
    assert data.datasets == ["synthetic"]
    results = {r.metric_type: r.metric_value for r in data.eval_results}
    assert results == {"accuracy": 62.5, "top_5_accuracy": 100.0}
    assert {r.task_type for r in data.eval_results} == {"video-classification"}
    text = card.text
    for words in ("FLOPs at this clip", "evolution", "stentr", "Training recipe", "Limits", "62.50 %"):
        assert words in text, words


def test_yaml_writer_quotes_what_needs_it():
    yaml = pytest.importorskip("yaml")
    data = {"a": "x: y # not a comment", "b": [1, 2.5, True], "c": [{"d": "'q'", "e": []}], "f": "\u00e9\n"}
    assert yaml.safe_load(to_yaml(data)) == data


def test_bad_folders_give_one_line(tmp_path, folder):
    with pytest.raises(ModelFolderError, match="no config.json"):
        load(tmp_path)
    path, model = folder
    other = tmp_path / "other"
    other.mkdir()
    config = read_config(path)
    config["spec"]["stages"][0]["out"] = 16  # weights no longer fit
    (other / "config.json").write_text(json.dumps(config))
    (other / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    with pytest.raises(ModelFolderError, match="(do not fit|unreadable)"):
        load(other)
    (other / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelFolderError, match="unreadable"):
        load(other)
    with pytest.raises(ModelFolderError, match="label names"):
        write_model_folder(tmp_path / "x", model, Preprocessing(frames=4, size=32, sampling_rate=1, labels=["a"]))


def test_views_from_count_and_labels(tmp_path):
    assert views_from_count(6) == (2, 3) and views_from_count(2) == (2, 1) and views_from_count(30) == (10, 3)
    assert views_from_count(None) is None and views_from_count(0) is None
    (tmp_path / "label_map.json").write_text(json.dumps({"classes": ["a", "b"]}))
    (tmp_path / "names.txt").write_text("a\n\nb\n")
    assert read_labels(tmp_path / "label_map.json") == read_labels(tmp_path / "names.txt") == ["a", "b"]


def test_open_model_finds_the_folder_of_a_job(folder, tmp_path):
    path, _ = folder
    job = tmp_path / "job"
    (job / "model").mkdir(parents=True)
    for f in path.iterdir():
        (job / "model" / f.name).write_bytes(f.read_bytes())
    found = open_model(job, clips=1)
    assert found.kind == "job champion" and found.preprocessing.views == 3 and found.card.name == "tiny"
    with pytest.raises(ModelFolderError, match="2 label names"):
        open_model(job, labels=["a", "b"])


def test_import_e3d_stays_light_and_load_is_lazy():
    code = ("import sys, e3d\nassert 'torch' not in sys.modules and 'safetensors' not in sys.modules\n"
            "assert callable(e3d.load)\nprint('ok')")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]


def test_export_cli_writes_a_folder(tmp_path):
    from e3d.cli import main

    (tmp_path / "names.txt").write_text("\n".join(f"c{i}" for i in range(5)))
    out = tmp_path / "m"
    rc = main(["export", "--zoo", "E3D-init-S", "--frames", "4", "--size", "32", "--weights", "random",
               "--folder", str(out), "--labels", str(tmp_path / "names.txt")])
    assert rc == 2  # E3D-init-S has 174 classes: 5 names do not fit
    assert not out.exists()
    rc = main(["export", "--zoo", "E3D-init-S", "--frames", "4", "--size", "32", "--weights", "random",
               "--folder", str(out)])
    assert rc == 0
    model, pre = load(out)
    assert (pre.frames, pre.size, pre.views) == (4, 32, 1) and pre.labels[:2] == ("0", "1")
    assert read_config(out)["weights"] == "random"
    assert main(["export", "--zoo", "E3D-init-S"]) == 2  # neither --onnx nor --folder


def test_mlflow_logs_the_folder_beside_the_model(folder, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from pipeline.tracking import Tracking, log_model_folder

    path, _ = folder
    tracking = Tracking.local(tmp_path / "mlruns", "test-model-folder")
    with tracking.run("candidate") as run:
        run_id = run.info.run_id
    log_model_folder(tracking, run_id, path)
    client = MlflowClient(tracking.tracking_uri)
    names = sorted(a.path for a in client.list_artifacts(run_id, "model_folder"))
    assert names == ["model_folder/README.md", "model_folder/config.json", "model_folder/model.safetensors"]
    local = client.download_artifacts(run_id, "model_folder", str(tmp_path / "down"))
    model, pre = load(local)
    assert pre == PRE
