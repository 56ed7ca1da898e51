"""Maximum-entropy evolutionary search (Algorithm 1 of the E3D paper), single process and island-ready.

    config = SearchConfig.from_preset("S", iterations=500_000, seed=0)
    result = search(config, out_dir="runs/s")          # best.json, population/history parquet, progress.png

For islands (pipeline/), drive :class:`Evolution` directly: ``run(n)`` advances ``n`` iterations and
returns :class:`ChunkStats`; ``elites(k)`` / ``inject(specs)`` migrate; ``state_dict()`` /
``Evolution.from_state_dict`` checkpoint and resume bit for bit. Each iteration: pick a parent uniformly,
mutate two positions (:mod:`e3d.space`), drop it if it is already in the population, over the layer limit
or a budget, or has an infinite score; else score it and, when the population is over size, discard the
worst (lowest score; the oldest among equal scores).
"""
from __future__ import annotations

import heapq
import random
import statistics
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from . import zoo
from .evaluator import Evaluator, check_search_score
from .space import Genome, SearchSpace, SpaceSettings, seq_or_tuple
from .spec import ArchSpec, SpecError, load_spec
from .strategy import Candidate, SearchOutcome
from .zoo import PRESETS  # the paper's presets (input, budget, layers) live with the zoo

STATE_VERSION = 1




@dataclass(frozen=True)
class SearchConfig:
    """Everything that determines a search; same config + same initial structure = same result."""

    budget_flops: float = 1.9e9  # multiply-accumulates, DESIGN.md's convention
    budget_params: float | None = None
    max_layers: int | None = 83  # conv layers: stem + 3 per block + head; None = no limit
    population_size: int = 512
    iterations: int = 500_000
    score: str = "stentr"
    seed: int = 0
    preset: str | None = "S"  # input size of the default initial structure (Table 8)
    frames: int | None = None  # override the preset's input
    size: int | None = None
    initial: str | None = None  # zoo name or spec JSON path; default: Table 8 at the preset's input
    space_settings: SpaceSettings = field(default_factory=SpaceSettings)  # kernels, widths, depths, mutations
    chunk: int = 5000  # iterations per history row in search()

    def __post_init__(self) -> None:
        check_search_score(self.score)
        if not isinstance(self.space_settings, SpaceSettings):
            raise ValueError(f"space_settings must be a SpaceSettings, got {type(self.space_settings).__name__}")
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        for name in ("population_size", "chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {self.iterations}")
        if self.budget_flops <= 0 or (self.budget_params is not None and self.budget_params <= 0):
            raise ValueError("budgets must be positive")
        if self.max_layers is not None and self.max_layers < 5:
            raise ValueError(f"max_layers must be >= 5 (stem, one block, head), got {self.max_layers}")

    @classmethod
    def from_preset(cls, preset: str, **overrides: Any) -> "SearchConfig":
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        p = PRESETS[preset]
        return cls.from_dict({"preset": preset, "budget_flops": p.budget_flops, "max_layers": p.max_layers}
                             | overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def flat(self) -> dict[str, Any]:
        """One level: the space settings beside the other fields (Tune's view, ``--set FIELD=...``)."""
        d = self.to_dict()
        return d | d.pop("space_settings")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SearchConfig":
        """From :meth:`to_dict` or :meth:`flat` (also a flat config of runs written before the nesting)."""
        known = {f.name for f in fields(cls)}
        space_keys = {f.name for f in fields(SpaceSettings)}
        data = dict(data)
        nested = data.pop("space_settings", None)
        space = dict(nested.to_dict() if isinstance(nested, SpaceSettings) else nested or {})
        space |= {k: data.pop(k) for k in list(data) if k in space_keys}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"SearchConfig: unknown field {unknown[0]!r} (known: "
                             f"{', '.join(sorted((known - {'space_settings'}) | space_keys))})")
        return cls(**{k: seq_or_tuple(v) if isinstance(v, list) else v for k, v in data.items()},
                   space_settings=SpaceSettings.from_dict(space))

    def with_space(self, **changes: Any) -> "SearchConfig":
        """A copy with some space settings changed, e.g. ``config.with_space(max_depth=6)``."""
        return replace(self, space_settings=replace(self.space_settings, **changes))

    def initial_spec(self) -> ArchSpec:
        """The initial structure: ``initial`` (zoo name or JSON file) or Table 8 at the preset's input."""
        if self.initial is None:
            spec = zoo.initial_structure(self.preset or "S")
        elif self.initial in zoo.names():
            spec = zoo.get(self.initial)
        elif Path(self.initial).is_file():
            spec = load_spec(self.initial)
        else:
            raise SpecError(f"initial structure {self.initial!r}: neither a zoo name nor a spec file")
        if self.frames or self.size:
            spec = spec.with_input(self.frames, self.size)
        return spec

    def space(self, template: ArchSpec) -> SearchSpace:
        return SearchSpace.of(template, self.space_settings)


