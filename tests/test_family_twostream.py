"""The ``twostream`` family: exact cost against torch's counters, the entropy score layer by layer from the
built network, fusion operations, validation."""
import math

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from torch import nn

from e3d import zoo
from e3d.cost import cost
from e3d.families.twostream import FUSION_OPS, create_fusion, sparse_frames, view
from e3d.model import build_model
from e3d.scores import homoentr, refinement, stentr
from e3d.spec import ArchSpec, SpecError
from test_cost import measured

TWO_STREAM_ZOO = [n for n in zoo.names() if zoo.get(n).family == "twostream"]
kernels = st.sampled_from([[1, 1, 1], [1, 3, 3], [1, 5, 5], [3, 3, 3], [3, 1, 1], [5, 3, 3]])
widths = st.integers(1, 8).map(lambda w: 8 * w)


def spec_dict(**changes):
    d = zoo.get("TS-S").to_dict()
    d.update(changes)
    return d


@st.composite
def random_specs(draw):
    n = draw(st.integers(1, 4))
    strides = [draw(st.sampled_from([1, 2])) for _ in range(n)]
    frames = draw(st.integers(5, 9))

    def stage(stride=None):
        d = {"kernel": draw(kernels), "out": draw(widths), "bottleneck": draw(widths), "layers": draw(st.integers(1, 2))}
        return d | ({"stride": [1, stride, stride]} if stride else {})

    stem_stride = draw(st.sampled_from([1, 2]))
    return ArchSpec.from_dict({
        "name": "random", "family": "twostream", "input": {"frames": frames, "size": draw(st.integers(9, 33))},
        "stem": {"kernel": draw(kernels), "out": draw(widths), "stride": [1, stem_stride, stem_stride]},
        "stages": [stage(s) for s in strides], "head": {"kernel": [1, 1, 1], "out": draw(widths)},
        "classifier": {"hidden": draw(widths), "num_classes": draw(st.integers(2, 9))},
        "alpha": draw(st.integers(1, 5)),
        "dense": {"stem": {"kernel": draw(kernels), "out": draw(widths)}, "stages": [stage() for _ in strides]},
        "fusion": [draw(st.sampled_from(FUSION_OPS)) for _ in strides]})


# found by a clean-clone run: 1x1x1 maps in the sparse stream (alpha 5 of 5 frames, 9 -> 1 pixels) at batch 1
ONE_PIXEL = ArchSpec.from_dict({
    "name": "random", "family": "twostream", "input": {"frames": 5, "size": 9},
    "stem": {"kernel": [1, 1, 1], "out": 8, "stride": [1, 2, 2]},
    "stages": [{"kernel": [1, 1, 1], "out": 8, "bottleneck": 8, "layers": 1, "stride": [1, s, s]} for s in (1, 2, 2, 2)],
    "head": {"kernel": [1, 1, 1], "out": 8}, "classifier": {"hidden": 8, "num_classes": 2}, "alpha": 5,
    "dense": {"stem": {"kernel": [1, 1, 1], "out": 8},
              "stages": [{"kernel": [1, 1, 1], "out": 8, "bottleneck": 8, "layers": 1} for _ in range(4)]},
    "fusion": ["tconv"] * 4})


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # derandomized: conftest.py
@given(random_specs())
@example(ONE_PIXEL)
def test_random_specs_cost_equals_torch_count(spec):
    """Every fusion op, alpha 1-5 with frame counts it does and does not divide, odd sizes, stride-1 stages."""
    c = cost(spec)
    assert (c.flops, c.params) == measured(spec)


@pytest.mark.parametrize("name", TWO_STREAM_ZOO)
def test_zoo_entries(name):
    spec = zoo.get(name)
    assert (cost(spec).flops, cost(spec).params) == measured(spec)
    assert ArchSpec.from_dict(spec.to_dict()) == spec
    model = build_model(spec.with_input(frames=7, size=64), num_classes=5).eval()
    with torch.no_grad():
        feats = model.features(torch.randn(2, 3, 7, 64, 64))
    assert feats.shape == (2, spec.head.out, sparse_frames(7, spec.get("alpha")), 2, 2)


