"""What the Ray pipeline lends a search strategy (:class:`e3d.strategy.SearchContext`): the Ray island
backend for ``evolution`` and the trainer of the strategies that train (:class:`RayTrainer`)."""
from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from pipeline.search.plan import IslandOptions

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
class IslandBackend(IslandOptions):
    """Runs :mod:`e3d.evolution` as Ray island actors (:func:`pipeline.search.run_distributed_search`): the
    :class:`~pipeline.search.plan.IslandOptions` as the jobs' command line gives them
    (:func:`pipeline.options.islands_from_args`), handed down whole. ``backend="local"`` steps the same islands
    in this process (the same result, for Tune trials and tests).

    Placement: ``resources`` (custom Ray resources per actor) when given, else ``search_resource``
    (default ``"auto"``: ``{"search_cpu": cpus_per_actor}`` when the cluster has ``search_cpu``, i.e. the
    islands run on ``cluster.yaml``'s search nodes; ``None``: anywhere). ``out_dir`` may be a pyarrow
    filesystem URI (``s3://bucket/prefix``): the checkpoint and the outputs go there."""

    search_resource: str | None = AUTO

    def placement(self) -> dict[str, float] | None:
        """The custom resources each island actor asks for on the running cluster."""
        if self.backend != "ray":
            return self.resources
        import ray  # noqa: PLC0415

        if not ray.is_initialized():
            ray.init()
        return search_placement(self.resources, self.search_resource, self.cpus_per_actor, ray.cluster_resources())

    def sized_to(self, cluster: dict[str, float]) -> "IslandBackend":
        """With ``actors`` unset: as many islands as ``cluster`` (``ray.cluster_resources()``) holds at once."""
        if self.actors is not None:
            return self
        need = {"CPU": self.cpus_per_actor} | dict(self.resources or {})
        return replace(self, actors=max(1, min(int(cluster.get(k, 0) // v) for k, v in need.items() if v > 0)))

    def run(self, config: Any, *, out_dir: str | None, tracking: Any = None, progress: bool | None = None,
            resume: bool | None = None, overwrite: bool = False) -> Any:
        """Run the island search of ``config`` (a :class:`e3d.evolution.SearchConfig`) under ``out_dir``.
        ``resume`` None (a rerun of the main job): continue ``out_dir``'s checkpoint when there is one, with its
        config; True/False: continue it, or start (over it only with ``overwrite``); a given ``config`` must then
        equal the checkpoint's (None: take the checkpoint's)."""
        from pipeline.search import read_meta, resolve_fs, run_distributed_search  # noqa: PLC0415

        if out_dir is None:
            raise ValueError("the island backend checkpoints: it needs an out_dir")
        if resume is None:
            resume = read_meta(*resolve_fs(str(out_dir))) is not None
            config = None if resume else config
        return run_distributed_search(config, out_dir=str(out_dir), islands=replace(self, resources=self.placement()),
                                      resume=resume, overwrite=overwrite, tracking=tracking, progress=progress)

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