@dataclass(frozen=True)
class Individual:
    """A population member: its genome, objective score and cost; ``spec`` decodes it."""

    genome: Genome
    score: float
    flops: int
    params: int
    layers: int
    seq: int  # insertion order: the tie-breaker between equal scores (older goes first)
    space: SearchSpace = field(repr=False, compare=False)

    def spec(self, name: str | None = None) -> ArchSpec:
        return self.space.decode(self.genome, name)


@dataclass
class ChunkStats:
    """What happened during one ``run`` call (``iterations`` = sum of the outcome counters)."""

    iterations: int = 0
    accepted: int = 0  # entered the population
    worse: int = 0  # scored, but below the worst of a full population
    duplicates: int = 0  # already in the population
    over_budget: int = 0  # FLOPs or params budget
    over_layers: int = 0
    invalid: int = 0  # infinite STEntr refinement factor
    best: float = float("-inf")
    median: float = float("-inf")
    population: int = 0
    total_iterations: int = 0  # since the search began, after this chunk
    wall_s: float = 0.0  # time spent in this chunk

    @property
    def evaluations(self) -> int:
        """Candidates that were scored."""
        return self.accepted + self.worse

    @property
    def rejected(self) -> int:
        return self.over_budget + self.over_layers + self.invalid

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.iterations if self.iterations else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"evaluations": self.evaluations, "acceptance_rate": self.acceptance_rate}


# what can happen to one iteration's mutant (ChunkStats counts each; the iterations are their sum)
OUTCOMES = ("accepted", "worse", "duplicates", "over_budget", "over_layers", "invalid")


