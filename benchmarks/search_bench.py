"""How fast is the evolutionary search? Iterations per second and the paper setting's wall time.

    python benchmarks/search_bench.py                 # S preset: rate, then the full paper setting (500k)
    python benchmarks/search_bench.py --presets S,M,L # the three paper searches, with what they found
    python benchmarks/search_bench.py --quick         # 50k iterations only

Reference: the official implementation builds a torch model per candidate, about 9 iterations/s on one core
of this machine (~16 h for the E3D-S search). Also timed here, for scale: the same loop without the
per-stage cache (decode every child to a spec and call e3d.cost.cost + e3d.scores.stentr on it).
"""
from __future__ import annotations

import argparse
import json
import random
import time

from e3d import zoo
from e3d.cost import cost
from e3d.evolution import PRESETS, Evolution, SearchConfig, search
from e3d.scores import InfiniteScoreError, stentr
from e3d.space import describe

OFFICIAL_RATE = 9.0  # iterations/s, one core


def uncached_rate(config: SearchConfig, iterations: int) -> float:
    """Mutate + decode + cost() + stentr() per child, parents from a fixed warm population."""
    evo = Evolution(config, config.initial_spec())
    evo.run(20_000)
    parents = [i.genome for i in evo.population]
    rng, space = random.Random(0), evo.space
    start = time.perf_counter()
    for _ in range(iterations):
        spec = space.decode(space.mutate(parents[rng.randrange(len(parents))], rng))
        if cost(spec).flops <= config.budget_flops:
            try:
                stentr(spec)
            except InfiniteScoreError:
                pass
    return iterations / (time.perf_counter() - start)


def run_preset(preset: str, iterations: int, seed: int, **overrides) -> dict:
    config = SearchConfig.from_preset(preset, iterations=iterations, seed=seed, **overrides)
    cpu = time.process_time()
    result = search(config, progress=False)
    cpu = time.process_time() - cpu
    best = result.population[0]
    ref = zoo.get(f"E3D-{preset}")
    return {"preset": preset, "iterations": iterations, "wall_s": round(result.wall_s, 2), "cpu_s": round(cpu, 2),
            "iterations_per_s": round(result.iterations_per_s), "cpu_iterations_per_s": round(iterations / cpu), "best_stentr": round(best.score, 3),
            "best_gflops": round(best.flops / 1e9, 4), "best_mparams": round(best.params / 1e6, 3),
            "best_layers": best.layers, "best": describe(best.genome),
            "reference": ref.name, "reference_stentr": round(stentr(ref), 3),
            "reference_gflops": round(cost(ref).flops / 1e9, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", default="S", help="comma-separated presets to run at full length (S,M,L)")
    parser.add_argument("--iterations", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="50k iterations")
    parser.add_argument("--official-depth-caps", action="store_true",
                        help="cap blocks per stage as the official code does (3, then max_layers // 12)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per result")
    args = parser.parse_args()
    iterations = 50_000 if args.quick else args.iterations

    base = uncached_rate(SearchConfig.from_preset("S"), 5_000)
    print(f"uncached loop (decode + cost + stentr per child): {base:,.0f} it/s; official code ~{OFFICIAL_RATE:.0f} it/s")
    for preset in args.presets.split(","):
        preset = preset.strip()
        caps = {"max_depth": PRESETS[preset].official_depth_caps} if args.official_depth_caps else {}
        r = run_preset(preset, iterations, args.seed, **caps)
        if args.json:
            print(json.dumps(r))
            continue
        print(f"\n== preset {r['preset']}: {r['iterations']:,} iterations, population 512, seed {args.seed}")
        print(f"wall {r['wall_s']:.2f} s ({r['cpu_s']:.2f} s CPU), {r['iterations_per_s']:,} it/s "
              f"({r['iterations_per_s'] / OFFICIAL_RATE:,.0f}x the official ~9 it/s; "
              f"the official code would take ~{r['iterations'] / OFFICIAL_RATE / 3600:.1f} h)")
        print(f"best   STEntr {r['best_stentr']:.3f}  {r['best_gflops']:.4f} GFLOPs  {r['best_mparams']:.3f} M params  "
              f"{r['best_layers']} layers\n       {r['best']}")
        print(f"{r['reference']:6s} STEntr {r['reference_stentr']:.3f}  {r['reference_gflops']:.4f} GFLOPs")


if __name__ == "__main__":
    main()
