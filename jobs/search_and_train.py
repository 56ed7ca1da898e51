#!/usr/bin/env python
"""Search E3D candidates on the cluster's CPUs, train the best on its GPUs (or CPUs), compare them in MLflow.

    python jobs/search_and_train.py                         # embedded demo: synthetic clips, small search,
                                                            # 2 candidates trained on CPU (~10 min here)
    python jobs/search_and_train.py --data ~/ucf101 --format ucf101 --frames 16 --size 112 \\
        --budget-flops 1.2G --iterations 200k --epochs 30 --also X3D-S
    ray submit cluster.yaml jobs/search_and_train.py -- --data /data/ssv2 --preset S --iterations 500k \\
        --population 512 --epochs 100 --tracking-uri http://mlflow.internal:5000

Re-running with the same ``--out`` resumes the search and every candidate's training where they stopped.
This script only parses arguments; the work is :func:`pipeline.search_and_train.run_job` (the installed
package, so ``ray submit``, which uploads this file alone, works).
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from e3d.evolution import SearchConfig  # noqa: E402
from pipeline.search.cli_options import add_ray_options, add_search_options, init_ray, search_overrides  # noqa: E402
from pipeline.search_and_train import DEMO_CLIP, DEMO_SEARCH, DEMO_TRAIN, JobConfig, quick, run_job  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("job")
    g.add_argument("--out", default="outputs/search_and_train", help="output folder (resumes when it exists)")
    g.add_argument("--quick", action="store_true", help="a tiny end-to-end run (smoke test, cluster check)")
    g = p.add_argument_group("data")
    g.add_argument("--data", help="dataset folder (folder-per-class, csv, kinetics, ssv2, ucf101); "
                                  "default: a generated synthetic dataset")
    g.add_argument("--format", dest="data_format", help="dataset format (default: detected)")
    g.add_argument("--clip-frames", type=int, help=f"frames per clip (default {DEMO_CLIP['frames']}; "
                                                   "the search scores at this input too)")
    g.add_argument("--clip-size", type=int, help=f"crop size (default {DEMO_CLIP['size']})")
    g.add_argument("--sampling-rate", type=int, default=DEMO_CLIP["sampling_rate"], help="frame stride "
                   f"(default {DEMO_CLIP['sampling_rate']})")
    g.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None,
                   help="random horizontal flips in training (default: on for --data, off for the synthetic "
                        "data; use --no-hflip for direction-sensitive classes such as Something-Something)")
    g = p.add_argument_group("islands")
    g.add_argument("--actors", type=int, help="search islands (default: from the cluster's CPUs)")
    g.add_argument("--chunk-iterations", type=int, help="iterations per island per round")
    add_search_options(p)
    g = p.add_argument_group("training")
    g.add_argument("--top-k", type=int, default=2, help="distinct candidates to train")
    g.add_argument("--also", action="append", default=[], metavar="NAME",
                   help="also train a zoo entry or spec file on the same data (e.g. X3D-S)")
    g.add_argument("--epochs", type=int, default=15)
    g.add_argument("--batch-size", type=int, default=8, help="per worker")
    g.add_argument("--lr", type=float, help="learning rate (default: the recipe's, linearly scaled; "
                                             f"{DEMO_TRAIN['lr']} for the synthetic demo)")
    g.add_argument("--init", choices=("model", "torch"), help="weight init (default: 'model' for --data, "
                                                              f"'{DEMO_TRAIN['init']}' for the demo's short run)")
    g.add_argument("--recipe", default="sthsth", help="paper recipe to scale (sthsth, kinetics)")
    g.add_argument("--eval-clips", type=int, default=2, help="K clips x 3 crops per video at the end")
    g.add_argument("--max-concurrent", type=int, help="candidates trained at once (default: from resources)")
    g = p.add_argument_group("MLflow")
    g.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite under --out/mlruns)")
    g.add_argument("--experiment", default="e3d-search-and-train")
    g.add_argument("--no-log-model", action="store_true", help="skip logging the final models to MLflow")
    add_ray_options(p)
    return p


def config_from_args(args: argparse.Namespace) -> JobConfig:
    overrides = search_overrides(args)
    frames = args.clip_frames or overrides.pop("frames", None) or DEMO_CLIP["frames"]
    size = args.clip_size or overrides.pop("size", None) or DEMO_CLIP["size"]
    base = {} if args.preset else dict(DEMO_SEARCH)
    search = SearchConfig.from_preset(args.preset or "S", **(base | overrides | {"frames": frames, "size": size}))
    config = JobConfig(out_dir=args.out, data=args.data, data_format=args.data_format, frames=frames, size=size,
                       sampling_rate=args.sampling_rate, hflip=args.hflip, search=search, actors=args.actors,
                       chunk_iterations=args.chunk_iterations, top_k=args.top_k, extra_candidates=args.also,
                       epochs=args.epochs, batch_size=args.batch_size, recipe=args.recipe,
                       lr=args.lr if args.data or args.lr else DEMO_TRAIN["lr"],
                       init=args.init or ("model" if args.data else DEMO_TRAIN["init"]),
                       eval_clips=args.eval_clips, max_concurrent=args.max_concurrent, seed=search.seed,
                       tracking_uri=args.tracking_uri, experiment=args.experiment, log_model=not args.no_log_model)
    return quick(config) if args.quick else config


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except (ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    init_ray(args)
    result = run_job(config)
    failed = [c.name for c in result.candidates if not c.ok]
    if failed:
        print(f"error: training failed for {', '.join(failed)} (see {result.out_dir}/summary.json)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
