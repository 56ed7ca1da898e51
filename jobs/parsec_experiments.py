#!/usr/bin/env python
"""PARSEC's measurements (docs/parsec.md): Table 1, the cost coefficient beta, on the synthetic data; and the
searched net vs random nets of its FLOPs band vs the evolution winner, on a real dataset.

    python jobs/parsec_experiments.py table1 --out runs/parsec-table1              # beta in {0, .05, .1, .2}
    python jobs/parsec_experiments.py table1 --out OUT --betas 0 0.2 --epochs 24 --seed 1
    python jobs/parsec_experiments.py compare --data ../shared/data/ucf101-6class-dev --out runs/parsec-ucf \\
        --search-epochs 6 --batch-size 4 --arch-lr 0.05 --train-epochs 6 --band 16

Both run the `parsec` strategy as jobs/search_and_train.py does (Ray Train); rerunning the same command with the
same --out resumes (finished searches and trainings are kept). The defaults are reduced-scale runs that fit 2
CPU cores; docs/parsec.md gives a full run's values. Outputs in --out: `table1` writes table1.md and table1.json
(one search per beta under beta-<beta>/, the synthetic clips under data/); `compare` writes compare.md and
compare.json (search-parsec/, search-evolution/, train/). FLOPs are multiply-accumulates; 0.03G = 0.03e9.
Exit status 1: a compared network's training failed; 2: a bad option (one line naming it); 28: the disk is full
(one line; free space and rerun: it resumes; docs/faults.md).
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from e3d.options import Parser, non_negative_int, parse_amount, parse_count, positive_float, positive_int  # noqa: E402
from pipeline.faults import RECORDS_BYTES, check_free_space, exits_on_out_of_space  # noqa: E402
from pipeline.options import add_ray_options, check_out, init_ray  # noqa: E402
from pipeline.parsec.experiments import BandComparisonSettings, Table1Settings  # noqa: E402 - no torch, no Ray

T1, BAND = Table1Settings, BandComparisonSettings  # their class attributes are the defaults, defined once there


def _g(flops: float) -> str:
    return f"{flops / 1e9:g}G"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(description=__doc__.split("\n")[0], epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="{table1,compare}")

    t = sub.add_parser("table1", help="Table 1: the derived FLOPs for several cost coefficients, synthetic data",
                       description="Table 1: one parsec search per cost coefficient beta on the synthetic motion "
                                   "dataset (decoded once, centre clips), the derived and expected FLOPs of each.")
    g = t.add_argument_group("experiment")
    g.add_argument("--out", required=True, help="output folder (resumes when it exists)")
    g.add_argument("--betas", type=float, nargs="+", default=list(T1.betas), metavar="BETA",
                   help=f"cost coefficients, one search each (default {' '.join(f'{b:g}' for b in T1.betas)})")
    g.add_argument("--epochs", type=positive_int, default=T1.epochs, help=f"search epochs (default {T1.epochs})")
    g.add_argument("--samples", type=positive_int, default=T1.samples,
                   help=f"K architectures per step (default {T1.samples})")
    g.add_argument("--batch-size", type=positive_int, default=T1.batch_size,
                   help=f"clips per step (default {T1.batch_size})")
    g.add_argument("--lr", type=positive_float, default=T1.lr, help=f"the weights' learning rate (default {T1.lr})")
    g.add_argument("--arch-lr", type=positive_float, default=T1.arch_lr,
                   help=f"Adam's rate for alpha (default {T1.arch_lr}; Table 2: 0.015, for 800 epochs)")
    g.add_argument("--t-min", type=parse_amount, default=T1.t_min, metavar="FLOPS",
                   help=f"lower end of the FLOPs range (default {_g(T1.t_min)})")
    g.add_argument("--t-max", type=parse_amount, default=T1.t_max, metavar="FLOPS",
                   help=f"upper end of the FLOPs range (default {_g(T1.t_max)})")
    g.add_argument("--frames", type=positive_int, default=T1.frames, help=f"frames per clip (default {T1.frames})")
    g.add_argument("--size", type=positive_int, default=T1.size, help=f"crop size (default {T1.size})")
    g.add_argument("--sampling-rate", type=positive_int, default=T1.sampling_rate,
                   help=f"frames skipped between sampled frames (default {T1.sampling_rate})")
    g.add_argument("--classes", type=positive_int, default=T1.classes,
                   help=f"classes of the synthetic dataset, 2 to 8 (default {T1.classes})")
    g.add_argument("--clips-per-class", type=positive_int, default=T1.clips_per_class,
                   help=f"synthetic clips per class, a quarter of them for validation (default {T1.clips_per_class})")
    g.add_argument("--seed", type=non_negative_int, default=T1.seed, help=f"the searches' seed (default {T1.seed})")
    g.add_argument("--data-seed", type=non_negative_int, default=T1.data_seed,
                   help=f"the synthetic dataset's seed (default {T1.data_seed})")
    add_ray_options(t).set_defaults(num_cpus=2)

    c = sub.add_parser("compare", help="the searched net vs random nets of the FLOPs band vs the evolution winner",
                       description="PARSEC's most probable net vs --band random nets of the same FLOPs band vs the "
                                   "evolution winner at the searched net's FLOPs, all trained with one recipe.")
    g = c.add_argument_group("experiment")
    g.add_argument("--data", required=True, help="a video dataset folder (any supported format)")
    g.add_argument("--out", required=True, help="output folder (resumes when it exists)")
    g.add_argument("--t-max", type=parse_amount, default=BAND.t_max, metavar="FLOPS",
                   help=f"upper end of the FLOPs range, and the budget (default {_g(BAND.t_max)})")
    g.add_argument("--t-min", type=parse_amount, default=BAND.t_min, metavar="FLOPS",
                   help=f"lower end of the FLOPs range (default {_g(BAND.t_min)})")
    g.add_argument("--beta", type=float, default=BAND.beta, help=f"cost coefficient (default {BAND.beta})")
    g.add_argument("--search-epochs", type=positive_int, default=BAND.search_epochs,
                   help=f"PARSEC epochs (default {BAND.search_epochs}; Table 2: 800 + 400)")
    g.add_argument("--samples", type=positive_int, default=BAND.samples,
                   help=f"K architectures per step (default {BAND.samples})")
    g.add_argument("--arch-lr", type=positive_float, default=BAND.arch_lr,
                   help=f"Adam's rate for alpha (default {BAND.arch_lr})")
    g.add_argument("--train-epochs", type=positive_int, default=BAND.train_epochs,
                   help=f"epochs of every compared network (default {BAND.train_epochs})")
    g.add_argument("--batch-size", type=positive_int, default=BAND.batch_size,
                   help=f"clips per step, search and training (default {BAND.batch_size})")
    g.add_argument("--lr", type=positive_float, default=BAND.lr,
                   help=f"the weights' learning rate, search and training (default {BAND.lr})")
    g.add_argument("--band", type=positive_int, default=BAND.band,
                   help=f"random nets of the band (default {BAND.band}; supplement §5: 16)")
    g.add_argument("--evo-iterations", type=parse_count, default=BAND.evo_iterations,
                   help=f"evolution: iterations (default {BAND.evo_iterations})")
    g.add_argument("--evo-population", type=parse_count, default=BAND.evo_population,
                   help=f"evolution: population (default {BAND.evo_population})")
    g.add_argument("--frames", type=positive_int, default=BAND.frames, help=f"frames per clip (default {BAND.frames})")
    g.add_argument("--size", type=positive_int, default=BAND.size, help=f"crop size (default {BAND.size})")
    g.add_argument("--sampling-rate", type=positive_int, default=BAND.sampling_rate,
                   help=f"frames skipped between sampled frames (default {BAND.sampling_rate})")
    g.add_argument("--eval-clips", type=positive_int, default=BAND.eval_clips,
                   help=f"clips x 3 crops per video in the final evaluation (default {BAND.eval_clips})")
    g.add_argument("--seed", type=non_negative_int, default=BAND.seed,
                   help=f"the searches', the band's and the data split's seed (default {BAND.seed})")
    add_ray_options(c).set_defaults(num_cpus=2)
    p.commands = {"table1": t, "compare": c}  # a check's error names the sub-command's usage
    return p


# the options behind the parsec strategy's request fields (RequestError.field), per sub-command
_COMMON = {"options.samples": "--samples", "options.batch_size": "--batch-size", "options.lr": "--lr",
           "options.arch_lr": "--arch-lr", "options.t_min": "--t-min", "options.t_max": "--t-max",
           "budget.flops": "--t-max", "clip": "--frames/--size", "seed": "--seed"}
_FLAGS = {"table1": _COMMON | {"options.epochs": "--epochs", "options.beta": "--betas"},
          "compare": _COMMON | {"options.epochs": "--search-epochs", "options.beta": "--beta"}}


def check_request(parser: argparse.ArgumentParser, command: str, request, beta: str = "") -> None:
    """The parsec strategy's own check of ``request``: a problem exits 2 naming the option (and ``beta``, the
    search's label, when the problem is its beta)."""
    from e3d.strategy import RequestError, get_strategy  # noqa: PLC0415

    try:
        get_strategy("parsec").check(request)
    except RequestError as exc:
        flag = _FLAGS[command].get(exc.field)
        which = beta if exc.field == "options.beta" else ""
        parser.error(f"argument {flag}: {which}{exc}" if flag else f"{which}{exc}")


