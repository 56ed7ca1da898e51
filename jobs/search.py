#!/usr/bin/env python
"""Distributed E3D evolutionary search on Ray: the population sharded over island actors.

    python jobs/search.py --preset S --actors 2 --out outputs/search-s          # local Ray, 2 islands
    python jobs/search.py --resume outputs/search-s                             # continue a killed search
    python jobs/search.py --address auto --actors 16 --out s3://bucket/search   # on a running cluster
    ray submit cluster.yaml jobs/search.py --preset M --actors 32 --actor-resources '{"search_cpu": 1}' \
        --out s3://bucket/search-m

Writes ``best.json``, ``population.parquet``, ``history.parquet``, ``progress.png`` and ``config.json`` to
``--out`` (a local path or a pyarrow filesystem URI), a checkpoint after every round under
``--out/checkpoint/``, and logs to MLflow (a parent run for the job, a child run for the search). The
last line printed is a JSON summary. This script only parses arguments: the work is
:func:`pipeline.search.run_distributed_search` (the installed package, so ``ray submit`` works).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from pipeline.search.cli_options import (add_ray_options, add_search_options, add_tracking_options,  # noqa: E402
                                         config_from_args, init_ray, tracking_from_args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    g = parser.add_argument_group("islands")
    g.add_argument("--out", help="output folder or URI (default outputs/search-<preset>-seed<seed>)")
    g.add_argument("--resume", metavar="DIR", help="continue the search checkpointed under DIR")
    g.add_argument("--overwrite", action="store_true", help="start over even if --out holds a checkpoint")
    g.add_argument("--actors", type=int, help="islands, one Ray actor each (default: cluster CPUs / "
                                              "--cpus-per-actor; on --resume: the checkpoint's)")
    g.add_argument("--chunk-iterations", type=int, help="iterations per island per round (default 25000)")
    g.add_argument("--rounds", type=int, help="number of rounds instead of --chunk-iterations")
    g.add_argument("--migration-interval", type=int, help="rounds between migrations (default 1)")
    g.add_argument("--migration-size", type=int, help="elites each island sends to the next (default 4)")
    g.add_argument("--cpus-per-actor", type=float, default=1.0, help="CPUs reserved per actor (fractional ok)")
    g.add_argument("--actor-resources", type=json.loads, metavar="JSON",
                   help='custom Ray resources per actor, e.g. \'{"search_cpu": 1}\' to pin islands to the '
                        "cluster's search nodes (cluster.yaml)")
    g.add_argument("--max-restarts", type=int, default=3, help="restarts per island after actor deaths")
    g.add_argument("--backend", choices=("ray", "local"), default="ray",
                   help="'local' steps the islands in this process (same result, no Ray actors)")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when it is a terminal)")
    add_search_options(parser)
    add_tracking_options(parser, experiment="e3d-search")
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pipeline.search import CheckpointError, run_distributed_search  # noqa: PLC0415

    if args.resume and args.out and args.out.rstrip("/") != args.resume.rstrip("/"):
        print(f"error: --resume {args.resume} and --out {args.out} differ (resume writes where it left off)",
              file=sys.stderr)
        return 2
    config, explicit = config_from_args(args)
    out = args.resume or args.out or f"outputs/search-{config.preset or 'custom'}-seed{config.seed}"
    if args.backend == "ray":
        ray = init_ray(args)
        actors = args.actors
        if actors is None and not args.resume:  # as many islands as the cluster can hold at once
            have = ray.cluster_resources()
            need = {"CPU": args.cpus_per_actor} | dict(args.actor_resources or {})
            actors = max(1, min(int(have.get(k, 0) // v) for k, v in need.items() if v > 0) if any(
                v > 0 for v in need.values()) else int(have.get("CPU", 1)))
    else:
        actors = args.actors
    tracking = tracking_from_args(args)
    kwargs = dict(out_dir=out, actors=actors, chunk_iterations=args.chunk_iterations, rounds=args.rounds,
                  migration_interval=args.migration_interval, migration_size=args.migration_size,
                  cpus_per_actor=args.cpus_per_actor, resources=args.actor_resources,
                  max_restarts=args.max_restarts, backend=args.backend,
                  resume=bool(args.resume), overwrite=args.overwrite, progress=args.progress)
    search_config = config if (explicit or not args.resume) else None
    try:
        if tracking is None:
            result = run_distributed_search(search_config, tracking=None, **kwargs)
        else:
            parent = _parent_run_id(tracking, out, bool(args.resume))
            with tracking.run("distributed-search-job", run_id=parent, tags={"e3d.job": "jobs/search.py"}) as run:
                if parent is None:
                    tracking.client().log_params({"out": out, "argv": " ".join(sys.argv[1:])[:5000]})
                result = run_distributed_search(search_config, tracking=tracking.child(run.info.run_id), **kwargs)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"best {result.best_score:.4f} after {result.iterations} iterations in {result.rounds} rounds "
          f"on {result.settings.actors} islands ({result.iterations_per_s:.0f} it/s, {result.restarts} restarts)",
          file=sys.stderr)
    for key, path in result.files.items():
        print(f"  {key:10s} {path}", file=sys.stderr)
    if tracking is not None:
        from pipeline.tracking import ui_command  # noqa: PLC0415

        print(f"  mlflow     {ui_command(tracking.tracking_uri)}", file=sys.stderr)
    print(json.dumps(result.summary()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
