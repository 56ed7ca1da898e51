"""Search space: genome <-> spec, mutation operators, and the cached evaluator against cost/scores."""
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e3d import zoo
from e3d.cost import cost
from e3d.evaluator import Evaluator
from e3d.scores import homoentr, stentr
from e3d.space import PAPER_BOTTLENECK_RATIOS, PAPER_DEPTH_STEPS, SearchSpace, genome_layers
from e3d.spec import SpecError, validate

K133, K155, K333 = (1, 3, 3), (1, 5, 5), (3, 3, 3)


def walk(space: SearchSpace, steps: int, seed: int, restart: float = 0.05):
    """Genomes along a random mutation walk from the template (restarting now and then)."""
    rng = random.Random(seed)
    start = g = space.encode(space.template)
    for _ in range(steps):
        g = space.mutate(g, rng)
        yield g
        if rng.random() < restart:
            g = start


def changed_positions(parent, child) -> list[int]:
    """0 = stem, 1..n = stages, n+1 = head."""
    out = [0] if parent[0] != child[0] else []
    out += [i + 1 for i, (a, b) in enumerate(zip(parent[1], child[1])) if a != b]
    return out + ([len(parent[1]) + 1] if parent[2] != child[2] else [])


# -- genome <-> spec -----------------------------------------------------------------------------------
@pytest.mark.parametrize("size", "SML")
def test_reference_networks_are_in_the_space(size):
    space = SearchSpace(zoo.initial_structure(size))
    ref = zoo.get(f"E3D-{size}")
    genome = space.encode(ref)
    assert space.decode(genome, ref.name).key() == ref.key()
    assert genome_layers(genome) == cost(ref).layers


def test_encode_rejects_what_the_space_cannot_express():
    space = SearchSpace(zoo.initial_structure("S"))
    with pytest.raises(SpecError, match="multiple of 8"):
        space.encode(zoo.get("S-2"))  # X3D-S written in 5 stages: bottleneck 54
    with pytest.raises(SpecError, match="frames 16 differs"):
        space.encode(zoo.get("E3D-M"))  # 16x224^2 input in a 13x160^2 search
    with pytest.raises(SpecError, match="size 224 differs"):
        space.encode(zoo.get("E3D-S").with_input(size=224))
    strides = zoo.make("odd", "S", [(K333, 24, 48, 1, 2), (K333, 48, 96, 1, 1), (K333, 96, 192, 1, 2),
                                    (K333, 96, 192, 1, 2), (K333, 192, 384, 1, 2)])
    with pytest.raises(SpecError, match="strides"):
        space.encode(strides)
    capped = SearchSpace(zoo.initial_structure("S"), max_depth=(3, 6, 6, 6, 6))
    with pytest.raises(SpecError, match="depth bounds"):
        capped.encode(zoo.get("E3D-L").with_input(13, 160))
    with pytest.raises(SpecError, match="family"):
        SearchSpace(zoo.get("X3D-S"))


def test_round_width_reproduces_table9_bottlenecks_and_clips():
    space = SearchSpace(zoo.initial_structure("S"))
    # ties go to even multiples of 8, which is how E3D-S/M got 32, 176 and 464
    assert space.round_width(1.5 * 24) == 32
    assert space.round_width(1.5 * 120) == 176
    assert space.round_width(2.5 * 184) == 464
    assert space.round_width(2.5 * 48) == 120
    assert space.round_width(3.0) == 8 and space.round_width(5000) == 640
    assert space.ratio_of(24, 32) == 1.5 and space.ratio_of(184, 464) == 2.5


def test_invalid_space_parameters_are_refused():
    t = zoo.initial_structure("S")
    for bad in (dict(width_min=12), dict(width_max=644), dict(kernels=((1, 3, 5),)), dict(kernels=((1, 4, 4),)),
                dict(depth_steps=(0, 1)), dict(mutation_probs=(0, 0, 0, 0)), dict(max_depth=(3, 6)),
                dict(min_depth=0), dict(width_multipliers=(-1.0,)), dict(kernels=((15, 3, 3),))):
        with pytest.raises(ValueError):
            SearchSpace(t, **bad)


