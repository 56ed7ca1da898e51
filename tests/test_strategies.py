"""The strategy contract: registry, outcomes, the random baseline's sampler, and the evolution adapter."""
import itertools
import json
import random
from collections import Counter
from dataclasses import replace

import pytest

from e3d import zoo
from e3d.cost import cost
from e3d.evaluator import Evaluator
from e3d.evolution import SearchConfig, search
from e3d.search_io import read_outcome, write_outcome
from e3d.space import SearchSpace
from e3d.strategies.random import UniformSampler
from e3d.strategy import (Budget, Candidate, Clip, RequestError, SearchRequest, SearchStrategy, get_strategy,
                          strategy_names, top_k_distinct)

K133, K333 = (1, 3, 3), (3, 3, 3)


def test_registry_lists_both_strategies_and_rejects_unknown_names():
    assert {"evolution", "random"} <= set(strategy_names())
    for name in strategy_names():
        assert isinstance(get_strategy(name), SearchStrategy)
    with pytest.raises(ValueError, match="unknown strategy 'genetic'.*evolution"):
        get_strategy("genetic")
    request = SearchRequest(budget=Budget(flops=0.08e9, layers=41), clip=Clip(8, 56))
    for name, options, field, message in [
            ("evolution", {"populaton": 3}, "options.populaton", "unknown option 'populaton'"),
            ("random", {"samples": 0}, "options.samples", "'samples' must be a positive integer")]:
        with pytest.raises(RequestError, match=message) as err:
            get_strategy(name).check(replace(request, options=options))
        assert err.value.field == field
    for name in strategy_names():
        get_strategy(name).check(request)  # a good request passes


def test_evolution_strategy_gives_the_same_best_as_the_search_itself():
    config = SearchConfig.from_preset("S", budget_flops=0.08e9, max_layers=41, frames=8, size=56,
                                      population_size=32, iterations=3000)
    direct = search(config, progress=False)
    request = SearchRequest(budget=Budget(flops=0.08e9, layers=41), clip=Clip(8, 56),
                            options={"population_size": 32, "iterations": 3000})
    outcome = get_strategy("evolution").search(request)
    assert outcome.best.spec.key() == direct.best.key() and outcome.best.score == direct.best_score
    assert [c.spec.key() for c in outcome.candidates] == [i.spec().key() for i in direct.population]
    assert outcome.cpu_s > 0 and outcome.history[-1]["total_iterations"] == 3000


@pytest.mark.parametrize("budget", [Budget(flops=0.08e9, layers=41), Budget(flops=0.3e9, params=1e6, layers=30)])
def test_random_strategy_is_deterministic_and_never_exceeds_the_budget(budget):
    request = SearchRequest(budget=budget, clip=Clip(8, 56), seed=3, options={"samples": 120, "chunk": 40})
    a = get_strategy("random").search(request)
    b = get_strategy("random").search(request)
    assert [c.spec.key() for c in a.candidates] == [c.spec.key() for c in b.candidates]
    assert len({c.spec.key() for c in a.candidates}) == 120
    for c in a.candidates:
        real = cost(c.spec)
        assert (c.flops, c.params, c.layers) == (real.flops, real.params, real.layers)
        assert budget.violation(real) is None
    assert [c.score for c in a.candidates] == sorted((c.score for c in a.candidates), reverse=True)
    assert len(a.history) == 3 and a.history[-1]["best"] == a.best.score
    other = get_strategy("random").search(SearchRequest(budget=budget, clip=Clip(8, 56), seed=4,
                                                        options={"samples": 120}))
    assert [c.spec.key() for c in other.candidates] != [c.spec.key() for c in a.candidates]


def test_gibbs_sampler_is_uniform_over_the_feasible_networks():
    """A one-stage space small enough to enumerate: every feasible genome drawn about equally often."""
    template = zoo.make("tiny", (4, 32, None), [(K333, 16, 32, 1, 2)], stem=8, head=16)
    space = SearchSpace(template, kernels=(K133, K333), width_min=8, width_max=32, bottleneck_ratios=(1.5, 3.0),
                        max_depth=2)
    evaluator = Evaluator(template, "homoentr", space=space)
    budget = Budget(flops=1.2e6)
    widths = (8, 16, 24, 32)
    feasible = set()
    for stem, head, (kt, k, _), out, ratio, depth in itertools.product(widths, widths, space.kernels, widths,
                                                                       (1.5, 3.0), (1, 2)):
        g = (stem, ((kt, k, out, space.round_width(out * ratio), depth),), head)
        if evaluator.cost(g)[0] <= budget.flops:
            feasible.add(g)
    assert 20 < len(feasible) < 256  # the budget cuts the space
    sampler = UniformSampler(space, evaluator, budget, random.Random(0), thin=2)
    n = 40 * len(feasible)
    counts = Counter(sampler.draw() for _ in range(n))
    assert set(counts) == feasible
    expected = n / len(feasible)
    tv = 0.5 * sum(abs(counts[g] / n - 1 / len(feasible)) for g in feasible)
    assert tv < 0.12, tv  # total variation from uniform (sampling noise alone gives ~0.06 here)
    assert max(counts.values()) < 2.5 * expected and min(counts.values()) > 0.3 * expected


