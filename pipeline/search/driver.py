"""The island search's round loop: submit, collect, migrate, record, checkpoint; results merged at the end.

Each round the driver

1. collects every island's call **in island order** (so nothing depends on which actor answers first),
   restarting a lost island from its last checkpointed state and re-issuing its call;
2. migrates: after every ``migration_interval``-th round the ``migration_size`` best members of island ``i``
   are offered to island ``(i + 1) % actors`` at the start of the next round (a ring);
3. submits the next round before its own bookkeeping (when no migration falls after this round, even
   before collecting this one), so an actor never waits for the driver;
4. records one history row per island and one for the whole search, writes the previous round's
   checkpoint (:mod:`pipeline.search.checkpoint`) while the islands compute, and tells its callbacks
   (:class:`~pipeline.search.callbacks.SearchCallback`: MLflow, progress bar, Tune reports).

Determinism: a run resumed from a checkpoint, a run whose actors died and were restarted, and a run on the
in-process backend all end with exactly the same population as one uninterrupted run.
"""
from __future__ import annotations

import contextlib
import logging
import statistics
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from e3d.evolution import OUTCOMES  # ChunkStats' outcome counters: iterations = their sum
from e3d.evolution import ChunkStats, Evolution, Individual, SearchConfig, run_name, write_search_outputs
from e3d.space import SearchSpace
from e3d.spec import ArchSpec

from . import checkpoint as ck
from .backends import IslandLost, IslandPool, open_islands
from .callbacks import RoundInfo, SearchCallback
from .island import Member, island_state
from .plan import IslandSettings, island_config, migrates_after, plan_rounds, round_iterations

log = logging.getLogger(__name__)


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
    ranked: list[tuple[float, int, int, Member]] = [
        (-m.score, i, m.seq, m) for i, state in enumerate(states) for m in state["members"]]
    ranked.sort(key=lambda r: r[:3])
    seen: set = set()
    out: list[Individual] = []
    for *_, m in ranked:
        ind = m.individual(space)
        if ind.genome in seen:
            continue
        seen.add(ind.genome)
        out.append(replace(ind, seq=len(out)))
    return out


class _RoundCalls:
    """The calls submitted to the islands, by round: ``(arguments, handles)`` per island."""

    def __init__(self, islands: IslandPool, config: SearchConfig, settings: IslandSettings, rounds: int):
        self.islands, self.config, self.settings, self.rounds = islands, config, settings, rounds
        self.calls: dict[int, tuple[list[tuple], list[Any]]] = {}

    def submit(self, rnd: int, immigrants: list[list[Member]]) -> None:
        s, n = self.settings, self.settings.actors
        iterations = round_iterations(self.config.iterations, n, s.chunk_iterations, rnd)
        emigrants = s.migration_size if migrates_after(s, rnd, self.rounds) else 0
        args = [(immigrants[i], iterations[i], emigrants) for i in range(n)]
        self.calls[rnd] = (args, [self.islands.submit(i, *args[i]) for i in range(n)])

    def __contains__(self, rnd: int) -> bool:
        return rnd in self.calls

    def pop(self, rnd: int) -> tuple[list[tuple], list[Any]]:
        return self.calls.pop(rnd)

    def resubmit(self, rnd: int, islands: set[int]) -> None:
        """Queue round ``rnd`` again on ``islands`` (their actors died with the call queued)."""
        if rnd in self.calls:
            args, refs = self.calls[rnd]
            for i in islands:
                refs[i] = self.islands.submit(i, *args[i])


