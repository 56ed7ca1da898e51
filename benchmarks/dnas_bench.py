#!/usr/bin/env python
"""DNAS measurements (docs/dnas.md): the lambda sweep on the synthetic data, and dnas vs evolution on UCF101.

    python benchmarks/dnas_bench.py lambda --out runs/dnas-lambda --lams 0,0.03,0.1,0.3,1
    python benchmarks/dnas_bench.py ucf --data ../shared/data/ucf101-6class-dev --frames 8 --size 56 \\
        --out runs/dnas-ucf                       # reduced scale (what docs/dnas.md quotes)
    python benchmarks/dnas_bench.py ucf --data ../shared/data/ucf101-6class-dev --frames 8 --size 112 \\
        --full --out runs/dnas-ucf-112            # the issue's scale (8x112^2)

``lambda``: the same search (same data, seed, settings) for each lambda of Eq. 5; prints the derived network's
FLOPs per lambda. ``ucf``: the main job twice on the same data, clip and training recipe: ``--strategy dnas``
(supernet search, derived network trained), then ``--strategy evolution`` with the FLOPs budget set to the
dnas winner's FLOPs (its winner trained the same way); prints accuracy, FLOPs and each search's cost.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

SMALL_SPACE = {"width_mult": 0.25, "width_divisor": 4, "max_stack": [0, 2, 2, 2, 2, 1]}
# at 8x56^2 the 0.25-wide space derives networks below Table 8's initial structure (0.047 G), the evolution's start
UCF_SPACE = SMALL_SPACE | {"width_mult": 0.375}


def lambda_sweep(args: argparse.Namespace) -> list[dict]:
    from e3d.strategy import Budget, Clip, SearchContext, SearchRequest, get_strategy
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
        outcome = get_strategy("dnas").search(request, SearchContext(dataset=dataset, clip=clip))
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


def ucf(args: argparse.Namespace) -> list[dict]:
    from e3d.strategy import Budget, Clip, SearchRequest
    from pipeline.options import init_ray
    from pipeline.search_and_train import DataConfig, JobConfig, Selection, demo_request, run_job
    from pipeline.train.recipe import Recipe
    from pipeline.video.clip import ClipConfig

    out = Path(args.out).resolve()
    init_ray(args)
    clip = ClipConfig(frames=args.frames, sampling_rate=args.sampling_rate, size=args.size,
                      train_scale=(args.size, round(args.size * 8 / 7)), hflip=True)
    recipe = Recipe.paper("sthsth").scaled(epochs=args.train_epochs, batch_size=8, lr=0.02, init="torch")
    data = DataConfig(path=str(Path(args.data).resolve()))
    space = ({"width_mult": 0.5, "width_divisor": 8, "max_stack": [0, 2, 4, 2, 2, 1]} if args.full else UCF_SPACE)
    dnas_opts = space | {"epochs": args.epochs, "warmup_epochs": args.warmup, "batch_size": 8, "arch_lr": args.arch_lr,
                         "lam": args.lam, "top_k": 3, "split": [0.5, 0.5, 0.0]}
    base = JobConfig(data=data, clip=clip, recipe=recipe, selection=Selection(top_k=1), eval_clips=2, islands=None,
                     log_model=False)
    rows = []
    dnas = run_job(replace(base, out_dir=str(out / "dnas"), strategy="dnas",
                           request=SearchRequest(budget=Budget(), clip=Clip(args.frames, args.size), seed=args.seed,
                                                 options=dnas_opts)), verbose=True)
    rows.append(_row("dnas", dnas))
    budget = dnas.outcome.best.flops
    evo_request = demo_request("evolution")
    evo_request = replace(evo_request, budget=replace(evo_request.budget, flops=float(budget)), seed=args.seed,
                          options=dict(evo_request.options) | _initial_within(budget, args, out))
    evo = run_job(replace(base, out_dir=str(out / "evolution"), strategy="evolution", request=evo_request), verbose=True)
    rows.append(_row("evolution", evo))
    (out / "comparison.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\nclips {args.frames}x{args.size}^2, training {args.train_epochs} epochs (same recipe); FLOPs budget of "
          f"evolution = dnas winner's {budget / 1e9:.4f} G")
    print("| strategy | GFLOPs | params (M) | multi-view top-1 | val top-1 | search wall s | search CPU-s | "
          "train s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['strategy']} | {r['gflops']:.4f} | {r['mparams']:.3f} | {r['mv_top1']:.1f} | {r['val_top1']:.1f} | "
              f"{r['search_wall_s']:.0f} | {r['search_cpu_s']:.0f} | {r['train_s']:.0f} |")
    return rows


def _initial_within(budget: float, args: argparse.Namespace, out: Path) -> dict:
    """Evolution starts from Table 8's structure; when it exceeds the budget at this clip, from the same
    structure with every width halved (rounded to 8) until it fits (written to ``out/evolution_initial.json``)."""
    from e3d import zoo
    from e3d.cost import cost
    from e3d.spec import save_specs

    spec = zoo.initial_structure("S").with_input(args.frames, args.size)
    halve = lambda w: max(8, int(w / 2 / 8 + 0.5) * 8)  # noqa: E731
    if cost(spec).flops <= budget:
        return {}
    while cost(spec).flops > budget:
        if max(spec.widths) == 8:
            raise SystemExit(f"even the narrowest initial structure exceeds the dnas winner's {budget / 1e9:.4f} G")
        stages = tuple(replace(st, out=halve(st.out), bottleneck=halve(st.bottleneck)) for st in spec.stages)
        spec = spec.replace(name="E3D-init-S-narrow", stem=replace(spec.stem, out=halve(spec.stem.out)), stages=stages)
    out.mkdir(parents=True, exist_ok=True)
    save_specs(spec, out / "evolution_initial.json")
    return {"initial": str(out / "evolution_initial.json")}


def _row(name: str, result) -> dict:
    cand = result.candidates[0]
    return {"strategy": name, "arch": result.best_spec.to_dict(), "gflops": cand.flops / 1e9,
            "mparams": cand.params / 1e6, "mv_top1": cand.mv_top1, "val_top1": cand.val_top1,
            "search_wall_s": result.outcome.wall_s, "search_cpu_s": result.outcome.cpu_s or 0.0,
            "train_s": cand.train_time_s, "job_wall_s": result.wall_s, "error": cand.error}


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
    u = sub.add_parser("ucf", help="dnas vs evolution on a real dataset, same recipe")
    u.add_argument("--data", default="../shared/data/ucf101-6class-dev")
    u.add_argument("--frames", type=int, default=8)
    u.add_argument("--size", type=int, default=56)
    u.add_argument("--sampling-rate", type=int, default=4)
    u.add_argument("--epochs", type=int, default=10, help="search epochs")
    u.add_argument("--warmup", type=int, default=3)
    u.add_argument("--arch-lr", type=float, default=0.05)
    u.add_argument("--lam", type=float, default=0.03)
    u.add_argument("--train-epochs", type=int, default=10)
    u.add_argument("--full", action="store_true", help="the wider, deeper space (width x0.5, more stack layers)")
    for q in (lam, u):
        q.add_argument("--out", required=True)
        q.add_argument("--seed", type=int, default=0)
        add_ray_options(q).set_defaults(num_cpus=2)
    args = p.parse_args()
    (lambda_sweep if args.cmd == "lambda" else ucf)(args)


if __name__ == "__main__":
    main()
