#!/usr/bin/env python
"""Train architectures (zoo names or spec JSON files) on a video dataset with Ray Train, compare them.

    python jobs/train.py                                   # demo: E3D-S vs X3D-S on generated synthetic videos
    python jobs/train.py E3D-S X3D-S --data ~/ucf101 --frames 13 --size 160 --sampling-rate 6 --epochs 30
    python jobs/train.py best.json --data kinetics/ --recipe k400 --epochs 256 --address auto
    python jobs/train.py E3D-S --data clips/ --tracking-uri http://mlflow:5000 --experiment e3d-train

Each spec is trained at the clip size (frames x size x size) with the paper's recipe (Table 10) scaled to
the run: SGD momentum 0.9, weight decay 5e-5, linear warm-up + cosine, learning rate linearly scaled to the
global batch. Every candidate is a Ray Tune trial running its own TorchTrainer (candidates run concurrently
when the cluster has room), checkpointed every epoch; re-running the same command resumes where a killed
run stopped. The final evaluation is K clips x 3 crops per validation video.

MLflow (a SQLite store under --out unless --tracking-uri): one experiment, a parent run for this job, one
child run per candidate (spec params, per-epoch metrics, spec JSON, curves, the final model), the summary
table at the parent. This script only parses and checks arguments: the work is :func:`pipeline.train_job.run_train_job`.
Exit status 1: a candidate failed; 2: a bad option; 28: the disk is full (one line; free space and rerun the
same command: it resumes from the last good checkpoint; docs/faults.md).
"""
from __future__ import annotations

import argparse
import os
import sys
from functools import partial

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from e3d.options import Parser, resolve_clip  # noqa: E402
from pipeline.faults import exits_on_out_of_space  # noqa: E402
from pipeline.options import (DEMO, add_data_options, add_ray_options, add_tracking_options,  # noqa: E402
                              add_training_options, check_clip, check_data, check_out, check_recipe, check_specs,
                              init_ray, tracking_from_args, train_resources_from_args)

DEFAULT_SPECS = ["E3D-S", "X3D-S"]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                    epilog=__doc__)
    parser.add_argument("specs", nargs="*", metavar="SPEC",
                        help=f"zoo names or spec JSON files (default: {' '.join(DEFAULT_SPECS)})")
    parser.add_argument("--out", default="outputs/train", help="checkpoints, summaries, synthetic data, MLflow "
                                                               "store (default outputs/train)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data split and the training")
    parser.add_argument("--no-resume", action="store_true",
                        help="train from scratch even if the same run was checkpointed under --out")
    add_data_options(parser, DEMO)
    add_training_options(parser)
    add_tracking_options(parser, experiment="e3d-train", optional=True)
    add_ray_options(parser)
    return parser


@exits_on_out_of_space
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out = check_out(parser, args.out).resolve()
    specs = check_specs(parser, args.specs or DEFAULT_SPECS, "SPEC")
    demo = not args.data
    dataset = check_data(parser, args)
    clip = check_clip(parser, args, resolve_clip(args, DEMO), demo=demo)
    recipe = check_recipe(parser, args, demo=demo)
    for spec in specs:
        try:
            spec.with_input(clip.frames, clip.size)
        except ValueError as exc:
            parser.error(f"argument SPEC: {spec.name} cannot run at {clip.frames}x{clip.size}^2: {exc}")
    if dataset is None:
        from pipeline.search_and_train import DataConfig, load_data  # noqa: PLC0415

        dataset = load_data(DataConfig(), out, seed=args.seed)

    from pipeline.train_job import TrainJob, run_train_job  # noqa: PLC0415

    job = TrainJob(tuple(specs), clip, recipe, out, eval_clips=args.eval_clips or (2 if demo else 10),
                   eval_crops=args.eval_crops, resources=train_resources_from_args(args), resume=not args.no_resume,
                   seed=args.seed, log_model=not args.no_log_model,
                   params={f"job.{k}": str(v)[:500] for k, v in vars(args).items() if v is not None})
    return run_train_job(job, dataset, tracking_from_args(args, out), start_ray=partial(init_ray, args))


if __name__ == "__main__":
    sys.exit(main())
