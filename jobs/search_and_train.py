#!/usr/bin/env python
"""Search architectures on the cluster's CPUs, train the best on its GPUs (or CPUs), compare them in MLflow.

    python jobs/search_and_train.py                         # embedded demo: synthetic clips, small search,
                                                            # 2 candidates trained on CPU (minutes here)
    python jobs/search_and_train.py --strategy random --quick
    python jobs/search_and_train.py --data ~/ucf101 --format ucf101 --frames 16 --size 112 \\
        --budget-flops 1.2G --iterations 200k --epochs 30 --also X3D-S
    ray submit cluster.yaml jobs/search_and_train.py -- --data /data/ssv2 --preset S --iterations 500k \\
        --population 512 --epochs 100 --tracking-uri http://mlflow.internal:5000

Every option is checked before any work starts (a bad one exits with status 2 and a line naming it).
Re-running with the same ``--out`` resumes the search and every candidate's training where they stopped.
A full disk ends the job with one line and exit status 28: free some space and run the same command (a corrupt
file under ``--out`` is set aside and redone from the last good state; docs/faults.md).
This script only parses arguments: the work is :func:`pipeline.search_and_train.run_job` (the installed
package, so ``ray submit``, which uploads this file alone, works).
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from e3d.options import Parser, add_search_options, latency_settings, resolve_clip, search_request  # noqa: E402
from pipeline.faults import RECORDS_BYTES, check_free_space, exits_on_out_of_space  # noqa: E402
from pipeline.options import (DEMO, add_data_options, add_island_options, add_ray_options,  # noqa: E402
                              add_selection_options, add_tracking_options, add_training_options, check_clip,
                              check_data, check_out, check_recipe, check_specs, init_ray, islands_from_args,
                              train_resources_from_args)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(description=__doc__.split("\n")[0], epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("job")
    g.add_argument("--out", default="outputs/search_and_train", help="output folder (resumes when it exists)")
    g.add_argument("--quick", action="store_true", help="a tiny end-to-end run (smoke test, cluster check)")
    add_search_options(p, DEMO)
    add_data_options(p, DEMO)
    add_selection_options(p)
    add_training_options(p)
    add_island_options(p)
    add_tracking_options(p, experiment="e3d-search-and-train")
    add_ray_options(p)
    return p


def config_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """The job's config; every input checked (exits 2 naming the option), nothing written."""
    from pipeline.search_and_train import DataConfig, JobConfig, Selection, quick  # noqa: PLC0415

    check_out(parser, args.out)
    demo = not args.data
    dataset = check_data(parser, args)
    clip_shape = resolve_clip(args, DEMO)
    clip = check_clip(parser, args, clip_shape, demo=demo)
    num_classes = len(dataset.classes) if dataset is not None else None
    strategy, request = search_request(parser, args, defaults=DEMO, clip=clip_shape, num_classes=num_classes)
    extras = check_specs(parser, args.also, "--also")
    for spec in extras:
        try:
            spec.with_input(clip.frames, clip.size)
        except ValueError as exc:
            parser.error(f"argument --also: {spec.name} cannot run at {clip.frames}x{clip.size}^2: {exc}")
    config = JobConfig(out_dir=args.out, data=DataConfig(path=args.data, format=args.data_format), clip=clip,
                       strategy=strategy.name, request=request, islands=islands_from_args(args),
                       selection=Selection(top_k=args.top_k, distinct_by=args.distinct_by, extra=tuple(args.also),
                                           select=args.select),
                       recipe=check_recipe(parser, args, demo=demo), eval_clips=args.eval_clips or 2,
                       eval_crops=args.eval_crops, resources=train_resources_from_args(args),
                       tracking_uri=args.tracking_uri, experiment=args.experiment, log_model=not args.no_log_model,
                       latency=latency_settings(args))
    return quick(config) if args.quick else config


@exits_on_out_of_space
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    config = config_from_args(parser, args)
    check_free_space(args.out, RECORDS_BYTES, "the search's checkpoints and the MLflow store")
    init_ray(args)
    from pipeline.search_and_train import run_job  # noqa: PLC0415

    result = run_job(config)
    failed = [c.name for c in result.candidates if not c.ok]
    if failed:
        print(f"error: training failed for {', '.join(failed)} (see {result.out_dir}/summary.json)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