class Evolution:
    """Algorithm 1's population and loop; see the module docstring."""

    def __init__(self, config: SearchConfig, initial: ArchSpec | Sequence[ArchSpec], *,
                 constraint: Callable[[Genome], bool] | None = None):
        """``constraint``: a further limit a genome must meet (e.g. a latency budget); called only for
        mutants within the FLOPs, params and layer limits, and counted as ``over_budget`` when it fails."""
        self.constraint = constraint
        specs = [initial] if isinstance(initial, ArchSpec) else list(initial)
        if not specs:
            raise ValueError("Evolution needs an initial structure or population")
        self.config = config
        self.space = config.space(specs[0])
        self.evaluator = Evaluator(specs[0], config.score, space=self.space, seed=config.seed)
        self._rng = random.Random(config.seed)
        self._genomes: list[Genome] = []  # parents are drawn from this list by index
        self._info: list[tuple[float, int, int, int, int]] = []  # score, flops, params, layers, seq
        self._index: dict[Genome, int] = {}  # genome -> position in the lists
        self._heap: list[tuple[float, int, Genome]] = []  # (score, seq): the worst on top
        self._seq = 0
        self.iterations = 0
        self.totals = {name: 0 for name in OUTCOMES}
        for spec in specs:
            genome = self.space.encode(spec)
            if genome in self._index:
                continue
            flops, params, layers, score = self.evaluator.evaluate(genome)
            problem = self.over_limits(flops, params, layers)
            if problem is None and constraint is not None and not constraint(genome):
                problem = "exceeds the search's further constraint (e.g. its latency budget)"
            if problem or score is None:
                raise SpecError(f"initial structure {spec.name!r} " +
                                (problem or "has an infinite STEntr refinement factor"))
            self._insert(genome, score, flops, params, layers)
        self._trim()

    # -- limits --------------------------------------------------------------------------------------
    def over_limits(self, flops: int, params: int, layers: int) -> str | None:
        """None if within every budget, else a message saying which and by how much."""
        c = self.config
        if flops > c.budget_flops:
            return (f"exceeds the FLOPs budget: {flops / 1e9:.4f} G > {c.budget_flops / 1e9:.4f} G "
                    f"(by {(flops - c.budget_flops) / 1e9:.4f} G, {100 * (flops / c.budget_flops - 1):.1f}%)")
        if c.budget_params is not None and params > c.budget_params:
            return (f"exceeds the params budget: {params / 1e6:.4f} M > {c.budget_params / 1e6:.4f} M "
                    f"(by {(params - c.budget_params) / 1e6:.4f} M)")
        if c.max_layers is not None and layers > c.max_layers:
            return f"exceeds the layer limit: {layers} > {c.max_layers} (by {layers - c.max_layers})"
        return None

    # -- population upkeep ---------------------------------------------------------------------------
    def _insert(self, genome: Genome, score: float, flops: int, params: int, layers: int,
                seq: int | None = None) -> None:
        if seq is None:
            seq, self._seq = self._seq, self._seq + 1
        self._index[genome] = len(self._genomes)
        self._genomes.append(genome)
        self._info.append((score, flops, params, layers, seq))
        heapq.heappush(self._heap, (score, seq, genome))

    def _remove_worst(self) -> None:
        genome = heapq.heappop(self._heap)[2]
        pos = self._index.pop(genome)
        last, last_info = self._genomes.pop(), self._info.pop()
        if pos < len(self._genomes):
            self._genomes[pos], self._info[pos] = last, last_info
            self._index[last] = pos

    def _trim(self) -> None:
        while len(self._genomes) > self.config.population_size:
            self._remove_worst()

    def _offer(self, genome: Genome, counts: dict[str, int]) -> None:
        """Evaluate ``genome`` and add it if it is new, within limits and good enough."""
        if genome in self._index:
            counts["duplicates"] += 1
            return
        flops, params, layers, score = self.evaluator.evaluate(genome)
        c = self.config
        if c.max_layers is not None and layers > c.max_layers:
            counts["over_layers"] += 1
        elif flops > c.budget_flops or (c.budget_params is not None and params > c.budget_params):
            counts["over_budget"] += 1
        elif score is None:
            counts["invalid"] += 1
        elif len(self._genomes) >= c.population_size and score < self._heap[0][0]:
            counts["worse"] += 1
        elif self.constraint is not None and not self.constraint(genome):
            counts["over_budget"] += 1
        else:
            counts["accepted"] += 1
            self._insert(genome, score, flops, params, layers)
            self._trim()

    # -- the loop ------------------------------------------------------------------------------------
    def run(self, iterations: int) -> ChunkStats:
        """Advance ``iterations`` iterations of Algorithm 1; the result does not depend on chunking."""
        start = time.perf_counter()
        # the body of _offer, inlined: this loop is the whole search's cost
        rng, mutate, evaluate = self._rng, self.space.mutate, self.evaluator.evaluate
        genomes, index, heap = self._genomes, self._index, self._heap
        c = self.config
        size, budget = c.population_size, c.budget_flops
        budget_params = c.budget_params if c.budget_params is not None else float("inf")
        max_layers = c.max_layers if c.max_layers is not None else 1 << 62
        accepted = worse = duplicates = over_budget = over_layers = invalid = 0
        constraint = self.constraint
        for _ in range(iterations):
            child = mutate(genomes[rng.randrange(len(genomes))], rng)
            if child in index:
                duplicates += 1
                continue
            flops, params, layers, score = evaluate(child)
            if layers > max_layers:
                over_layers += 1
            elif flops > budget or params > budget_params:
                over_budget += 1
            elif score is None:
                invalid += 1
            elif len(genomes) >= size and score < heap[0][0]:
                worse += 1
            elif constraint is not None and not constraint(child):
                over_budget += 1
            else:
                accepted += 1
                self._insert(child, score, flops, params, layers)
                if len(genomes) > size:
                    self._remove_worst()
        counts = dict(zip(OUTCOMES, (accepted, worse, duplicates, over_budget, over_layers, invalid)))
        for name, value in counts.items():
            self.totals[name] += value
        self.iterations += iterations
        scores = [info[0] for info in self._info]
        return ChunkStats(iterations=iterations, **counts, best=max(scores), median=statistics.median(scores),
                          population=len(scores), total_iterations=self.iterations,
                          wall_s=time.perf_counter() - start)

    # -- access and migration ------------------------------------------------------------------------
    def _individual(self, i: int) -> Individual:
        score, flops, params, layers, seq = self._info[i]
        return Individual(self._genomes[i], score, flops, params, layers, seq, self.space)

    @property
    def population(self) -> list[Individual]:
        """Members, best first (ties: older first)."""
        return self.elites(len(self._genomes))

    def __len__(self) -> int:
        return len(self._genomes)

    def elites(self, k: int) -> list[Individual]:
        """The ``k`` best members, best first."""
        order = sorted(range(len(self._info)), key=lambda i: (-self._info[i][0], self._info[i][4]))
        return [self._individual(i) for i in order[:k]]

    def best(self) -> Individual:
        return self.elites(1)[0]

    def inject(self, specs: Iterable[ArchSpec | Individual]) -> ChunkStats:
        """Migration in: offer each spec like a mutant (limits, uniqueness, worst-out); RNG untouched."""
        counts = dict.fromkeys(OUTCOMES, 0)
        for s in specs:
            genome = s.genome if isinstance(s, Individual) else self.space.encode(s)
            self._offer(genome, counts)
        n = sum(counts.values())
        scores = [info[0] for info in self._info]
        return ChunkStats(iterations=n, **counts, best=max(scores), median=statistics.median(scores),
                          population=len(scores), total_iterations=self.iterations)

    # -- checkpoints ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: config, template, members in order, counters and RNG state."""
        version, internal, gauss = self._rng.getstate()
        return {
            "version": STATE_VERSION,
            "config": self.config.to_dict(),
            "template": self.space.template.to_dict(),
            "members": [[g[0], [list(s) for s in g[1]], g[2], *info] for g, info in zip(self._genomes, self._info)],
            "seq": self._seq,
            "iterations": self.iterations,
            "totals": dict(self.totals),
            "rng": [version, list(internal), gauss],
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], *,
                        constraint: Callable[[Genome], bool] | None = None) -> "Evolution":
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported search state version {state.get('version')!r}")
        self = cls.__new__(cls)
        self.constraint = constraint
        config = SearchConfig.from_dict(state["config"])
        template = ArchSpec.from_dict(state["template"])
        self.config, self.space = config, config.space(template)
        self.evaluator = Evaluator(template, config.score, space=self.space, seed=config.seed)
        self._genomes, self._info, self._index, self._heap = [], [], {}, []
        for stem, stages, head, score, flops, params, layers, seq in state["members"]:
            self._insert((stem, seq_or_tuple(stages), head), score, flops, params, layers, seq)
        self._seq, self.iterations, self.totals = state["seq"], state["iterations"], dict(state["totals"])
        version, internal, gauss = state["rng"]
        self._rng = random.Random()
        self._rng.setstate((version, tuple(internal), gauss))
        return self


