"""One island of the distributed search: the body of the Ray actor (also stepped in-process).

Kept apart from the driver so that a worker process starting an island imports only ``e3d`` (no pyarrow,
MLflow or numpy): actor start-up is part of the search's wall time.
"""
from __future__ import annotations

import os
from typing import Any, NamedTuple, Sequence

from e3d.evolution import Evolution, Individual
from e3d.space import Genome, SearchSpace, seq_or_tuple


class Member(NamedTuple):
    """A population member as the pipeline passes it around (between actors, into checkpoints).

    The fields are those of ``Evolution.state_dict()["members"]`` rows, in their order: the genome
    (``stem`` width, ``stages`` as ``[[kt, k, out, bottleneck, layers], ...]``, ``head`` width), the score,
    the cost and ``seq``, the insertion number that breaks ties between equal scores (older first).
    """

    stem: int
    stages: list[list[int]]
    head: int
    score: float
    flops: int
    params: int
    layers: int
    seq: int

    @classmethod
    def of(cls, ind: Individual) -> "Member":
        stem, stages, head = ind.genome
        return cls(stem, [list(s) for s in stages], head, ind.score, ind.flops, ind.params, ind.layers, ind.seq)

    @property
    def genome(self) -> Genome:
        return self.stem, seq_or_tuple(self.stages), self.head

    def individual(self, space: SearchSpace) -> Individual:
        return Individual(self.genome, self.score, self.flops, self.params, self.layers, self.seq, space)


def island_state(evo: Evolution) -> dict[str, Any]:
    """``evo.state_dict()`` with its members as :class:`Member` (the layout ``Evolution.from_state_dict``
    reads back)."""
    state = evo.state_dict()
    try:
        state["members"] = [Member(*m) for m in state["members"]]
    except TypeError as exc:
        raise ValueError(f"unexpected member layout in Evolution.state_dict() (expected {Member._fields})") from exc
    return state


class Island:
    """One shard of the population: an :class:`Evolution` restored from a state dict."""

    def __init__(self, state: dict[str, Any]):
        self.evo = Evolution.from_state_dict(state)
        self._crash_after: int | None = None

    def step(self, immigrants: Sequence[Member], iterations: int, emigrants: int) -> dict[str, Any]:
        """Offer ``immigrants``, run ``iterations``, return stats, the ``emigrants`` best and the new state."""
        evo = self.evo
        offered = evo.inject([m.individual(evo.space) for m in immigrants]) if immigrants else None
        if self._crash_after is not None:  # armed by a test: die in the middle of the chunk
            evo.run(min(self._crash_after, iterations))
            os._exit(1)
        stats = evo.run(iterations)
        return {
            "stats": stats.to_dict(),
            "immigrants_offered": len(immigrants),
            "immigrants_accepted": offered.accepted if offered else 0,
            "emigrants": [Member.of(ind) for ind in evo.elites(emigrants)] if emigrants else [],
            "state": island_state(evo),
            "pid": os.getpid(),
        }

    def arm_crash(self, after_iterations: int = 0) -> int:
        """Test hook: the next ``step`` runs ``after_iterations`` iterations and then kills this process."""
        self._crash_after = after_iterations
        return os.getpid()

    def pid(self) -> int:
        return os.getpid()

    def node_id(self) -> str | None:
        try:
            import ray  # noqa: PLC0415

            return ray.get_runtime_context().get_node_id()
        except Exception:  # pragma: no cover - outside Ray
            return None
