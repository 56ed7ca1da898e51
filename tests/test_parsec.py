"""PARSEC without Ray: the gradient estimators against exact expectations, Eq. 2's cost term, the space, the
k most probable architectures, the supernet's FLOPs, exact resume of the search state, option checks."""
import itertools
import math
import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from e3d.cost import cost
from e3d.parsec.band import sample_band
from e3d.parsec.distribution import ArchDistribution, flops_penalty, k_most_probable, surrogate
from e3d.parsec.space import SpaceConfig, TwoStreamSpace, resolve_space
from e3d.parsec.supernet import TwoStreamSupernet
from e3d.strategies.parsec import ParsecSettings, settings_from_request
from e3d.strategy import Budget, Clip, RequestError, SearchRequest, get_strategy
from pipeline.parsec.engine import ParsecEngine

SIZES = [2, 3, 2]  # a space small enough to enumerate: 12 architectures


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_distribution(seed=0):
    dist = ArchDistribution(SIZES)
    with torch.no_grad():
        dist.alpha.copy_(torch.randn(sum(SIZES), generator=torch.Generator().manual_seed(seed)))
    return dist


def enumerate_space():
    return torch.tensor(list(itertools.product(*[range(n) for n in SIZES])))


def exact_gradient(dist, fn):
    """d fn(p) / d alpha with p the vector of the 12 architectures' probabilities (by enumeration)."""
    dist.alpha.grad = None
    p = dist.log_prob(enumerate_space()).exp()
    fn(p).backward()
    return dist.alpha.grad.clone()


def estimated_gradient(dist, index, loglik, penalty, beta, epsilon=0.01):
    dist.alpha.grad = None
    value, _ = surrogate(dist.log_prob(index), loglik, penalty, beta=beta, epsilon=epsilon)
    value.backward()
    return dist.alpha.grad.clone()


def test_data_term_gradient_matches_the_exact_expectation():
    """-grad log E_p[L(A)] (Eq. 1, the marginal likelihood) against the self-normalised estimate with many draws."""
    dist = tiny_distribution()
    lik = torch.tensor([0.2, 1.0, 0.5, 3.0, 0.1, 0.7, 2.0, 0.3, 1.5, 0.05, 0.9, 4.0], dtype=torch.float64)
    exact = exact_gradient(dist, lambda p: -torch.log((p.double() * lik).sum()))
    index = dist.sample(200_000, torch.Generator().manual_seed(1))
    flat = (index * torch.tensor([6, 2, 1])).sum(1)  # the row of enumerate_space()
    est = estimated_gradient(dist, index, lik.log()[flat], torch.zeros(len(index)), beta=0.0)
    assert exact.abs().max() > 0.1
    assert torch.allclose(est, exact, atol=0.01), (est, exact)
    # few draws: unbiased in expectation only; averaged over repeats it still agrees
    reps = [estimated_gradient(dist, i, lik.log()[(i * torch.tensor([6, 2, 1])).sum(1)], torch.zeros(len(i)), 0.0)
            for i in (dist.sample(500, torch.Generator().manual_seed(s)) for s in range(20))]
    assert torch.allclose(torch.stack(reps).mean(0), exact, atol=0.03)


def test_cost_term_gradient_matches_the_exact_expectation():
    """beta * grad log(epsilon + E_p[cost(A)]) (Eq. 2-3) against the leave-one-out estimate."""
    dist = tiny_distribution(seed=3)
    pen = torch.tensor([0.0, 0.0, 0.4, 1.2, 0.0, 0.3, 2.0, 0.0, 0.8, 0.1, 0.0, 1.5], dtype=torch.float64)
    beta, eps = 0.2, 0.01
    exact = exact_gradient(dist, lambda p: beta * torch.log(eps + (p.double() * pen).sum()))
    index = dist.sample(200_000, torch.Generator().manual_seed(2))
    flat = (index * torch.tensor([6, 2, 1])).sum(1)
    est = estimated_gradient(dist, index, torch.zeros(len(index)), pen[flat], beta=beta, epsilon=eps)
    assert exact.abs().max() > 0.01
    assert torch.allclose(est, exact, atol=0.004), (est, exact)


