"""What the island driver tells the outside world: a :class:`RoundInfo` after every round, and the hooks of a
:class:`SearchCallback` (start, round, finish, end). MLflow (``pipeline.tracking.SearchMlflowCallback``),
the progress bar and Tune's reports are callbacks; the driver knows none of them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from .driver import DistributedResult, IslandDriver


@dataclass
class RoundInfo:
    """What callbacks see after each round (``round`` counts from 1)."""

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
    # the round's row of the whole search's history (island = -1): outcome counters, immigrants, restarts
    history_row: dict[str, Any] = field(default_factory=dict)

    @property
    def iterations_per_s(self) -> float:
        return self.iterations / self.wall_s if self.wall_s > 0 else 0.0


class SearchCallback:
    """Hooks of :class:`pipeline.search.driver.IslandDriver`; subclass and override what you need.

    ``on_start(driver)`` runs once the islands are starting, before the first round: a tracking callback
    may set ``driver.run_id`` there (it is checkpointed, so a resumed search reopens the same run).
    ``on_round(info)`` runs after every round, ``on_finish(result)`` after the outputs are written, and
    ``on_end(error)`` always, last, with the exception that stopped the search (or None).
    """

    def on_start(self, driver: "IslandDriver") -> None:
        pass

    def on_round(self, info: RoundInfo) -> None:
        pass

    def on_finish(self, result: "DistributedResult") -> None:
        pass

    def on_end(self, error: BaseException | None) -> None:
        pass


class RoundFunction(SearchCallback):
    """A plain ``fn(RoundInfo)`` as a callback (``run_distributed_search(on_round=...)``)."""

    def __init__(self, fn: Callable[[RoundInfo], Any]):
        self.fn = fn

    def on_round(self, info: RoundInfo) -> None:
        self.fn(info)


class ProgressBar(SearchCallback):
    """The iterations done so far as an :class:`e3d.progress.Progress` bar (silent off a terminal)."""

    def __init__(self, enabled: bool | None = None):
        self.enabled, self.bar = enabled, None

    def on_start(self, driver: "IslandDriver") -> None:
        from e3d.progress import Progress  # noqa: PLC0415

        self.bar = Progress(driver.config.iterations, enabled=self.enabled, unit="it")
        self.bar.update(driver.iterations_done)

    def on_round(self, info: RoundInfo) -> None:
        self.bar.update(info.iterations, best=f"{info.best:.3f}", round=f"{info.round}/{info.rounds}")

    def on_end(self, error: BaseException | None) -> None:
        if self.bar is not None:
            self.bar.close()
