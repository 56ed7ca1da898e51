"""Island-model evolutionary search on Ray: the population sharded over actors.

Each of ``actors`` islands holds ``population_size / actors`` members and runs :class:`e3d.evolution.Evolution`
for ``chunk_iterations`` iterations per call (one Ray call per island per round; a call costs about a
millisecond, an iteration about ten microseconds). Between rounds the driver

1. migrates: every ``migration_interval`` rounds the ``migration_size`` best members of island ``i`` are
   offered to island ``(i + 1) % actors`` at the start of the next round (a ring; they enter like mutants:
   budget, uniqueness and worst-out apply);
2. records one history row per island and one for the whole search, logs the round's metrics to MLflow;
3. checkpoints every island's state (members, RNG state, counters) as Parquet
   (:mod:`pipeline.search.checkpoint`).

Determinism: island ``i`` is seeded from ``(seed, i)`` (island 0 takes ``seed`` itself, so one island is the
single-process search), the iteration plan and migration are functions of the settings only, and results
are collected in island order whichever actor finishes first. So a run resumed from a checkpoint, a run
whose actors died and were restarted from the last checkpoint, and a run on the in-process backend all end
with exactly the same population as one uninterrupted run.

Faults: actors are created with ``max_restarts=0``; when one dies (``ray.kill``, a crashed worker, a lost
node) the driver starts a new actor from the island's last checkpointed state and re-runs the round's call
for that island, up to ``max_restarts`` times per island.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from e3d.evolution import ChunkStats, Evolution, Individual, SearchConfig, run_name
from e3d.space import SearchSpace
from e3d.spec import ArchSpec

from . import checkpoint as ck
from .island import Island, _individual

log = logging.getLogger(__name__)

BACKENDS = ("ray", "local")
# settings that change the result: a resumed search must keep them
DETERMINISTIC = ("actors", "chunk_iterations", "migration_interval", "migration_size")


# -- settings --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IslandSettings:
    """How the population is sharded and how islands talk; see the module docstring.

    ``actors``: islands (one Ray actor each). ``chunk_iterations``: iterations per island per round (one Ray
    call). ``migration_interval``: rounds between migrations; ``migration_size``: members each island sends
    (0: isolated islands). ``cpus_per_actor`` (fractional allowed) and ``resources`` (custom Ray resources)
    place the actors; ``spread`` asks Ray to spread them over nodes. ``backend``: ``"ray"`` (actors) or
    ``"local"`` (the same islands stepped one after the other in this process: identical results, no
    parallelism; used inside Tune trials). ``max_restarts``: restarts allowed per island after faults.
    """

    actors: int = 2
    chunk_iterations: int = 25_000
    migration_interval: int = 1
    migration_size: int = 4
    cpus_per_actor: float = 1.0
    resources: dict[str, float] | None = None
    spread: bool = True
    backend: str = "ray"
    max_restarts: int = 3

    def __post_init__(self) -> None:
        if self.actors < 1:
            raise ValueError(f"actors must be >= 1, got {self.actors}")
        if self.chunk_iterations < 1:
            raise ValueError(f"chunk_iterations must be >= 1, got {self.chunk_iterations}")
        if self.migration_interval < 1:
            raise ValueError(f"migration_interval must be >= 1, got {self.migration_interval}")
        if self.migration_size < 0:
            raise ValueError(f"migration_size must be >= 0, got {self.migration_size}")
        if self.cpus_per_actor < 0:
            raise ValueError(f"cpus_per_actor must be >= 0, got {self.cpus_per_actor}")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {self.max_restarts}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "IslandSettings":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def island_seed(seed: int, island: int) -> int:
    """Island 0 keeps ``seed`` (one island = the single-process search); others draw from SeedSequence."""
    if island == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, island]).generate_state(1, np.uint64)[0] >> 1)


def island_sizes(population_size: int, actors: int) -> list[int]:
    """Population per island: as even as possible, the first islands take the remainder."""
    if population_size < actors:
        raise ValueError(f"population_size {population_size} cannot be split over {actors} islands")
    base, extra = divmod(population_size, actors)
    return [base + (1 if i < extra else 0) for i in range(actors)]


def plan_rounds(iterations: int, actors: int, chunk: int) -> int:
    """Rounds needed for ``iterations`` total iterations at ``chunk`` per island per round."""
    return max(1, math.ceil(iterations / (actors * chunk))) if iterations > 0 else 0


def round_iterations(iterations: int, actors: int, chunk: int, rnd: int) -> list[int]:
    """Iterations of each island in round ``rnd`` (0-based): ``chunk`` each, the last round splits the rest."""
    rounds = plan_rounds(iterations, actors, chunk)
    if rnd < rounds - 1:
        return [chunk] * actors
    rest = iterations - (rounds - 1) * actors * chunk
    base, extra = divmod(rest, actors)
    return [base + (1 if i < extra else 0) for i in range(actors)]


def migrates_after(settings: IslandSettings, rnd: int, rounds: int) -> bool:
    """Whether islands send emigrants at the end of round ``rnd`` (0-based); never after the last one."""
    return (settings.actors > 1 and settings.migration_size > 0 and rnd + 1 < rounds
            and (rnd + 1) % settings.migration_interval == 0)


def island_config(config: SearchConfig, settings: IslandSettings, island: int) -> SearchConfig:
    return replace(config, population_size=island_sizes(config.population_size, settings.actors)[island],
                   seed=island_seed(config.seed, island))


class IslandLost(RuntimeError):
    """An island's actor (or the node holding its result) is gone."""


