#!/usr/bin/env python
"""Tune the E3D search's own hyper-parameters with Ray Tune (ASHA), at a fixed evaluation budget per trial.

    python jobs/tune_search.py --preset S --budget 50000 --samples 16 --out outputs/tune-s
    python jobs/tune_search.py --trial-backend ray --actor-cpus 0.5 --trial-cpus 0.5 ...   # actors per trial
    python jobs/tune_search.py --address auto --samples 64 --budget 200000 --out /shared/tune

Tuned: total population, the four mutation weights, islands, migration interval and size, and the chunk of
iterations per island per round (override the choices with --populations, --islands, ...). Each trial is a
whole search reporting its best score after every round; ASHA stops weak trials; every trial is an MLflow
run under the job's run. Prints the winning settings (and the jobs/search.py command that uses them) and
saves them to --out/best_settings.json; all trials go to --out/trials.csv. The last line is JSON.
Exit status 2: a bad option (the line names it); 28: the disk is full (one line; docs/faults.md).
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from e3d.options import (PAPER, Parser, add_clip_options, add_search_options, non_negative_int,  # noqa: E402
                         parse_count, parse_with_config, positive_float, positive_int, search_request)
from pipeline.faults import RECORDS_BYTES, check_free_space, exits_on_out_of_space  # noqa: E402
from pipeline.options import add_ray_options, add_tracking_options, init_ray, tracking_from_args  # noqa: E402


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"every value must be >= 1, got {text!r}")
    return values


def _factor(text: str) -> float:
    value = positive_float(text)
    if not value > 1:
        raise argparse.ArgumentTypeError(f"ASHA keeps 1/factor of the trials at each rung: must be > 1, got {value}")
    return value


def _option_of(message: str) -> str:
    """The option a TuneSettings error is about."""
    for words, option in ((("population size", "island"), "--populations/--islands"), (("CPUs",), "--trial-cpus"),
                          (("prob_range",), "--mutation-probs")):
        if all(w in message for w in words):
            return option
    return "--samples"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                    epilog=__doc__)
    g = parser.add_argument_group("tuning")
    g.add_argument("--out", default="outputs/tune-search", help="output folder (default outputs/tune-search)")
    g.add_argument("--budget", type=parse_count, default=50_000, help="iterations per trial, the same for every "
                                                                      "trial (e.g. 50k)")
    g.add_argument("--samples", type=positive_int, default=8, help="number of trials")
    g.add_argument("--tune-seed", type=non_negative_int, default=0, help="seed of the trials' settings sampling")
    g.add_argument("--grace-period", type=positive_int, help="ASHA's first rung in iterations (default budget/8)")
    g.add_argument("--reduction-factor", type=_factor, default=2.0)
    g.add_argument("--max-concurrent", type=positive_int, help="trials at once (default: as many as fit the CPUs)")
    g.add_argument("--trial-cpus", type=positive_float, default=1.0, help="CPUs per trial (fractional ok)")
    g.add_argument("--trial-backend", choices=("local", "ray"), default="local",
                   help="'local': a trial steps its islands in its own process; 'ray': actors in its placement group")
    g.add_argument("--actor-cpus", type=positive_float, default=0.5,
                   help="CPUs per island actor with --trial-backend ray")
    g.add_argument("--populations", type=_ints, help="population choices, e.g. 64,128,256,512")
    g.add_argument("--islands", type=_ints, help="island count choices, e.g. 1,2,4")
    g.add_argument("--migration-intervals", type=_ints, help="e.g. 1,2,4")
    g.add_argument("--migration-sizes", type=_ints, help="e.g. 1,2,4,8")
    g.add_argument("--chunks", type=_ints, help="iterations per island per round, e.g. 1000,2500,5000")
    g.add_argument("--tune-verbose", type=int, choices=(0, 1, 2, 3), default=1,
                   help="Tune's console verbosity (0-3; --verbose also shows Ray's own logs)")
    g.add_argument("--config", metavar="JSON", help="a SearchConfig JSON as the base (options given here override it)")
    add_search_options(parser, PAPER)
    add_clip_options(parser, PAPER)
    add_tracking_options(parser, experiment="e3d-tune-search", optional=True, models=False)
    add_ray_options(parser)
    return parser


@exits_on_out_of_space
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_with_config(parser, argv)
    from e3d.strategies.evolution import search_config  # noqa: PLC0415
    from e3d.strategy import get_strategy  # noqa: PLC0415
    from pipeline.search.tune_search import TuneSettings, run_tune_job  # noqa: PLC0415

    if not getattr(get_strategy(args.strategy), "tunable", False):
        parser.error(f"argument --strategy: Tune tunes the evolutionary search's settings, not {args.strategy!r}")
    base = search_config(search_request(parser, args, defaults=PAPER)[1])
    choices = {k: v for k, v in (("population_sizes", args.populations), ("islands", args.islands),
                                 ("migration_intervals", args.migration_intervals),
                                 ("migration_sizes", args.migration_sizes), ("chunk_iterations", args.chunks))
               if v is not None}
    try:
        settings = TuneSettings(iterations=args.budget, num_samples=args.samples, seed=args.tune_seed,
                                grace_period=args.grace_period, reduction_factor=args.reduction_factor,
                                max_concurrent_trials=args.max_concurrent, trial_cpus=args.trial_cpus,
                                trial_backend=args.trial_backend, actor_cpus=args.actor_cpus, **choices)
    except ValueError as exc:
        parser.error(f"argument {_option_of(str(exc))}: {exc}")
    check_free_space(args.out, RECORDS_BYTES, f"{args.samples} trials' records and the MLflow store")
    init_ray(args)
    return run_tune_job(base, settings, out_dir=args.out, tracking=tracking_from_args(args, args.out),
                        verbose=args.tune_verbose)


if __name__ == "__main__":
    sys.exit(main())
