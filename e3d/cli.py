"""``e3d`` command line: score specs, browse the zoo, run the evolutionary search.

    e3d score FILE.json [FILE.json ...]     one JSON object per spec (name, flops, params, layers, scores)
    e3d score --zoo E3D-S                   the same for zoo entries
    e3d zoo                                 list the zoo;  e3d zoo NAME  prints the spec JSON
    e3d search --preset S --out DIR         evolutionary search (see ``e3d search --help``)

Bad input exits with status 2 and a one-line message on stderr.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

from . import zoo
from .cost import cost
from .scores import InfiniteScoreError, homoentr, stentr
from .spec import ArchSpec, SpecError, load_specs


def summarize(spec: ArchSpec, *, strict: bool = True) -> dict[str, Any]:
    """The comparison summary of a spec: costs, scores and its shape.

    ``strict``: refuse a spec whose STEntr is infinite (``InfiniteScoreError``, a ``SpecError``); otherwise
    report it as ``inf`` (a spec trained at an input the score cannot handle still has costs and a shape).
    """
    c = cost(spec)
    try:
        st = stentr(spec)
    except InfiniteScoreError:
        if strict:
            raise
        st = float("inf")
    return {
        "name": spec.name, "flops": c.flops, "gflops": round(c.gflops, 4), "params": c.params,
        "mparams": round(c.mparams, 4), "layers": c.layers, "stentr": st, "homoentr": homoentr(spec),
        "frames": spec.frames, "size": spec.size, "kernels": spec.kernel_pattern, "depths": list(spec.depths),
        "widths": list(spec.widths), "bottlenecks": [s.bottleneck for s in spec.stages],
        "stem": spec.stem.out, "head": spec.head.out,
    }


def _cmd_score(args: argparse.Namespace) -> int:
    specs: list[ArchSpec] = []
    for name in args.zoo or []:
        specs.append(zoo.get(name))
    for path in args.files:
        specs.extend(load_specs(path))
    if not specs:
        raise SpecError("nothing to score: give spec files or --zoo NAME")
    for spec in specs:
        if args.frames or args.size:
            spec = spec.with_input(args.frames, args.size)
        print(json.dumps(summarize(spec)))
    return 0


def _cmd_zoo(args: argparse.Namespace) -> int:
    if args.name:
        print(zoo.get(args.name).to_json())
        return 0
    for name in zoo.names():
        print(f"{name:12s} {zoo.describe(name)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="e3d", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    score = sub.add_parser("score", help="score spec files or zoo entries (one JSON object per spec)")
    score.add_argument("files", nargs="*", help="JSON spec files (an object or a list of objects)")
    score.add_argument("--zoo", action="append", metavar="NAME", help="score a zoo entry (repeatable)")
    score.add_argument("--frames", type=int, help="override the input frames")
    score.add_argument("--size", type=int, help="override the input crop size")
    score.set_defaults(func=_cmd_score)

    zoo_p = sub.add_parser("zoo", help="list the reference architectures, or print one as JSON")
    zoo_p.add_argument("name", nargs="?")
    zoo_p.set_defaults(func=_cmd_zoo)

    try:
        from .search_cli import add_search_parser
    except ImportError:  # the search is an optional part of a partial install
        pass
    else:
        add_search_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (SpecError, KeyError, ValueError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"e3d {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `e3d zoo | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
