"""``run_distributed_search``: the island search of a config and its :class:`~pipeline.search.plan.IslandOptions`.

It resolves the config and the options into :class:`~pipeline.search.plan.IslandSettings` (fresh, or from the
checkpoint on resume, refusing settings that would change the result), attaches the callbacks (MLflow when ``tracking``
is given, the progress bar, ``on_round``) and runs :class:`~pipeline.search.driver.IslandDriver`. The pieces:
:mod:`~pipeline.search.plan` (sharding, seeds, rounds, migration), :mod:`~pipeline.search.island` (the actor),
:mod:`~pipeline.search.backends` (Ray actors or in-process), :mod:`~pipeline.search.driver` (the round loop),
:mod:`~pipeline.search.checkpoint` (Parquet), :mod:`~pipeline.search.callbacks` (events).
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

from e3d.evolution import SearchConfig
from e3d.spec import ArchSpec

from . import checkpoint as ck
from .callbacks import ProgressBar, RoundFunction, RoundInfo, SearchCallback
from .driver import DistributedResult, IslandDriver
from .plan import IslandOptions, IslandSettings, plan_rounds

__all__ = ["run_distributed_search"]


def run_distributed_search(
    config: SearchConfig | None = None, *, out_dir: str | Path, islands: IslandOptions = IslandOptions(),
    tracking: Any = None, resume: bool = False, overwrite: bool = False, seed: int | None = None,
    initial: ArchSpec | Sequence[ArchSpec] | None = None, filesystem: Any = None, progress: bool | None = None,
    on_round: Callable[[RoundInfo], Any] | None = None, mlflow_run_name: str | None = None,
    run_tags: dict[str, str] | None = None, callbacks: Sequence[SearchCallback] = (), **options: Any,
) -> DistributedResult:
    """Run (or, with ``resume=True``, continue) the island search; write the outputs under ``out_dir``.

    ``config``: the e3d search settings (``iterations`` is the total over all islands, ``population_size``
    the total over all islands); with ``resume`` it may be None (the checkpoint's is used) and must
    otherwise equal the checkpoint's. ``islands``: the :class:`IslandOptions` (``actors`` default 2,
    ``chunk_iterations`` 25 000 or ``rounds`` instead, ``migration_interval`` 1, ``migration_size`` 4, the
    placement); ``**options`` are its fields given one by one (``actors=4``), over ``islands``. On resume the
    result-changing ones default to the checkpoint's and must match it. ``out_dir``: local path or pyarrow
    filesystem URI (or a path on ``filesystem``). ``tracking``: a :class:`pipeline.tracking.Tracking`
    (MLflow) or None. ``seed`` overrides ``config.seed``. ``on_round(RoundInfo)`` runs after every round
    (Tune reports from there); ``callbacks``: more :class:`SearchCallback` s. Refuses to start over an
    existing checkpoint unless ``overwrite``. ``mlflow_run_name``/``run_tags``: the MLflow run's name
    (default ``<search name>-islands<N>``) and extra tags. ``initial``: the initial structure or population
    (default ``config.initial_spec()``).
    """
    islands = replace(islands, **options)
    fs, root = ck.resolve_fs(out_dir, filesystem)
    checkpoint = None
    if resume:
        checkpoint = _load_for_resume(fs, root, out_dir)
        config = _resumed_config(checkpoint, config, seed)
        settings = _resumed_settings(checkpoint, config, islands)
    else:
        if config is None:
            raise ValueError("config is required unless resuming")
        _clear_for_fresh_start(fs, root, out_dir, overwrite)
        if seed is not None:
            config = replace(config, seed=seed)
        settings = islands.fresh(config)

    hooks: list[SearchCallback] = []
    if tracking is not None:
        from pipeline.tracking import SearchMlflowCallback  # noqa: PLC0415

        hooks.append(SearchMlflowCallback(tracking, run_name=mlflow_run_name, tags=run_tags))
    hooks.append(ProgressBar(progress))
    hooks += callbacks
    if on_round is not None:
        hooks.append(RoundFunction(on_round))
    return IslandDriver(config, settings, fs=fs, root=root, out_dir=str(out_dir), checkpoint=checkpoint,
                        initial=initial, callbacks=hooks).run()


def _load_for_resume(fs: Any, root: str, out_dir: str | Path) -> ck.Checkpoint:
    if ck.read_meta(fs, root) is None:
        raise ck.CheckpointError(f"nothing to resume: no checkpoint under {out_dir}")
    return ck.load_checkpoint(fs, root)


def _clear_for_fresh_start(fs: Any, root: str, out_dir: str | Path, overwrite: bool) -> None:
    meta = ck.read_meta(fs, root)
    if meta is None:
        return
    if not overwrite:
        raise ck.CheckpointError(f"{out_dir} already holds a search checkpoint (round {meta.get('round')}); "
                                 f"resume it (--resume) or pass overwrite=True (--overwrite)")
    fs.delete_dir_contents(ck.checkpoint_dir(root), missing_dir_ok=True)


def _config_diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    norm = lambda d: json.loads(json.dumps(d, default=list))  # noqa: E731 - tuples vs lists
    a, b = norm(a), norm(b)
    return [f"{k}: checkpoint {b.get(k)!r} vs given {a.get(k)!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]


def _resumed_config(checkpoint: ck.Checkpoint, given: SearchConfig | None, seed: int | None) -> SearchConfig:
    """The checkpoint's config; a given one (with ``seed`` applied) must equal it."""
    stored = SearchConfig.from_dict(checkpoint.config)
    if given is not None:
        if seed is not None:
            given = replace(given, seed=seed)
        diff = _config_diff(given.to_dict(), stored.to_dict())
        if diff:
            raise ck.CheckpointError("the search config differs from the checkpoint's: " + "; ".join(diff))
    return stored


def _resumed_settings(checkpoint: ck.Checkpoint, config: SearchConfig, islands: IslandOptions) -> IslandSettings:
    """The checkpoint's settings with this run's placement; given result-changing settings must match."""
    stored = IslandSettings.from_dict(checkpoint.settings)
    clash = [f"{k}: checkpoint {getattr(stored, k)!r} vs given {v!r}" for k, v in islands.given().items()
             if v != getattr(stored, k)]
    planned = plan_rounds(config.iterations, stored.actors, stored.chunk_iterations)
    if islands.rounds is not None and islands.rounds != planned:
        clash.append(f"rounds: checkpoint plans {planned}, given {islands.rounds}")
    if clash:
        raise ck.CheckpointError("settings differ from the checkpoint's (they change the result): " + "; ".join(clash))
    return replace(stored, **islands.placement_settings())