def table1_settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Table1Settings:
    """Table 1's settings; every input checked (exits 2 naming the option), nothing written."""
    from pipeline.video.synthetic import CLASSES  # noqa: PLC0415 - stdlib and numpy

    check_out(parser, args.out)
    if not 2 <= args.classes <= len(CLASSES):
        parser.error(f"argument --classes: the synthetic dataset has 2 to {len(CLASSES)} classes, got {args.classes}")
    if args.clips_per_class < 2:
        parser.error("argument --clips-per-class: at least 2 (a quarter of them, at least one, validate)")
    if len({f"{b:g}" for b in args.betas}) < len(args.betas):
        parser.error(f"argument --betas: a value is given twice: {' '.join(f'{b:g}' for b in args.betas)}")
    settings = Table1Settings(out=args.out, betas=tuple(args.betas), epochs=args.epochs, samples=args.samples,
                              batch_size=args.batch_size, lr=args.lr, arch_lr=args.arch_lr, t_min=args.t_min,
                              t_max=args.t_max, frames=args.frames, size=args.size, sampling_rate=args.sampling_rate,
                              classes=args.classes, clips_per_class=args.clips_per_class, seed=args.seed,
                              data_seed=args.data_seed)
    for beta in settings.betas:
        check_request(parser, "table1", settings.search_request(beta), f"beta {beta:g}: ")
    return settings


