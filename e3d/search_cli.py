"""``e3d search``: the evolutionary search from the command line.

    e3d search --preset S --iterations 500000 --seed 0 --out runs/search-s
    e3d search --budget-flops 1.9G --population 512 --iterations 500000 --seed 0 --out DIR

``add_search_parser(subparsers)`` registers the subcommand (e3d/cli.py wires it); ``python -m e3d.search_cli
search ...`` runs it standalone.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .evolution import PRESETS, SearchConfig, search
from .space import describe
from .spec import SpecError

_SUFFIXES = {"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def parse_amount(text: str) -> float:
    """``1.9G`` -> 1.9e9, ``350M`` -> 3.5e8, ``2e9`` -> 2e9."""
    t = text.strip()
    scale = _SUFFIXES.get(t[-1:], 1.0)
    try:
        value = float(t[:-1] if t[-1:] in _SUFFIXES else t) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an amount like 1.9G, 350M or 2e9, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value


def parse_count(text: str) -> int:
    """A whole positive amount: ``500k`` -> 500000, ``512`` -> 512."""
    value = parse_amount(text)
    if value != int(value):
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    return int(value)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def _kernels(text: str) -> tuple[tuple[int, int, int], ...]:
    """``133,155,333`` -> ((1,3,3), (1,5,5), (3,3,3)); sizes are single digits."""
    out = []
    for item in text.split(","):
        if len(item) != 3 or not item.isdigit():
            raise argparse.ArgumentTypeError(f"kernels are written like 133,155,333; got {item!r}")
        out.append(tuple(int(c) for c in item))
    return tuple(out)  # type: ignore[return-value]


def add_search_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("search", help="evolutionary search for the max-entropy architecture",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="S",
                   help="input size, FLOPs budget and layer limit of the paper (S: 13x160^2, 1.9G, 83 layers; "
                        "M: 16x224^2, 4.7G, 83; L: 16x312^2, 18.4G, 167). Default S")
    p.add_argument("--budget-flops", type=parse_amount, help="FLOPs (MACs) budget, e.g. 1.9G")
    p.add_argument("--budget-params", type=parse_amount, help="optional params budget, e.g. 4M")
    p.add_argument("--max-layers", type=int, help="conv layer limit (stem + 3 per block + head); 0: none")
    p.add_argument("--max-depth", help="blocks per stage: an int, one per stage (3,6,6,6,6), 'official' "
                                       "(the official code's caps for the preset) or 'none' (default)")
    p.add_argument("--population", type=parse_count, default=512, help="population size (paper: 512)")
    p.add_argument("--iterations", type=parse_count, default=500_000, help="iterations (paper: 500000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--score", choices=("stentr", "homoentr"), default="stentr")
    p.add_argument("--initial", help="initial structure: zoo name or spec JSON (default: Table 8 at the preset)")
    p.add_argument("--frames", type=int, help="override the preset's input frames")
    p.add_argument("--size", type=int, help="override the preset's input crop size")
    p.add_argument("--kernels", type=_kernels, help="kernel space, e.g. 133,155,333 (default: the paper's)")
    p.add_argument("--mutation-probs", type=_floats,
                   help="weights of kernel,width,bottleneck,depth mutations (default 1,1,1,1)")
    p.add_argument("--chunk", type=int, default=5000, help="iterations per history row")
    p.add_argument("--out", required=True, help="output directory (best.json, population.parquet, ...)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: only on a terminal)")
    p.set_defaults(func=run_search_command)
    return p


def config_from_args(args: argparse.Namespace) -> SearchConfig:
    overrides: dict = {"population_size": args.population, "iterations": args.iterations, "seed": args.seed,
                       "score": args.score, "initial": args.initial, "frames": args.frames, "size": args.size,
                       "chunk": args.chunk}
    if args.budget_flops is not None:
        overrides["budget_flops"] = args.budget_flops
    if args.budget_params is not None:
        overrides["budget_params"] = args.budget_params
    if args.max_layers is not None:
        overrides["max_layers"] = args.max_layers or None
    if args.max_depth is not None:
        text = args.max_depth.strip().lower()
        if text == "official":
            overrides["max_depth"] = PRESETS[args.preset].official_depth_caps
        elif text != "none":
            caps = _ints(text)
            overrides["max_depth"] = caps[0] if len(caps) == 1 else caps
    if args.kernels is not None:
        overrides["kernels"] = args.kernels
    if args.mutation_probs is not None:
        overrides["mutation_probs"] = args.mutation_probs
    return SearchConfig.from_preset(args.preset, **overrides)


def run_search_command(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
        result = search(config, out_dir=args.out, progress=args.progress)
    except (SpecError, ValueError, KeyError) as exc:
        print(f"e3d search: error: {exc}", file=sys.stderr)
        return 2
    best = result.population[0]
    print(f"best {config.score} {best.score:.3f}: {best.flops / 1e9:.3f} GFLOPs, {best.params / 1e6:.2f} M params, "
          f"{best.layers} layers")
    print(f"  {describe(best.genome)}")
    print(f"{sum(h.iterations for h in result.history)} iterations in {result.wall_s:.1f} s "
          f"({result.iterations_per_s:,.0f} it/s); outputs in {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e3d.search_cli")
    add_search_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
