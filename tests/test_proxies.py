"""Forward proxies (e3d.proxies): properties a wrong formula would break, on small specs (seconds)."""
import math

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from e3d import proxies, zoo  # noqa: E402
from e3d.blocks import StridedAvgPool  # noqa: E402
from e3d.scores import FORWARD, get_score, score_names  # noqa: E402

K333 = (3, 3, 3)
SMALL = (4, 32)  # frames, size: every zoo net runs in ~0.1 s per evaluation here


def plain(width: int, name: str = "plain"):
    """A stack of three one-block stages whose widths all scale with ``width``."""
    return zoo.make(f"{name}-{width}", (4, 32, None), [(K333, width, 2 * width, 1, 2), (K333, width, 2 * width, 1, 2),
                                                      (K333, width, 2 * width, 1, 2)], stem=width, head=4 * width)


def mean_score(name: str, spec, seeds=range(3), **kw) -> float:
    return get_score(name).evaluate(spec, repeats=len(seeds), seed=seeds[0], **kw).mean


def test_registered_as_forward_scores():
    for name in ("zen", "maedet", "naswot", "synflow"):
        assert name in score_names(FORWARD)
        assert get_score(name).kind == FORWARD
    assert get_score("naswot").needs_batch and not get_score("zen").needs_batch
    with pytest.raises(ValueError, match="needs a batch"):
        get_score("naswot")(plain(8))


@pytest.mark.parametrize("name", ["zen", "maedet"])
def test_gaussian_entropy_proxies_grow_with_width(name):
    values = [mean_score(name, plain(w)) for w in (8, 16, 32)]
    assert values[0] < values[1] < values[2], values


def test_maedet_grows_by_half_log_width_per_layer():
    """Doubling every width adds about 1/2 ln 2 per layer whose fan-in doubles (as HomoEntr does); a
    formula using the variance instead of the std (or missing ln C) would double the gap or miss ln 2."""
    from e3d.scores import homoentr

    a, b = plain(16), plain(32)
    gap = mean_score("maedet", b, range(4)) - mean_score("maedet", a, range(4))
    assert gap == pytest.approx(homoentr(b) - homoentr(a), rel=0.15)


def test_forward_entropy_equals_plain_float64_forward():
    """The cut-point rescaling is exact on a positively homogeneous net with a residual block."""

    class Residual(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.branch = nn.Sequential(nn.Conv3d(c, 2 * c, 1, bias=False), nn.ReLU(),
                                        nn.Conv3d(2 * c, c, 3, padding=1, bias=False))

        def forward(self, x):
            return x + self.branch(x)

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(3, 16, 3, padding=1, bias=False), nn.ReLU(), Residual(16), Residual(16),
                        nn.Conv3d(16, 24, 1, bias=False))
    proxies.gaussian_init(net)
    x = torch.randn(2, 3, 4, 8, 8)
    got = proxies.forward_entropy(net, proxies.trunk(net), x)
    with torch.no_grad():
        y = net.double()(x.double())
    assert got == pytest.approx(math.log(float(y.std())) + math.log(24), abs=1e-4)


def test_naswot_kernel_is_units_minus_hamming():
    x = torch.tensor([[1.0, -1.0, 2.0], [3.0, 4.0, -5.0], [1.0, -2.0, 0.5]]).reshape(3, 1, 3)
    model = nn.Sequential(nn.ReLU())
    k = proxies.naswot_kernel(model, model, x)
    # codes 101, 110, 101: N_A = 3, Hamming(0,1) = 2, Hamming(0,2) = 0
    assert k.tolist() == [[3, 1, 3], [1, 3, 1], [3, 1, 3]]
    assert proxies.log_det(k) == -math.inf  # identical codes: singular


def test_naswot_invariant_to_batch_order_and_singular_for_duplicate_clips():
    spec = zoo.get("E3D-S").with_input(*SMALL)
    g = torch.Generator().manual_seed(1)
    clips = torch.randn(6, 3, *SMALL[:1], SMALL[1], SMALL[1], generator=g)
    score = get_score("naswot")
    a = score(spec, seed=3, batch=clips)
    b = score(spec, seed=3, batch=clips[torch.tensor([4, 2, 0, 5, 1, 3])])
    assert math.isfinite(a) and a == pytest.approx(b, rel=1e-5)
    assert score(spec, seed=3, batch=torch.cat([clips[:3], clips[:1]])) == -math.inf
    with pytest.raises(ValueError, match="batch must be"):
        score(spec, batch=clips[:, :2])