@dataclass
class SearchResult:
    best: ArchSpec
    best_score: float
    population: list[Individual]
    history: list[ChunkStats]
    wall_s: float
    out_dir: Path | None = None

    @property
    def iterations_per_s(self) -> float:
        return sum(h.iterations for h in self.history) / self.wall_s if self.wall_s else 0.0


def run_name(config: SearchConfig) -> str:
    return f"E3D-{config.preset or 'custom'}-search-seed{config.seed}"


def outcome_from_population(population: Sequence[Individual], history: list[dict[str, Any]], *,
                            config: SearchConfig | None, name: str, best_name: str | None = None,
                            wall_s: float = 0.0, cpu_s: float | None = None,
                            extra: dict[str, Any] | None = None) -> SearchOutcome:
    """Rank-ordered ``Individual`` s (best first) -> an outcome whose candidates are named ``name-RRR``."""
    candidates = []
    for rank, ind in enumerate(population):
        spec_name = best_name if rank == 0 and best_name else f"{name}-{rank:03d}"
        candidates.append(Candidate.of(ind.spec(spec_name), ind.score, source="evolution", info={"seq": ind.seq}))
    return SearchOutcome(strategy="evolution", score_name=getattr(config, "score", "stentr"), candidates=candidates,
                         history=history, settings=config.to_dict() if config is not None else {},
                         wall_s=wall_s, cpu_s=cpu_s, extra=extra or {})


