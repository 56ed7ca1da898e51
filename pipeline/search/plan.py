"""The island model's plan: how the population and the iterations are split, seeded and migrated.

Pure functions of the settings (no Ray, no I/O): the result of a search depends on ``(config, actors,
chunk_iterations, migration_interval, migration_size)`` only, whichever backend runs it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from e3d.evolution import SearchConfig

BACKENDS = ("ray", "local")


@dataclass(frozen=True)
class IslandSettings:
    """How the population is sharded and how islands talk (see ``docs/distributed-search.md``).

    ``actors``: islands (one Ray actor each). ``chunk_iterations``: iterations per island per round (one Ray
    call). ``migration_interval``: rounds between migrations; ``migration_size``: members each island sends
    (0: isolated islands). ``cpus_per_actor`` (fractional allowed) and ``resources`` (custom Ray resources)
    place the actors; ``spread`` asks Ray to spread them over nodes. ``backend``: ``"ray"`` (actors) or
    ``"local"`` (the same islands stepped one after the other in this process: identical results, no
    parallelism; used inside Tune trials). ``max_restarts``: restarts allowed per island after faults.
    The first four change the result; the others only place the work.
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


RESULT_FIELDS = ("actors", "chunk_iterations", "migration_interval", "migration_size")  # they change the result
PLACEMENT_FIELDS = ("cpus_per_actor", "resources", "spread", "backend", "max_restarts")


@dataclass(frozen=True)
class IslandOptions:
    """The island settings as given (the jobs' ``--actors``, ``--chunk-iterations``, ...), handed down whole and
    resolved once by the search into :class:`IslandSettings`. The four that change the result may be None: the
    default (:class:`IslandSettings`'s) in a new search, the checkpoint's in a resumed one. ``rounds`` sets the
    chunk instead of ``chunk_iterations``. The others place the work (see :class:`IslandSettings`)."""

    actors: int | None = None
    chunk_iterations: int | None = None
    rounds: int | None = None
    migration_interval: int | None = None
    migration_size: int | None = None
    cpus_per_actor: float = 1.0
    resources: dict[str, float] | None = None
    spread: bool = True
    backend: str = "ray"
    max_restarts: int = 3

    def given(self) -> dict[str, int]:
        """The result-changing settings that were given."""
        return {k: getattr(self, k) for k in RESULT_FIELDS if getattr(self, k) is not None}

    def placement_settings(self) -> dict[str, Any]:
        """The settings that only place the work."""
        return {k: getattr(self, k) for k in PLACEMENT_FIELDS}

    def fresh(self, config: SearchConfig) -> "IslandSettings":
        """The settings of a new search of ``config``: the given ones, :class:`IslandSettings`'s defaults for the
        rest (``rounds``: the chunk that makes that many rounds)."""
        given = self.given()
        if self.rounds is not None:
            if "chunk_iterations" in given:
                raise ValueError("give chunk_iterations or rounds, not both")
            actors = given.get("actors", IslandSettings.actors)
            given["chunk_iterations"] = max(1, math.ceil(config.iterations / (actors * self.rounds)))
        return IslandSettings(**given, **self.placement_settings())


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


def island_config(config: SearchConfig, settings: IslandSettings, island: int) -> SearchConfig:
    """The search config of one island: its share of the population and its own seed."""
    return replace(config, population_size=island_sizes(config.population_size, settings.actors)[island],
                   seed=island_seed(config.seed, island))


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
