"""jobs/train.py's argument handling (no Ray): specs from the zoo or files, recipe and clip options."""
import importlib.util
import json
from pathlib import Path

import pytest

from e3d import zoo
from e3d.spec import SpecError, save_specs
from pipeline.train.cli import DEMO_CLIP, DEMO_RECIPE, clip_from_args, recipe_from_args, resolve_specs

JOB = Path(__file__).resolve().parents[1] / "jobs" / "train.py"


@pytest.fixture(scope="module")
def job():
    spec = importlib.util.spec_from_file_location("train_job", JOB)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_specs_from_zoo_and_files(tmp_path):
    save_specs([zoo.get("E3D-S"), zoo.get("E3D-init-S")], tmp_path / "two.json")
    specs = resolve_specs(["X3D-S", str(tmp_path / "two.json")])
    assert [s.name for s in specs] == ["X3D-S", "E3D-S", "E3D-init-S"]
    with pytest.raises(SpecError, match="neither a spec file nor a zoo entry"):
        resolve_specs(["E3D-XXL"])
    with pytest.raises(SpecError, match="no such file"):
        resolve_specs([str(tmp_path / "missing.json")])


def test_demo_defaults(job):
    args = job.build_parser().parse_args([])
    recipe, clip = recipe_from_args(args, demo=True), clip_from_args(args, demo=True)
    assert (recipe.epochs, recipe.batch_size, recipe.lr, recipe.init) == (DEMO_RECIPE["epochs"], 8, 0.02, "torch")
    assert recipe.weight_decay == 5e-5 and recipe.momentum == 0.9  # still the paper's optimizer
    assert recipe.warmup_epochs == pytest.approx(10 * DEMO_RECIPE["epochs"] / 128)
    assert (clip.frames, clip.size, clip.sampling_rate, clip.hflip) == (8, 64, DEMO_CLIP["sampling_rate"], False)


def test_options_override_the_paper_recipe(job):
    args = job.build_parser().parse_args(["E3D-S", "--data", "x", "--preset", "k400", "--epochs", "30",
                                          "--batch-size", "16", "--frames", "13", "--size", "160",
                                          "--sampling-rate", "6", "--label-smoothing", "0.1", "--no-amp",
                                          "--warmup-epochs", "3"])
    recipe, clip = recipe_from_args(args), clip_from_args(args)
    assert (recipe.name, recipe.epochs, recipe.batch_size, recipe.lr) == ("k400", 30, 16, None)
    assert recipe.lr_for(2) == pytest.approx(0.4 * 32 / 128)  # linear scaling from Table 10's K400 column
    assert recipe.warmup_epochs == 3
    assert recipe.label_smoothing == 0.1 and recipe.amp is False and recipe.init == "model"
    assert (clip.frames, clip.size, clip.sampling_rate, clip.train_scale, clip.hflip) == (13, 160, 6, (183, 229), True)


def test_bad_spec_exits_with_status_2(job, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "bad", "input": {"frames": 4}}))
    assert job.main([str(bad), "--out", str(tmp_path), "--no-mlflow"]) == 2
    assert "error:" in capsys.readouterr().err
