"""How fast are the scores? Analytic: specs scored per second (STEntr + HomoEntr + FLOPs + params together);
forward proxies (zen, maedet, naswot, synflow of ``e3d.proxies``): milliseconds per spec (one evaluation).

    python benchmarks/score_bench.py [--seconds 2] [--repeats 3] [--threads 1] [--no-forward]

Reference point: the official implementation builds a torch model per candidate (~9 iterations/s/core).
For comparison this also times building the torch module once (what a model-based scorer pays at least).
A forward proxy's time includes building the network and its re-initialisation (they are part of every
evaluation); the median of ``--repeats`` seeds is printed, NASWOT on a batch of 8 random clips.
"""
from __future__ import annotations

import argparse
import statistics
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
    parser.add_argument("--repeats", type=int, default=3, help="forward evaluations per proxy and spec")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the forward proxies")
    parser.add_argument("--no-forward", dest="forward", action="store_false", help="analytic scores only")
    args = parser.parse_args()
    if args.seconds <= 0 or args.repeats < 1 or args.threads < 1:
        parser.error("--seconds must be > 0, --repeats and --threads >= 1")
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
    if args.forward:
        forward_table(args.repeats, args.threads)


FORWARD_SPECS = (("E3D-S", None), ("X3D-S", None), ("E3D-S", (8, 112)), ("X3D-S", (8, 112)), ("E3D-S", (4, 56)))


def forward_table(repeats: int, threads: int) -> None:
    """Milliseconds per evaluation of every forward proxy (median over seeds), at the specs' own input and
    at the clip sizes a training study uses."""
    import torch

    from e3d.scores import FORWARD, get_score, score_names

    torch.set_num_threads(threads)
    names = score_names(FORWARD)
    print(f"\nforward proxies, ms per spec (median of {repeats}, {threads} torch thread(s)):")
    print(f"{'spec':10s} {'input':>9s} " + " ".join(f"{n:>9s}" for n in names))
    for name, inp in FORWARD_SPECS:
        spec = zoo.get(name) if inp is None else zoo.get(name).with_input(*inp)
        clips = torch.randn(8, 3, spec.frames, spec.size, spec.size)
        cells = []
        for proxy in names:
            score, times = get_score(proxy), []
            for seed in range(repeats):
                start = time.perf_counter()
                score(spec, seed=seed, batch=clips)
                times.append(time.perf_counter() - start)
            cells.append(f"{1e3 * statistics.median(times):9.0f}")
        print(f"{name:10s} {f'{spec.frames}x{spec.size}^2':>9s} " + " ".join(cells), flush=True)


if __name__ == "__main__":
    main()
