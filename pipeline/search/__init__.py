"""Distributed evolutionary search on Ray: island actors, Parquet checkpoints, fault tolerance, Tune.

    from e3d.evolution import SearchConfig
    from pipeline.search import run_distributed_search

    result = run_distributed_search(SearchConfig.from_preset("S"), actors=2, out_dir="runs/search-s")
    result.best, result.best_score, result.population   # merged over islands, best first

Modules: ``plan`` (options and settings, sharding, seeds, rounds, migration), ``island`` (the actor and its
:class:`Member` layout), ``backends`` (Ray actors or in-process), ``driver`` (the round loop, results),
``callbacks`` (the driver's events), ``checkpoint`` (Parquet), ``islands`` (``run_distributed_search``),
``tune_search`` (Tune over the search's own settings).

Names are imported lazily (PEP 562): a Ray worker that starts an island imports ``pipeline.search.island``
and, through this package, nothing heavier than ``e3d``. See ``docs/distributed-search.md``.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "run_distributed_search": "islands",
    "IslandOptions": "plan", "IslandSettings": "plan", "island_seed": "plan", "island_sizes": "plan",
    "island_config": "plan",
    "plan_rounds": "plan", "round_iterations": "plan", "migrates_after": "plan",
    "Island": "island", "Member": "island",
    "IslandLost": "backends", "LocalIslands": "backends", "RayIslands": "backends",
    "IslandDriver": "driver", "DistributedResult": "driver", "merge_population": "driver",
    "RoundInfo": "callbacks", "SearchCallback": "callbacks",
    "Checkpoint": "checkpoint", "CheckpointError": "checkpoint", "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint", "read_meta": "checkpoint", "resolve_fs": "checkpoint",
    "tune_search": "tune_search", "TuneSettings": "tune_search", "TuneOutcome": "tune_search",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pipeline.search' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
