"""ONNX / torch.export export: every zoo network equals PyTorch within 1e-4 through onnxruntime; trained
candidates load from the folders training writes; the `export` and `latency` subcommands.

Zoo networks are exported at a reduced clip, 4 frames x 64^2 (the graph is the same at any clip size; the
native 13-16 x 160-312^2 inputs would take minutes on 2 cores), with random trained-like weights
(``randomize_weights``): the builder's initial weights zero every residual branch and give BN the identity
statistics, so a check with them would not see most of the graph.
"""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from e3d import zoo
from e3d.export import (CHECK_TOLERANCE, ExportError, export_onnx, export_program, find_checkpoint, load_network,
                        onnx_latency, ort_session, randomize_weights)
from e3d.export_cli import main
from e3d.model import build_model

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

CLIP = (4, 64)


@pytest.mark.parametrize("name", zoo.names())
def test_every_zoo_entry_matches_pytorch_through_onnxruntime(name, tmp_path):
    spec = zoo.get(name).with_input(*CLIP)
    model = randomize_weights(build_model(spec).eval(), seed=1)
    report = export_onnx(model, tmp_path / f"{name}.onnx")
    assert report.max_abs_ref > 0.5  # logits of order one: the tolerance means something
    assert report.max_abs_diff <= CHECK_TOLERANCE, report
    assert report.ok and report.input == [1, 3, *CLIP[:1], CLIP[1], CLIP[1]]


def test_graph_has_a_dynamic_batch_axis(tmp_path):
    spec = zoo.get("X3D-XS").with_input(*CLIP)
    model = randomize_weights(build_model(spec).eval())
    path = tmp_path / "x.onnx"
    export_onnx(model, path, check=False)
    x = torch.randn(3, 3, *CLIP[:1], CLIP[1], CLIP[1])
    got = ort_session(path).run(None, {"clip": x.numpy()})[0]
    with torch.no_grad():
        ref = model(x).numpy()
    assert got.shape == (3, spec.num_classes)
    assert np.abs(got - ref).max() <= CHECK_TOLERANCE


def test_onnx_graph_is_valid_and_latency_is_timed(tmp_path):
    import onnx

    report = export_onnx(zoo.get("E3D-init-S"), tmp_path / "i.onnx", frames=4, size=32)
    onnx.checker.check_model(onnx.load(report.path))
    assert report.opset == 17 and report.bytes > 0
    assert onnx_latency(report.path, runs=2, warmup=1) > 0
    assert onnx_latency(report.path, runs=2, warmup=1, stat="min", clock="cpu") > 0


def test_torch_export_program_round_trip(tmp_path):
    path, diff = export_program(zoo.get("E3D-init-S"), tmp_path / "i.pt2", frames=4, size=32)
    assert path.is_file() and diff <= 1e-6
    assert torch.export.load(str(path)).module()(torch.randn(1, 3, 4, 32, 32)).shape == (1, 174)


# -- trained candidates -----------------------------------------------------------------------------------
def _fake_training_output(tmp_path, spec):
    """What pipeline.train leaves: OUT/candidates/RUN/{spec.json,result.json} and OUT/train/RUN/checkpoint_*/
    state.pt (a torch.save dict with model, spec, dropout, ...; see pipeline/train/checkpoint.py)."""
    model = randomize_weights(build_model(spec), seed=2)
    run = tmp_path / "train" / "run"
    ckpts = []
    for i in range(2):
        ckpt = run / f"checkpoint_00000{i}"
        ckpt.mkdir(parents=True)
        torch.save({"model": model.state_dict(), "optimizer": {}, "epoch": i + 1, "history": [], "final": None,
                    "spec": spec.to_dict(), "recipe": {}, "dropout": 0.3}, ckpt / "state.pt")
        ckpts.append(ckpt)
    folder = tmp_path / "candidates" / "run"
    folder.mkdir(parents=True)
    (folder / "spec.json").write_text(spec.to_json())
    (folder / "result.json").write_text(json.dumps({"name": spec.name, "checkpoint": str(ckpts[-1]),
                                                    "run_dir": str(run), "error": None}))
    return model.eval(), folder, run, ckpts


def test_trained_candidate_loads_from_every_training_folder(tmp_path):
    spec = zoo.get("X3D-XS").with_input(*CLIP)
    trained, folder, run, ckpts = _fake_training_output(tmp_path, spec)
    for source in (folder, run, ckpts[-1], ckpts[-1] / "state.pt"):
        assert find_checkpoint(source) == ckpts[-1] / "state.pt"
        model, loaded = load_network(source)
        assert loaded == spec and not model.training
        assert model.classifier.dropout.p == 0.3
        for a, b in zip(model.state_dict().values(), trained.state_dict().values()):
            assert torch.equal(a, b)
    report = export_onnx(load_network(folder)[0], tmp_path / "trained.onnx")
    assert report.ok and report.max_abs_ref > 0.5


