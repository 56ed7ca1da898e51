"""The search job (``jobs/search.py``): a training-free strategy in this process, or on Ray island actors when the
strategy runs there (:meth:`e3d.strategies.evolution.EvolutionStrategy.runs_on_islands`), checkpointing every
round so a killed search resumes. Outputs under ``out`` (for the islands a folder or a pyarrow URI), MLflow runs
when ``tracking`` is given; the last line printed is a JSON summary.

    code = run_search_job(SearchJob(strategy, request, out="runs/s", islands=islands), tracking, start_ray=...)
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any, Callable

from e3d.latency_options import LatencySettings
from e3d.strategy import SearchContext, SearchRequest, SearchStrategy
from pipeline.context import IslandBackend


@dataclass(frozen=True)
class SearchJob:
    """One run of the search job, checked by the options layer. ``resume``: continue ``out``'s checkpoint;
    ``explicit``: the search settings were given on the command line (a resume must then match the
    checkpoint's; else it continues with the checkpoint's); ``overwrite``: start over a checkpoint;
    ``latency``: the latency table's settings under a latency budget; ``argv``: logged with the job's run."""

    strategy: SearchStrategy
    request: SearchRequest
    out: str
    islands: IslandBackend
    resume: bool = False
    overwrite: bool = False
    explicit: bool = True
    progress: bool | None = None
    latency: LatencySettings | None = None
    argv: str = ""

    def on_islands(self) -> bool:
        runs_on_islands = getattr(self.strategy, "runs_on_islands", None)
        context = SearchContext(evolution_backend=self.islands)
        return runs_on_islands is not None and runs_on_islands(self.request, context)


def run_search_job(job: SearchJob, tracking: Any, *, start_ray: Callable[[], Any]) -> int:
    """Run the job; its exit status (2: a checkpoint that does not match, or a URI for an in-process search).
    ``start_ray()`` starts (or joins) Ray and returns the ``ray`` module: called only for island actors."""
    return _run_islands(job, tracking, start_ray) if job.on_islands() else _run_here(job, tracking)


def _run_islands(job: SearchJob, tracking: Any, start_ray: Callable[[], Any]) -> int:
    from e3d.strategies.evolution import search_config  # noqa: PLC0415
    from pipeline.search import CheckpointError  # noqa: PLC0415

    islands = job.islands
    if islands.backend == "ray":
        ray = start_ray()
        if not job.resume:  # as many islands as the cluster holds at once, unless --actors says
            islands = islands.sized_to(ray.cluster_resources())
    config = search_config(job.request) if job.explicit or not job.resume else None

    def run(tracking: Any = None) -> Any:
        return islands.run(config, out_dir=job.out, tracking=tracking, progress=job.progress, resume=job.resume,
                           overwrite=job.overwrite)

    try:
        if tracking is None:
            result = run()
        else:
            parent = _parent_run_id(tracking, job.out) if job.resume else None
            with tracking.run("distributed-search-job", run_id=parent, tags={"e3d.job": "jobs/search.py"}) as run_:
                if parent is None:
                    tracking.client().log_params({"out": job.out, "argv": job.argv[:5000]})
                result = run(tracking.child(run_.info.run_id))
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"best {result.best_score:.4f} after {result.iterations} iterations in {result.rounds} rounds "
          f"on {result.settings.actors} islands ({result.iterations_per_s:.0f} it/s, {result.restarts} restarts)",
          file=sys.stderr)
    _print_files(result.files, tracking)
    print(json.dumps(result.summary()))
    return 0


def _parent_run_id(tracking: Any, out: str) -> str | None:
    """The job run that the checkpointed search run belongs to (so the resumed run nests there)."""
    from pipeline.search.checkpoint import read_meta, resolve_fs  # noqa: PLC0415
    from pipeline.tracking import PARENT_TAG  # noqa: PLC0415

    child = (read_meta(*resolve_fs(out)) or {}).get("mlflow_run_id")
    if not child:
        return None
    try:
        return tracking.client().get_run(child).data.tags.get(PARENT_TAG)
    except Exception:  # another store, or the run was deleted: start a new job run
        return None


def _run_here(job: SearchJob, tracking: Any) -> int:
    from e3d.options import latency_predictor  # noqa: PLC0415
    from e3d.search_io import write_outcome  # noqa: PLC0415

    strategy, request = job.strategy, job.request
    if "://" in job.out:
        print(f"error: --out {job.out}: strategy {strategy.name!r} writes to a local folder", file=sys.stderr)
        return 2
    try:
        context = SearchContext(progress=job.progress, latency=latency_predictor(job.latency, request))
        outcome = strategy.search(request, context)
    except RuntimeError as exc:  # e.g. no feasible network under a tight latency budget
        print(f"error: {exc}", file=sys.stderr)
        return 1
    files = write_outcome(job.out, outcome)
    if tracking is not None:
        from pipeline.search_stage import log_outcome  # noqa: PLC0415

        with tracking.run("search-job", tags={"e3d.job": "jobs/search.py"}) as run:
            with tracking.child(run.info.run_id).run(f"search-{strategy.name}", tags={"e3d.strategy": strategy.name}):
                log_outcome(tracking.client(), outcome, request, files)
    print(f"best {outcome.best.score:.4f} of {len(outcome.candidates)} candidates in {outcome.wall_s:.1f} s "
          f"({strategy.name})", file=sys.stderr)
    _print_files({k: str(v) for k, v in files.items()}, tracking)
    print(json.dumps(outcome.summary()))
    return 0


def _print_files(files: dict[str, Any], tracking: Any) -> None:
    for key, path in files.items():
        print(f"  {key:10s} {path}", file=sys.stderr)
    if tracking is not None:
        from pipeline.tracking import ui_hint  # noqa: PLC0415

        print(f"  mlflow UI:\n  {ui_hint(tracking)}", file=sys.stderr)
