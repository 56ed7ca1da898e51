"""What the Ray pipeline lends a search strategy (:class:`e3d.strategy.SearchContext`): the Ray island
backend for ``evolution`` and the trainer of the strategies that train (:class:`RayTrainer`)."""
from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

# cluster.yaml's search nodes carry this resource, one unit per CPU: island actors ask for it when it exists
SEARCH_RESOURCE = "search_cpu"
AUTO = "auto"


def search_placement(resources: dict[str, float] | None, search_resource: str | None, cpus_per_actor: float,
                     cluster: dict[str, float]) -> dict[str, float] | None:
    """The custom Ray resources each island actor asks for: ``resources`` when given; else
    ``{search_resource: cpus_per_actor}`` (``"auto"``: :data:`SEARCH_RESOURCE` if ``cluster``, a
    ``ray.cluster_resources()`` mapping, has it; ``None``/``"none"``: nothing, the actors go anywhere)."""
    if resources is not None:
        return dict(resources)
    if search_resource is None or str(search_resource).lower() in ("", "none", "off"):
        return None
    name = SEARCH_RESOURCE if search_resource == AUTO else search_resource
    if float(cluster.get(name, 0.0)) <= 0:
        if search_resource == AUTO:
            return None
        raise ValueError(f"the Ray cluster has no resource {name!r} for the search islands")
    return {name: float(cpus_per_actor)}


@dataclass(frozen=True)
class IslandBackend:
    """Runs :mod:`e3d.evolution` as Ray island actors (:func:`pipeline.search.run_distributed_search`),
    resuming from ``out_dir``'s checkpoint when there is one. ``backend="local"`` steps the same islands
    in this process (the same result, for Tune trials and tests).

    Placement: ``resources`` (custom Ray resources per actor) when given, else ``search_resource``
    (default ``"auto"``: ``{"search_cpu": cpus_per_actor}`` when the cluster has ``search_cpu``, i.e. the
    islands run on ``cluster.yaml``'s search nodes; ``None``: anywhere). ``out_dir`` may be a pyarrow
    filesystem URI (``s3://bucket/prefix``): the checkpoint and the outputs go there."""

    actors: int | None = None
    chunk_iterations: int | None = None
    migration_interval: int | None = None
    migration_size: int | None = None
    cpus_per_actor: float = 1.0
    resources: dict[str, float] | None = None
    max_restarts: int = 3
    backend: str = "ray"
    search_resource: str | None = AUTO
    extra: dict[str, Any] = field(default_factory=dict)

    def placement(self) -> dict[str, float] | None:
        """The custom resources each island actor asks for on the running cluster."""
        if self.backend != "ray":
            return self.resources
        import ray  # noqa: PLC0415

        if not ray.is_initialized():
            ray.init()
        return search_placement(self.resources, self.search_resource, self.cpus_per_actor, ray.cluster_resources())

    def run(self, config: Any, *, out_dir: str | None, tracking: Any = None, progress: bool | None = None) -> Any:
        from pipeline.search import read_meta, resolve_fs, run_distributed_search  # noqa: PLC0415

        if out_dir is None:
            raise ValueError("the island backend checkpoints: it needs an out_dir")
        resume = read_meta(*resolve_fs(str(out_dir))) is not None
        return run_distributed_search(None if resume else config, out_dir=str(out_dir), resume=resume,
                                      tracking=tracking, progress=progress, actors=self.actors,
                                      chunk_iterations=self.chunk_iterations,
                                      migration_interval=self.migration_interval, migration_size=self.migration_size,
                                      cpus_per_actor=self.cpus_per_actor, resources=self.placement(),
                                      max_restarts=self.max_restarts, backend=self.backend, **self.extra)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# the training strategies' runners, imported when one runs (Ray and torch only then): (request, context, settings)
RUNNERS = {"dnas": "pipeline.dnas.search:run_dnas_search", "parsec": "pipeline.parsec.search:run_parsec",
           "fusion": "pipeline.fusion.run:run_template"}


class RayTrainer:
    """The pipeline's :class:`e3d.strategy.SupernetTrainer`: runs a training strategy's network on Ray Train with
    its runner in :data:`RUNNERS` and logs files into the search's MLflow run."""

    def run(self, strategy: str, request: Any, context: Any, settings: Any) -> Any:
        if strategy not in RUNNERS:
            raise ValueError(f"no Ray Train runner for strategy {strategy!r} (known: {', '.join(RUNNERS)})")
        module, name = RUNNERS[strategy].split(":")
        return getattr(importlib.import_module(module), name)(request, context, settings)

    def log_files(self, context: Any, files: Sequence[Path], artifact_path: str) -> None:
        tracking_uri = getattr(context.tracking, "tracking_uri", None)
        if not (tracking_uri and context.run_id):
            return
        from mlflow.tracking import MlflowClient  # noqa: PLC0415

        client = MlflowClient(tracking_uri)
        for f in files:
            client.log_artifact(context.run_id, str(f), artifact_path=artifact_path)
