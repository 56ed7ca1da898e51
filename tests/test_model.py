"""The model builder: shapes, training behaviour and the blocks DESIGN.md describes."""
import pytest
import torch
from torch import nn

from e3d import zoo
from e3d.blocks import StridedAvgPool
from e3d.model import InvertedBottleneck, SqueezeExcite, build_model


@pytest.mark.parametrize("name", zoo.names())
def test_forward_shape_every_zoo_entry(name):
    spec = zoo.get(name).with_input(frames=5, size=48)  # small input; the spec's own size on meta in test_cost
    model = build_model(spec).eval()
    with torch.no_grad():
        y = model(torch.randn(2, 3, 5, 48, 48))
    assert y.shape == (2, spec.num_classes)
    assert torch.isfinite(y).all()


def test_backward_and_num_classes_override():
    spec = zoo.get("E3D-init-S").with_input(frames=4, size=32)
    model = build_model(spec, num_classes=7).train()
    loss = nn.functional.cross_entropy(model(torch.randn(2, 3, 4, 32, 32)), torch.tensor([1, 6]))
    loss.backward()
    assert model.classifier.out.out_features == 7
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_block_layout_matches_design():
    model = build_model(zoo.get("E3D-S"))
    stage = model.stages[1]  # 24 -> 48, stride 2, 6 blocks, 3x3x3
    first, second = stage[0], stage[1]
    assert isinstance(first, InvertedBottleneck)
    assert first.depthwise[0].groups == 96 and first.depthwise[0].stride == (1, 2, 2)
    assert isinstance(first.shortcut, nn.Sequential)  # width changes: 1x1x1 conv + BN
    assert isinstance(second.shortcut, nn.Identity)
    assert [isinstance(b.se, SqueezeExcite) for b in stage] == [True, False] * 3
    assert isinstance(model.stages[0][0].shortcut, StridedAvgPool)  # 24 -> 24 with stride 2
    assert model.classifier.dropout.p == 0.5 and model.classifier.fc.out_features == 2048


def test_odd_spatial_sizes_follow_ceil():
    spec = zoo.get("E3D-L").with_input(frames=4, size=78)  # 39 -> 20 after stride 2, like 312 in the paper
    model = build_model(spec).eval()
    with torch.no_grad():
        feats = model.features(torch.randn(1, 3, 4, 78, 78))
    assert feats.shape == (1, 512, 4, 3, 3)  # 78 -> 39 -> 20 -> 10 -> 5 -> 5 -> 3


def test_x3d_family_blocks():
    model = build_model(zoo.get("X3D-S"))
    assert model.stem[1].kernel_size == (5, 1, 1) and model.stem[1].groups == 24
    assert isinstance(model.stages[0][0].act, nn.SiLU)


def test_init_counts_fan_out_per_group():
    """Depthwise convs get std sqrt(2 / (kernel volume)), not sqrt(2 / (channels * volume))."""
    torch.manual_seed(0)
    model = build_model(zoo.get("E3D-S"))
    dw = model.stages[4][0].depthwise[0]  # 384 channels, 3x3x3
    assert dw.weight.std().item() == pytest.approx((2 / 27) ** 0.5, rel=0.05)
    expand = model.stages[4][0].expand[0]  # dense 1x1x1, 120 -> 384
    assert expand.weight.std().item() == pytest.approx((2 / 384) ** 0.5, rel=0.05)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 7])
def test_stride_only_shortcut_on_maps_of_any_size(size):
    """The shortcut's average equals nn.AvgPool3d (padding not counted) where that accepts the map, and is the
    mean of the clipped window on maps smaller than it (2x2 -> mean of all four, 1x1 -> identity)."""
    x = torch.randn(2, 3, 4, size, size)
    y = StridedAvgPool((1, 2, 2))(x)
    assert y.shape == (2, 3, 4, (size + 1) // 2, (size + 1) // 2)
    if size >= 3:
        ref = nn.AvgPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), count_include_pad=False)(x)
        torch.testing.assert_close(y, ref)
    elif size == 2:
        torch.testing.assert_close(y, x.mean(dim=(-2, -1), keepdim=True))
    else:
        torch.testing.assert_close(y, x)
