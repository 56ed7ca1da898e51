"""Distributed evolutionary search on Ray: island actors, Parquet checkpoints, fault tolerance, Tune.

    from e3d.evolution import SearchConfig
    from pipeline.search import run_distributed_search

    result = run_distributed_search(SearchConfig.from_preset("S"), actors=2, out_dir="runs/search-s")
    result.best, result.best_score, result.population   # merged over islands, best first

See ``docs/distributed-search.md``.
"""
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, read_meta, resolve_fs, save_checkpoint
from .islands import (DistributedResult, Island, IslandSettings, RoundInfo, island_seed, island_sizes,
                      merge_population, plan_rounds, round_iterations, run_distributed_search)

__all__ = ["run_distributed_search", "DistributedResult", "IslandSettings", "RoundInfo", "Island",
           "island_seed", "island_sizes", "plan_rounds", "round_iterations", "merge_population",
           "Checkpoint", "CheckpointError", "load_checkpoint", "save_checkpoint", "read_meta", "resolve_fs"]


def __getattr__(name: str):  # Tune pulls in ray.tune: import it only when asked for
    if name in ("tune_search", "TuneSettings", "TuneOutcome"):
        from . import tune_search as _t

        return getattr(_t, name)
    raise AttributeError(f"module 'pipeline.search' has no attribute {name!r}")
