"""The latency table and predictor: mechanism only (block keys, lazy fill, cache, calibration, estimate mode,
the budget filter, the Ray-resource path). No assertion depends on how fast anything runs."""
import argparse
import json
import random
import re
from dataclasses import dataclass

import pytest
import torch

from e3d import zoo
from e3d.cost import cost
from e3d.latency import (LatencyTable, Measurer, OpModel, block_modules, build_on_resource, cache_file_name,
                         filter_by_latency, key_from_str, key_to_str, network_blocks, parse_latency)
from e3d.model import build_model
from e3d.space import SearchSpace
from e3d.spec import ArchSpec, SpecError

TINY = (4, 32)  # frames, size: every network here runs in milliseconds


def tiny(name="E3D-S"):
    return zoo.get(name).with_input(*TINY)


def random_specs(n, seed=0, template="E3D-init-S"):
    t = zoo.get(template).with_input(*TINY)
    space = SearchSpace(t)
    rng, genome, out = random.Random(seed), space.encode(t), []
    while len(out) < n:
        for _ in range(rng.randint(1, 6)):
            genome = space.mutate(genome, rng)
        if cost(space.decode(genome)).layers <= 83:
            out.append(space.decode(genome, name=f"r{len(out)}"))
    return out


@dataclass(frozen=True)
class FakeMeasurer(Measurer):
    """Deterministic 'latency': 1 us per 1000 parameters + 0.01 ms per block; counts calls."""

    def module_ms(self, module, shape):
        CALLS.append(shape)
        return 0.01 + sum(p.numel() for p in module.parameters()) / 1e6

    def network_ms(self, spec, model=None):
        model = model or build_model(spec)
        return 0.5 + sum(p.numel() for p in model.parameters()) / 1e6


CALLS: list = []


@pytest.fixture
def fake():
    CALLS.clear()
    return FakeMeasurer()


# -- blocks -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["E3D-S", "X3D-S", "E3D-init-M", "T-3"])
def test_network_blocks_match_the_built_modules(name):
    spec = tiny(name)
    blocks = network_blocks(spec)
    walked = [key for key, _, _ in block_modules(spec, build_model(spec))]
    assert sum(n for _, n in blocks) == len(walked) == sum(spec.depths) + 3
    counts: dict = {}
    for key in walked:
        counts[key] = counts.get(key, 0) + 1
    assert dict(blocks) == counts
    # a stage costs at most three distinct keys whatever its depth: first block, later ones with/without SE
    assert len(blocks) <= 3 + 3 * len(spec.stages)


def _family_specs():
    """(spec, expected layout) for families other than e3d/x3d: a fused-unit spec (VideoNet-shaped, keyed per
    stage) and the zoo's entries of the other families (their own networks, keyed whole)."""
    out = []
    try:
        d = tiny("E3D-init-S").to_dict() | {"family": "e3d-fused", "name": "fused"}
        d["stages"][1]["fusion"] = "S+ST"
        out.append((ArchSpec.from_dict(d), "stages"))
    except (SpecError, KeyError):
        pass
    for name in zoo.names():
        spec = zoo.get(name)
        if spec.family not in ("e3d", "x3d"):
            out.append((spec.with_input(4, 32), None))
    return out


@pytest.mark.parametrize("spec,layout", _family_specs(), ids=lambda v: getattr(v, "name", str(v)))
def test_other_families_are_keyed_per_stage_or_whole(spec, layout, fake):
    from e3d.latency import key_layout

    assert key_layout(spec) == (layout or key_layout(spec)) and key_layout(spec) in ("stages", "network")
    blocks = network_blocks(spec)
    walked = [key for key, _, _ in block_modules(spec, build_model(spec))]
    assert sum(n for _, n in blocks) == len(walked)
    if key_layout(spec) == "stages":
        assert len(walked) == len(spec.stages) + 3
    else:
        assert [k[0] for k in walked] == ["network"]
    # estimate mode measures what its per-op model has no features for
    table = LatencyTable(measurer=fake, on_missing="estimate")
    table.fill(random_specs(12, seed=1))
    n = len(table.entries)
    assert table.predict(spec) > 0 and len(table.entries) > n
    for key in table.missing(spec):
        assert key[0] in ("stem", "block", "head", "classifier")