# -- mutation operators --------------------------------------------------------------------------------
def test_mutate_kernel_picks_another_kernel_that_fits_the_clip():
    space = SearchSpace(zoo.initial_structure("S"))
    rng = random.Random(0)
    seen = {space.mutate_kernel((3, 3, 48, 96, 2), rng)[:2] for _ in range(200)}
    assert seen == {(1, 3), (1, 5)}
    # on a 2-frame clip the 3x3x3 kernel is not in the space
    short = zoo.make("short", (2, 64, None), [(K133, 24, 48, 1, 2), (K133, 48, 96, 1, 2)])
    space2 = SearchSpace(short)
    assert {space2.mutate_kernel((1, 3, 24, 48, 1), rng)[:2] for _ in range(100)} == {(1, 5)}
    assert {space2.mutate_kernel((1, 5, 24, 48, 1), rng)[:2] for _ in range(100)} == {(1, 3)}
    # a single-kernel space has no move: the gene is left alone
    assert SearchSpace(short, kernels=(K133,)).mutate_kernel((1, 3, 24, 48, 1), rng) == (1, 3, 24, 48, 1)


def test_mutate_width_scales_the_output_and_keeps_the_expansion_ratio():
    space = SearchSpace(zoo.initial_structure("S"))
    rng = random.Random(1)
    outs = set()
    for _ in range(300):
        kt, k, out, btn, n = space.mutate_width((3, 3, 120, 176, 4), rng)  # ratio 1.47 -> 1.5
        assert (kt, k, n) == (3, 3, 4) and out != 120
        assert btn == space.round_width(out * 1.5)
        outs.add(out)
    assert outs == {240, 176, 152, 96, 72, 64}  # x2, x1.5 (180 -> 176, ties to even), x1.25 (150), x0.8, x0.6, x0.5
    top = {space.mutate_width((3, 3, 640, 640, 1), rng)[2] for _ in range(200)}
    assert top == {512, 384, 320}  # x2, x1.5, x1.25 clip to 640: no move
    low = {space.mutate_width((3, 3, 8, 16, 1), rng)[2] for _ in range(200)}
    assert low == {16}  # x2 only: x1.5 = 12 -> 16 too, x1.25 = 10 -> 8 is no change
    assert all(space.mutate_width((3, 3, 8, 16, 1), rng)[3] == 32 for _ in range(10))  # ratio 2 kept


def test_mutate_bottleneck_switches_to_another_ratio_of_the_output_width():
    space = SearchSpace(zoo.initial_structure("S"))
    rng = random.Random(2)
    btns = {space.mutate_bottleneck((3, 3, 48, 96, 2), rng)[3] for _ in range(300)}
    assert btns == {space.round_width(48 * r) for r in PAPER_BOTTLENECK_RATIOS if r != 2.0}
    for _ in range(100):
        gene = space.mutate_bottleneck((1, 5, 8, 16, 1), rng)
        assert gene[:3] == (1, 5, 8) and gene[4] == 1 and gene[3] != 16 and gene[3] % 8 == 0


def test_mutate_depth_steps_within_bounds():
    space = SearchSpace(zoo.initial_structure("S"), max_depth=(3, 6, 6, 6, 6))
    rng = random.Random(3)
    assert {space.mutate_depth((3, 3, 48, 96, 4), rng, 1)[4] for _ in range(200)} == {2, 3, 5, 6}
    assert {space.mutate_depth((3, 3, 48, 96, 1), rng, 1)[4] for _ in range(200)} == {2, 3}
    assert {space.mutate_depth((3, 3, 48, 96, 3), rng, 0)[4] for _ in range(200)} == {1, 2}  # cap 3
    assert {space.mutate_depth((3, 3, 48, 96, 5), rng, 2)[4] for _ in range(200)} == {3, 4, 6}
    free = SearchSpace(zoo.initial_structure("S"))
    assert {free.mutate_depth((3, 3, 48, 96, 20), rng, 0)[4] for _ in range(200)} == {
        20 + d for d in PAPER_DEPTH_STEPS}


def test_mutate_changes_two_positions_including_stem_and_head():
    space = SearchSpace(zoo.initial_structure("S"))
    n = len(space.template.stages)
    rng = random.Random(4)
    parent = space.encode(space.template)
    hits = [0] * (n + 2)
    for _ in range(3000):
        child = space.mutate(parent, rng)
        changed = changed_positions(parent, child)
        assert 1 <= len(changed) <= 2  # a position with no valid move may stay as it was
        for p in changed:
            hits[p] += 1
    assert all(h > 3000 * 2 / (n + 2) * 0.7 for h in hits), hits  # about uniform over the 7 positions
    no_ends = SearchSpace(space.template, mutate_stem_head=False, positions_per_child=1)
    for _ in range(500):
        child = no_ends.mutate(parent, rng)
        assert (child[0], child[2]) == (parent[0], parent[2]) and len(changed_positions(parent, child)) <= 1