def compare_settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> BandComparisonSettings:
    """The comparison's settings; every input checked (exits 2 naming the option), nothing written."""
    from pipeline.video.formats import DatasetError, load_dataset  # noqa: PLC0415 - stdlib only

    check_out(parser, args.out)
    try:
        dataset = load_dataset(args.data, seed=args.seed)  # the index only, no decoding
    except (DatasetError, OSError) as exc:
        parser.error(f"argument --data: {exc}")
    settings = BandComparisonSettings(data=args.data, out=args.out, t_max=args.t_max, t_min=args.t_min,
                                      beta=args.beta, search_epochs=args.search_epochs, samples=args.samples,
                                      arch_lr=args.arch_lr, train_epochs=args.train_epochs,
                                      batch_size=args.batch_size, lr=args.lr, band=args.band,
                                      evo_iterations=args.evo_iterations, evo_population=args.evo_population,
                                      frames=args.frames, size=args.size, sampling_rate=args.sampling_rate,
                                      eval_clips=args.eval_clips, seed=args.seed)
    check_request(parser, "compare", settings.search_request(len(dataset.classes)))
    return settings


@exits_on_out_of_space
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    sub = parser.commands[args.command]
    if args.command == "table1":
        settings = table1_settings(sub, args)
    else:
        settings = compare_settings(sub, args)
    check_free_space(args.out, RECORDS_BYTES, "the searches' checkpoints and outcomes")
    init_ray(args)
    from pipeline.parsec import experiments  # noqa: PLC0415

    if args.command == "table1":
        experiments.table1(settings)
        print(f"results: {os.path.join(args.out, 'table1.md')} and table1.json (searches under beta-*/)")
        return 0
    summary = experiments.compare(settings)
    print(f"results: {os.path.join(args.out, 'compare.md')} and compare.json")
    failed = [r["name"] for r in summary["rows"] if r["error"]]
    if failed:
        print(f"error: training failed for {', '.join(failed)} (see {args.out}/compare.json)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
