"""One island of the distributed search: the body of the Ray actor (also stepped in-process).

Kept apart from the driver so that a worker process starting an island imports only ``e3d`` (no pyarrow,
MLflow or numpy): actor start-up is part of the search's wall time.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

from e3d.evolution import Evolution, Individual
from e3d.space import SearchSpace, seq_or_tuple


def _member(ind: Individual) -> list[Any]:
    """An individual in the state-dict member layout (JSON-able)."""
    stem, stages, head = ind.genome
    return [stem, [list(s) for s in stages], head, ind.score, ind.flops, ind.params, ind.layers, ind.seq]


def _individual(member: Sequence[Any], space: SearchSpace) -> Individual:
    stem, stages, head, score, flops, params, layers, seq = member
    return Individual((stem, seq_or_tuple(stages), head), score, flops, params, layers, seq, space)


class Island:
    """One shard of the population: an :class:`Evolution` restored from a state dict."""

    def __init__(self, state: dict[str, Any]):
        self.evo = Evolution.from_state_dict(state)
        self._crash_after: int | None = None

    def step(self, immigrants: Sequence[Sequence[Any]], iterations: int, emigrants: int) -> dict[str, Any]:
        """Offer ``immigrants``, run ``iterations``, return stats, the ``emigrants`` best and the new state."""
        evo = self.evo
        offered = evo.inject([_individual(m, evo.space) for m in immigrants]) if immigrants else None
        if self._crash_after is not None:  # fault injection for tests: die in the middle of the chunk
            evo.run(min(self._crash_after, iterations))
            os._exit(1)
        stats = evo.run(iterations)
        return {
            "stats": stats.to_dict(),
            "immigrants_offered": len(immigrants),
            "immigrants_accepted": offered.accepted if offered else 0,
            "emigrants": [_member(ind) for ind in evo.elites(emigrants)] if emigrants else [],
            "state": evo.state_dict(),
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
