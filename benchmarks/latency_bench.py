"""Latency table and predictor on this machine, and ONNX vs PyTorch latency of E3D-S and X3D-S.

    python benchmarks/latency_bench.py                       # 24 random specs of the S search space, 1 thread
    python benchmarks/latency_bench.py --specs 30 --clock cpu --threads 1
    python benchmarks/latency_bench.py --skip-onnx --specs 20

1. Random specs: random walks through the E3D search space (e3d.space, from the Table 8 initial structure at
   13x160^2), each kept under the S preset's 1.9 GFLOPs and 83 layers, plus E3D-S and X3D-S. ``--calibrate``
   more random specs (disjoint from the evaluated ones) calibrate the per-network overhead.
2. Table build: every block of every spec measured into a fresh table (time, number of blocks); ``--keep-table``
   saves it.
3. Prediction error: end-to-end latency (median of ``--repeats`` measurements, each the median of ``--runs``
   calls, taken right after the spec's blocks) against the table's prediction; the distribution of the
   relative error. The same for the per-op model (``on_missing="estimate"``) fitted on the blocks of ``--fit``
   other random specs, predicting networks whose blocks it never saw.
4. ONNX (onnxruntime) vs PyTorch eager latency of E3D-S and X3D-S at their native 13x160^2 input.

Timings on a CPU shared with other work are noisy: every number is a median, the load average is printed
before and after, and ``--clock cpu`` (this thread's CPU time, threads=1) removes the time the process spends
descheduled (not cache or memory-bandwidth contention).
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from e3d import zoo  # noqa: E402
from e3d.cost import cost  # noqa: E402
from e3d.latency import LatencyTable, Measurer, network_blocks  # noqa: E402
from e3d.space import SearchSpace  # noqa: E402


def random_specs(n: int, seed: int, budget: float = 1.9e9, max_layers: int = 83, prefix: str = "rand") -> list:
    """``n`` distinct specs from random walks of the S search space under the budget and layer limit."""
    template = zoo.get("E3D-init-S")
    space = SearchSpace(template)
    rng = random.Random(seed)
    out, seen = [], set()
    genome = space.encode(template)
    while len(out) < n:
        for _ in range(rng.randint(3, 30)):
            child = space.mutate(genome, rng)
            c = cost(space.decode(child))
            if c.flops <= budget and c.layers <= max_layers:
                genome = child
        if genome not in seen:
            seen.add(genome)
            out.append(space.decode(genome, name=f"{prefix}{len(out)}"))
    return out


def distribution(errors: list[float]) -> str:
    a = sorted(abs(e) for e in errors)
    q = lambda p: a[min(len(a) - 1, int(p * len(a)))]  # noqa: E731
    bins = [(0, 5), (5, 10), (10, 15), (15, 20), (20, 1e9)]
    hist = "  ".join(f"{lo}-{hi if hi < 1e9 else ''}%: {sum(lo <= 100 * e < hi for e in a)}" for lo, hi in bins)
    signed = statistics.median(errors)
    return (f"|error| median {100 * statistics.median(a):.1f}%, p75 {100 * q(0.75):.1f}%, p90 {100 * q(0.9):.1f}%, "
            f"max {100 * a[-1]:.1f}%; signed median {100 * signed:+.1f}%; within 15%: "
            f"{sum(e <= 0.15 for e in a)}/{len(a)}\n    histogram  {hist}")


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--specs", type=int, default=24, help="random specs evaluated (E3D-S and X3D-S are added)")
    p.add_argument("--calibrate", type=int, default=6, help="other random specs that calibrate the overhead")
    p.add_argument("--fit", type=int, default=12, help="other random specs whose blocks fit the per-op model")
    p.add_argument("--keep-table", metavar="PATH", help="save the measured table there")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3, help="end-to-end measurements per spec (median)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="cpu",
                   help="cpu (default): this thread's CPU time, repeatable on a shared CPU; wall: on a dedicated one")
    p.add_argument("--stat", choices=("median", "min"), default="min",
                   help="min (default): the least-disturbed run; median: on a dedicated CPU")
    p.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-onnx", action="store_true", help="skip the ONNX vs PyTorch comparison")
    args = p.parse_args(argv)

    print(f"torch {torch.__version__}, {args.threads} thread(s), backend {args.backend}, clock {args.clock}, "
          f"stat {args.stat}, warm-up {args.warmup} + {args.runs} runs; {load()}")
    evaluated = [zoo.get("E3D-S"), zoo.get("X3D-S")] + random_specs(args.specs, args.seed)
    calib = random_specs(args.calibrate, args.seed + 1000, prefix="calib")
    fit = random_specs(args.fit, args.seed + 2000, prefix="fit")
    measurer = Measurer(threads=args.threads, runs=args.runs, warmup=args.warmup, clock=args.clock,
                        stat=args.stat, backend=args.backend)
    table = LatencyTable(measurer=measurer, path=Path(args.keep_table) if args.keep_table else None)

    # -- 2. table build, each spec's end-to-end latency measured right after its blocks -------------------
    # (on a shared CPU the load drifts over minutes: measuring a spec's blocks and the whole network close
    # together keeps the comparison about the predictor, not about the load)
    build_s, measured = 0.0, {}
    t_all = time.perf_counter()
    for spec in calib + evaluated:
        t0 = time.perf_counter()
        table.fill(spec, save=False)
        build_s += time.perf_counter() - t0
        measured[spec.name] = statistics.median(table.measure(spec) for _ in range(args.repeats))
    t0 = time.perf_counter()
    table.fill(fit, save=False)  # blocks for the per-op model only
    build_s += time.perf_counter() - t0
    uses = sum(n for s in evaluated + calib + fit for _, n in network_blocks(s))
    n_specs = len(evaluated) + len(calib) + len(fit)
    print(f"\n[table] {len(table.entries)} distinct blocks ({uses} block uses in {n_specs} "
          f"specs) measured in {build_s:.1f} s ({1000 * build_s / len(table.entries):.0f} ms/block); "
          f"device {table.device_name}; {time.perf_counter() - t_all:.0f} s with the end-to-end runs")
    if args.keep_table:
        table.save()

    # -- 3. prediction error --------------------------------------------------------------------------
    overhead = table.calibrate(calib, measured=[measured[s.name] for s in calib], save=False)
    print(f"[calibrate] overhead {overhead:+.2f} ms from {len(calib)} specs "
          f"(residuals {', '.join(f'{r:+.1f}' for r in table.calibration['residuals_ms'])} ms)")
    fit_keys = {k for sp in fit for k, _ in network_blocks(sp)}
    eval_keys = {k for sp in evaluated for k, _ in network_blocks(sp)}
    estimator = LatencyTable(measurer=measurer, entries={k: table.entries[k] for k in fit_keys - eval_keys},
                             overhead_ms=overhead, on_missing="estimate")
    model = estimator.model()
    unseen = {k: table.entries[k] for k in eval_keys if k not in estimator.entries}
    block_err = [abs(model.ms(k) / v - 1) for k, v in unseen.items()]
    print(f"[per-op model] fitted on {model.fitted_on} blocks of {len(fit)} other specs: in-sample |error| "
          f"median {100 * model.median_rel_error:.1f}%; on the {len(unseen)} blocks of the evaluated specs it never "
          f"saw: median {100 * statistics.median(block_err):.1f}%, max {100 * max(block_err):.0f}%")

    print(f"\n{'spec':8s} {'GFLOPs':>6s} {'layers':>6s} {'measured':>9s} {'table':>9s} {'err':>7s} "
          f"{'per-op':>9s} {'err':>7s}")
    errors, est_errors = [], []
    for spec in evaluated:
        pred, est, ms = table.predict(spec), estimator.predict(spec), measured[spec.name]
        errors.append(pred / ms - 1)
        est_errors.append(est / ms - 1)
        c = cost(spec)
        print(f"{spec.name:8s} {c.gflops:6.2f} {c.layers:6d} {ms:7.1f}ms {pred:7.1f}ms {100 * errors[-1]:+6.1f}% "
              f"{est:7.1f}ms {100 * est_errors[-1]:+6.1f}%")
    print(f"({load()})")
    print(f"\n[table predictor]   {len(errors)} specs: {distribution(errors)}")
    print(f"[per-op predictor]  {len(est_errors)} specs: {distribution(est_errors)}")

    # -- 4. ONNX vs PyTorch at the native input ----------------------------------------------------
    if not args.skip_onnx:
        from e3d.export import export_onnx, onnx_latency

        print()
        torch_m = Measurer(threads=args.threads, runs=args.runs, warmup=args.warmup, clock=args.clock, stat=args.stat)
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("E3D-S", "X3D-S"):
                spec = zoo.get(name)
                report = export_onnx(spec, Path(tmp) / f"{name}.onnx", threads=args.threads)
                ort_ms = statistics.median(onnx_latency(report.path, threads=args.threads, warmup=args.warmup,
                                                        runs=args.runs, stat=args.stat, clock=args.clock)
                                           for _ in range(args.repeats))
                torch_ms = statistics.median(torch_m.network_ms(spec) for _ in range(args.repeats))
                print(f"[onnx] {name} {spec.frames}x{spec.size}^2: onnxruntime {ort_ms:.1f} ms, PyTorch eager "
                      f"{torch_ms:.1f} ms ({torch_ms / ort_ms:.2f}x); export {report.export_s:.1f} s, "
                      f"{report.bytes / 1e6:.1f} MB, max |diff| {report.max_abs_diff:.1e}")
        print(load())
    return 0


if __name__ == "__main__":
    sys.exit(main())
