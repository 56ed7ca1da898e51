"""``e3d search``: run any registered search strategy in this process.

    e3d search --preset S --iterations 500000 --seed 0 --out runs/search-s           # the paper's S setting
    e3d search --strategy random --preset S --iterations 2000 --out runs/random-s
    e3d search --budget-flops 0.3G --frames 8 --size 112 --score homoentr --out DIR

Writes ``best.json``, ``population.parquet``, ``history.parquet``, ``progress.png`` and ``outcome.json`` to
``--out``, and the strategy's ``settings_file`` when it declares one (the EA's ``config.json``, its full
``SearchConfig``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from .options import (PAPER, Parser, add_clip_options, add_search_options, latency_predictor, latency_settings,
                      parse_amount, parse_count, search_request)
from .strategy import SearchContext

__all__ = ["add_search_parser", "run_search_command", "main", "parse_amount", "parse_count"]


def add_search_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("search", help="search architectures with a registered strategy",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_search_options(p, PAPER)
    add_clip_options(p, PAPER)
    p.add_argument("--out", required=True, help="output directory (best.json, population.parquet, ...)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: only on a terminal)")
    p.set_defaults(func=run_search_command, parser=p)
    return p


def run_search_command(args: argparse.Namespace) -> int:
    from .search_io import write_outcome  # noqa: PLC0415 - pyarrow/matplotlib only when writing

    strategy, request = search_request(args.parser, args, defaults=PAPER)
    if "data" in strategy.needs:
        args.parser.error(f"argument --strategy: {strategy.name!r} trains on video; run it with "
                          f"jobs/search_and_train.py --strategy {strategy.name}")
    latency = latency_predictor(latency_settings(args), request)
    try:
        outcome = strategy.search(request, SearchContext(progress=args.progress, latency=latency))
    except RuntimeError as exc:  # e.g. no feasible network under a tight latency budget
        print(f"e3d search: error: {exc}", file=sys.stderr)
        return 1
    write_outcome(args.out, outcome)
    settings_file = getattr(strategy, "settings_file", None)  # e.g. the EA's config.json, which --config reads
    if settings_file:
        (Path(args.out) / settings_file).write_text(json.dumps(outcome.settings, indent=2) + "\n")
    best = outcome.best
    print(f"best {outcome.score_name} {best.score:.3f}: {best.flops / 1e9:.3f} GFLOPs, {best.params / 1e6:.2f} M "
          f"params, {best.layers} layers  [{strategy.name}]")
    s = best.spec
    print("  " + " | ".join(f"{'%d%d%d' % st.kernel} {st.out}/{st.bottleneck} x{st.layers}" for st in s.stages)
          + f" | stem {s.stem.out} head {s.head.out}")
    steps = outcome.extra.get("iterations")
    rate = f" ({steps / outcome.wall_s:,.0f}/s)" if steps and outcome.wall_s else ""
    print(f"{steps} {strategy.cli_options.get('iterations', 'iterations')} in {outcome.wall_s:.1f} s{rate}; "
          f"outputs in {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = Parser(prog="python -m e3d.search_cli")
    add_search_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