def plain_layers(spec: ArchSpec):
    """(C_in per group, kernel, T, r) of every conv of the plain network, read off the built model with forward
    hooks: SE and shortcut convs are not part of it; T and r are the conv's output sizes (sizes divisible by the
    strides, so the score's floor division equals the convs' ceil)."""
    model = build_model(spec).eval()
    found = []

    def hook(module, _inputs, out):
        found.append((module.in_channels // module.groups, module.kernel_size, out.shape[2], out.shape[3]))

    convs = [m for name, m in model.named_modules() if isinstance(m, nn.Conv3d)
             and ".se." not in name and ".shortcut." not in name]
    handles = [m.register_forward_hook(hook) for m in convs]
    with torch.no_grad():
        model(torch.randn(1, 3, spec.frames, spec.size, spec.size))
    for h in handles:
        h.remove()
    return found


@pytest.mark.parametrize("name", TWO_STREAM_ZOO)
def test_entropy_is_the_sum_over_every_conv_of_both_streams(name):
    spec = zoo.get(name).with_input(frames=8, size=96)  # STEntr finite in both streams
    layers = plain_layers(spec)
    assert len(layers) == cost(spec).layers  # the layer count counts the same convs
    for refine, score in ((False, homoentr), (True, stentr)):
        total = sum(math.log(c * kt * k * k * (refinement(t, r, (kt, k, k)) if refine else 1.0))
                    for c, (kt, k, _), t, r in layers)
        assert score(spec) == pytest.approx(0.5 * total + math.log(spec.head.out), rel=1e-12)


@pytest.mark.parametrize("op", FUSION_OPS)
@pytest.mark.parametrize("frames", [8, 7])
def test_fusion_maps_dense_to_sparse_shape(op, frames):
    fuse = create_fusion(op=op, c_dense=8, c_sparse=24, alpha=4)
    if op == "skip":
        assert fuse is None
        return
    y = fuse(torch.randn(2, 8, frames, 5, 5))
    assert y.shape == (2, 24, 2, 5, 5)


def test_time_to_channel_layout():
    fuse = create_fusion(op="t2c", c_dense=2, c_sparse=3, alpha=3)
    x = torch.arange(2 * 5, dtype=torch.float32).reshape(1, 2, 5, 1, 1)  # channel c, frame t holds 5 c + t
    y = fuse[0](x)  # (1, 6, 2, 1, 1): frames 3t .. 3t+2 as channels c * 3 + a, the missing 6th frame zero
    assert y[0, :, 0, 0, 0].tolist() == [0, 1, 2, 5, 6, 7]
    assert y[0, :, 1, 0, 0].tolist() == [3, 4, 0, 8, 9, 0]
    assert fuse[1].in_channels == 6


def test_sparse_stream_sees_every_alpha_th_frame():
    """With every fusion skipped and the dense stream's head input zeroed, only frames 0, alpha, 2 alpha count."""
    d = spec_dict(fusion=["skip"] * 4, input={"frames": 8, "size": 32})
    model = build_model(ArchSpec.from_dict(d), num_classes=3).eval()
    with torch.no_grad():
        model.head[0].weight[:, 192:] = 0  # the dense stream's channels of the head conv
        x = torch.randn(1, 3, 8, 32, 32)
        x2 = x.clone()
        x2[:, :, [1, 2, 3, 5, 6, 7]] = torch.randn(1, 3, 6, 32, 32)
        assert torch.allclose(model(x), model(x2), atol=1e-6)
        x2[:, :, 4] += 1.0
        assert not torch.allclose(model(x), model(x2), atol=1e-6)


def test_view_reads_the_family_fields():
    spec = zoo.get("TS-S")
    v = view(spec)
    assert v.alpha == 4 and v.fusion == ("tconv", "t2c", "tsample", "tconv")
    assert [s.stride for s in v.dense.stages] == [s.stride for s in spec.stages]
    assert v.dense.stem_out == 8 and len(v.dense.stages) == 4


@pytest.mark.parametrize("changes,field", [
    ({"fusion": ["tconv", "t2c", "tsample"]}, ".fusion: expected a list of 4"),
    ({"fusion": ["tconv", "t2c", "tsample", "sum"]}, ".fusion[3]: expected one of"),
    ({"alpha": 0}, ".alpha: expected a positive integer"),
    ({"dense": {"stem": {"kernel": [1, 3, 3], "out": 8}, "stages": []}}, ".dense.stages: expected a list of 4"),
    ({"dense": {"stem": {"kernel": [1, 3, 5], "out": 8}, "stages": []}}, ".dense.stem.kernel: height and width"),
    ({"dense": {"stem": {"kernel": [1, 3, 3], "out": 8, "stride": [1, 2, 2]}, "stages": []}},
     ".dense.stem: unknown key 'stride'"),
])
def test_validation_names_the_field(changes, field):
    with pytest.raises(SpecError, match=field.replace("[", r"\[").replace("]", r"\]")):
        ArchSpec.from_dict(spec_dict(**changes))


def test_missing_family_field_and_dense_kernel_longer_than_the_clip():
    d = spec_dict()
    del d["alpha"]
    with pytest.raises(SpecError, match=r"\.alpha: a twostream spec needs"):
        ArchSpec.from_dict(d)
    d = spec_dict(input={"frames": 4, "size": 64})
    d["dense"]["stages"][0]["kernel"] = [5, 3, 3]
    with pytest.raises(SpecError, match=r"dense\.stages\[0\]\.kernel: temporal size 5 exceeds input frames 4"):
        ArchSpec.from_dict(d)
