#!/usr/bin/env python
"""Compare search strategies and scores on your data: every arm searched at several seeds under one budget,
its winner trained with one recipe, multi-view top-1 with 95% intervals, every arm paired against `random`.

    python jobs/compare.py                                  # demo: synthetic clips, evolution:stentr vs random
    python jobs/compare.py --data ../shared/data/ucf101-6class --clip-frames 8 --clip-size 56 \\
        --strategies evolution:stentr,evolution:params,random,dnas,parsec,fusion --zoo X3D-XS \\
        --seeds 3 --training-seeds 2 --budget-flops 0.1G --epochs 4 --set dnas.epochs=2 --out runs/compare

An arm is `strategy[:score]`: `random` alone is one uniform draw of the feasible space per seed (the
baseline), `random:stentr` the best of --iterations draws by STEntr, `evolution:params` Algorithm 1
maximising #params; `dnas`, `parsec`, `fusion` train a supernet and take no score. `--zoo NAME` adds a
reference network, re-inputted to the clip. The job prints its plan and an estimate of the hours before it
starts; rerunning the same command with the same --out resumes (finished searches and trainings are kept).
Outputs in --out: results.csv, summary.json, table.md, compare.png, report.json, and an MLflow parent run
with a child run per search and per trained network. docs/compare.md explains the statistics.
Exit status 28: the disk is full (one line; free space and rerun: it resumes; docs/faults.md).
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from pipeline.faults import exits_on_out_of_space  # noqa: E402 - one line and exit 28 on a full disk
from e3d.options import Parser, key_value, non_negative_int, parse_amount, parse_count, positive_int  # noqa: E402
from pipeline.options import (DEMO, DEMO_DATA, add_data_options, add_ray_options, add_tracking_options,  # noqa: E402
                              add_training_options, check_clip, check_data, check_out, check_recipe, init_ray,
                              train_resources_from_args)

DEFAULT_ARMS = "evolution:stentr,random"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(description=__doc__.split("\n")[0], epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("comparison")
    g.add_argument("--out", default="outputs/compare", help="output folder (resumes when it exists)")
    g.add_argument("--strategies", default=DEFAULT_ARMS, metavar="ARMS",
                   help=f"comma-separated arms, strategy[:score] (default {DEFAULT_ARMS})")
    g.add_argument("--zoo", action="append", default=[], metavar="NAME",
                   help="a zoo network as a reference arm, re-inputted to the clip (repeatable, e.g. X3D-XS)")
    g.add_argument("--seeds", type=positive_int, default=3, help="seeds of the training-free arms (default 3)")
    g.add_argument("--training-seeds", type=positive_int,
                   help="seeds of the arms that train a supernet (dnas, parsec, fusion) and of --zoo networks "
                        "(default: --seeds)")
    g.add_argument("--budget-flops", type=parse_amount, help=f"FLOPs budget of every search, e.g. 0.1G "
                                                             f"(default {DEMO.budget_flops / 1e9:g}G)")
    g.add_argument("--max-layers", type=non_negative_int,
                   help=f"conv layer limit of every search; 0: none (default {DEMO.max_layers})")
    g.add_argument("--iterations", type=parse_count,
                   help=f"evolution: iterations; random:SCORE: specs drawn (default {DEMO.iterations})")
    g.add_argument("--population", type=parse_count, help=f"evolution: population (default {DEMO.population})")
    g.add_argument("--set", dest="arm_options", type=key_value, action="append", default=[],
                   metavar="STRATEGY.NAME=VALUE", help="a strategy's own option, e.g. --set dnas.epochs=2 "
                                                       "(repeatable; values as JSON)")
    g.add_argument("--bootstrap", type=positive_int, default=10_000, help="bootstrap draws (default 10000)")
    g.add_argument("--no-estimate", action="store_true", help="skip the timed steps of the plan's estimate")
    g.add_argument("--latency-table", metavar="PATH", help="a latency table (`e3d latency --measure` writes them): "
                                                          "each network's predicted latency in the results")
    add_data_options(p, DEMO)
    add_training_options(p)
    add_tracking_options(p, experiment="e3d-compare", models=False)
    add_ray_options(p)
    p.set_defaults(seed=0)  # the data split: the same validation videos for every seed
    return p


def config_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """The comparison's config; every input checked (exits 2 naming the option), nothing written."""
    from e3d import zoo  # noqa: PLC0415
    from e3d.options import option_for, resolve_clip  # noqa: PLC0415
    from e3d.strategy import Budget, RequestError, get_strategy  # noqa: PLC0415
    from pipeline.compare import ArmError, CompareConfig, arm_request, parse_arm, zoo_arm  # noqa: PLC0415
    from pipeline.search_and_train import DataConfig  # noqa: PLC0415

    check_out(parser, args.out)
    demo = not args.data
    dataset = check_data(parser, args)
    clip_shape = resolve_clip(args, DEMO)
    clip = check_clip(parser, args, clip_shape, demo=demo)
    recipe = check_recipe(parser, args, demo=demo)
    try:
        arms = [parse_arm(a) for a in args.strategies.split(",") if a.strip()]
        arms += [zoo_arm(z) for z in args.zoo]
    except ArmError as exc:
        parser.error(f"argument {exc.option}: {exc}")
    names = [a.name for a in arms]
    if not arms:
        parser.error("argument --strategies: no arm given")
    if len(set(names)) < len(names):
        parser.error(f"argument --strategies: an arm is given twice: {', '.join(names)}")
    options: dict[str, dict] = {}
    for key, value in args.arm_options:
        strategy, _, name = key.partition(".")
        if not name:
            parser.error(f"argument --set: write STRATEGY.NAME=VALUE (e.g. dnas.epochs=2), got {key!r}")
        if strategy not in {a.strategy for a in arms if a.strategy}:
            parser.error(f"argument --set: no arm runs strategy {strategy!r} ({', '.join(names)})")
        options.setdefault(strategy, {})[name] = value
    layers = (args.max_layers or None) if args.max_layers is not None else DEMO.max_layers
    try:
        budget = Budget(flops=args.budget_flops or DEMO.budget_flops, layers=layers)
    except ValueError as exc:
        parser.error(f"argument --budget-flops: {exc}")
    config = CompareConfig(arms=tuple(arms), out_dir=args.out, data=DataConfig(path=args.data, format=args.data_format),
                           clip=clip, recipe=recipe, budget=budget,
                           iterations=args.iterations or DEMO.iterations, population=args.population or DEMO.population,
                           options=options, seeds=args.seeds, training_seeds=args.training_seeds,
                           eval_clips=args.eval_clips or 2, eval_crops=args.eval_crops,
                           resources=train_resources_from_args(args), tracking_uri=args.tracking_uri,
                           experiment=args.experiment,
                           n_boot=args.bootstrap, latency_table=args.latency_table)
    if args.latency_table:
        from pipeline.compare.run import latency_predictor  # noqa: PLC0415

        try:
            latency_predictor(args.latency_table)
        except (OSError, ValueError, KeyError) as exc:
            parser.error(f"argument --latency-table: {exc}")
    num_classes = len(dataset.classes) if dataset is not None else DEMO_DATA["num_classes"]
    settings = config.search_settings(num_classes)
    for arm in arms:  # every arm's request checked by its strategy before any work
        if not arm.searches:
            try:
                zoo.get(arm.zoo).with_input(clip.frames, clip.size)
            except ValueError as exc:
                parser.error(f"argument --zoo: {arm.zoo} cannot run at {clip.frames}x{clip.size}^2: {exc}")
            continue
        try:
            get_strategy(arm.strategy).check(arm_request(arm, settings, 0))
        except RequestError as exc:
            flag = option_for(exc.field)
            flag = flag.replace("--set ", f"--set {arm.strategy}.") if flag.startswith("--set") else flag
            parser.error(f"argument {flag}: arm {arm.name}: {exc}")
        except ValueError as exc:
            parser.error(f"argument --strategies: arm {arm.name}: {exc}")
    return config


@exits_on_out_of_space
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    config = config_from_args(parser, args)
    init_ray(args)
    from pipeline.compare import run_comparison  # noqa: PLC0415

    result = run_comparison(config, estimate=not args.no_estimate)
    failed = [n.name for n in result.networks if not n.ok]
    if failed:
        print(f"error: training failed for {', '.join(failed)} (see {config.out_dir}/results.csv)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