def test_keys_round_trip_as_strings():
    for key, _ in network_blocks(tiny("X3D-S")):
        assert key_from_str(key_to_str(key)) == key


def test_parse_latency():
    assert parse_latency("25ms") == 25.0
    assert parse_latency("0.025s") == 25.0
    assert parse_latency("2500us") == 2.5
    assert parse_latency("25") == 25.0
    for bad in ("fast", "-3ms", "0", "25 min"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_latency(bad)


# -- predicting -------------------------------------------------------------------------------------------
def test_predict_is_the_sum_of_entries_plus_overhead(fake):
    table = LatencyTable(measurer=fake, overhead_ms=0.25)
    spec = tiny()
    pred = table.predict(spec)
    expected = sum(n * table.entries[k] for k, n in network_blocks(spec)) + 0.25
    assert pred == pytest.approx(expected, rel=1e-12)
    assert [(k, n) for k, n, _ in table.breakdown(spec)] == network_blocks(spec)


def test_lazy_fill_measures_each_new_block_once(fake):
    table = LatencyTable(measurer=fake)
    a, b = random_specs(2, seed=3)
    table.predict(a)
    assert len(CALLS) == len(network_blocks(a)) == len(table.entries)
    table.predict(a)
    assert len(CALLS) == len(network_blocks(a))  # memoised: nothing measured again
    before = dict(table.entries)
    table.predict(b)
    new = {k for k, _ in network_blocks(b)} - set(before)
    assert len(CALLS) == len(network_blocks(a)) + len(new)
    assert table.measured == len(table.entries)


def test_missing_blocks_raise_in_error_mode(fake):
    table = LatencyTable(measurer=fake, on_missing="error")
    with pytest.raises(KeyError, match=re.escape('no entry for block ["stem","e3d"')):
        table.predict(tiny())
    assert not CALLS


def test_estimate_mode_never_measures_and_fits_measured_blocks(fake):
    seen = LatencyTable(measurer=fake)
    seen.fill(random_specs(12, seed=1))
    assert len(seen.entries) >= 20
    table = LatencyTable(measurer=fake, entries=dict(seen.entries), on_missing="estimate")
    n_calls = len(CALLS)
    unseen = random_specs(3, seed=99)
    preds = [table.predict(s) for s in unseen]
    assert len(CALLS) == n_calls and len(table.entries) == len(seen.entries)
    assert all(p > 0 for p in preds)
    model = table.model()
    assert model.fitted_on == len(seen.entries) and all(c >= 0 for c in model.coef)
    # a known block predicts its measured value, not the model's
    key = next(iter(seen.entries))
    assert table.entry(key) == seen.entries[key]
    with pytest.raises(ValueError, match="at least 20 measured blocks"):
        OpModel.fit(dict(list(seen.entries.items())[:5]))


def test_calibrate_sets_the_median_residual(fake):
    table = LatencyTable(measurer=fake)
    specs = random_specs(3, seed=5)
    blocks = [table.blocks_ms(s) for s in specs]
    overhead = table.calibrate(specs, measured=[b + d for b, d in zip(blocks, (0.1, 0.4, 0.2))], save=False)
    assert overhead == pytest.approx(0.2)
    assert table.predict(specs[0]) == pytest.approx(blocks[0] + 0.2)
    assert table.calibration["specs"] == 3
    # with real end-to-end measurements (the fake measurer's network_ms)
    table.calibrate(specs, save=False)
    assert table.overhead_ms == pytest.approx(sorted(fake.network_ms(s) - b for s, b in zip(specs, blocks))[1])


# -- the cache --------------------------------------------------------------------------------------------
def test_cache_round_trip_and_file_key(tmp_path):
    table = LatencyTable.open(*TINY, cache_dir=tmp_path, runs=2, warmup=1)
    assert table.path.parent == tmp_path and not table.path.exists()
    name = table.path.name
    assert name == cache_file_name(table.device_name, "torch", 1, *TINY)
    assert name.startswith("cpu-") and f"{TINY[0]}x{TINY[1]}" in name and torch.__version__.split("+")[0] in name
    spec = tiny("E3D-init-S")
    pred = table.predict(spec)  # measures (for real) and saves
    assert table.path.is_file() and all(v > 0 for v in table.entries.values())
    table.calibrate([spec], measured=[pred + 1.0])
    again = LatencyTable.open(*TINY, cache_dir=tmp_path, runs=2, warmup=1, on_missing="error")
    assert again.entries == pytest.approx(table.entries)
    assert again.overhead_ms == pytest.approx(table.overhead_ms)
    assert again.predict(spec) == pytest.approx(table.predict(spec))
    data = json.loads(table.path.read_text())
    assert data["torch"] == torch.__version__ and data["measurer"]["threads"] == 1
    table.path.write_text('{"format": 1, "entries": {"block/e3d/1": 2}}')  # an older format: measured again
    fresh = LatencyTable.open(*TINY, cache_dir=tmp_path, runs=2, warmup=1)
    assert fresh.entries == {} and fresh.path == table.path
    fresh.fill(spec)
    assert json.loads(table.path.read_text())["format"] == 2


def test_save_keeps_entries_another_process_wrote(tmp_path, fake):
    path = tmp_path / "t.json"
    a, b = LatencyTable(measurer=fake, path=path), LatencyTable(measurer=fake, path=path)
    a.fill(random_specs(1, seed=1))
    b.fill(random_specs(1, seed=2))  # b never saw a's entries, saving merges them
    merged = LatencyTable.load(path)
    assert set(merged.entries) == set(a.entries) | set(b.entries)


# -- real measurers (mechanism only) ----------------------------------------------------------------------
def test_torch_measurer_times_blocks_and_networks():
    m = Measurer(threads=1, runs=2, warmup=1)
    table = LatencyTable(measurer=m)
    spec = tiny("X3D-S")
    assert table.predict(spec) > 0 and table.measure(spec) > 0
    assert Measurer(threads=1, runs=2, warmup=1, clock="cpu", stat="min").network_ms(spec) > 0
    assert m.device_name.startswith("cpu-") and m.backend_name == "torch"


def test_onnxruntime_measurer():
    pytest.importorskip("onnxruntime")
    m = Measurer(backend="onnxruntime", threads=1, runs=2, warmup=1)
    table = LatencyTable(measurer=m)
    spec = tiny("E3D-init-S")
    assert table.predict(spec) > 0 and table.measure(spec) > 0
    assert table.backend_name.startswith("onnxruntime")


@pytest.mark.parametrize("kwargs,fragment", [
    ({"device": "tpu"}, "--latency-device"), ({"backend": "tvm"}, "--latency-backend"),
    ({"threads": 0}, "--latency-threads"), ({"clock": "cpu", "threads": 2}, "clock cpu"),
])
def test_measurer_rejects_bad_settings(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        Measurer(**kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="--latency-device cuda: torch sees no CUDA device"):
        LatencyTable.open(*TINY, device="cuda")


# -- the budget -------------------------------------------------------------------------------------------
def test_search_under_a_latency_budget_never_returns_a_network_over_it(fake):
    """A random-walk search of the space whose acceptance test is the latency budget (as a strategy's budget
    hook would apply it): nothing it keeps, and nothing filter_by_latency returns, is over the budget. The
    table estimates the blocks it lacks, as a long search would use it."""
    table = LatencyTable(measurer=fake, on_missing="estimate")
    table.fill(random_specs(12, seed=1))
    t = zoo.get("E3D-init-S").with_input(*TINY)
    space = SearchSpace(t)
    budget = table.predict(t) * 1.5
    rng, genome, kept = random.Random(0), space.encode(t), []
    rejected = 0
    for _ in range(300):
        child = space.mutate(genome, rng)
        spec = space.decode(child)
        if table.over_budget(spec, budget) is None:
            genome = child
            kept.append(spec)
        else:
            rejected += 1
    assert kept and rejected  # the budget binds
    assert all(table.predict(s) <= budget for s in kept)
    pool = random_specs(30, seed=7)
    budget = sorted(table.predict(s) for s in pool)[15]
    within = filter_by_latency(pool, table, budget)
    assert 0 < len(within) < len(pool)
    assert all(table.predict(s) <= budget for s in within)
    assert [s for s in pool if table.predict(s) <= budget] == within
    msg = table.over_budget(max(pool, key=table.predict), budget)
    assert msg.startswith("exceeds the latency budget") and "ms >" in msg


# -- a Ray node picked by a resource ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_with_resource():
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, resources={"latency_probe": 1}, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_build_on_resource_runs_the_measurement_as_a_ray_task(ray_with_resource, tmp_path):
    specs = [tiny("E3D-init-S"), tiny("X3D-XS")]
    table = build_on_resource(specs, "latency_probe", runs=2, warmup=1, calibrate=1, cache_dir=tmp_path)
    assert set(table.entries) == {k for s in specs for k, _ in network_blocks(s)}
    assert table.measurer.resource == "latency_probe" and table.calibration["node"]
    assert table.path.is_file() and table.path.parent == tmp_path
    # a later lazy fill runs there too; the cached file reopens with the same device name
    more = tiny("E3D-init-M")
    assert table.predict(more) > 0 and not table.missing(more)
    again = LatencyTable.open(*TINY, cache_dir=tmp_path, runs=2, warmup=1, resource="latency_probe")
    assert again.path == table.path and set(again.entries) == set(table.entries)
    with pytest.raises(ValueError, match="--latency-resource nowhere: no Ray node offers this resource"):
        build_on_resource(specs, "nowhere", cache_dir=tmp_path)


def _cpu_strategies():
    try:
        from e3d.strategy import CPU_ONLY, get_strategy, strategy_names
    except ImportError:
        return []
    return [n for n in strategy_names() if tuple(get_strategy(n).needs) == CPU_ONLY]


@pytest.mark.parametrize("name", _cpu_strategies())
def test_strategies_under_a_latency_budget_never_return_a_network_over_it(name, fake):
    """Every training-free strategy, given ``SearchContext.latency = table`` and a latency budget, returns only
    networks the table predicts within it (skipped for a strategy that refuses latency budgets so far)."""
    from e3d.strategy import Budget, Clip, RequestError, SearchContext, SearchRequest, get_strategy

    strategy = get_strategy(name)
    table = LatencyTable(measurer=fake, on_missing="estimate")
    table.fill(random_specs(12, seed=1))
    clip = (4, 48)  # at 4x32^2 the initial structure's STEntr is infinite
    start = zoo.get("E3D-init-S").with_input(*clip)
    budget_ms = table.predict(start) * 1.3
    request = SearchRequest(budget=Budget(flops=cost(start).flops * 4, layers=41, latency_ms=budget_ms),
                            clip=Clip(*clip), seed=0, options=dict(getattr(strategy, "quick_options", {})))
    try:
        outcome = strategy.search(request, SearchContext(latency=table, progress=False))
    except RequestError as exc:
        if exc.field == "budget.latency_ms":
            pytest.skip(f"strategy {name!r} does not take a latency budget yet: {exc}")
        raise
    over = [c.spec.name for c in outcome.candidates if table.predict(c.spec) > budget_ms]
    assert not over, f"{len(over)} of {len(outcome.candidates)} candidates over {budget_ms:.3f} ms"
