"""Evolutionary search: determinism, resume, limits, population upkeep, migration, outputs and CLI."""
import io
import json
import math

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e3d import zoo
from e3d.cost import cost
from e3d.evolution import PRESETS, ChunkStats, Evolution, SearchConfig, search
from e3d.progress import Progress
from e3d.scores import homoentr, stentr
from e3d.search_cli import main as cli_main
from e3d.search_cli import parse_amount
from e3d.search_io import read_population
from e3d.spec import SpecError, load_spec

K133, K333 = (1, 3, 3), (3, 3, 3)


def small(**kw) -> SearchConfig:
    return SearchConfig.from_preset("S", **({"population_size": 64, "iterations": 3000, "chunk": 1000} | kw))


def snapshot(evo: Evolution) -> list:
    return [(i.genome, i.score, i.flops, i.params, i.layers, i.seq) for i in evo.population]


def check_members(evo: Evolution) -> None:
    c = evo.config
    genomes = [i.genome for i in evo.population]
    assert len(genomes) == len(set(genomes)) <= c.population_size
    for ind in evo.population:
        assert ind.flops <= c.budget_flops
        assert c.budget_params is None or ind.params <= c.budget_params
        assert c.max_layers is None or ind.layers <= c.max_layers


# -- reproducibility ---------------------------------------------------------------------------------
def test_same_seed_same_search_bit_for_bit():
    a = search(small(seed=3), progress=False)
    b = search(small(seed=3), progress=False)
    c = search(small(seed=4), progress=False)
    key = lambda r: [(i.genome, i.score) for i in r.population]  # noqa: E731
    assert key(a) == key(b)
    assert a.best.to_json() == b.best.to_json()
    assert [h.to_dict() | {"wall_s": 0} for h in a.history] == [h.to_dict() | {"wall_s": 0} for h in b.history]
    assert key(a) != key(c)


def test_chunking_does_not_change_the_search():
    one = Evolution(small(), zoo.initial_structure("S"))
    one.run(3000)
    many = Evolution(small(), zoo.initial_structure("S"))
    for n in (1, 999, 1000, 500, 500):
        many.run(n)
    assert snapshot(one) == snapshot(many)
    assert one.totals == many.totals and one.iterations == many.iterations == 3000


def test_resume_from_state_dict_continues_bit_for_bit():
    uninterrupted = Evolution(small(), zoo.initial_structure("S"))
    uninterrupted.run(2000)
    uninterrupted.run(2000)

    first = Evolution(small(), zoo.initial_structure("S"))
    first.run(2000)
    state = json.loads(json.dumps(first.state_dict()))  # through JSON, as a checkpoint would be
    resumed = Evolution.from_state_dict(state)
    assert snapshot(resumed) == snapshot(first)
    resumed.run(2000)
    assert snapshot(resumed) == snapshot(uninterrupted)
    as_json = lambda evo: json.dumps(evo.state_dict(), sort_keys=True)  # noqa: E731
    assert as_json(resumed) == as_json(uninterrupted)
    with pytest.raises(ValueError, match="version"):
        Evolution.from_state_dict(state | {"version": 99})


# -- limits --------------------------------------------------------------------------------------------
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31), budget=st.floats(0.6e9, 2.5e9), max_layers=st.integers(17, 60),
       params=st.one_of(st.none(), st.floats(1.9e6, 4e6)), score=st.sampled_from(["stentr", "homoentr"]))
def test_population_never_exceeds_budgets_or_layer_limit(seed, budget, max_layers, params, score):
    config = small(seed=seed, budget_flops=budget, max_layers=max_layers, budget_params=params, score=score,
                   population_size=32)
    evo = Evolution(config, zoo.initial_structure("S"))
    for _ in range(6):
        evo.run(250)
        check_members(evo)
    for ind in evo.population[:5]:  # the stored numbers are the real ones
        spec = ind.spec()
        c = cost(spec)
        assert (ind.flops, ind.params, ind.layers) == (c.flops, c.params, c.layers)
        assert ind.score == (stentr if score == "stentr" else homoentr)(spec)
    t = evo.totals
    assert sum(t.values()) == evo.iterations
    assert t["over_budget"] + t["over_layers"] > 0  # the limits were actually hit


def test_per_stage_depth_caps_hold():
    evo = Evolution(small(max_depth=(3, 6, 6, 6, 6), iterations=0), zoo.initial_structure("S"))
    evo.run(4000)
    depths = [i.spec().depths for i in evo.population]
    assert all(d[0] <= 3 and max(d[1:]) <= 6 for d in depths)
    assert max(d[0] for d in depths) == 3  # and are reached