def test_strategies_refuse_a_budget_their_start_does_not_fit():
    request = SearchRequest(budget=Budget(flops=1e5), clip=Clip(8, 56), options={"samples": 5})
    with pytest.raises(RequestError, match="smallest network of the space") as err:
        get_strategy("random").check(request)
    assert err.value.field == "budget.flops"
    with pytest.raises(RequestError, match="initial structure 'E3D-init-S' at 8x56.2 does not fit: FLOPs") as err:
        get_strategy("evolution").check(replace(request, options={}))
    assert err.value.field == "budget.flops"
    with pytest.raises(RequestError, match="layers > limit 10") as err:
        get_strategy("evolution").check(SearchRequest(budget=Budget(flops=1e9, layers=10), clip=Clip(8, 56)))
    assert err.value.field == "budget.layers"
    # 8 frames at 64^2: the initial structure's 3x3x3 stage sees 8x8x8, where STEntr is infinite
    with pytest.raises(RequestError, match="infinite") as err:
        get_strategy("evolution").check(SearchRequest(budget=Budget(flops=1e9), clip=Clip(8, 64)))
    assert err.value.field == "clip"


def test_outcome_round_trips_through_its_files(tmp_path):
    request = SearchRequest(budget=Budget(flops=0.08e9, layers=41), clip=Clip(8, 56), options={"samples": 30})
    outcome = get_strategy("random").search(request)
    paths = write_outcome(tmp_path, outcome)
    assert {"best", "population", "history", "outcome"} <= set(paths)
    back = read_outcome(tmp_path)
    assert back.strategy == "random" and back.summary() == outcome.summary()
    assert [(c.spec, c.score, c.flops, c.source) for c in back.candidates] == \
        [(c.spec, c.score, c.flops, c.source) for c in outcome.candidates]
    assert json.loads((tmp_path / "outcome.json").read_text())["settings"]["samples"] == 30
    assert read_outcome(tmp_path / "nothing") is None


def test_top_k_distinct_by_spec_fields():
    base = zoo.get("E3D-S")
    variants = [base.replace(name=f"v{i}", stages=tuple(s.__class__(**{**s.__dict__, "out": s.out + 8 * i})
                                                         for s in base.stages)) for i in range(3)]
    deeper = base.replace(name="deep", stages=(base.stages[0].__class__(**{**base.stages[0].__dict__, "layers": 2}),)
                          + base.stages[1:])
    ranked = [Candidate.of(s, 10 - i, source="t") for i, s in enumerate(variants + [deeper])]
    assert [c.spec.name for c in top_k_distinct(ranked, 3)] == ["v0", "deep"]
    assert [c.spec.name for c in top_k_distinct(ranked, 3, by=("widths",))] == ["v0", "v1", "v2"]
    with pytest.raises(ValueError, match="distinct by 'colour'"):
        top_k_distinct(ranked, 2, by=("colour",))


def test_pareto_front_and_spread(tmp_path):
    from e3d.pareto import pareto_front, spread, write_pareto

    request = SearchRequest(budget=Budget(flops=0.08e9, layers=41), clip=Clip(8, 56), options={"samples": 60})
    cands = get_strategy("random").search(request).candidates
    front = pareto_front(cands)
    assert 0 in front  # the best score is never dominated
    for i in front:  # brute force: nothing beats a front member in every objective
        for c in cands:
            assert not (c.score >= cands[i].score and c.flops <= cands[i].flops and c.params <= cands[i].params
                        and (c.score, c.flops, c.params) != (cands[i].score, cands[i].flops, cands[i].params))
    off = [i for i in range(len(cands)) if i not in front]
    assert off and all(any(cands[j].score >= cands[i].score and cands[j].flops <= cands[i].flops
                           and cands[j].params <= cands[i].params for j in front) for i in off)
    picks = spread(cands, front, 3)
    flops = sorted(cands[i].flops for i in front)
    assert len(picks) == min(3, len(front)) and cands[picks[0]].flops == flops[0]
    paths = write_pareto(tmp_path, cands)
    rows = paths["pareto"].read_text().splitlines()
    assert len(rows) == 61 and sum(r.endswith(",1") for r in rows[1:]) == len(front)
