"""Search strategies at equal evaluation budgets: best score found and cost (the random sampler is a hot path).

    python benchmarks/strategy_bench.py [--preset S] [--budgets 1000,5000] [--seeds 3]

Prints, per strategy and budget (iterations for evolution, specs sampled for random), the mean best score
over seeds, its range, wall seconds and CPU seconds, and the random sampler's milliseconds per spec.
"""
from __future__ import annotations

import argparse
import statistics

from e3d.evolution import PRESETS
from e3d.strategy import Budget, Clip, SearchRequest, get_strategy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="S")
    p.add_argument("--budgets", default="1000,5000")
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args()
    preset = PRESETS[args.preset]
    frames, size = preset.frames, preset.size
    budget = Budget(flops=preset.budget_flops, layers=preset.max_layers)
    print(f"preset {args.preset}: {frames}x{size}^2, {preset.budget_flops / 1e9:g} GFLOPs, {preset.max_layers} layers; "
          f"{args.seeds} seeds")
    print(f"{'strategy':10s} {'budget':>8s} {'best (mean)':>12s} {'min':>9s} {'max':>9s} {'wall s':>8s} {'cpu s':>8s} "
          f"{'ms/spec':>8s}")
    for n in (int(b) for b in args.budgets.split(",")):
        for name, options in (("evolution", {"iterations": n, "population_size": 512, "preset": args.preset}),
                              ("random", {"samples": n, "chunk": max(1, n // 10), "preset": args.preset})):
            runs = [get_strategy(name).search(SearchRequest(budget=budget, clip=Clip(frames, size), seed=s,
                                                            options=options)) for s in range(args.seeds)]
            best = [r.best.score for r in runs]
            wall, cpu = statistics.mean(r.wall_s for r in runs), statistics.mean(r.cpu_s or 0 for r in runs)
            print(f"{name:10s} {n:8d} {statistics.mean(best):12.3f} {min(best):9.3f} {max(best):9.3f} {wall:8.2f} "
                  f"{cpu:8.2f} {1000 * cpu / n:8.3f}")


if __name__ == "__main__":
    main()