def test_initial_structure_over_a_limit_is_a_clear_error():
    with pytest.raises(SpecError, match=r"exceeds the FLOPs budget: 0\.5459 G > 0\.3000 G \(by 0\.2459 G"):
        Evolution(small(budget_flops=0.3e9), zoo.initial_structure("S"))
    with pytest.raises(SpecError, match=r"exceeds the params budget"):
        Evolution(small(budget_params=1e6), zoo.initial_structure("S"))
    with pytest.raises(SpecError, match=r"layer limit: 83 > 60 \(by 23\)"):
        Evolution(small(max_layers=60), zoo.get("E3D-S"))
    inf = zoo.make("inf", (8, 32, None), [(K333, 24, 48, 1, 2), (K133, 48, 96, 1, 2)])
    with pytest.raises(SpecError, match="infinite"):
        Evolution(small(), inf)


def test_infinite_scores_are_rejected_not_fatal():
    # 8 frames at 32^2: a 3x3x3 kernel in the first stage (8x8x8 map) has an infinite STEntr factor
    t = zoo.make("inf", (8, 32, None), [(K133, 24, 48, 1, 2), (K133, 48, 96, 1, 2), (K133, 96, 192, 1, 2)])
    config = small(budget_flops=1e12, max_layers=None, mutation_probs=(1, 0, 0, 0), population_size=16)
    evo = Evolution(config, t)
    stats = evo.run(500)
    assert stats.invalid > 0 and evo.totals["invalid"] == stats.invalid
    assert all(i.genome[1][0][:2] != (3, 3) for i in evo.population)
    homo = Evolution(SearchConfig.from_dict(config.to_dict() | {"score": "homoentr"}), t)
    assert homo.run(500).invalid == 0
    assert any(i.genome[1][0][:2] == (3, 3) for i in homo.population)


# -- the population ------------------------------------------------------------------------------------
def test_population_fills_then_keeps_the_best_unique_members():
    evo = Evolution(small(population_size=50), zoo.initial_structure("S"))
    assert len(evo) == 1
    seen_worst = -math.inf
    for _ in range(10):
        stats = evo.run(300)
        scores = [i.score for i in evo.population]
        assert scores == sorted(scores, reverse=True)
        assert stats.best == scores[0] and stats.population == len(scores)
        if len(scores) == 50:  # worst-out: the worst of a full population never gets worse
            assert scores[-1] >= seen_worst
            seen_worst = scores[-1]
        check_members(evo)
    assert len(evo) == 50
    assert evo.best().score == evo.elites(3)[0].score > evo.elites(3)[2].score
    s = stats
    assert s.iterations == s.accepted + s.worse + s.duplicates + s.over_budget + s.over_layers + s.invalid
    assert s.evaluations == s.accepted + s.worse and 0 <= s.acceptance_rate <= 1


def test_search_improves_the_score_a_lot():
    """20k iterations of the S preset: the score rises from Table 8's 44.8 to above 200 (E3D-S: 202.86)."""
    result = search(small(population_size=512, iterations=20_000, chunk=5000), progress=False)
    init = stentr(zoo.initial_structure("S"))
    assert init == pytest.approx(44.846, abs=1e-3)
    assert result.best_score > 200
    assert result.history[-1].median > result.history[0].median > init
    assert result.best_score == stentr(result.best)


def test_inject_scores_and_respects_limits_and_uniqueness():
    evo = Evolution(small(), zoo.initial_structure("S"))
    evo.run(200)
    rng_state = evo.state_dict()["rng"]
    stats = evo.inject([zoo.get("E3D-S")])
    assert stats.accepted == 1 and evo.best().genome == evo.space.encode(zoo.get("E3D-S"))
    assert evo.inject([zoo.get("E3D-S")]).duplicates == 1
    assert evo.state_dict()["rng"] == rng_state  # migration does not consume randomness
    tight = Evolution(small(budget_flops=1.0e9), zoo.initial_structure("S"))
    assert tight.inject([zoo.get("E3D-S")]).over_budget == 1
    assert tight.inject(evo.elites(5)).iterations == 5  # Individuals migrate directly
    with pytest.raises(SpecError):
        evo.inject([zoo.get("E3D-M")])  # another input size: not in this search


def test_initial_population_is_trimmed_and_deduplicated():
    specs = [zoo.initial_structure("S"), zoo.get("E3D-S"), zoo.get("E3D-S")]
    evo = Evolution(small(population_size=1), specs)
    assert len(evo) == 1 and evo.best().genome == evo.space.encode(zoo.get("E3D-S"))


