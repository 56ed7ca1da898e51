"""E3D Fig. 4: forward-inference entropy (MAE-DET's realisation) vs the analytic HomoEntr-Score.

    python benchmarks/fig4_forward_entropy.py [--evals 1000] [--batch 8] [--padding valid|same]
                                              [--out docs/img/fig4_forward_entropy.png]

The paper's simulation (Sec. 4.4): a three-layer 3D net on a 5x5x5 input, kernels 1x1x1, 3x3x3, 1x1x1,
stride 1, every width C in {16, 32, 64, 128}. Each forward evaluation re-initialises the convs from N(0, 1),
draws a Gaussian input of ``batch`` clips of C x 5 x 5 x 5 and takes ``log std(F) + ln C`` of the output
(:func:`e3d.proxies.forward_entropy`, the same code as the ``maedet`` proxy). HomoEntr is the formula for
those three layers: ``1/2 [ln C + ln 27C + ln C] + ln C``. Prints the entropy (forward mean, std, min, max
beside HomoEntr) and the time for all evaluations of each, and draws (a) entropy vs channels with the
forward min-max range filled, (b) time vs channels. Without padding ("valid", the default) every output
sees a full 3x3x3 window, so the expected variance is exactly the product HomoEntr assumes; with "same"
padding the border outputs see fewer inputs and the forward value sits lower.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from torch import nn

from e3d.proxies import forward_entropy, gaussian_init, trunk

CHANNELS = (16, 32, 64, 128)
KERNELS = (1, 3, 1)
INPUT = 5


def three_layer_net(c: int, padding: str) -> nn.Sequential:
    return nn.Sequential(*[nn.Conv3d(c, c, k, padding=k // 2 if padding == "same" else 0, bias=False)
                           for k in KERNELS])


def homoentr(c: int) -> float:
    """HomoEntr of the three layers: 1/2 sum ln(C_in * k^3) + ln(C_out)."""
    return 0.5 * sum(math.log(c * k ** 3) for k in KERNELS) + math.log(c)


def forward_values(c: int, evals: int, batch: int, padding: str, seed: int) -> tuple[list[float], float]:
    torch.manual_seed(seed)
    net = three_layer_net(c, padding)
    cuts = trunk(net)
    values = []
    start = time.perf_counter()
    for _ in range(evals):
        gaussian_init(net)  # a fresh N(0, 1) draw of every weight per evaluation, as the paper does
        values.append(forward_entropy(net, cuts, torch.randn(batch, c, INPUT, INPUT, INPUT)))
    return values, time.perf_counter() - start


def analytic_time(c: int, evals: int) -> float:
    start = time.perf_counter()
    for _ in range(evals):
        homoentr(c)
    return time.perf_counter() - start


def plot(rows: list[dict], path: Path, evals: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ch = [r["channels"] for r in rows]
    fig, (a, d, b) = plt.subplots(1, 3, figsize=(14, 4))
    a.fill_between(ch, [r["min"] for r in rows], [r["max"] for r in rows], alpha=0.25, color="C1",
                   label="Forward (min-max)")
    a.plot(ch, [r["mean"] for r in rows], "o-", color="C1", label="Forward (mean)")
    a.plot(ch, [r["homoentr"] for r in rows], "s--", color="C0", label="HomoEntr-Score")
    a.set(xscale="log", xlabel="channels C", ylabel="entropy (nats)", title="(a) entropy")
    d.fill_between(ch, [r["min"] - r["homoentr"] for r in rows], [r["max"] - r["homoentr"] for r in rows],
                   alpha=0.25, color="C1", label="Forward (min-max)")
    d.errorbar(ch, [r["mean"] - r["homoentr"] for r in rows], yerr=[r["std"] for r in rows], fmt="o-", color="C1",
               capsize=3, label="Forward (mean +- std)")
    d.axhline(0.0, ls="--", color="C0", label="HomoEntr-Score")
    d.set(xscale="log", xlabel="channels C", ylabel="Forward - HomoEntr (nats)", title="(a') difference")
    b.plot(ch, [r["forward_s"] for r in rows], "o-", color="C1", label="Forward")
    b.plot(ch, [r["analytic_s"] for r in rows], "s--", color="C0", label="HomoEntr-Score")
    b.set(xscale="log", yscale="log", xlabel="channels C", ylabel=f"seconds for {evals} evaluations",
          title="(b) time")
    for ax in (a, d, b):
        ax.set_xticks(ch, [str(c) for c in ch])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"Three-layer 3D net on 5x5x5 (kernels 1,3,1), {evals} evaluations per width")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--evals", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=8, help="Gaussian input clips per forward evaluation")
    parser.add_argument("--padding", choices=("valid", "same"), default="valid")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/img/fig4_forward_entropy.png"))
    args = parser.parse_args()
    if args.evals < 2 or args.batch < 1 or args.threads < 1:
        parser.error("--evals must be >= 2, --batch and --threads >= 1")
    torch.set_num_threads(args.threads)

    rows = []
    print(f"{args.evals} evaluations per width, batch {args.batch}, {args.padding} padding, "
          f"{args.threads} torch thread(s)")
    print(f"{'C':>4s} {'HomoEntr':>9s} {'fwd mean':>9s} {'fwd std':>8s} {'fwd min':>8s} {'fwd max':>8s} "
          f"{'mean-Homo':>9s} {'fwd time':>9s} {'formula':>9s}")
    for c in CHANNELS:
        values, seconds = forward_values(c, args.evals, args.batch, args.padding, args.seed)
        mean = math.fsum(values) / len(values)
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))
        row = {"channels": c, "homoentr": homoentr(c), "mean": mean, "std": std, "min": min(values),
               "max": max(values), "forward_s": seconds, "analytic_s": analytic_time(c, args.evals)}
        rows.append(row)
        print(f"{c:4d} {row['homoentr']:9.3f} {mean:9.3f} {std:8.3f} {row['min']:8.3f} {row['max']:8.3f} "
              f"{mean - row['homoentr']:+9.3f} {seconds:8.2f}s {1e3 * row['analytic_s']:7.3f}ms", flush=True)
    plot(rows, args.out, args.evals)
    print(f"plot: {args.out}")


if __name__ == "__main__":
    main()