class IslandDriver:
    """Runs the rounds of one island search (fresh, or from ``checkpoint``) and writes its outputs.

    ``fs``/``root``: where the checkpoint and outputs go (:func:`pipeline.search.checkpoint.resolve_fs`);
    ``initial``: the initial structure or population (default ``config.initial_spec()``); ``callbacks``:
    :class:`~pipeline.search.callbacks.SearchCallback` s, told in order. ``run_id`` is the tracking run
    recorded in the checkpoint (a tracking callback sets it in ``on_start``).
    """

    def __init__(self, config: SearchConfig, settings: IslandSettings, *, fs: Any, root: str, out_dir: str,
                 checkpoint: ck.Checkpoint | None = None, initial: ArchSpec | Sequence[ArchSpec] | None = None,
                 callbacks: Sequence[SearchCallback] = ()):
        self.config, self.settings, self.fs, self.root, self.out_dir = config, settings, fs, root, out_dir
        self.callbacks = list(callbacks)
        self.name = run_name(config)
        self.rounds = plan_rounds(config.iterations, settings.actors, settings.chunk_iterations)
        if checkpoint is None:
            init = initial if initial is not None else config.initial_spec()
            self.states = [island_state(Evolution(island_config(config, settings, i), init))
                           for i in range(settings.actors)]
            self.immigrants: list[list[Member]] = [[] for _ in range(settings.actors)]
            self.history: list[dict[str, Any]] = []
            self.start_round, self.run_id, self.restarts = 0, None, [0] * settings.actors
            self.elapsed0 = 0.0
        else:
            if len(checkpoint.islands) != settings.actors:
                raise ck.CheckpointError(f"checkpoint has {len(checkpoint.islands)} islands, "
                                         f"settings say {settings.actors}")
            self.states, self.immigrants = checkpoint.islands, checkpoint.immigrants
            self.history = list(checkpoint.history)
            self.start_round = checkpoint.round
            self.run_id = checkpoint.meta.get("mlflow_run_id")
            self.restarts = list(checkpoint.meta.get("restarts", [0] * settings.actors))
            self.elapsed0 = float(checkpoint.meta.get("elapsed_s", 0.0))
        self.resumed_from = checkpoint.round if checkpoint is not None else None
        template = ArchSpec.from_dict(self.states[0]["template"])
        self.space = config.space(template)
        self._table, self._table_rows = None, 0  # history as Arrow, extended round by round

    @property
    def iterations_done(self) -> int:
        return sum(h["iterations"] for h in self.history if h["island"] == -1)

    # -- the loop ----------------------------------------------------------------------------------------
    def run(self) -> DistributedResult:
        n = self.settings.actors
        with contextlib.ExitStack() as stack:
            islands = open_islands(self.states, self.settings)  # actors start while the callbacks set up
            stack.callback(islands.shutdown)
            for cb in self.callbacks:
                stack.push(lambda *exc, cb=cb: cb.on_end(exc[1]))
                cb.on_start(self)
            start = time.perf_counter()
            pending = self._checkpoint(self.start_round, self.elapsed0) if self.resumed_from is None else None
            calls = _RoundCalls(islands, self.config, self.settings, self.rounds)
            for rnd in range(self.start_round, self.rounds):
                t0 = time.perf_counter()
                if rnd not in calls:
                    calls.submit(rnd, self.immigrants)
                # no migration after this round: the next round's calls need nothing from this one, so queue
                # them now and the actors go on without waiting for the driver (results are the same)
                if rnd + 1 < self.rounds and not migrates_after(self.settings, rnd, self.rounds):
                    calls.submit(rnd + 1, [[] for _ in range(n)])
                if pending is not None:  # the previous round's checkpoint, written while the islands work
                    self._save(pending)
                    pending = None
                args, refs = calls.pop(rnd)
                respawned: set[int] = set()
                results = [self._collect(islands, i, refs[i], args[i], respawned) for i in range(n)]
                calls.resubmit(rnd + 1, respawned)  # queued on an actor that died: queue on its successor
                wall = time.perf_counter() - t0
                self.states = [r["state"] for r in results]
                self.immigrants = self._migrants(results, sent=args[0][2] > 0)
                if rnd + 1 < self.rounds and rnd + 1 not in calls:
                    calls.submit(rnd + 1, self.immigrants)  # the islands go on while the driver keeps its books
                info = self._record(rnd, results, wall, self.elapsed0 + time.perf_counter() - start, islands)
                pending = self._checkpoint(rnd + 1, info.elapsed_s)
                for cb in self.callbacks:
                    cb.on_round(info)
            if pending is not None:
                self._save(pending)
            result = self._finish(time.perf_counter() - start)
            for cb in self.callbacks:
                cb.on_finish(result)
        return result

    def _collect(self, islands: IslandPool, i: int, ref: Any, args: tuple, respawned: set[int]) -> dict[str, Any]:
        """Island ``i``'s result; a lost island restarts from its last checkpointed state and is asked again."""
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

    def _migrants(self, results: list[dict[str, Any]], sent: bool) -> list[list[Member]]:
        """Who enters each island next round: island ``i``'s emigrants go to ``i + 1`` (a ring)."""
        n = len(results)
        incoming: list[list[Member]] = [[] for _ in range(n)]
        if sent:
            for i, r in enumerate(results):
                incoming[(i + 1) % n] = r["emigrants"]
        return incoming

    def _record(self, rnd: int, results: list[dict[str, Any]], wall: float, elapsed: float,
                islands: IslandPool) -> RoundInfo:
        """Append the round's history rows (one per island, one for the whole search)."""
        merged_scores = {m.genome: m.score for r in results for m in r["state"]["members"]}
        scores = list(merged_scores.values())
        total = sum(r["state"]["iterations"] for r in results)
        for i, r in enumerate(results):
            s = r["stats"]
            self.history.append({
                "round": rnd + 1, "island": i,
                **{k: s[k] for k in ("iterations", *OUTCOMES, "best", "median", "population", "total_iterations")},
                "immigrants_offered": r["immigrants_offered"], "immigrants_accepted": r["immigrants_accepted"],
                "restarts": self.restarts[i], "wall_s": s["wall_s"], "elapsed_s": elapsed})
        island_rows = self.history[-len(results):]
        row: dict[str, Any] = {"round": rnd + 1, "island": -1}
        for key in ("iterations", *OUTCOMES, "immigrants_offered", "immigrants_accepted"):
            row[key] = sum(r[key] for r in island_rows)
        row |= {"best": max(scores), "median": statistics.median(scores), "population": len(scores),
                "total_iterations": total, "restarts": sum(self.restarts), "wall_s": wall, "elapsed_s": elapsed}
        self.history.append(row)
        return RoundInfo(round=rnd + 1, rounds=self.rounds, total_iterations=total, iterations=row["iterations"],
                         best=row["best"], median=row["median"], island_best=[r["stats"]["best"] for r in results],
                         wall_s=wall, elapsed_s=elapsed, restarts=sum(self.restarts), islands=islands.handles(),
                         run_id=self.run_id, history_row=row)

    # -- checkpoint --------------------------------------------------------------------------------------
    def _history_table(self) -> Any:
        import pyarrow as pa  # noqa: PLC0415

        if not self.history:
            return ck.history_table([])
        new = self.history[self._table_rows:]
        if new:
            part = pa.Table.from_pylist(new)
            self._table = part if self._table is None else pa.concat_tables([self._table, part],
                                                                            promote_options="default")
            self._table_rows = len(self.history)
        return self._table

    def _checkpoint(self, rnd: int, elapsed: float) -> ck.Checkpoint:
        return ck.Checkpoint(round=rnd, islands=list(self.states), immigrants=[list(m) for m in self.immigrants],
                             history=list(self.history), history_table=self._history_table(), meta={
                                 "settings": self.settings.to_dict(), "config": self.config.to_dict(),
                                 "rounds": self.rounds, "name": self.name, "mlflow_run_id": self.run_id,
                                 "restarts": list(self.restarts), "elapsed_s": elapsed,
                                 "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S")})

    def _save(self, checkpoint: ck.Checkpoint) -> None:
        ck.save_checkpoint(self.fs, self.root, checkpoint)

    # -- outputs -----------------------------------------------------------------------------------------
    def global_history(self) -> list[ChunkStats]:
        """The whole search's history rows as :class:`ChunkStats`, one per round."""
        return [ChunkStats(iterations=h["iterations"], **{k: h[k] for k in OUTCOMES}, best=h["best"],
                           median=h["median"], population=h["population"], total_iterations=h["total_iterations"],
                           wall_s=h["wall_s"])
                for h in self.history if h["island"] == -1]

    def _write_outputs(self, best: ArchSpec, population: list[Individual], history: list[ChunkStats]) -> dict[str, str]:
        """The single-process search's files (``e3d.search_io``), on any filesystem."""
        extra = {"islands": self.settings.to_dict(), "rounds": self.rounds}
        if ck.is_local(self.fs):
            paths = write_search_outputs(self.root, best, population, history, config=self.config, name=self.name,
                                         extra=extra)
            return {k: str(p) for k, p in paths.items()}
        files: dict[str, str] = {}
        with tempfile.TemporaryDirectory() as tmp:  # write locally, then copy to the filesystem
            paths = write_search_outputs(tmp, best, population, history, config=self.config, name=self.name,
                                         extra=extra)
            for key, p in paths.items():
                dest = ck.join(self.root, p.name)
                ck.write_bytes_atomic(self.fs, dest, Path(p).read_bytes())
                files[key] = dest
        return files

    def _finish(self, wall: float) -> DistributedResult:
        population = merge_population(self.states, self.space)
        best = population[0].spec(self.name)
        history = self.global_history()
        files = self._write_outputs(best, population, history)
        return DistributedResult(
            best=best, best_score=population[0].score, population=population, history=history,
            island_history=[h for h in self.history if h["island"] != -1], config=self.config,
            settings=self.settings, rounds=self.rounds, iterations=sum(h.iterations for h in history),
            wall_s=wall, restarts=sum(self.restarts), out_dir=self.out_dir, run_id=self.run_id,
            resumed_from=self.resumed_from, files=files)
