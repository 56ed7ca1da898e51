#!/usr/bin/env python
"""Search on Ray: ``evolution`` shards its population over island actors; other strategies run here.

    python jobs/search.py --preset S --actors 2 --out outputs/search-s          # local Ray, 2 islands
    python jobs/search.py --resume outputs/search-s                             # continue a killed search
    python jobs/search.py --strategy random --preset S --iterations 5000 --out outputs/random-s
    python jobs/search.py --config outputs/tune-s/best_config.json --actors 8   # a SearchConfig from Tune
    ray submit cluster.yaml jobs/search.py --preset M --actors 32 --actor-resources '{"search_cpu": 1}' \
        --out s3://bucket/search-m

Writes ``best.json``, ``population.parquet``, ``history.parquet``, ``progress.png`` and ``outcome.json`` to
``--out`` (a local path, or for ``evolution`` any pyarrow filesystem URI), for ``evolution`` also
``config.json`` and a checkpoint after every round under ``--out/checkpoint/``, and logs to MLflow (a parent
run for the job, a child run for the search). The last line printed is a JSON summary. Exit status 2: a bad
option; 28: the disk is full (one line; free space and rerun: it resumes; docs/faults.md).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from e3d.options import (PAPER, Parser, add_clip_options, add_search_options, parse_with_config,  # noqa: E402
                         latency_predictor, latency_settings, positive_int, search_request)
from pipeline.faults import RECORDS_BYTES, check_free_space, exits_on_out_of_space  # noqa: E402
from pipeline.options import add_island_options, add_ray_options, add_tracking_options, init_ray  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                    epilog=__doc__)
    g = parser.add_argument_group("job")
    g.add_argument("--out", help="output folder or URI (default outputs/search-<preset>-seed<seed>)")
    g.add_argument("--config", metavar="JSON", help="evolution: a SearchConfig as JSON (e.g. a search's config.json "
                                                    "or Tune's best_config.json); options given here override it")
    g.add_argument("--resume", metavar="DIR", help="evolution: continue the search checkpointed under DIR")
    g.add_argument("--overwrite", action="store_true", help="start over even if --out holds a checkpoint")
    g.add_argument("--rounds", type=positive_int, help="evolution: number of rounds instead of --chunk-iterations")
    g.add_argument("--backend", choices=("ray", "local"), default="ray",
                   help="evolution: 'local' steps the islands in this process (same result, no Ray actors)")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when it is a terminal)")
    add_search_options(parser, PAPER)
    add_clip_options(parser, PAPER)
    add_island_options(parser)
    add_tracking_options(parser, experiment="e3d-search", optional=True, models=False)
    add_ray_options(parser)
    return parser


def _parent_run_id(tracking, out: str, resume: bool) -> str | None:
    """On resume, the job run that the checkpointed search run belongs to (so the resumed run nests there)."""
    if not resume or tracking is None:
        return None
    from pipeline.search.checkpoint import read_meta, resolve_fs  # noqa: PLC0415
    from pipeline.tracking import PARENT_TAG  # noqa: PLC0415

    meta = read_meta(*resolve_fs(out)) or {}
    child = meta.get("mlflow_run_id")
    if not child:
        return None
    try:
        return tracking.client().get_run(child).data.tags.get(PARENT_TAG)
    except Exception:  # another store, or the run was deleted: start a new job run
        return None


@exits_on_out_of_space
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_with_config(parser, argv)
    if args.resume and args.out and args.out.rstrip("/") != args.resume.rstrip("/"):
        parser.error(f"argument --resume: {args.resume} and --out {args.out} differ (resume writes where it left off)")
    strategy, request = search_request(parser, args, defaults=PAPER)
    if "data" in strategy.needs:
        parser.error(f"argument --strategy: {strategy.name!r} trains on video: run jobs/search_and_train.py")
    if args.resume and strategy.name != "evolution":
        parser.error("argument --resume: only the evolution strategy checkpoints rounds")
    out = args.resume or args.out or f"outputs/search-{args.preset or 'S'}-seed{args.seed}"
    check_free_space(out, RECORDS_BYTES, "the search's checkpoints, outcome and MLflow store")

    from pipeline.options import tracking_from_args  # noqa: PLC0415

    tracking = tracking_from_args(args, out if "://" not in out else "outputs")
    if strategy.name == "evolution" and request.budget.latency_ms is None:  # a latency predictor stays here
        given = [a.split("=")[0] for a in (sys.argv[1:] if argv is None else argv) if a.startswith("--")]
        explicit = bool(args.config) or any(a not in _NOT_CONFIG for a in given)
        return _run_islands(args, request, out, tracking, explicit)
    return _run_here(strategy, request, out, tracking, args.progress, latency_settings(args))


def _run_islands(args: argparse.Namespace, request, out: str, tracking, explicit: bool) -> int:
    """``explicit``: the search settings were given (a ``--resume`` must then match the checkpoint's)."""
    from e3d.strategies.evolution import search_config  # noqa: PLC0415
    from pipeline.search import CheckpointError, run_distributed_search  # noqa: PLC0415

    config = search_config(request)
    actors = args.actors
    if args.backend == "ray":
        ray = init_ray(args)
        if actors is None and not args.resume:  # as many islands as the cluster can hold at once
            have = ray.cluster_resources()
            need = {"CPU": args.cpus_per_actor} | dict(args.actor_resources or {})
            actors = max(1, min(int(have.get(k, 0) // v) for k, v in need.items() if v > 0))
    kwargs = dict(out_dir=out, actors=actors, chunk_iterations=args.chunk_iterations, rounds=args.rounds,
                  migration_interval=args.migration_interval, migration_size=args.migration_size,
                  cpus_per_actor=args.cpus_per_actor, resources=args.actor_resources,
                  max_restarts=args.max_restarts, backend=args.backend,
                  resume=bool(args.resume), overwrite=args.overwrite, progress=args.progress)
    search_config_ = config if (explicit or not args.resume) else None
    try:
        if tracking is None:
            result = run_distributed_search(search_config_, tracking=None, **kwargs)
        else:
            parent = _parent_run_id(tracking, out, bool(args.resume))
            with tracking.run("distributed-search-job", run_id=parent, tags={"e3d.job": "jobs/search.py"}) as run:
                if parent is None:
                    tracking.client().log_params({"out": out, "argv": " ".join(sys.argv[1:])[:5000]})
                result = run_distributed_search(search_config_, tracking=tracking.child(run.info.run_id), **kwargs)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"best {result.best_score:.4f} after {result.iterations} iterations in {result.rounds} rounds "
          f"on {result.settings.actors} islands ({result.iterations_per_s:.0f} it/s, {result.restarts} restarts)",
          file=sys.stderr)
    _print_files(result.files, tracking)
    print(json.dumps(result.summary()))
    return 0


# options that do not change the search itself (a --resume with only these keeps the checkpoint's config)
_NOT_CONFIG = {"--resume", "--out", "--address", "--num-cpus", "--no-mlflow", "--tracking-uri", "--experiment",
               "--cpus-per-actor", "--actor-resources", "--max-restarts", "--backend", "--progress", "--no-progress",
               "--overwrite", "--actors", "--chunk-iterations", "--rounds", "--migration-interval", "--migration-size"}


def _run_here(strategy, request, out: str, tracking, progress, latency: dict | None) -> int:
    from e3d.search_io import write_outcome  # noqa: PLC0415
    from e3d.strategy import SearchContext  # noqa: PLC0415

    if "://" in out:
        print(f"error: --out {out}: strategy {strategy.name!r} writes to a local folder", file=sys.stderr)
        return 2
    try:
        outcome = strategy.search(request, SearchContext(progress=progress, latency=latency_predictor(latency, request)))
    except RuntimeError as exc:  # e.g. no feasible network under a tight latency budget
        print(f"error: {exc}", file=sys.stderr)
        return 1
    files = write_outcome(out, outcome)
    if tracking is not None:
        from pipeline.search_and_train import log_outcome  # noqa: PLC0415

        with tracking.run("search-job", tags={"e3d.job": "jobs/search.py"}) as run:
            with tracking.child(run.info.run_id).run(f"search-{strategy.name}",
                                                     tags={"e3d.strategy": strategy.name}):
                log_outcome(tracking.client(), outcome, request, files)
    print(f"best {outcome.best.score:.4f} of {len(outcome.candidates)} candidates in {outcome.wall_s:.1f} s "
          f"({strategy.name})", file=sys.stderr)
    _print_files({k: str(v) for k, v in files.items()}, tracking)
    print(json.dumps(outcome.summary()))
    return 0


def _print_files(files: dict, tracking) -> None:
    for key, path in files.items():
        print(f"  {key:10s} {path}", file=sys.stderr)
    if tracking is not None:
        from pipeline.tracking import ui_hint  # noqa: PLC0415

        print(f"  mlflow UI:\n  {ui_hint(tracking)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
