"""The DNAS search space (e3d.dnas.space): Viterbi vs brute force, Eq. 4 vs the exact cost, derivation, ablations,
and the supernet's torch pieces (expected FLOPs, forward)."""
import math
import random

import pytest
import torch

from e3d.cost import cost
from e3d.dnas.space import (SKIP, brute_force_paths, derive, expected_flops, k_best_paths, one_hot_weights, table1_space,
                      uniform_weights)


def _random_graph(rng, starts, layers):
    sizes = [starts] + [rng.randint(1, 4) for _ in range(layers)]
    return [[[rng.uniform(-3, 1) for _ in range(sizes[s + 1])] for _ in range(sizes[s])] for s in range(layers)]


@pytest.mark.parametrize("seed", range(12))
def test_k_best_viterbi_equals_brute_force(seed):
    rng = random.Random(seed)
    weights = _random_graph(rng, starts=rng.choice([1, 1, 3]), layers=rng.randint(1, 5))
    total = len(brute_force_paths(weights, k=10 ** 6))
    for k in (1, 2, 5, total + 3):
        fast, slow = k_best_paths(weights, k), brute_force_paths(weights, k)
        assert [p for _, p in fast] == [p for _, p in slow]
        assert [s for s, _ in fast] == pytest.approx([s for s, _ in slow], abs=1e-12)
    assert len(k_best_paths(weights, total + 3)) == total


def _spaces():
    return [table1_space(8, 40, 5, width_mult=0.25, width_divisor=4, max_stack=[0, 2, 3, 1, 2, 1]),
            table1_space(4, 33, 3, width_mult=0.125, width_divisor=4, max_stack=[1, 1, 0, 2, 1, 1],
                         strides=[2, 1, 2, 1, 2, 2], mid_ratio=0.5),
            table1_space(8, 40, 5, width_mult=0.25, width_divisor=4, search_channels=False, search_ops=False),
            table1_space(8, 40, 5, width_mult=0.25, width_divisor=4, search_depth=False, fixed_stack=[0, 1, 2, 1, 1, 1])]


@pytest.mark.parametrize("index", range(4))
def test_expected_flops_with_one_hot_weights_is_the_derived_specs_exact_cost(index):
    space, rng = _spaces()[index], random.Random(index)
    for _ in range(20):
        path = [rng.randrange(len(w)) for w in space.widths]
        ops = [[rng.choice(space.ops) for _ in range(st.max_stack)] for st in space.stages]
        alpha, beta = one_hot_weights(space, path, ops)
        derived = derive(space, alpha, beta)[0]
        assert derived.path == tuple(path)
        assert [list(st.get("dilations")) for st in derived.spec.stages] == [[o for o in s if o != SKIP] for s in ops]
        assert expected_flops(space, alpha, beta) == cost(derived.spec).flops


def test_expected_flops_is_the_mean_over_sampled_networks():
    """Eq. 4 as the expectation of the cost when each stack op and each path step is drawn from its weights."""
    space, rng = _spaces()[0], random.Random(5)
    alpha = [[_dist(rng, len(space.ops)) for _ in range(st.max_stack)] for st in space.stages]
    beta, prev = [], 1
    for st in space.stages:
        beta.append([_dist(rng, len(st.widths)) for _ in range(prev)])
        prev = len(st.widths)
    exact = 0.0
    # enumerate the chain's paths and each stage's expected stack cost (ops are independent of the path)
    for _, path in brute_force_paths([[[math.log(p) for p in row] for row in b] for b in beta], k=10 ** 6):
        prob = math.prod(beta[s][path[s - 1] if s else 0][path[s]] for s in range(len(path)))
        ops = [[space.ops[0]] * st.max_stack for st in space.stages]
        _, b1 = one_hot_weights(space, path, ops)
        exact += prob * expected_flops(space, alpha, b1)
    assert expected_flops(space, alpha, beta) == pytest.approx(exact, rel=1e-12)


def _dist(rng, n):
    w = [rng.random() + 0.05 for _ in range(n)]
    return [x / sum(w) for x in w]


def test_table1_space_matches_the_paper():
    space = table1_space()
    assert space.widths == [(48, 56, 64), (72, 96, 112), (128, 144, 160, 176), (192, 208, 224), (240, 256, 272, 288),
                            (480, 496, 512)]
    assert [s.max_stack for s in space.stages] == [0, 5, 10, 5, 5, 1]
    assert 1 + len(space.stages) + sum(s.max_stack for s in space.stages) == 33  # "a 3D ResNet with 33 layers"
    assert f"{space.size_of_space():.3g}" == "5.84e+18"  # Sec. 3.3: "about 5.84 x 10^18"


