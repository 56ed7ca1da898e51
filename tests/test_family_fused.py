"""The ``e3d-fused`` family: S / ST / S+ST blocks, exact cost on random specs, entropy terms, checks, pickling."""
import math
import pickle

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from e3d import zoo
from e3d.cost import cost
from e3d.families.fused import UNITS, block_units, fusion_pattern, log_unit, with_fusion
from e3d.model import build_model
from e3d.scores import homoentr, refinement, stentr
from e3d.spec import ArchSpec, ConvSpec, SpecError, StageSpec, make_extra
from test_cost import measured

spatial = st.sampled_from([1, 3, 5])
widths = st.integers(1, 8).map(lambda w: 8 * w)


@st.composite
def fused_stage(draw, stride):
    k, kt, layers = draw(spatial), draw(st.sampled_from([3, 5])), draw(st.integers(1, 3))
    units = draw(st.one_of(st.sampled_from(UNITS), st.lists(st.sampled_from(UNITS), min_size=layers,
                                                             max_size=layers)))
    listed = [units] * layers if isinstance(units, str) else units
    kernel = (1, k, k) if all(u == "S" for u in listed) else (kt, k, k)
    return StageSpec(kernel=kernel, out=draw(widths), bottleneck=draw(widths), layers=layers,
                     stride=(1, stride, stride), extra=make_extra({"fusion": units}))


@st.composite
def fused_specs(draw):
    strides = draw(st.lists(st.sampled_from([1, 2]), min_size=1, max_size=4))
    stem = draw(st.sampled_from([1, 2]))
    return ArchSpec(name="random-fused", family="e3d-fused", frames=draw(st.integers(5, 8)),
                    size=draw(st.integers(9, 33)),
                    stem=ConvSpec(kernel=(1, 3, 3), out=draw(widths), stride=(1, stem, stem)),
                    stages=tuple(draw(fused_stage(s)) for s in strides),
                    head=ConvSpec(kernel=(1, 1, 1), out=draw(widths)), hidden=draw(widths),
                    num_classes=draw(st.integers(2, 10)))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fused_specs())
def test_random_fused_specs_cost_equals_torch_count(spec):
    """Per-block unit lists, mixed strides and widths, odd sizes: FLOPs and params as torch counts them."""
    spec = ArchSpec.from_dict(spec.to_dict())  # the JSON round trip validates the fusion fields
    c = cost(spec)
    assert (c.flops, c.params) == measured(spec)


def _spec(units, kernel=(3, 3, 3), layers=2):
    base = zoo.get("E3D-init-S").with_input(8, 56)
    stages = tuple(with_fusion(StageSpec(kernel=kernel, out=s.out, bottleneck=s.bottleneck, layers=layers,
                                         stride=s.stride), u) for s, u in zip(base.stages, units))
    return base.replace(family="e3d-fused", stages=stages)


def test_single_units_are_the_e3d_network():
    """S everywhere / ST everywhere cost and score exactly like the plain e3d spec with 1xkxk / 3xkxk kernels."""
    for unit, kernel in (("S", (1, 3, 3)), ("ST", (3, 3, 3))):
        fused = _spec([unit] * 5)
        plain = fused.replace(family="e3d", stages=tuple(StageSpec(kernel=kernel, out=s.out, bottleneck=s.bottleneck,
                                                                   layers=s.layers, stride=s.stride)
                                                         for s in fused.stages))
        assert cost(fused) == cost(plain)
        assert stentr(fused) == pytest.approx(stentr(plain), abs=1e-12)
        assert homoentr(fused) == pytest.approx(homoentr(plain), abs=1e-12)
    # a plain e3d spec relabelled keeps its units (no fusion field: ST where kt > 1, S otherwise)
    e3d = zoo.get("E3D-S")
    relabelled = e3d.replace(family="e3d-fused")
    assert cost(relabelled) == cost(e3d) and stentr(relabelled) == pytest.approx(stentr(e3d))
    assert fusion_pattern(relabelled) == "S/ST/ST/ST/ST"


