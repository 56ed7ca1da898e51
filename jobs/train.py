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
table at the parent. This script only parses arguments: the work is :func:`pipeline.train.train_candidates`.
Exit status 1: a candidate failed; 2: a bad option; 28: the disk is full (one line; free space and rerun the
same command: it resumes from the last good checkpoint; docs/faults.md).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from e3d.options import Parser, resolve_clip  # noqa: E402
from pipeline.faults import exits_on_out_of_space  # noqa: E402
from pipeline.options import (DEMO, add_data_options, add_ray_options, add_tracking_options,  # noqa: E402
                              add_training_options, check_clip, check_data, check_out, check_recipe, check_specs,
                              init_ray, tracking_from_args)

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
    t0 = time.perf_counter()
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
    eval_clips = args.eval_clips or (2 if demo else 10)
    print(f"[train] {len(specs)} candidate(s) {', '.join(s.name for s in specs)} on {dataset.root} "
          f"({len(dataset.classes)} classes, {len(dataset.train)} train / {len(dataset.val)} val videos), "
          f"clips {clip.frames}x{clip.size}x{clip.size} every {clip.sampling_rate} frames; "
          f"{recipe.epochs} epochs, batch {recipe.batch_size}/worker")

    init_ray(args)
    from pipeline.train import format_table, plan_resources, train_candidates  # noqa: PLC0415

    plan = plan_resources(len(specs), max_concurrent=args.max_concurrent, workers=args.workers,
                          data_cpus=args.data_cpus)
    tracking = tracking_from_args(args, out)
    dataset.save_label_map(out / "label_map.json")  # the class names, for e3d predict on the candidates
    common = dict(clip=clip, recipe=recipe, out_dir=out, eval_clips=eval_clips, eval_crops=args.eval_crops,
                  plan=plan, resume=not args.no_resume, max_failures=args.max_failures, seed=args.seed,
                  log_model=not args.no_log_model)
    if tracking is None:
        results = train_candidates(specs, dataset, tracking=None, **common)
    else:
        with tracking.run(f"train-{time.strftime('%Y%m%d-%H%M%S')}", tags={"e3d.kind": "train-job"}) as parent:
            mlflow = tracking.client()
            mlflow.log_params({f"job.{k}": str(v)[:500] for k, v in vars(args).items() if v is not None}
                              | {"job.candidates": ",".join(s.name for s in specs), "job.plan": plan.describe()})
            mlflow.log_artifact(str(out / "label_map.json"), "data")
            results = train_candidates(specs, dataset, tracking=tracking.child(parent.info.run_id), **common)
            ok = [r for r in results if r.ok]
            if ok:
                best = max(ok, key=lambda r: r.mv_top1)
                mlflow.log_metrics({"best_top1": best.mv_top1, "job_time_s": time.perf_counter() - t0})
                mlflow.set_tag("e3d.best", best.name)
    print()
    print(format_table(results))
    print(f"\nwall time {time.perf_counter() - t0:.0f} s; outputs in {out}")
    if tracking is not None:
        from pipeline.tracking import ui_hint  # noqa: PLC0415

        print(f"MLflow UI:\n{ui_hint(tracking)}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
