"""Training throughput (clips/s) and inference latency of E3D-S vs X3D-S at the same input, on this CPU
and on a GPU when there is one.

    python benchmarks/train_bench.py [--frames 13 --size 160] [--threads 1] [--rounds 3] [--json out.json]

Both networks are built by ``e3d.model.build_model`` (X3D-S in its zoo form: 5x1x1 temporal stem conv,
swish) with the same number of classes (174, Sth-Sth) and fed the same random clips:

- training: SGD (momentum 0.9, weight decay 5e-5) steps on a batch of ``--train-batch`` clips, forward +
  backward + update; clips/s;
- inference: eval mode, no grad: the latency of one clip (batch 1), and the time per clip at batch
  ``--infer-batch`` (the paper's Table 13 reports ms/video at batch 16 on a V100).

The two models are measured alternately in ``--rounds`` rounds and the median is reported, so load from
other processes on a shared machine hits both alike. On CPU the figures are also given per CPU-second of
this process (with one thread, that is the compute alone, little distorted by other load). On CUDA:
mixed precision (bfloat16 where supported), cudnn.benchmark, synchronised timings.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from e3d import zoo
from e3d.cost import cost
from e3d.model import build_model

MODELS = ("E3D-S", "X3D-S")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    _sync(device)
    w, c = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - w, time.process_time() - c


def make_steps(spec, device: torch.device, train_batch: int, infer_batch: int, amp: bool):
    model = build_model(spec).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last_3d)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-5)
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
    use_amp = amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and dtype == torch.float16)
    shape = (3, spec.frames, spec.size, spec.size)
    g = torch.Generator().manual_seed(0)
    xb = torch.randn(train_batch, *shape, generator=g).to(device)
    yb = torch.randint(0, spec.num_classes, (train_batch,), generator=g).to(device)
    x1 = torch.randn(1, *shape, generator=g).to(device)
    xi = torch.randn(infer_batch, *shape, generator=g).to(device)

    def ctx():
        return torch.autocast("cuda", dtype=dtype) if use_amp else torch.autocast("cpu", enabled=False)

    def train_step():
        model.train()
        with ctx():
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    @torch.no_grad()
    def infer(x):
        model.eval()
        with ctx():
            model(x)

    return train_step, (lambda: infer(x1)), (lambda: infer(xi))


def bench(device: torch.device, args) -> dict:
    specs = {n: zoo.get(n).with_input(args.frames, args.size).with_num_classes(174) for n in MODELS}
    steps = {n: make_steps(s, device, args.train_batch, args.infer_batch, not args.no_amp) for n, s in specs.items()}
    samples: dict = {n: {"train": [], "lat1": [], "latb": []} for n in MODELS}
    for n in MODELS:  # warm-up (allocator, cudnn autotuning, thread pools)
        for fn in steps[n]:
            for _ in range(args.warmup):
                fn()
    for _ in range(args.rounds):
        for n in MODELS:
            train, lat1, latb = steps[n]
            samples[n]["train"] += [_timed(train, device) for _ in range(args.train_iters)]
            samples[n]["lat1"] += [_timed(lat1, device) for _ in range(args.infer_iters)]
            samples[n]["latb"] += [_timed(latb, device) for _ in range(max(1, args.infer_iters // 2))]
    out = {}
    for n, s in samples.items():
        c = cost(specs[n])
        med = {k: (statistics.median(w for w, _ in v), statistics.median(cp for _, cp in v)) for k, v in s.items()}
        row = {"gflops": round(c.gflops, 3), "mparams": round(c.mparams, 3),
               "train_clips_per_s": args.train_batch / med["train"][0],
               "latency_ms_batch1": 1000 * med["lat1"][0],
               f"ms_per_clip_batch{args.infer_batch}": 1000 * med["latb"][0] / args.infer_batch}
        if device.type == "cpu":
            row |= {"train_clips_per_cpu_s": args.train_batch / med["train"][1],
                    "latency_cpu_ms_batch1": 1000 * med["lat1"][1]}
        out[n] = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}
    e, x = out["E3D-S"], out["X3D-S"]
    out["ratio_E3D_over_X3D"] = {
        "train_clips_per_s": round(e["train_clips_per_s"] / x["train_clips_per_s"], 3),
        "latency_batch1": round(e["latency_ms_batch1"] / x["latency_ms_batch1"], 3),
        f"ms_per_clip_batch{args.infer_batch}": round(e[f"ms_per_clip_batch{args.infer_batch}"] /
                                                      x[f"ms_per_clip_batch{args.infer_batch}"], 3)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=13)
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--train-batch", type=int, default=4)
    p.add_argument("--infer-batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--train-iters", type=int, default=1, help="training steps per model per round")
    p.add_argument("--infer-iters", type=int, default=2, help="batch-1 inferences per model per round")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--no-amp", action="store_true")
    p.add_argument("--no-gpu", action="store_true")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    results = {"input": f"{args.frames}x{args.size}x{args.size}", "threads": args.threads,
               "cpu": _cpu_name(), "load_avg": os.getloadavg()}
    results["cpu_results"] = bench(torch.device("cpu"), args)
    if torch.cuda.is_available() and not args.no_gpu:
        gpu_args = argparse.Namespace(**(vars(args) | {"train_batch": max(16, args.train_batch), "rounds": 5,
                                                       "train_iters": 5, "infer_iters": 20, "warmup": 5}))
        results["gpu"] = torch.cuda.get_device_name(0)
        results["gpu_results"] = bench(torch.device("cuda"), gpu_args)
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