def test_parallel_sum_entropy_adds_the_branch_variances():
    """S+ST's depthwise term is ln(k^2 D_S + kt k^2 D_ST): larger than either branch alone."""
    frames, r = 8, 7
    expected = math.log(9 * refinement(frames, r, (1, 3, 3)) + 27 * refinement(frames, r, (3, 3, 3)))
    assert log_unit("S+ST", (3, 3, 3), frames, r, refine=True) == pytest.approx(expected)
    assert log_unit("S+ST", (3, 3, 3), frames, r, refine=False) == pytest.approx(math.log(36))
    both, st_only, s_only = (stentr(_spec([u] * 5)) for u in ("S+ST", "ST", "S"))
    assert both > st_only and both > s_only


def test_parallel_sum_flops_and_modules():
    st_only, both = _spec(["ST"] * 5), _spec(["S+ST"] * 5)
    extra = sum(2 * s.bottleneck * 9 * 8 * r * r for s, r in zip(both.stages, (14, 7, 4, 4, 2)))
    assert cost(both).flops - cost(st_only).flops == extra  # one 1x3x3 depthwise conv more per block
    model = build_model(both)
    dw = model.stages[0][0].depthwise
    assert dw.spatial.kernel_size == (1, 3, 3) and dw.spatiotemporal.kernel_size == (3, 3, 3)
    assert dw.spatial.stride == dw.spatiotemporal.stride == (1, 2, 2) and dw.spatial.groups == 48
    mixed = _spec([["S", "S+ST"], "ST", ["S+ST", "ST"], "S", "ST"], kernel=(3, 5, 5))
    assert block_units(mixed.stages[0]) == ["S", "S+ST"]
    m = build_model(mixed)
    assert m.stages[0][0].depthwise[0].kernel_size == (1, 5, 5)
    assert m.stages[0][1].depthwise.spatiotemporal.kernel_size == (3, 5, 5)
    assert mixed.stages[3].kernel == (1, 5, 5)  # an S-only stage is written [1, k, k]


def test_forward_backward_and_pickle():
    spec = _spec(["S+ST", "ST", "S", "S+ST", "ST"], layers=1).with_input(4, 32).with_num_classes(3)
    model = build_model(spec).train()
    loss = model(torch.randn(2, 3, 4, 32, 32)).logsumexp(1).sum()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    again = pickle.loads(pickle.dumps(model.eval()))  # mlflow.pytorch logs models pickled
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    # the zero-init of the last BN of every residual branch reaches the S+ST blocks too
    assert float(build_model(spec).stages[0][0].project[1].weight.detach().abs().sum()) == 0.0


@pytest.mark.parametrize("fusion,kernel,message", [
    ("T", [3, 3, 3], "expected one of S, ST, S\\+ST, got 'T'"),
    (["S", "ST", "S"], [3, 3, 3], "3 units for 2 blocks"),
    ("ST", [1, 3, 3], "need a temporal size > 1"),
    ("S", [3, 3, 3], "an S-only stage has kernel \\[1, k, k\\]"),
    (7, [3, 3, 3], "expected one of S, ST, S\\+ST or a list"),
])
def test_bad_fusion_fields_name_the_field(fusion, kernel, message):
    data = _spec(["ST"] * 5).to_dict()
    data["stages"][1] |= {"fusion": fusion, "kernel": kernel}
    with pytest.raises(SpecError, match=message) as err:
        ArchSpec.from_dict(data)
    assert "stages[1]" in str(err.value)


def test_fusion_field_belongs_to_the_family():
    data = zoo.get("E3D-init-S").to_dict()
    data["stages"][0]["fusion"] = "S+ST"
    with pytest.raises(SpecError, match="unknown key 'fusion'"):
        ArchSpec.from_dict(data)  # family e3d
    data["family"] = "e3d-fused"
    assert ArchSpec.from_dict(data).stages[0].get("fusion") == "S+ST"
