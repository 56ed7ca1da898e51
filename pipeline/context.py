"""What the Ray pipeline lends a search strategy (:class:`e3d.strategy.SearchContext`): the Ray island
backend for ``evolution``, the MLflow run, the dataset."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class IslandBackend:
    """Runs :mod:`e3d.evolution` as Ray island actors (:func:`pipeline.search.run_distributed_search`),
    resuming from ``out_dir``'s checkpoint when there is one. ``backend="local"`` steps the same islands
    in this process (the same result, for Tune trials and tests)."""

    actors: int | None = None
    chunk_iterations: int | None = None
    migration_interval: int | None = None
    migration_size: int | None = None
    cpus_per_actor: float = 1.0
    resources: dict[str, float] | None = None
    max_restarts: int = 3
    backend: str = "ray"
    extra: dict[str, Any] = field(default_factory=dict)

    def run(self, config: Any, *, out_dir: str | None, tracking: Any = None, progress: bool | None = None) -> Any:
        from pipeline.search import read_meta, resolve_fs, run_distributed_search  # noqa: PLC0415

        if out_dir is None:
            raise ValueError("the island backend checkpoints: it needs an out_dir")
        resume = read_meta(*resolve_fs(str(out_dir))) is not None
        return run_distributed_search(None if resume else config, out_dir=str(out_dir), resume=resume,
                                      tracking=tracking, progress=progress, actors=self.actors,
                                      chunk_iterations=self.chunk_iterations,
                                      migration_interval=self.migration_interval, migration_size=self.migration_size,
                                      cpus_per_actor=self.cpus_per_actor, resources=self.resources,
                                      max_restarts=self.max_restarts, backend=self.backend, **self.extra)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
