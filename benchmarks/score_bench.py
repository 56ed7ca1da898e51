"""How fast is the analytic scorer? Specs scored per second (STEntr + HomoEntr + FLOPs + params together).

    python benchmarks/score_bench.py [--seconds 2]

Reference point: the official implementation builds a torch model per candidate (~9 iterations/s/core).
For comparison this also times building the torch module once (what a model-based scorer pays at least).
"""
from __future__ import annotations

import argparse
import time

from e3d import zoo
from e3d.cost import cost
from e3d.scores import homoentr, stentr


def per_second(fn, seconds: float) -> tuple[float, int]:
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(100):
            fn()
        n += 100
    return n / elapsed, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    print(f"{'spec':10s} {'scored/s':>10s} {'us/spec':>8s}  (stentr + homoentr + flops + params)")
    for name in ("E3D-S", "E3D-M", "E3D-L", "X3D-S"):
        spec = zoo.get(name)

        def score_all(spec=spec):
            stentr(spec), homoentr(spec), cost(spec)

        rate, _ = per_second(score_all, args.seconds)
        print(f"{name:10s} {rate:10.0f} {1e6 / rate:8.1f}")
    from e3d.model import build_model

    spec = zoo.get("E3D-S")
    start = time.perf_counter()
    build_model(spec)
    print(f"for scale: building the E3D-S torch module once takes {1e3 * (time.perf_counter() - start):.1f} ms")


if __name__ == "__main__":
    main()
