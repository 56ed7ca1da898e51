"""``e3d`` command line: score specs, browse the registries, search.

    e3d score FILE.json [FILE.json ...]     one JSON object per spec (name, flops, params, layers, scores)
    e3d score --zoo E3D-S [--scores zen]    the same for zoo entries (plus any registered score)
    e3d zoo                                 list the zoo;  e3d zoo NAME  prints the spec JSON
    e3d strategies | scores | families      the registered names, one per line, with a description
    e3d search --preset S --out DIR         search with any strategy (see ``e3d search --help``)
    e3d export SPEC|--zoo NAME|RUN --onnx F  ONNX (checked against PyTorch with onnxruntime) and its latency
    e3d latency SPEC|--zoo NAME              predicted (per-block table) and measured latency
    e3d predict MODEL VIDEO [VIDEO ...]      top-k labels of videos (MODEL: model folder, job or candidate)

Other packages add sub-commands through the entry-point group ``e3d.commands`` (a function that takes the
sub-parsers and adds its own): the pipeline adds ``predict`` (``pipeline.predict.cli``) that way, so ``e3d``
never names it. Bad input exits with status 2 and a one-line message on stderr.
"""
from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import entry_points
from typing import Sequence

from . import zoo
from .options import Parser
from .scores import get_score
from .spec import ArchSpec, SpecError, load_specs
from .summary import summarize


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
        row = summarize(spec)
        for name in args.scores or []:
            value = get_score(name).evaluate(spec, repeats=args.repeats, seed=args.seed)
            row[name] = value.mean
            if value.std:
                row[f"{name}_std"] = value.std
        print(json.dumps(row))
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from .family import FAMILIES  # noqa: PLC0415
    from .scores import SCORES, score_names  # noqa: PLC0415
    from .strategy import STRATEGIES, strategy_names  # noqa: PLC0415

    if args.command == "strategies":
        strategy_names()
        registry = STRATEGIES
    elif args.command == "scores":
        score_names()
        registry = SCORES
    else:
        registry = FAMILIES
    print(registry.listing())
    return 0


def _cmd_zoo(args: argparse.Namespace) -> int:
    if args.name:
        print(zoo.get(args.name).to_json())
        return 0
    for name in zoo.names():
        print(f"{name:12s} {zoo.describe(name)}")
    return 0


def _score_list(text: str) -> list[str]:
    from .scores import score_names  # noqa: PLC0415

    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in score_names()]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown score {unknown[0]!r}; choose among {', '.join(score_names())}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="e3d", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    score = sub.add_parser("score", help="score spec files or zoo entries (one JSON object per spec)")
    score.add_argument("files", nargs="*", help="JSON spec files (an object or a list of objects)")
    score.add_argument("--zoo", action="append", metavar="NAME", help="score a zoo entry (repeatable)")
    score.add_argument("--frames", type=int, help="override the input frames")
    score.add_argument("--size", type=int, help="override the input crop size")
    score.add_argument("--scores", type=_score_list, help="also these registered scores, e.g. zen,synflow")
    score.add_argument("--repeats", type=int, default=1, help="evaluations per forward score (mean, std)")
    score.add_argument("--seed", type=int, default=0)
    score.set_defaults(func=_cmd_score)

    for name, text in (("strategies", "list the search strategies"), ("scores", "list the scores (proxies)"),
                       ("families", "list the block families")):
        sub.add_parser(name, help=text).set_defaults(func=_cmd_list)

    zoo_p = sub.add_parser("zoo", help="list the reference architectures, or print one as JSON")
    zoo_p.add_argument("name", nargs="?")
    zoo_p.set_defaults(func=_cmd_zoo)

    from .search_cli import add_search_parser  # noqa: PLC0415

    add_search_parser(sub)
    from .export_cli import add_export_parser, add_latency_parser  # noqa: PLC0415 - onnx imported when run

    add_export_parser(sub)
    add_latency_parser(sub)
    for command in sorted(entry_points(group="e3d.commands"), key=lambda e: e.name):
        command.load()(sub)  # sub-commands other packages add (setup.cfg: the pipeline's `predict`)
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