def test_ablation_switches():
    base = table1_space(8, 56, 4)
    no_channels = table1_space(8, 56, 4, search_channels=False)
    assert [len(w) for w in no_channels.widths] == [1] * 6
    assert no_channels.widths[2] == (160,) and no_channels.widths[1] == (96,)  # the middle (upper) candidate
    assert table1_space(8, 56, 4, search_ops=False).ops == (1, SKIP)
    no_depth = table1_space(8, 56, 4, search_depth=False)
    assert no_depth.ops == (1, 2, 4) and [s.max_stack for s in no_depth.stages] == [s.max_stack for s in base.stages]
    assert table1_space(8, 56, 4, search_ops=False, search_depth=False).ops == (1,)
    with pytest.raises(ValueError, match="nothing to search"):
        table1_space(8, 56, 4, search_channels=False, search_ops=False, search_depth=False)
    narrow = table1_space(8, 56, 4, width_mult=0.125, width_divisor=8)
    assert narrow.widths[0] == (8,)  # 6, 7, 8 all round to 8: merged


def test_derivation_takes_argmax_ops_and_the_viterbi_path():
    space = table1_space(8, 40, 5, width_mult=0.25, width_divisor=4, max_stack=[0, 2, 1, 1, 1, 1])
    assert space.widths[0] == (12, 16)
    alpha, beta = uniform_weights(space)
    alpha[1] = [[0.1, 0.2, 0.6, 0.1], [0.1, 0.1, 0.1, 0.7]]  # d4, skip
    alpha[2] = [[0.5, 0.2, 0.2, 0.1]]                        # d1
    beta[0] = [[0.3, 0.7]]
    beta[1] = [[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]]
    best = derive(space, alpha, beta, k=space.paths())
    assert best[0].spec.stages[1].get("dilations") == [4] and best[0].spec.stages[2].get("dilations") == [1]
    assert best[0].path[:2] == (1, 0)  # 0.7 * 0.6 beats 0.3 * 0.7
    assert best[0].spec.widths[:2] == (16, 20)
    assert [d.spec.name for d in best[:3]] == ["dnas", "dnas-001", "dnas-002"]
    probs = [d.log_prob for d in best]
    assert probs == sorted(probs, reverse=True) and len({d.path for d in best}) == space.paths()
    assert math.fsum(math.exp(d.path_score) for d in best) == pytest.approx(1.0)  # the chain's paths


def test_path_scores_log_and_sum_can_disagree():
    """Most probable path (sum of log p) vs the paper's literal "maximum sum of weights"."""
    weights = [[[0.7, 0.3]], [[0.5, 0.5], [0.95, 0.05]]]  # sums 1.2 / 1.25, products 0.35 / 0.285
    logs = [[[math.log(p) for p in row] for row in layer] for layer in weights]
    assert k_best_paths(logs)[0][1] == (0, 0) and k_best_paths(weights)[0][1] == (1, 0)


# -- the torch side -------------------------------------------------------------------------------------
def test_torch_expected_flops_equals_eq4_and_has_gradients():
    from e3d.dnas.supernet import ArchParams, ExpectedFlops

    space = _spaces()[1]
    arch, fl = ArchParams(space), ExpectedFlops(space)
    torch.manual_seed(0)
    for p in arch.parameters():
        torch.nn.init.normal_(p)
    a, b = arch.weights()
    value = fl(a, b)
    assert float(value.detach()) == pytest.approx(expected_flops(space, *arch.as_lists()), rel=1e-6)
    value.log().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in arch.parameters() if p.numel())


def test_supernet_forward_and_one_hot_cost():
    from e3d.dnas.supernet import ArchParams, ExpectedFlops, SuperNet

    space = table1_space(4, 24, 3, width_mult=0.125, width_divisor=4, max_stack=[0, 1, 1, 0, 1, 1])
    net, arch = SuperNet(space), ArchParams(space)
    a, b = arch.weights()
    logits = net(torch.randn(2, 3, 4, 24, 24), a, b)
    assert logits.shape == (2, 3)
    logits.sum().backward()
    assert all(p.grad is not None for p in arch.parameters() if p.numel())
    path, ops = [0] * 6, [[space.ops[0]] * st.max_stack for st in space.stages]
    oa, ob = one_hot_weights(space, path, ops)
    flops = ExpectedFlops(space)([torch.tensor(x).reshape(-1, len(space.ops)) for x in oa],
                                 [torch.tensor(x) for x in ob])
    assert int(flops) == cost(derive(space, oa, ob)[0].spec).flops
