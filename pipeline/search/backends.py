"""Where the islands run: one Ray actor each (:class:`RayIslands`) or in this process (:class:`LocalIslands`).

Both answer the driver's four questions the same way: ``submit`` a round's call to island ``i`` (returns a
handle at once), ``get`` its result (raising :class:`IslandLost` when the island is gone), ``respawn`` an
island from a state, ``shutdown``. A call is a pure function of the island's state and arguments, so the
backend never changes the result.
"""
from __future__ import annotations

import contextlib
import functools
import logging
from typing import Any, Protocol, Sequence

from .island import Island, Member
from .plan import IslandSettings

log = logging.getLogger(__name__)


class IslandLost(RuntimeError):
    """An island's actor (or the node holding its result) is gone."""


class IslandPool(Protocol):
    def submit(self, i: int, immigrants: list[Member], iterations: int, emigrants: int) -> Any: ...

    def get(self, i: int, ref: Any) -> dict[str, Any]: ...

    def respawn(self, i: int, state: dict[str, Any]) -> None: ...

    def handles(self) -> list[Any]: ...

    def shutdown(self) -> None: ...


def open_islands(states: Sequence[dict[str, Any]], settings: IslandSettings) -> IslandPool:
    """The backend ``settings.backend`` names, with one island per state."""
    return RayIslands(states, settings) if settings.backend == "ray" else LocalIslands(states)


class LocalIslands:
    """The islands in this process, stepped one after another when their results are collected."""

    def __init__(self, states: Sequence[dict[str, Any]]):
        self.islands = [Island(s) for s in states]

    def submit(self, i: int, immigrants: list[Member], iterations: int, emigrants: int) -> Any:
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


@functools.cache
def remote_island_class() -> Any:
    """``ray.remote(Island)``: the class lives in :mod:`pipeline.search.island`, which imports only ``e3d``,
    so a fresh worker starts fast."""
    import ray  # noqa: PLC0415

    return ray.remote(Island)


class RayIslands:
    """One Ray actor per island, placed by ``cpus_per_actor``/``resources`` and spread over the nodes.

    Actors are created with ``max_restarts=0``: Ray does not restart them behind the driver's back; the
    driver respawns a lost island from its last checkpointed state instead.
    """

    def __init__(self, states: Sequence[dict[str, Any]], settings: IslandSettings):
        import ray  # noqa: PLC0415

        if not ray.is_initialized():
            ray.init()
        self.ray, self.settings = ray, settings
        self._lost = (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError, ray.exceptions.NodeDiedError,
                      ray.exceptions.WorkerCrashedError)
        self.actors = [self._spawn(s) for s in states]

    def _spawn(self, state: dict[str, Any]) -> Any:
        s = self.settings
        options: dict[str, Any] = {"num_cpus": s.cpus_per_actor, "max_restarts": 0, "max_task_retries": 0}
        if s.resources:
            options["resources"] = dict(s.resources)
        if s.spread:
            options["scheduling_strategy"] = "SPREAD"
        return remote_island_class().options(**options).remote(state)

    def submit(self, i: int, immigrants: list[Member], iterations: int, emigrants: int) -> Any:
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
                first_line = str(exc).splitlines()[0] if str(exc) else ""
                raise IslandLost(f"island {i}: {type(exc).__name__}: {first_line}") from exc

    def respawn(self, i: int, state: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):
            self.ray.kill(self.actors[i], no_restart=True)
        self.actors[i] = self._spawn(state)

    def handles(self) -> list[Any]:
        return list(self.actors)

    def shutdown(self) -> None:
        for actor in self.actors:
            with contextlib.suppress(Exception):
                self.ray.kill(actor, no_restart=True)
        self.actors = []