def test_surrogate_terms():
    lp = torch.zeros(3, requires_grad=True)
    value, terms = surrogate(lp, torch.tensor([-1.0, -2.0, -3.0]), torch.tensor([0.0, 0.5, 1.0]), beta=0.1,
                             epsilon=0.01)
    assert terms.data_nll == pytest.approx(-(math.log(sum(math.exp(-k) for k in (1, 2, 3)) / 3)))
    assert terms.cost == pytest.approx(0.5) and terms.cost_term == pytest.approx(0.1 * math.log(0.51))
    assert sum(terms.weights) == pytest.approx(1.0) and terms.weights[0] > terms.weights[1] > terms.weights[2]


def test_cost_term_shape():
    """Eq. 2: zero inside [T_min, T_max], the relative distance to the range outside, continuous at the ends."""
    lo, hi = 1.37e9, 1.43e9
    assert flops_penalty(1.40e9, lo, hi) == 0.0 and flops_penalty(lo, lo, hi) == 0.0 == flops_penalty(hi, lo, hi)
    assert flops_penalty(2 * hi, lo, hi) == pytest.approx(1.0)
    assert flops_penalty(hi * 1.1, lo, hi) == pytest.approx(0.1)
    assert flops_penalty(lo * 0.75, lo, hi) == pytest.approx(0.25)
    assert flops_penalty(0.0, lo, hi) == pytest.approx(1.0)
    xs = [hi * (1 + d) for d in (0.0, 0.1, 0.2, 0.4)]
    assert [flops_penalty(x, lo, hi) for x in xs] == pytest.approx([0.0, 0.1, 0.2, 0.4])  # linear above the range


def test_k_most_probable_is_the_exact_top_k():
    rng = random.Random(0)
    log_probs = []
    for n in (3, 2, 4, 3):
        w = [rng.random() for _ in range(n)]
        log_probs.append([math.log(x / sum(w)) for x in w])
    brute = sorted(((a, math.fsum(log_probs[v][j] for v, j in enumerate(a)))
                    for a in itertools.product(*[range(len(lp)) for lp in log_probs])), key=lambda t: -t[1])
    got = k_most_probable(log_probs, 10)
    assert [a for a, _ in got] == [a for a, _ in brute[:10]]
    assert [lp for _, lp in got] == pytest.approx([lp for _, lp in brute[:10]])
    first_choice_distinct = k_most_probable(log_probs, 3, distinct=lambda a: a[0])
    assert sorted(a[0] for a, _ in first_choice_distinct) == [0, 1, 2]


@pytest.fixture(scope="module")
def space():
    config = resolve_space(SpaceConfig(), frames=8, size=40, num_classes=3, t_max=0.03e9)
    return TwoStreamSpace(config, frames=8, size=40, num_classes=3)


def test_space_decodes_valid_specs_with_exact_flops(space):
    rng = random.Random(0)
    for _ in range(20):
        index = tuple(rng.randrange(n) for n in space.sizes)
        spec = space.decode(index)
        assert type(spec).from_dict(spec.to_dict()) == spec  # validated on load
        assert space.flops(index) == cost(spec).flops
    assert len(space.variables) == 7 * 4 and space.size_of_space() > 1e12
    low, high = space.flops_range()
    assert low < 0.027e9 < 0.03e9 < high  # the auto width scale puts the range inside the space


def test_auto_width_scale_puts_the_range_in_the_lower_part(space):
    rng = random.Random(1)
    flops = [space.flops(tuple(rng.randrange(n) for n in space.sizes)) for _ in range(400)]
    below = sum(f < 0.03e9 for f in flops) / len(flops)
    assert 0.15 < below < 0.5


def test_band_samples_are_distinct_and_in_the_band(space):
    picks = sample_band(space, 0.027e9, 0.03e9, 16, seed=0)
    assert len(set(picks)) == 16
    assert all(0.027e9 <= space.flops(p) <= 0.03e9 for p in picks)
    assert sample_band(space, 0.027e9, 0.03e9, 16, seed=0) == picks


def test_supernet_runs_exactly_the_network_of_the_spec(space):
    """torch's FLOP counter on the supernet running a spec equals the family's analytic cost of that spec."""
    net = TwoStreamSupernet(space)
    rng = random.Random(2)
    for _ in range(4):
        index = tuple(rng.randrange(n) for n in space.sizes)
        spec = space.decode(index)
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            net(torch.randn(1, 3, 8, 40, 40), spec)
        assert counter.get_total_flops() // 2 == cost(spec).flops


