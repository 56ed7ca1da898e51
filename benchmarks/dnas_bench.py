#!/usr/bin/env python
"""DNAS measurements (docs/dnas.md): the lambda sweep on the synthetic data, and dnas vs evolution on UCF101.

    python benchmarks/dnas_bench.py lambda --out runs/dnas-lambda --lams 0,0.03,0.1,0.3,1
    python benchmarks/dnas_bench.py ucf --data ../shared/data/ucf101-6class-dev --frames 8 --size 56 \\
        --out runs/dnas-ucf                       # reduced scale (what docs/dnas.md quotes)
    python benchmarks/dnas_bench.py ucf --data ../shared/data/ucf101-6class-dev --frames 8 --size 112 \\
        --full --out runs/dnas-ucf-112            # the issue's scale (8x112^2)

``lambda``: the same search (same data, seed, settings) for each lambda of Eq. 5; prints the derived network's
FLOPs per lambda. ``ucf``: a preset of ``jobs/compare.py``: dnas, ``evolution:stentr`` and ``random`` at one
budget, ``--seeds`` seeds each, one training recipe, paired intervals against random (``docs/compare.md``).
The numbers in docs/dnas.md before 2026-12-06 came from its earlier form (the main job twice, evolution's budget
set to the dnas winner's FLOPs, one seed; commit 9cef590).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

SMALL_SPACE = {"width_mult": 0.25, "width_divisor": 4, "max_stack": [0, 2, 2, 2, 2, 1]}
# at 8x56^2 the 0.25-wide space derives networks below Table 8's initial structure (0.047 G), the evolution's start
UCF_SPACE = SMALL_SPACE | {"width_mult": 0.375}


def lambda_sweep(args: argparse.Namespace) -> list[dict]:
    from e3d.strategy import Budget, Clip, SearchContext, SearchRequest, get_strategy
    from pipeline.context import RayTrainer
    from pipeline.options import init_ray
    from pipeline.search_and_train import DataConfig, demo_clip, load_data

    out = Path(args.out).resolve()
    init_ray(args)
    dataset = load_data(DataConfig(), out, seed=0)  # the demo's synthetic videos (4 classes x 24 clips)
    clip = demo_clip()
    rows = []
    for lam in args.lams:
        options = SMALL_SPACE | {"epochs": args.epochs, "warmup_epochs": args.warmup, "batch_size": 8,
                                 "arch_lr": args.arch_lr, "split": [0.5, 0.5, 0.0], "lam": lam, "top_k": 1}
        request = SearchRequest(budget=Budget(), clip=Clip(clip.frames, clip.size), seed=args.seed,
                                num_classes=len(dataset.classes), options=options, out_dir=str(out / f"lam-{lam:g}"))
        t0 = time.perf_counter()
        outcome = get_strategy("dnas").search(request, SearchContext(dataset=dataset, clip=clip, trainer=RayTrainer()))
        best, last = outcome.best, outcome.history[-1]
        row = {"lam": lam, "derived_gflops": best.flops / 1e9, "mparams": best.params / 1e6,
               "expected_gflops": last["expected_gflops"], "widths": "-".join(map(str, best.spec.widths)),
               "stack_layers": "-".join(str(d - 1) for d in best.spec.depths),
               "dilations": last["derived_dilations"], "arch_ce": last.get("arch_ce"),
               "wall_s": time.perf_counter() - t0, "cpu_s": outcome.cpu_s}
        rows.append(row)
        print(json.dumps(row), flush=True)
    (out / "lambda_sweep.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n| lambda | derived GFLOPs | expected GFLOPs | params (M) | widths | stack layers | search CPU-s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['lam']:g} | {r['derived_gflops']:.4f} | {r['expected_gflops']:.4f} | {r['mparams']:.3f} | "
              f"{r['widths']} | {r['stack_layers']} | {r['cpu_s']:.0f} |")
    return rows


FULL_SPACE = {"width_mult": 0.5, "width_divisor": 8, "max_stack": [0, 2, 4, 2, 2, 1]}


def ucf(args: argparse.Namespace) -> int:
    """dnas vs ``evolution:stentr`` vs the ``random`` baseline: a preset of ``jobs/compare.py`` (one budget, one
    recipe, every network on the same validation videos, paired intervals against random)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "jobs" / "compare.py"
    spec = importlib.util.spec_from_file_location("compare_job", path)
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    dnas = (FULL_SPACE if args.full else UCF_SPACE) | {"epochs": args.epochs, "warmup_epochs": args.warmup,
                                                     "arch_lr": args.arch_lr, "lam": args.lam, "top_k": 3}
    argv = ["--data", args.data, "--strategies", "dnas,evolution:stentr,random", "--seeds", str(args.seeds),
            "--budget-flops", args.budget_flops, "--clip-frames", str(args.frames), "--clip-size", str(args.size),
            "--sampling-rate", str(args.sampling_rate), "--epochs", str(args.train_epochs), "--batch-size", "8",
            "--lr", "0.02", "--init", "torch", "--out", args.out, "--num-cpus", str(args.num_cpus or 2)]
    argv += [a for k, v in dnas.items() for a in ("--set", f"dnas.{k}={json.dumps(v)}")]
    if args.address:
        argv += ["--address", args.address]
    return job.main(argv + (["--verbose"] if args.verbose else []))


def main() -> None:
    from pipeline.options import add_ray_options

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    lam = sub.add_parser("lambda", help="lambda sweep on the synthetic data")
    lam.add_argument("--lams", type=lambda s: [float(x) for x in s.split(",")], default=[0.0, 0.03, 0.1, 0.3, 1.0])
    lam.add_argument("--epochs", type=int, default=6)
    lam.add_argument("--warmup", type=int, default=2)
    lam.add_argument("--arch-lr", type=float, default=0.03)
    u = sub.add_parser("ucf", help="dnas vs evolution vs random on a real dataset: a preset of jobs/compare.py")
    u.add_argument("--data", default="../shared/data/ucf101-6class")
    u.add_argument("--frames", type=int, default=8)
    u.add_argument("--size", type=int, default=56)
    u.add_argument("--sampling-rate", type=int, default=4)
    u.add_argument("--budget-flops", default="0.05G", help="the budget of every arm (default 0.05G)")
    u.add_argument("--seeds", type=int, default=2)
    u.add_argument("--epochs", type=int, default=10, help="search epochs")
    u.add_argument("--warmup", type=int, default=3)
    u.add_argument("--arch-lr", type=float, default=0.05)
    u.add_argument("--lam", type=float, default=0.03)
    u.add_argument("--train-epochs", type=int, default=10)
    u.add_argument("--full", action="store_true", help="the wider, deeper space (width x0.5, more stack layers)")
    lam.add_argument("--seed", type=int, default=0)
    for q in (lam, u):
        q.add_argument("--out", required=True)
        add_ray_options(q).set_defaults(num_cpus=2)
    args = p.parse_args()
    if args.cmd == "lambda":
        lambda_sweep(args)
    else:
        raise SystemExit(ucf(args))


if __name__ == "__main__":
    main()
