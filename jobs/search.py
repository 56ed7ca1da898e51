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
import os
import sys
from dataclasses import replace
from functools import partial

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from e3d.options import (PAPER, Parser, add_clip_options, add_search_options, latency_settings,  # noqa: E402
                         parse_with_config, positive_int, search_request)
from pipeline.faults import RECORDS_BYTES, check_free_space, exits_on_out_of_space  # noqa: E402
from pipeline.options import (add_island_options, add_ray_options, add_tracking_options, init_ray,  # noqa: E402
                              islands_from_args, tracking_from_args)


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


@exits_on_out_of_space
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_with_config(parser, argv)
    if args.resume and args.out and args.out.rstrip("/") != args.resume.rstrip("/"):
        parser.error(f"argument --resume: {args.resume} and --out {args.out} differ (resume writes where it left off)")
    strategy, request = search_request(parser, args, defaults=PAPER)
    if "data" in strategy.needs:
        parser.error(f"argument --strategy: {strategy.name!r} trains on video: run jobs/search_and_train.py")
    if args.resume and not getattr(strategy, "resumable", False):
        parser.error(f"argument --resume: strategy {strategy.name!r} does not checkpoint rounds")
    out = args.resume or args.out or f"outputs/search-{args.preset or 'S'}-seed{args.seed}"
    check_free_space(out, RECORDS_BYTES, "the search's checkpoints, outcome and MLflow store")

    from pipeline.search_job import SearchJob, run_search_job  # noqa: PLC0415

    given = [a.split("=")[0] for a in (sys.argv[1:] if argv is None else argv) if a.startswith("--")]
    job = SearchJob(strategy, request, out, replace(islands_from_args(args), rounds=args.rounds, backend=args.backend),
                    resume=bool(args.resume), overwrite=args.overwrite,
                    explicit=bool(args.config) or any(a not in _NOT_CONFIG for a in given), progress=args.progress,
                    latency=latency_settings(args), argv=" ".join(sys.argv[1:]))
    tracking = tracking_from_args(args, out if "://" not in out else "outputs")
    return run_search_job(job, tracking, start_ray=partial(init_ray, args))


# options that do not change the search itself (a --resume with only these keeps the checkpoint's config)
_NOT_CONFIG = {"--resume", "--out", "--address", "--num-cpus", "--no-mlflow", "--tracking-uri", "--experiment",
               "--cpus-per-actor", "--actor-resources", "--max-restarts", "--backend", "--progress", "--no-progress",
               "--overwrite", "--actors", "--chunk-iterations", "--rounds", "--migration-interval", "--migration-size"}


if __name__ == "__main__":
    sys.exit(main())