def test_synflow_finite_positive_on_deep_nets_and_matches_float64():
    for name in ("E3D-S", "X3D-S"):
        value = get_score("synflow")(zoo.get(name).with_input(*SMALL))
        assert math.isfinite(value) and value > 0
    # deeper and wider nets carry more synaptic flow
    assert get_score("synflow")(plain(32)) > get_score("synflow")(plain(8))

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(3, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU(), nn.Conv3d(8, 8, 1),
                        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(8, 5))
    proxies.bn_as_identity(net)
    x = torch.ones(1, 3, 4, 6, 6)
    before = [p.detach().clone() for p in net.parameters()]
    got = proxies.synflow_score(net, x, proxies.trunk(net))
    assert all(p.grad is None and torch.equal(p, b) for p, b in zip(net.parameters(), before))  # signs restored
    ref = net.double()
    for p in ref.parameters():
        p.data = p.data.abs()
    ref(x.double()).sum().backward()
    expected = sum(float((p * p.grad).sum().detach()) for m in ref.modules() if isinstance(m, (nn.Conv3d, nn.Linear))
                   for p in m.parameters(recurse=False))
    assert got == pytest.approx(math.log(expected), abs=1e-4)


@pytest.mark.parametrize("name", ["zen", "maedet", "naswot", "synflow"])
def test_seeded_deterministic_and_repeats(name):
    spec = zoo.get("E3D-S").with_input(*SMALL)
    batch = torch.randn(4, 3, SMALL[0], SMALL[1], SMALL[1], generator=torch.Generator().manual_seed(0))
    score = get_score(name)
    state, threads = torch.random.get_rng_state(), torch.get_num_threads()
    one = score(spec, seed=5, batch=batch)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is left alone
    assert torch.get_num_threads() == threads
    assert score(spec, seed=5, batch=batch) == one
    value = score.evaluate(spec, repeats=3, seed=5, batch=batch)
    assert value.values[0] == one and len(value.values) == 3
    assert value.mean == pytest.approx(sum(value.values) / 3)
    assert value.std > 0  # a new initialisation per seed


def test_unbuildable_spec_named(monkeypatch):
    def broken(spec, **_):
        raise RuntimeError("no such block")

    monkeypatch.setattr(proxies, "build_model", broken)
    with pytest.raises(ValueError, match=r"zen: cannot build spec 'plain-8'.*no such block"):
        get_score("zen")(plain(8))


def test_tiny_maps_run():
    """Three stride-2 stages take 32 -> 2 -> 1: the pooling shortcut still runs on maps smaller than its window."""
    spec = zoo.make("tiny-map", (4, 32, None), [(K333, 16, 32, 1, 2)] * 3 + [(K333, 16, 32, 1, 1), (K333, 16, 32, 1, 2)])
    for name in ("zen", "maedet", "synflow"):
        assert math.isfinite(get_score(name)(spec)), name


def test_network_that_cannot_run_named(monkeypatch):
    """A network that fails inside torch while running: the error names the proxy, the spec and the clip."""
    def fails(self, x):
        raise RuntimeError("simulated kernel failure\nsecond line")

    monkeypatch.setattr(StridedAvgPool, "forward", fails)
    spec = zoo.make("tiny-map", (4, 32, None), [(K333, 16, 32, 1, 2)] * 3 + [(K333, 16, 32, 1, 1), (K333, 16, 32, 1, 2)])
    for name in ("zen", "maedet", "synflow"):
        with pytest.raises(ValueError, match=rf"{name}: spec 'tiny-map' cannot run at 4x32\^2: simulated kernel failure$"):
            get_score(name)(spec)


def test_two_stream_net_is_not_rescaled_but_finite():
    """A two-stream net is not one chain: no cut points, float64 instead, still finite."""
    spec = zoo.get("TS-S").with_input(8, 32)
    assert proxies.trunk(proxies.build(spec, "test")) == []
    for name in ("maedet", "synflow"):
        assert math.isfinite(get_score(name)(spec)), name