def test_config_round_trips_and_checks_its_fields():
    c = SearchConfig.from_preset("L", max_depth=PRESETS["L"].official_depth_caps, kernels=((1, 3, 3), (3, 3, 3)))
    assert c.space_settings.max_depth == (3, 13, 13, 13, 13) and c.max_layers == 167 and c.budget_flops == 18.4e9
    assert SearchConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert SearchConfig.from_dict(json.loads(json.dumps(c.flat()))) == c  # Tune's flat view, old config.json
    assert c.with_space(max_depth=6).space_settings.max_depth == 6
    assert c.initial_spec().size == 312
    for bad in (dict(score="no-such-score"), dict(preset="XL"), dict(population_size=0), dict(budget_flops=-1)):
        with pytest.raises(ValueError):
            SearchConfig(**bad)
    with pytest.raises(ValueError, match="unknown field"):
        SearchConfig.from_dict({"budget": 1})


# -- outputs -------------------------------------------------------------------------------------------
def test_search_writes_best_population_history_and_plot(tmp_path):
    config = small(iterations=2500)
    result = search(config, out_dir=tmp_path, progress=False)
    best = load_spec(tmp_path / "best.json")
    assert best.key() == result.best.key() == result.population[0].spec().key()
    table = pq.read_table(tmp_path / "population.parquet").to_pylist()
    assert len(table) == len(result.population) == 64
    for col in ("name", "spec_json", "score", "stentr", "homoentr", "flops", "params", "layers", "kernel_pattern",
                "depths", "widths"):
        assert col in table[0]
    assert [r["score"] for r in table] == sorted((r["score"] for r in table), reverse=True)
    for row, spec in zip(table[:10], read_population(tmp_path / "population.parquet")):
        c = cost(spec)
        assert (row["flops"], row["params"], row["layers"]) == (c.flops, c.params, c.layers)
        assert row["stentr"] == row["score"] == stentr(spec) and row["homoentr"] == homoentr(spec)
        assert row["depths"] == list(spec.depths) and row["kernel_pattern"] == spec.kernel_pattern
    history = pq.read_table(tmp_path / "history.parquet").to_pylist()
    assert [h["total_iterations"] for h in history] == [1000, 2000, 2500]
    for col in ("best", "median", "evaluations", "accepted", "acceptance_rate", "over_budget", "duplicates"):
        assert col in history[0]
    assert history[-1]["best"] == result.best_score
    assert (tmp_path / "progress.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert SearchConfig.from_dict(json.loads((tmp_path / "config.json").read_text())) == config


def test_progress_is_quiet_off_a_terminal_and_shows_rate_on_one():
    quiet = io.StringIO()
    with Progress(100, stream=quiet) as bar:
        bar.update(100, best="1.0")
    assert quiet.getvalue() == ""
    loud = io.StringIO()
    with Progress(100, enabled=True, stream=loud, min_interval=0) as bar:
        bar.update(50, best="201.5")
        bar.update(50, best="202.9")
    out = loud.getvalue()
    assert "50/100" in out and "100/100" in out and "it/s" in out and "best=202.9" in out and out.endswith("\n")


# -- CLI -----------------------------------------------------------------------------------------------
def test_cli_search_runs_and_reports_errors(tmp_path, capsys):
    assert parse_amount("1.9G") == 1.9e9 and parse_amount("350M") == 3.5e8 and parse_amount("2e9") == 2e9
    rc = cli_main(["search", "--budget-flops", "1.9G", "--population", "16", "--iterations", "600",
                   "--seed", "1", "--max-depth", "official", "--out", str(tmp_path / "s")])
    assert rc == 0
    assert "best stentr" in capsys.readouterr().out
    best = load_spec(tmp_path / "s" / "best.json")
    assert best.depths[0] <= 3 and cost(best).flops <= 1.9e9
    config = json.loads((tmp_path / "s" / "config.json").read_text())
    assert config["space_settings"]["max_depth"] == [3, 6, 6, 6, 6] and config["population_size"] == 16
    with pytest.raises(SystemExit) as exit_:
        cli_main(["search", "--preset", "M", "--budget-flops", "0.5G", "--iterations", "10",
                  "--out", str(tmp_path / "m")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --budget-flops: the initial structure 'E3D-init-M'" in err and "FLOPs 1.3149 G" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "m").exists()


def test_chunk_stats_dict_has_derived_fields():
    d = ChunkStats(iterations=10, accepted=4, worse=3, duplicates=3).to_dict()
    assert d["evaluations"] == 7 and d["acceptance_rate"] == 0.4


@pytest.mark.parametrize("preset,reference", [("S", "E3D-S"), ("M", "E3D-M"), ("L", "E3D-L")])
def test_paper_setting_beats_the_reference(preset, reference):
    """Population 512, 500 000 iterations (a few seconds each; its speed is benchmarks/search_bench.py's job)."""
    result = search(SearchConfig.from_preset(preset), progress=False)
    assert result.best_score > stentr(zoo.get(reference))
    assert cost(result.best).flops <= PRESETS[preset].budget_flops