def write_search_outputs(out_dir: str | Path, best: ArchSpec, population: Sequence[Individual],
                         history: Sequence[ChunkStats | dict[str, Any]], config: SearchConfig | None = None,
                         name: str | None = None, extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """The search's outputs in every strategy's format (:func:`e3d.search_io.write_outcome`), plus
    ``config.json`` (the full ``SearchConfig``, with ``extra``) when ``config`` is given."""
    import json  # noqa: PLC0415

    from . import search_io  # noqa: PLC0415 - pyarrow/matplotlib only when writing

    outcome = outcome_from_population(population, [h if isinstance(h, dict) else h.to_dict() for h in history],
                                      config=config, name=name or best.name, best_name=best.name)
    paths = search_io.write_outcome(out_dir, outcome)
    if config is not None:
        paths["config"] = Path(out_dir) / "config.json"
        paths["config"].write_text(json.dumps(config.to_dict() | (extra or {}), indent=2) + "\n")
    return paths


def search(config: SearchConfig, out_dir: str | Path | None = None, progress: bool | None = None,
           initial: ArchSpec | Sequence[ArchSpec] | None = None,
           constraint: Callable[[Genome], bool] | None = None) -> SearchResult:
    """Run the whole search in this process; write the outputs to ``out_dir`` when given.

    ``progress``: a progress bar on stderr (None: only when stderr is a terminal).
    """
    from .progress import Progress  # noqa: PLC0415 - keeps `import e3d.evolution` light

    evo = Evolution(config, initial if initial is not None else config.initial_spec(), constraint=constraint)
    history: list[ChunkStats] = []
    start = time.perf_counter()
    with Progress(config.iterations, enabled=progress, unit="it") as bar:
        done = 0
        while done < config.iterations:
            n = min(config.chunk, config.iterations - done)
            stats = evo.run(n)
            history.append(stats)
            done += n
            bar.update(n, best=f"{stats.best:.3f}", accept=f"{stats.acceptance_rate:.1%}")
    wall = time.perf_counter() - start
    population = evo.population
    name = run_name(config)
    result = SearchResult(best=population[0].spec(name), best_score=population[0].score, population=population,
                          history=history, wall_s=wall, out_dir=Path(out_dir) if out_dir is not None else None)
    if out_dir is not None:
        write_search_outputs(out_dir, result.best, population, history, config=config, name=name)
    return result