def engine(space, epochs=2, warmup=0.5, **kw):
    settings = ParsecSettings(epochs=epochs, samples=3, t_min=0.027e9, t_max=0.03e9, batch_size=4, warmup=warmup,
                              expected_draws=4, space=space.config, **kw)
    return ParsecEngine(settings, space, seed=0, lr=0.05, steps_per_epoch=2)


def data(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 3, 8, 40, 40, generator=g), torch.randint(0, 3, (4,), generator=g)) for _ in range(n)]


def run(e, epochs):
    for _ in range(epochs):
        row = e.run_epoch(data(seed=e.epoch))
        row |= e.validate(data(1, seed=99))
        e.end_epoch(row)


def test_resume_reproduces_the_uninterrupted_search(space):
    """Epoch 1, checkpoint, a fresh engine loads it and runs epoch 2 == both epochs in one go: the weights, alpha,
    optimizer states and history (up to timings)."""
    straight = engine(space)
    run(straight, 2)
    first = engine(space)
    run(first, 1)
    state = first.state_dict()
    resumed = engine(space)
    resumed.load_state_dict(state)
    assert resumed.epoch == 1 and torch.equal(resumed.dist.alpha, first.dist.alpha)
    run(resumed, 1)
    assert torch.equal(resumed.dist.alpha, straight.dist.alpha)
    assert not torch.equal(straight.dist.alpha, torch.zeros_like(straight.dist.alpha))  # alpha learnt in epoch 2
    for (name, a), b in zip(straight.supernet.state_dict().items(), resumed.supernet.state_dict().values()):
        assert torch.equal(a, b), name
    untimed = [{k: v for k, v in h.items() if not k.endswith(("_s", "time_s"))} for h in straight.history]
    assert untimed == [{k: v for k, v in h.items() if not k.endswith(("_s", "time_s"))} for h in resumed.history]
    assert [h["arch_updates"] for h in straight.history] == [0, 1]  # the first half of the epochs: weights only


def test_staged_search_fixes_the_sparse_stream_in_its_second_part(space):
    e = engine(space, epochs=2, warmup=0.0, staged=True, stage_split=0.5)
    assert e.settings.parts() == [("sparse", 0, 1), ("dense+fusion", 1, 2)]
    run(e, 1)
    sparse, rest = e.variables["sparse"], e.variables["dense+fusion"]
    alpha = e.dist.alpha.detach()
    assert all(float(e.dist.logits(v).detach().abs().max()) > 0 for v in sparse)  # learnt in part 1
    assert all(float(e.dist.logits(v).detach().abs().max()) == 0 for v in rest)  # frozen in part 1
    mode = e.dist.mode()
    run(e, 1)
    assert e.fixed == {v: mode[v] for v in sparse}
    assert all(torch.equal(e.dist.logits(v).detach(), alpha[e.dist.offsets[v]:e.dist.offsets[v + 1]]) for v in sparse)
    assert any(float(e.dist.logits(v).detach().abs().max()) > 0 for v in rest)


def request(**options):
    return SearchRequest(budget=Budget(flops=0.03e9, layers=41), clip=Clip(8, 40), num_classes=2, options=options)


@pytest.mark.parametrize("options,field", [
    ({"samples": 0}, "options.samples"), ({"beta": -1}, "options.beta"), ({"warmup": 1.0}, "options.warmup"),
    ({"fusion_ops": ["sum"]}, "options.fusion_ops"), ({"t_min": 0.04e9}, "options.t_min"),
    ({"staged": "yes"}, "options.staged"), ({"widht_mults": [1]}, "options.widht_mults"),
    ({"t_min": 1e12, "t_max": 2e12}, "budget.flops"), ({"epsilon": 0}, "options.epsilon"),
])
def test_check_names_the_option(options, field):
    with pytest.raises(RequestError) as err:
        get_strategy("parsec").check(request(**options))
    assert err.value.field == field


def test_settings_follow_the_budget_and_the_job_recipe():
    from pipeline.train.recipe import Recipe

    s = settings_from_request(request(beta=0.2), Recipe(batch_size=6, lr=0.03))
    assert (s.t_min, s.t_max, s.beta, s.batch_size, s.lr) == (pytest.approx(0.027e9), 0.03e9, 0.2, 6, 0.03)
    assert isinstance(s.space.width_scale, float)
    assert ParsecSettings.from_dict(s.to_dict()) == s
    assert [s.updates_arch(e) for e in range(s.epochs)].count(False) == math.ceil(0.25 * s.epochs)