@pytest.mark.parametrize("kind", range(4))
def test_mutation_probs_select_the_operator(kind):
    probs = [0.0] * 4
    probs[kind] = 1.0
    space = SearchSpace(zoo.initial_structure("S"), mutation_probs=tuple(probs), mutate_stem_head=False)
    rng = random.Random(5)
    parent = space.encode(space.template)
    fields = {0: {0, 1}, 1: {2, 3}, 2: {3}, 3: {4}}[kind]  # kernel, width (+bottleneck), bottleneck, depth
    changed_fields = set()
    for _ in range(300):
        child = space.mutate(parent, rng)
        for a, b in zip(parent[1], child[1]):
            changed_fields |= {i for i in range(5) if a[i] != b[i]}
    assert changed_fields and changed_fields <= fields


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.sampled_from("SML"),
       width_min=st.sampled_from([8, 16, 24]), width_max=st.sampled_from([512, 640, 1024]),
       max_depth=st.sampled_from([None, 2, (3, 6, 6, 6, 6)]))
def test_every_mutant_is_a_valid_spec_in_the_space(seed, size, width_min, width_max, max_depth):
    space = SearchSpace(zoo.initial_structure(size), width_min=width_min, width_max=width_max, max_depth=max_depth)
    caps = space.depth_caps
    for g in walk(space, 300, seed):
        stem, stages, head = g
        widths = [stem, head] + [w for s in stages for w in s[2:4]]
        assert all(width_min <= w <= width_max and w % 8 == 0 for w in widths), g
        assert all(1 <= s[4] <= c for s, c in zip(stages, caps)), g
        assert all((s[0], s[1], s[1]) in space.kernels for s in stages if s[:2] != (3, 3)), g
        spec = space.decode(g)
        validate(spec)
        assert space.encode(spec) == g


# -- evaluator ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", "SML")
def test_evaluator_equals_cost_and_scores_bit_for_bit(size):
    t = zoo.initial_structure(size)
    space = SearchSpace(t)
    st_eval, homo_eval = Evaluator(t, "stentr"), Evaluator(t, "homoentr", max_cache=64)  # also exercise clearing
    genomes = list(walk(space, 1500, seed=11)) + [space.encode(zoo.get(f"E3D-{size}"))]
    for g in genomes:
        spec = space.decode(g)
        c = cost(spec)
        flops, params, layers, score = st_eval.evaluate(g)
        assert (flops, params, layers) == (c.flops, c.params, c.layers)
        assert score == stentr(spec)  # same summation order: exactly equal
        assert homo_eval.evaluate(g) == (c.flops, c.params, c.layers, homoentr(spec))
    assert st_eval.evaluate(genomes[-1])[3] == pytest.approx({"S": 202.856, "M": 204.940, "L": 411.808}[size],
                                                            abs=5e-4)


def test_evaluator_reports_an_infinite_stentr_as_none():
    # 8 frames at 32^2: the first stage sees 8x8x8, parallel to a 3x3x3 kernel
    t = zoo.make("inf", (8, 32, None), [(K133, 24, 48, 1, 2), (K133, 48, 96, 1, 2), (K133, 96, 192, 1, 2)])
    g = SearchSpace(t).encode(t)
    bad = (g[0], ((3, 3, 24, 48, 1),) + g[1][1:], g[2])
    assert Evaluator(t, "stentr").evaluate(g)[3] is not None
    assert Evaluator(t, "stentr").evaluate(bad)[3] is None
    assert Evaluator(t, "homoentr").evaluate(bad)[3] == homoentr(SearchSpace(t).decode(bad))
    with pytest.raises(ValueError, match="unknown score"):
        Evaluator(t, "no-such-score")


def test_mutants_build_and_run(tmp_path):
    """A few mutants through the model builder at a tiny input: the decoded specs are real networks."""
    import torch

    from e3d.latency import torch_threads
    from e3d.model import build_model

    space = SearchSpace(zoo.initial_structure("S"))
    genomes = list(walk(space, 400, seed=7, restart=0.0))
    with torch_threads(1):  # tiny convs: a thread pool only adds contention
        for g in genomes[99::100]:
            spec = space.decode(g).with_input(frames=4, size=32)
            model = build_model(spec, num_classes=5).eval()
            with torch.no_grad():
                out = model(torch.zeros(1, 3, 4, 32, 32))
            assert out.shape == (1, 5)