def test_bad_training_folders_say_what_is_missing(tmp_path):
    with pytest.raises(ExportError, match="no state.pt, result.json or checkpoint_"):
        find_checkpoint(tmp_path)
    (tmp_path / "result.json").write_text(json.dumps({"checkpoint": None, "run_dir": None, "error": "OOM\nx"}))
    with pytest.raises(ExportError, match=r"failed to train \(OOM\)"):
        find_checkpoint(tmp_path)
    with pytest.raises(ExportError, match="no such file or folder"):
        find_checkpoint(tmp_path / "nope")


# -- the command line ---------------------------------------------------------------------------------------
def test_export_command_writes_checks_and_times(tmp_path, capsys):
    onnx_path = tmp_path / "e.onnx"
    argv = ["export", "--zoo", "E3D-init-S", "--frames", "4", "--size", "32", "--onnx", str(onnx_path),
            "--program", str(tmp_path / "e.pt2"), "--weights", "random", "--runs", "2"]
    assert main(argv) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["ok"] and row["max_abs_diff"] <= 1e-4 and row["max_abs_ref"] > 0.5
    assert row["onnx_ms"] > 0 and row["torch_ms"] > 0 and row["program_max_abs_diff"] <= 1e-6
    assert onnx_path.is_file() and row["input"] == [1, 3, 4, 32, 32]


def test_export_command_takes_spec_files_and_run_folders(tmp_path, capsys):
    spec = zoo.get("X3D-XS").with_input(*CLIP)
    _, folder, _, _ = _fake_training_output(tmp_path, spec)
    assert main(["export", str(folder), "--onnx", str(tmp_path / "t.onnx"), "--no-latency"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["trained"] and row["weights"] == "trained" and row["ok"]
    assert main(["export", str(folder / "spec.json"), "--onnx", str(tmp_path / "s.onnx"), "--no-latency",
                 "--size", "32"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert not row["trained"] and row["input"] == [1, 3, 4, 32, 32]


@pytest.mark.parametrize("argv,fragment", [
    (["export", "--zoo", "E3D-XL", "--onnx", "x.onnx"], "--zoo: no zoo entry named 'E3D-XL'"),
    (["export", "--onnx", "x.onnx"], "SOURCE: nothing to export"),
    (["export", "missing.json", "--onnx", "x.onnx"], "SOURCE: missing.json: no such file"),
    (["export", "a.json", "--zoo", "E3D-S", "--onnx", "x.onnx"], "--zoo: give either a SOURCE"),
    (["export", "--zoo", "E3D-S", "--frames", "1", "--onnx", "x.onnx"], "--frames/--size:"),
    (["export", "--zoo", "E3D-S", "--onnx", "."], "--onnx: . is a folder"),
    (["latency", "--zoo", "nope"], "--zoo: no zoo entry named 'nope'"),
    (["latency"], "FILES: nothing to time"),
    (["latency", "--zoo", "E3D-S", "--latency-clock", "cpu", "--latency-threads", "2"],
     "--latency-clock cpu (this thread's CPU time) needs"),
])
def test_bad_input_is_one_line_naming_the_option(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1, err


def test_bad_option_values_exit_2_from_argparse(tmp_path):
    out = subprocess.run([sys.executable, "-m", "e3d.export_cli", "export", "--zoo", "E3D-S", "--onnx", "x.onnx",
                          "--threads", "0"], capture_output=True, text=True)
    assert out.returncode == 2 and "--threads: must be >= 1" in out.stderr
    out = subprocess.run([sys.executable, "-m", "e3d.export_cli", "latency", "--zoo", "E3D-S",
                          "--budget-latency", "soon"], capture_output=True, text=True)
    assert out.returncode == 2 and "--budget-latency: expected a latency like 25ms" in out.stderr


def test_latency_command_predicts_measures_and_checks_the_budget(tmp_path, capsys):
    argv = ["latency", "--zoo", "E3D-init-S", "--zoo", "X3D-XS", "--frames", "4", "--size", "32", "--measure",
            "--latency-cache", str(tmp_path), "--latency-runs", "2", "--budget-latency", "1000s",
            "--latency-clock", "cpu", "--latency-stat", "min"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["name"] for r in rows] == ["E3D-init-S", "X3D-XS"]
    assert all(r["predicted_ms"] > 0 and r["measured_ms"] > 0 and r["within_budget"] for r in rows)
    assert "table: " in captured.err and len(list(tmp_path.glob("cpu-*-4x32-torch*.json"))) == 1
    saved = json.loads(next(tmp_path.glob("*.json")).read_text())["measurer"]
    assert saved["clock"] == "cpu" and saved["stat"] == "min"
