"""jobs/train.py's argument handling (no Ray): specs from the zoo or files, recipe and clip options."""
import importlib.util
import json
from pathlib import Path

import pytest

from e3d import zoo
from e3d.options import resolve_clip
from e3d.spec import SpecError, save_specs
from e3d.zoo import resolve_specs
from pipeline.options import DEMO, DEMO_RECIPE, check_clip, check_recipe

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
    parser = job.build_parser()
    args = parser.parse_args([])
    recipe = check_recipe(parser, args, demo=True)
    clip = check_clip(parser, args, resolve_clip(args, DEMO), demo=True)
    assert (recipe.epochs, recipe.batch_size, recipe.lr, recipe.init) == (DEMO_RECIPE["epochs"], 8, 0.02, "torch")
    assert recipe.weight_decay == 5e-5 and recipe.momentum == 0.9  # still the paper's optimizer
    assert recipe.warmup_epochs == pytest.approx(10 * DEMO_RECIPE["epochs"] / 128)
    assert (clip.frames, clip.size, clip.sampling_rate, clip.hflip) == (DEMO.frames, DEMO.size, DEMO.sampling_rate,
                                                                        False)


def test_options_override_the_paper_recipe(job):
    parser = job.build_parser()
    args = parser.parse_args(["E3D-S", "--data", "x", "--recipe", "k400", "--epochs", "30", "--batch-size", "16",
                              "--frames", "13", "--size", "160", "--sampling-rate", "6", "--label-smoothing", "0.1",
                              "--no-amp", "--warmup-epochs", "3"])
    recipe = check_recipe(parser, args, demo=False)
    clip = check_clip(parser, args, resolve_clip(args, DEMO), demo=False)
    assert (recipe.name, recipe.epochs, recipe.batch_size, recipe.lr) == ("k400", 30, 16, None)
    assert recipe.lr_for(2) == pytest.approx(0.4 * 32 / 128)  # linear scaling from Table 10's K400 column
    assert recipe.warmup_epochs == 3
    assert recipe.label_smoothing == 0.1 and recipe.amp is False and recipe.init == "model"
    assert (clip.frames, clip.size, clip.sampling_rate, clip.train_scale, clip.hflip) == (13, 160, 6, (160, 184), True)


def test_bad_spec_exits_with_status_2(job, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "bad", "input": {"frames": 4}}))
    with pytest.raises(SystemExit) as exit_:
        job.main([str(bad), "--out", str(tmp_path / "o"), "--no-mlflow"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument SPEC:" in err and "missing required key" in err and not (tmp_path / "o").exists()
