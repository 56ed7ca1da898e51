"""Spec loading, validation and round-tripping: every error names the field and the value."""
import copy
import json

import pytest

from e3d import zoo
from e3d.spec import ArchSpec, SpecError, load_spec, load_specs, save_specs

E3D_S = zoo.get("E3D-S").to_dict()


def test_round_trip_every_zoo_entry(tmp_path):
    specs = [zoo.get(n) for n in zoo.names()]
    save_specs(specs, tmp_path / "all.json")
    assert load_specs(tmp_path / "all.json") == specs
    save_specs(specs[0], tmp_path / "one.json")
    assert load_spec(tmp_path / "one.json") == specs[0]


def test_design_example_loads_with_defaults():
    d = copy.deepcopy(E3D_S)
    del d["classifier"], d["input"]["sampling_rate"]
    for s in d["stages"]:
        del s["stride"]  # defaults to [1, 1, 1]
    spec = ArchSpec.from_dict(d)
    assert spec.hidden == 2048 and spec.num_classes == 174 and spec.sampling_rate is None
    assert all(s.stride == (1, 1, 1) for s in spec.stages)


def _mutated(path, value):
    d = copy.deepcopy(E3D_S)
    *parents, last = path
    node = d
    for p in parents:
        node = node[p]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return d


@pytest.mark.parametrize("path,value,fragment", [
    (("stages", 1, "kernel"), [3, 4, 4], "stages[1].kernel"),
    (("stages", 1, "kernel"), [3, 3, 5], "stages[1].kernel: height and width must be equal"),
    (("stages", 0, "kernel"), [2, 3, 3], "must be odd"),
    (("stages", 2, "out"), 0, "stages[2].out: must be >= 1, got 0"),
    (("stages", 2, "out"), -8, "stages[2].out"),
    (("stages", 2, "layers"), 2.5, "stages[2].layers: expected an integer, got float 2.5"),
    (("stages", 2, "bottleneck"), "96", "stages[2].bottleneck: expected an integer, got str"),
    (("stages", 2, "stride"), [2, 2, 2], "temporal stride must be 1"),
    (("stages", 2, "stride"), [1, 2, 1], "stages[2].stride"),
    (("stages", 2, "stride"), [1, 3, 3], "stages[2].stride"),
    (("stages", 0, "colour"), "red", "unknown key 'colour'"),
    (("stem", "kernel"), [1, 3], "stem.kernel: expected a list of 3 integers"),
    (("head", "kernel"), [1, 3, 3], "head: the head is a 1x1x1 conv"),
    (("input", "frames"), 0, "input.frames"),
    (("input", "size"), True, "input.size: expected an integer, got bool"),
    (("input", "fps"), 30, "unknown key 'fps'"),
    (("classifier", "num_classes"), 0, "classifier.num_classes"),
    (("stages",), [], "stages: expected a non-empty list"),
    (("stem",), KeyError, "missing required key 'stem'"),
    (("family",), "resnet", "family: expected one of e3d, "),
    (("extra",), 1, "unknown key 'extra'"),
])
def test_invalid_field_is_named(path, value, fragment):
    with pytest.raises(SpecError) as err:
        ArchSpec.from_dict(_mutated(path, value))
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_temporal_kernel_longer_than_clip():
    d = _mutated(("input", "frames"), 1)
    with pytest.raises(SpecError, match=r"stages\[1\].kernel: temporal size 3 exceeds input frames 1"):
        ArchSpec.from_dict(d)


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SpecError, match="bad.json: not valid JSON"):
        load_specs(bad)
    with pytest.raises(SpecError, match="no such file"):
        load_specs(tmp_path / "missing.json")
    lst = tmp_path / "list.json"
    lst.write_text(json.dumps([E3D_S, _mutated(("stages", 0, "out"), 0)]))
    with pytest.raises(SpecError, match=r"list.json\[1\]\.stages\[0\]\.out"):
        load_specs(lst)


def test_summary_properties():
    spec = zoo.get("E3D-S")
    assert spec.kernel_pattern == "155-333-333-333-333"
    assert spec.depths == (3, 6, 6, 6, 6)
    assert spec.widths == (24, 48, 120, 120, 256)
    assert spec.key() == spec.replace(name="other").key()
    assert spec.with_input(frames=8, size=64).size == 64