class LocalIslands:
    """The islands in this process, stepped one after another when their results are collected."""

    def __init__(self, states: Sequence[dict[str, Any]], settings: IslandSettings):
        self.islands = [Island(s) for s in states]

    def submit(self, i: int, immigrants: list, iterations: int, emigrants: int) -> Any:
        return (i, immigrants, iterations, emigrants)

    def get(self, i: int, ref: Any) -> dict[str, Any]:
        j, immigrants, iterations, emigrants = ref
        return self.islands[j].step(immigrants, iterations, emigrants)

    def respawn(self, i: int, state: dict[str, Any]) -> None:
        self.islands[i] = Island(state)

    def handles(self) -> list[Any]:
        return list(self.islands)

    def shutdown(self) -> None:
        self.islands = []


_REMOTE_ISLAND = None


def remote_island_class():
    global _REMOTE_ISLAND
    if _REMOTE_ISLAND is None:
        import ray  # noqa: PLC0415

        # the class lives in pipeline.search.island, which imports only e3d: a fresh worker starts fast
        _REMOTE_ISLAND = ray.remote(Island)
    return _REMOTE_ISLAND


class RayIslands:
    """One Ray actor per island, placed by ``cpus_per_actor``/``resources`` and spread over the nodes."""

    def __init__(self, states: Sequence[dict[str, Any]], settings: IslandSettings):
        import ray  # noqa: PLC0415

        if not ray.is_initialized():
            ray.init()
        self.ray, self.settings = ray, settings
        self._lost = (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError, ray.exceptions.NodeDiedError,
                      ray.exceptions.WorkerCrashedError)
        self.actors = [self._spawn(i, s) for i, s in enumerate(states)]

    def _spawn(self, i: int, state: dict[str, Any]) -> Any:
        s = self.settings
        options: dict[str, Any] = {"num_cpus": s.cpus_per_actor, "max_restarts": 0, "max_task_retries": 0}
        if s.resources:
            options["resources"] = dict(s.resources)
        if s.spread:
            options["scheduling_strategy"] = "SPREAD"
        return remote_island_class().options(**options).remote(state)

    def submit(self, i: int, immigrants: list, iterations: int, emigrants: int) -> Any:
        return self.actors[i].step.remote(immigrants, iterations, emigrants)

    def get(self, i: int, ref: Any) -> dict[str, Any]:
        waited = 0.0
        while True:
            try:
                return self.ray.get(ref, timeout=60.0)
            except self.ray.exceptions.GetTimeoutError:
                waited += 60.0
                log.warning("island %d: still waiting after %.0f s (actor pending resources?)", i, waited)
            except self._lost as exc:
                raise IslandLost(f"island {i}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                                 ) from exc

    def respawn(self, i: int, state: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):
            self.ray.kill(self.actors[i], no_restart=True)
        self.actors[i] = self._spawn(i, state)

    def handles(self) -> list[Any]:
        return list(self.actors)

    def shutdown(self) -> None:
        for actor in self.actors:
            with contextlib.suppress(Exception):
                self.ray.kill(actor, no_restart=True)
        self.actors = []


# -- results -----------------------------------------------------------------------------------------------
@dataclass
class RoundInfo:
    """What ``on_round`` callbacks see after each round (``round`` counts from 1)."""

    round: int
    rounds: int
    total_iterations: int
    iterations: int
    best: float
    median: float
    island_best: list[float]
    wall_s: float
    elapsed_s: float
    restarts: int
    islands: list[Any]  # actor handles (ray backend) or Island objects (local backend)
    run_id: str | None = None

    @property
    def iterations_per_s(self) -> float:
        return self.iterations / self.wall_s if self.wall_s > 0 else 0.0


@dataclass
class DistributedResult:
    """The merged outcome: ``population`` deduplicated over islands, best first (``seq`` = rank)."""

    best: ArchSpec
    best_score: float
    population: list[Individual]
    history: list[ChunkStats]  # one per round, for the whole search
    island_history: list[dict[str, Any]]  # one row per island and round
    config: SearchConfig
    settings: IslandSettings
    rounds: int
    iterations: int
    wall_s: float  # this process's time (a resumed run counts from the resume)
    restarts: int
    out_dir: str | None
    run_id: str | None = None
    resumed_from: int | None = None
    files: dict[str, str] = field(default_factory=dict)

    @property
    def iterations_per_s(self) -> float:
        done = sum(h.iterations for h in self.history[(self.resumed_from or 0):])
        return done / self.wall_s if self.wall_s else 0.0

    def summary(self) -> dict[str, Any]:
        return {"best": self.best.name, "best_score": self.best_score, "rounds": self.rounds,
                "iterations": self.iterations, "population": len(self.population), "wall_s": round(self.wall_s, 3),
                "iterations_per_s": round(self.iterations_per_s, 1), "restarts": self.restarts,
                "resumed_from": self.resumed_from, "out_dir": self.out_dir, "run_id": self.run_id}


def merge_population(states: Sequence[dict[str, Any]], space: SearchSpace) -> list[Individual]:
    """All islands' members, deduplicated by genome, best first (ties: lower island, then older)."""
    rows = []
    for i, state in enumerate(states):
        for m in state["members"]:
            rows.append((-m[3], i, m[7], m))
    rows.sort(key=lambda r: r[:3])
    seen: set = set()
    out: list[Individual] = []
    for _, _, _, m in rows:
        ind = _individual(m, space)
        if ind.genome in seen:
            continue
        seen.add(ind.genome)
        out.append(replace(ind, seq=len(out)))
    return out


# -- the driver --------------------------------------------------------------------------------------------
_COUNTERS = ("accepted", "worse", "duplicates", "over_budget", "over_layers", "invalid")


def _config_diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    norm = lambda d: json.loads(json.dumps(d, default=list))  # noqa: E731 - tuples vs lists
    a, b = norm(a), norm(b)
    return [f"{k}: checkpoint {b.get(k)!r} vs given {a.get(k)!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]


def _params(config: SearchConfig, settings: IslandSettings, rounds: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in config.to_dict().items():
        out[k] = json.dumps(v) if isinstance(v, (list, tuple)) else v
    for k, v in settings.to_dict().items():
        out[f"islands.{k}"] = json.dumps(v) if isinstance(v, (dict, list)) else v
    out["islands.rounds"] = rounds
    return out


def run_distributed_search(
    config: SearchConfig | None = None, *, out_dir: str | Path, actors: int | None = None,
    chunk_iterations: int | None = None, rounds: int | None = None, migration_interval: int | None = None,
    migration_size: int | None = None, cpus_per_actor: float = 1.0, resources: dict[str, float] | None = None,
    spread: bool = True, backend: str = "ray", max_restarts: int = 3, tracking: Any = None, resume: bool = False,
    overwrite: bool = False, seed: int | None = None, initial: ArchSpec | Sequence[ArchSpec] | None = None,
    filesystem: Any = None, progress: bool | None = None, on_round: Callable[[RoundInfo], Any] | None = None,
    mlflow_run_name: str | None = None, run_tags: dict[str, str] | None = None,
) -> DistributedResult:
    """Run (or, with ``resume=True``, continue) the island search; write the outputs under ``out_dir``.

    ``config``: the e3d search settings (``iterations`` is the total over all islands, ``population_size``
    the total over all islands); with ``resume`` it may be None (the checkpoint's is used) and must
    otherwise equal the checkpoint's. ``actors`` (default 2), ``chunk_iterations`` (default 25 000; or give
    ``rounds`` instead), ``migration_interval`` (1) and ``migration_size`` (4): see :class:`IslandSettings`;
    on resume they default to the checkpoint's and must match it. ``out_dir``: local path or pyarrow
    filesystem URI (or a path on ``filesystem``). ``tracking``: a :class:`pipeline.tracking.Tracking`
    (MLflow) or None. ``seed`` overrides ``config.seed``. ``on_round(RoundInfo)`` runs after every round
    (Tune reports from there). Refuses to start over an existing checkpoint unless ``overwrite``.
    ``mlflow_run_name``/``run_tags``: the MLflow run's name (default ``<search name>-islands<N>``) and
    extra tags. ``initial``: the initial structure or population (default ``config.initial_spec()``).
    """
    fs, root = ck.resolve_fs(out_dir, filesystem)
    meta = ck.read_meta(fs, root)
    given = {"actors": actors, "chunk_iterations": chunk_iterations, "migration_interval": migration_interval,
             "migration_size": migration_size}
    runtime = {"cpus_per_actor": cpus_per_actor, "resources": resources, "spread": spread, "backend": backend,
               "max_restarts": max_restarts}
    ckpt = None
    if resume:
        if meta is None:
            raise ck.CheckpointError(f"nothing to resume: no checkpoint under {out_dir}")
        ckpt = ck.load_checkpoint(fs, root)
        stored_config = SearchConfig.from_dict(ckpt.config)
        if config is not None:
            if seed is not None:
                config = replace(config, seed=seed)
            diff = _config_diff(config.to_dict(), stored_config.to_dict())
            if diff:
                raise ck.CheckpointError("the search config differs from the checkpoint's: " + "; ".join(diff))
        config = stored_config
        stored = IslandSettings.from_dict(ckpt.settings)
        clash = [f"{k}: checkpoint {getattr(stored, k)!r} vs given {v!r}" for k, v in given.items()
                 if v is not None and v != getattr(stored, k)]
        if rounds is not None and rounds != plan_rounds(config.iterations, stored.actors, stored.chunk_iterations):
            clash.append(f"rounds: checkpoint plans "
                         f"{plan_rounds(config.iterations, stored.actors, stored.chunk_iterations)}, given {rounds}")
        if clash:
            raise ck.CheckpointError("settings differ from the checkpoint's (they change the result): "
                                     + "; ".join(clash))
        settings = replace(stored, **runtime)
    else:
        if config is None:
            raise ValueError("config is required unless resuming")
        if meta is not None:
            if not overwrite:
                raise ck.CheckpointError(f"{out_dir} already holds a search checkpoint (round {meta.get('round')}); "
                                         f"resume it (--resume) or pass overwrite=True (--overwrite)")
            fs.delete_dir_contents(ck.checkpoint_dir(root), missing_dir_ok=True)
        if seed is not None:
            config = replace(config, seed=seed)
        n = actors if actors is not None else 2
        if rounds is not None and chunk_iterations is not None:
            raise ValueError("give chunk_iterations or rounds, not both")
        chunk = chunk_iterations or (max(1, math.ceil(config.iterations / (n * rounds))) if rounds
                                     else IslandSettings.chunk_iterations)
        settings = IslandSettings(actors=n, chunk_iterations=chunk,
                                  migration_interval=migration_interval if migration_interval is not None else 1,
                                  migration_size=migration_size if migration_size is not None else 4, **runtime)
    return _Driver(config, settings, fs, root, str(out_dir), tracking, ckpt, initial, progress, on_round,
                   mlflow_run_name, run_tags).run()


class _Driver:
    def __init__(self, config: SearchConfig, settings: IslandSettings, fs: Any, root: str, out_dir: str,
                 tracking: Any, ckpt: ck.Checkpoint | None, initial: Any, progress: bool | None,
                 on_round: Callable[[RoundInfo], Any] | None, mlflow_name: str | None,
                 tags: dict[str, str] | None):
        self.config, self.settings, self.fs, self.root, self.out_dir = config, settings, fs, root, out_dir
        self.tracking, self.on_round, self.progress = tracking, on_round, progress
        self.name = run_name(config)
        self.mlflow_name = mlflow_name or f"{self.name}-islands{settings.actors}"
        self.tags = {"e3d.job": "distributed-search"} | dict(tags or {})
        self.rounds = plan_rounds(config.iterations, settings.actors, settings.chunk_iterations)
        if ckpt is None:
            init = initial if initial is not None else config.initial_spec()
            self.states = [Evolution(island_config(config, settings, i), init).state_dict()
                           for i in range(settings.actors)]
            self.immigrants: list[list] = [[] for _ in range(settings.actors)]
            self.history: list[dict[str, Any]] = []
            self.start_round, self.run_id, self.restarts = 0, None, [0] * settings.actors
            self.elapsed0 = 0.0
        else:
            if len(ckpt.islands) != settings.actors:
                raise ck.CheckpointError(f"checkpoint has {len(ckpt.islands)} islands, settings say {settings.actors}")
            self.states, self.immigrants, self.history = ckpt.islands, ckpt.immigrants, list(ckpt.history)
            self.start_round = ckpt.round
            self.run_id = ckpt.meta.get("mlflow_run_id")
            self.restarts = list(ckpt.meta.get("restarts", [0] * settings.actors))
            self.elapsed0 = float(ckpt.meta.get("elapsed_s", 0.0))
        self.resumed_from = ckpt.round if ckpt is not None else None
        template = ArchSpec.from_dict(self.states[0]["template"])
        self.space = config.space(template)
        self.template = template
        self._table, self._table_rows = None, 0  # history as Arrow, extended round by round

    def _history_table(self) -> Any:
        import pyarrow as pa  # noqa: PLC0415

        new = self.history[self._table_rows:]
        if not self.history:
            return ck._history_table([])
        if new:
            part = pa.Table.from_pylist(new)
            self._table = part if self._table is None else pa.concat_tables([self._table, part],
                                                                            promote_options="default")
            self._table_rows = len(self.history)
        return self._table

    # -- checkpoint --------------------------------------------------------------------------------------
    def _checkpoint(self, rnd: int, elapsed: float) -> ck.Checkpoint:
        return ck.Checkpoint(round=rnd, islands=list(self.states), immigrants=[list(m) for m in self.immigrants],
                             history=list(self.history), history_table=self._history_table(), meta={
                                 "settings": self.settings.to_dict(), "config": self.config.to_dict(),
                                 "rounds": self.rounds, "name": self.name, "mlflow_run_id": self.run_id,
                                 "restarts": list(self.restarts), "elapsed_s": elapsed,
                                 "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S")})

    def _save(self, ckpt: ck.Checkpoint) -> None:
        ck.save_checkpoint(self.fs, self.root, ckpt)

    # -- the loop ----------------------------------------------------------------------------------------
    def run(self) -> DistributedResult:
        from e3d.progress import Progress  # noqa: PLC0415

        settings, n = self.settings, self.settings.actors
        backend_cls = RayIslands if settings.backend == "ray" else LocalIslands
        with contextlib.ExitStack() as stack:
            islands = backend_cls(self.states, settings)  # actors start while MLflow opens its run
            stack.callback(islands.shutdown)
            mlflow = self._start_tracking(stack)
            start = time.perf_counter()
            done = sum(h["iterations"] for h in self.history if h["island"] == -1)
            bar = stack.enter_context(Progress(self.config.iterations, enabled=self.progress, unit="it"))
            bar.update(done)
            pending = self._checkpoint(self.start_round, self.elapsed0) if self.resumed_from is None else None
            submitted: dict[int, tuple[list, list]] = {}  # round -> (call arguments, refs) per island

            def submit(r: int, immigrants: list[list]) -> None:
                iters = round_iterations(self.config.iterations, n, settings.chunk_iterations, r)
                k = settings.migration_size if migrates_after(settings, r, self.rounds) else 0
                args = [(immigrants[i], iters[i], k) for i in range(n)]
                submitted[r] = (args, [islands.submit(i, *args[i]) for i in range(n)])

            for rnd in range(self.start_round, self.rounds):
                t0 = time.perf_counter()
                if rnd not in submitted:
                    submit(rnd, self.immigrants)
                # no migration after this round: the next round's calls need nothing from this one, so queue
                # them now and the actors go on without waiting for the driver (results are the same)
                if rnd + 1 < self.rounds and not migrates_after(settings, rnd, self.rounds):
                    submit(rnd + 1, [[] for _ in range(n)])
                if pending is not None:  # the previous round's checkpoint, written while the islands work
                    self._save(pending)
                    pending = None
                args, refs = submitted.pop(rnd)
                respawned: set[int] = set()
                results = [self._collect(islands, i, refs[i], args[i], respawned) for i in range(n)]
                if respawned and rnd + 1 in submitted:  # queued on an actor that died: queue on its successor
                    next_args, next_refs = submitted[rnd + 1]
                    for i in respawned:
                        next_refs[i] = islands.submit(i, *next_args[i])
                wall = time.perf_counter() - t0
                self.states = [r["state"] for r in results]
                incoming: list[list] = [[] for _ in range(n)]
                if args[0][2]:  # this round's emigrants go round the ring
                    for i, r in enumerate(results):
                        incoming[(i + 1) % n] = r["emigrants"]
                self.immigrants = incoming
                if rnd + 1 < self.rounds and rnd + 1 not in submitted:
                    submit(rnd + 1, incoming)  # the islands go on while the driver does its bookkeeping
                info = self._record(rnd, results, wall, self.elapsed0 + time.perf_counter() - start, islands)
                pending = self._checkpoint(rnd + 1, info.elapsed_s)
                bar.update(info.iterations, best=f"{info.best:.3f}", round=f"{rnd + 1}/{self.rounds}")
                if mlflow is not None:
                    self._log_round(mlflow, info)
                if self.on_round is not None:
                    self.on_round(info)
            if pending is not None:
                self._save(pending)
            wall = time.perf_counter() - start
            result = self._finish(wall)
            if mlflow is not None:
                self._log_final(mlflow, result)
        return result

    def _collect(self, islands: Any, i: int, ref: Any, args: tuple, respawned: set[int]) -> dict[str, Any]:
        while True:
            try:
                return islands.get(i, ref)
            except IslandLost as exc:
                respawned.add(i)
                self.restarts[i] += 1
                if self.restarts[i] > self.settings.max_restarts:
                    raise RuntimeError(f"island {i} died {self.restarts[i]} times (max_restarts="
                                       f"{self.settings.max_restarts}); last: {exc}") from exc
                log.warning("%s; restarting it from its last checkpoint (restart %d of %d)", exc,
                            self.restarts[i], self.settings.max_restarts)
                islands.respawn(i, self.states[i])
                ref = islands.submit(i, *args)

    def _record(self, rnd: int, results: list[dict[str, Any]], wall: float, elapsed: float,
                islands: Any) -> RoundInfo:
        merged_scores: dict[tuple, float] = {}
        for r in results:
            for m in r["state"]["members"]:
                merged_scores[(m[0], tuple(map(tuple, m[1])), m[2])] = m[3]
        scores = list(merged_scores.values())
        total = sum(r["state"]["iterations"] for r in results)
        row_all: dict[str, Any] = {"round": rnd + 1, "island": -1}
        for i, r in enumerate(results):
            s = r["stats"]
            row = {"round": rnd + 1, "island": i, **{k: s[k] for k in ("iterations", *_COUNTERS, "best", "median",
                                                                        "population", "total_iterations")},
                   "immigrants_offered": r["immigrants_offered"], "immigrants_accepted": r["immigrants_accepted"],
                   "restarts": self.restarts[i], "wall_s": s["wall_s"], "elapsed_s": elapsed}
            self.history.append(row)
        island_rows = self.history[-len(results):]
        for key in ("iterations", *_COUNTERS, "immigrants_offered", "immigrants_accepted"):
            row_all[key] = sum(r[key] for r in island_rows)
        row_all |= {"best": max(scores), "median": statistics.median(scores), "population": len(scores),
                    "total_iterations": total, "restarts": sum(self.restarts), "wall_s": wall, "elapsed_s": elapsed}
        self.history.append(row_all)
        return RoundInfo(round=rnd + 1, rounds=self.rounds, total_iterations=total,
                         iterations=row_all["iterations"], best=row_all["best"], median=row_all["median"],
                         island_best=[r["stats"]["best"] for r in results], wall_s=wall, elapsed_s=elapsed,
                         restarts=sum(self.restarts), islands=islands.handles(), run_id=self.run_id)

    # -- outputs -----------------------------------------------------------------------------------------
    def global_history(self) -> list[ChunkStats]:
        out = []
        for h in self.history:
            if h["island"] != -1:
                continue
            out.append(ChunkStats(iterations=h["iterations"], **{k: h[k] for k in _COUNTERS}, best=h["best"],
                                  median=h["median"], population=h["population"],
                                  total_iterations=h["total_iterations"], wall_s=h["wall_s"]))
        return out

    def _finish(self, wall: float) -> DistributedResult:
        from e3d import search_io  # noqa: PLC0415

        population = merge_population(self.states, self.space)
        best = population[0].spec(self.name)
        history = self.global_history()
        extra = {"islands": self.settings.to_dict(), "rounds": self.rounds}
        files: dict[str, str] = {}
        if ck.is_local(self.fs):
            paths = search_io.write_search_outputs(self.root, best, population, history, config=self.config,
                                                   name=self.name, extra=extra)
            files = {k: str(p) for k, p in paths.items()}
        else:  # write locally, then copy to the filesystem
            with tempfile.TemporaryDirectory() as tmp:
                paths = search_io.write_search_outputs(tmp, best, population, history, config=self.config,
                                                       name=self.name, extra=extra)
                for key, p in paths.items():
                    dest = ck.join(self.root, p.name)
                    ck.write_bytes_atomic(self.fs, dest, Path(p).read_bytes())
                    files[key] = dest
        return DistributedResult(
            best=best, best_score=population[0].score, population=population, history=history,
            island_history=[h for h in self.history if h["island"] != -1], config=self.config,
            settings=self.settings, rounds=self.rounds, iterations=sum(h.iterations for h in history),
            wall_s=wall, restarts=sum(self.restarts), out_dir=self.out_dir, run_id=self.run_id,
            resumed_from=self.resumed_from, files=files)

    # -- MLflow ------------------------------------------------------------------------------------------
    def _start_tracking(self, stack: contextlib.ExitStack) -> Any:
        if self.tracking is None:
            return None
        if self.run_id is not None:  # resuming: continue the checkpointed run if this store has it
            try:
                self.tracking.client().get_run(self.run_id)
            except Exception:
                log.warning("MLflow run %s of the checkpoint is not in %s: logging to a new run", self.run_id,
                            self.tracking.tracking_uri)
                self.run_id = None
        run = stack.enter_context(self.tracking.run(self.mlflow_name, run_id=self.run_id, tags=self.tags))
        mlflow = self.tracking.client()
        if self.run_id is None:
            self.run_id = run.info.run_id
            mlflow.log_params(_params(self.config, self.settings, self.rounds))
            mlflow.set_tag("e3d.out_dir", self.out_dir)
        else:
            mlflow.set_tag(f"e3d.resumed_at_round_{self.start_round}", time.strftime("%Y-%m-%dT%H:%M:%S"))
        return mlflow

    def _log_round(self, mlflow: Any, info: RoundInfo) -> None:
        h = self.history[-1]
        mlflow.log_metrics({"best_score": info.best, "median_score": info.median,
                            "total_iterations": info.total_iterations, "accepted": h["accepted"],
                            "acceptance_rate": h["accepted"] / h["iterations"] if h["iterations"] else 0.0,
                            "iterations_per_s": info.iterations_per_s, "restarts": info.restarts,
                            "immigrants_accepted": h["immigrants_accepted"]}, step=info.round)

    def _log_final(self, mlflow: Any, result: DistributedResult) -> None:
        from pipeline.tracking import log_dict_json, log_spec, spec_params  # noqa: PLC0415

        mlflow.log_params({f"best.{k}": v for k, v in spec_params(result.best).items()})
        mlflow.log_metrics({"final_best_score": result.best_score, "wall_s": result.wall_s,
                            "final_iterations_per_s": result.iterations_per_s})
        log_spec(mlflow, result.best)
        log_dict_json(mlflow, result.summary(), "summary.json")
        with tempfile.TemporaryDirectory() as tmp:
            for key, path in result.files.items():
                local = path
                if not ck.is_local(self.fs):
                    local = str(Path(tmp) / Path(path).name)
                    with self.fs.open_input_stream(path) as src:
                        Path(local).write_bytes(src.read())
                mlflow.log_artifact(local, artifact_path="search")
