"""Command-line options of the search, defined once for the ``e3d`` CLI and every Ray job.

    add_search_options(parser)                    # --strategy --score --preset --budget-* --iterations ...
    add_clip_options(parser)                      # --frames --size --sampling-rate
    strategy, request = search_request(parser, args, defaults=PAPER)   # checked: exits 2 naming the option

``--preset S|M|L`` means one thing everywhere: the paper's input size, FLOPs budget and layer limit
(13x160^2 / 1.9 G / 83 layers; 16x224^2 / 4.7 G / 83; 16x312^2 / 18.4 G / 167). Explicit options override
it; what neither sets comes from the caller's :class:`SearchDefaults` (the paper's S setting for
``e3d search``, the demo's small budget for the main job). Every value is checked before any work:
argparse types check each value, :func:`search_request` asks the strategy to check the whole request, and
a bad one ends the program with exit status 2 and one line naming the option.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from .evolution import PRESETS
from .latency_options import LatencySettings
from .strategy import Budget, Clip, RequestError, SearchRequest, SearchStrategy, get_strategy, strategy_names

_SUFFIXES = {"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
MAX_AMOUNT = 1e15  # 1000T: far above any video network's FLOPs or params (E3D-L: 18.4G), so no budget is unbounded


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line: ``prog: error: argument --x: ... (see --help)``,
    exit status 2. It remembers the options as typed (``typed``), so a check can name the alias the user wrote."""

    typed: tuple[str, ...] = ()

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        import sys  # noqa: PLC0415

        tokens = sys.argv[1:] if args is None else list(args)
        self.typed = tuple(t.split("=", 1)[0] for t in tokens if isinstance(t, str) and t.startswith("--"))
        return super().parse_known_args(args, namespace)

    def error(self, message: str):  # type: ignore[override]
        import sys  # noqa: PLC0415

        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(2)


ALIASES = {"--frames": "--clip-frames", "--size": "--clip-size"}  # the second spelling of the clip options


def typed_option(parser: argparse.ArgumentParser, option: str) -> str:
    """``option`` as the user wrote it: ``--clip-frames`` for ``--frames`` when that alias was typed."""
    seen = getattr(parser, "typed", ())
    alias = ALIASES.get(option)
    return alias if alias and alias in seen and option not in seen else option


def clip_option(parser: argparse.ArgumentParser, message: str) -> str:
    """The clip option a clip error is about (``--frames``, ``--size`` or both), as typed."""
    which = [o for o, words in (("--frames", ("input frames",)), ("--size", ("input.size",)))
             if any(w in message for w in words)]
    return "/".join(typed_option(parser, o) for o in (which or ["--frames", "--size"]))


# -- value types (argparse reports their errors with the option's name) ---------------------------------
def parse_amount(text: str) -> float:
    """``1.9G`` -> 1.9e9, ``350M`` -> 3.5e8, ``2e9`` -> 2e9 (positive)."""
    t = text.strip()
    scale = _SUFFIXES.get(t[-1:], 1.0)
    try:
        value = float(t[:-1] if t[-1:] in _SUFFIXES else t) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an amount like 1.9G, 350M or 2e9, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    if not value <= MAX_AMOUNT:  # inf and nan too: a budget must bound the search
        raise argparse.ArgumentTypeError(f"must be finite and at most {MAX_AMOUNT:.0e} (1000T), got {text!r}")
    return value


def parse_count(text: str) -> int:
    """A whole positive amount: ``500k`` -> 500000, ``512`` -> 512."""
    value = parse_amount(text)
    if value != int(value):
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    return int(value)


def parse_milliseconds(text: str) -> float:
    """``25ms`` or ``25`` -> 25.0; ``0.5s`` -> 500.0."""
    t = text.strip().lower()
    scale = 1000.0 if t.endswith("s") and not t.endswith("ms") else 1.0
    t = t.removesuffix("ms").removesuffix("s")
    try:
        value = float(t) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a time like 25ms or 0.1s, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def kernel_list(text: str) -> tuple[tuple[int, int, int], ...]:
    """``133,155,333`` -> ((1,3,3), (1,5,5), (3,3,3)); sizes are single odd digits."""
    out = []
    for item in text.split(","):
        if len(item) != 3 or not item.isdigit() or item[1] != item[2] or any(int(c) % 2 == 0 for c in item):
            raise argparse.ArgumentTypeError(f"kernels are odd and square, written like 133,155,333; got {item!r}")
        out.append(tuple(int(c) for c in item))
    return tuple(out)  # type: ignore[return-value]


def depth_caps(text: str) -> str | int | tuple[int, ...]:
    """``official``, ``none``, an int or one int per stage (``3,6,6,6,6``)."""
    t = text.strip().lower()
    if t in ("official", "none"):
        return t
    try:
        caps = tuple(int(v) for v in t.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected official, none, an int or ints like 3,6,6,6,6; got {text!r}") from None
    if any(c < 1 for c in caps):
        raise argparse.ArgumentTypeError(f"depth caps must be >= 1, got {text!r}")
    return caps[0] if len(caps) == 1 else caps


def weights4(text: str) -> tuple[float, float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or any(v < 0 for v in values) or sum(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected 4 non-negative weights kernel,width,bottleneck,depth; got {text!r}")
    return values  # type: ignore[return-value]


def key_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE (VALUE as JSON, or a bare string), got {text!r}")
    try:
        return key.strip().replace("-", "_"), json.loads(value)
    except json.JSONDecodeError:
        return key.strip().replace("-", "_"), value


# -- defaults --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchDefaults:
    """What a program searches when neither ``--preset`` nor an explicit option says otherwise."""

    frames: int
    size: int
    budget_flops: float
    max_layers: int | None
    population: int
    iterations: int
    preset: str = "S"  # the initial structure's preset (Table 8)
    sampling_rate: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


PAPER = SearchDefaults(frames=13, size=160, budget_flops=1.9e9, max_layers=83, population=512, iterations=500_000,
                       sampling_rate=6)


# -- the option groups ------------------------------------------------------------------------------------
def add_search_options(parser: argparse.ArgumentParser, defaults: SearchDefaults = PAPER) -> argparse.ArgumentParser:
    g = parser.add_argument_group("search (e3d.strategy)")
    g.add_argument("--strategy", choices=strategy_names(), default="evolution",
                   help="search strategy (default evolution; `e3d strategies` lists them)")
    from .scores import score_names  # noqa: PLC0415

    g.add_argument("--score", choices=score_names(), default="stentr",
                   help="the score candidates are ranked by (default stentr; `e3d scores` lists them)")
    g.add_argument("--preset", choices=sorted(PRESETS),
                   help="the paper's input size, FLOPs budget and layer limit (S: 13x160^2, 1.9G, 83 layers; "
                        "M: 16x224^2, 4.7G, 83; L: 16x312^2, 18.4G, 167)")
    g.add_argument("--budget-flops", type=parse_amount,
                   help=f"FLOPs (multiply-accumulates) budget, e.g. 1.9G (default {defaults.budget_flops / 1e9:g}G)")
    g.add_argument("--budget-params", type=parse_amount, help="params budget, e.g. 3.5M (default none)")
    g.add_argument("--max-layers", type=non_negative_int,
                   help=f"conv layer limit: stem + 3 per block + head; 0: none (default {defaults.max_layers})")
    g.add_argument("--iterations", type=parse_count,
                   help=f"evolution: iterations; random: specs sampled (default {defaults.iterations})")
    g.add_argument("--population", type=parse_count, help=f"evolution: population size (default {defaults.population})")
    g.add_argument("--seed", type=non_negative_int, default=0, help="seed of the search (and of the data split)")
    g.add_argument("--initial", help="initial structure / template: zoo name or spec JSON (default: Table 8)")
    g.add_argument("--max-depth", type=depth_caps,
                   help="blocks per stage: an int, one per stage (3,6,6,6,6), 'official' (the official code's caps "
                        "for the preset) or 'none' (default)")
    g.add_argument("--kernels", type=kernel_list, help="kernel space, e.g. 133,155,333 (default: the paper's)")
    g.add_argument("--mutation-probs", type=weights4, help="evolution: weights of kernel,width,bottleneck,depth "
                                                           "mutations (default 1,1,1,1)")
    g.add_argument("--set", dest="strategy_options", type=key_value, action="append", default=[],
                   metavar="NAME=VALUE", help="any other option of the strategy, e.g. --set width_max=512 "
                                              "(repeatable; values as JSON)")
    from .latency_options import add_latency_arguments  # noqa: PLC0415 - no torch to build the parser

    add_latency_arguments(parser)  # --budget-latency and the device its table is measured on
    return parser


def latency_settings(args: argparse.Namespace) -> LatencySettings | None:
    """The latency table's settings when ``--budget-latency`` is given (see :func:`latency_predictor`)."""
    if getattr(args, "budget_latency", None) is None:
        return None
    return LatencySettings.from_args(args)


def latency_predictor(settings: LatencySettings | None, request: SearchRequest, seed_specs: Any = ()) -> Any:
    """The per-block latency table for the request's clip (None without settings): what
    ``SearchContext.latency`` takes. ``seed_specs`` are measured first."""
    if settings is None:
        return None
    from dataclasses import replace  # noqa: PLC0415

    from .latency import open_table  # noqa: PLC0415

    seeds = list(seed_specs)
    if settings.latency_predictor == "estimate" and not seeds:  # its per-op model needs measured blocks
        sample = SearchRequest(budget=replace(request.budget, latency_ms=None), clip=request.clip, seed=request.seed,
                               options={"samples": 8})
        seeds = [c.spec for c in get_strategy("random").search(sample).candidates]
    return open_table(settings, request.clip.frames, request.clip.size, seed_specs=seeds)


def add_clip_options(parser: argparse.ArgumentParser, defaults: SearchDefaults = PAPER) -> argparse.ArgumentParser:
    g = parser.add_argument_group("clip (what the networks see)")
    g.add_argument("--frames", "--clip-frames", dest="frames", type=positive_int,
                   help=f"frames per clip (default: the preset's, else {defaults.frames})")
    g.add_argument("--size", "--clip-size", dest="size", type=positive_int,
                   help=f"crop size (default: the preset's, else {defaults.size})")
    g.add_argument("--sampling-rate", type=positive_int,
                   help=f"frames skipped between sampled frames (default: the preset's, else {defaults.sampling_rate})")
    return parser


# -- from arguments to a checked request ---------------------------------------------------------------------
# the flags a strategy may take, by the name it maps them to (``SearchStrategy.cli_options``)
STRATEGY_FLAGS = {"iterations": "--iterations", "population": "--population", "preset": "--preset",
                  "initial": "--initial", "max_depth": "--max-depth", "kernels": "--kernels",
                  "mutation_probs": "--mutation-probs"}
FIELD_FLAGS = {"budget.flops": "--budget-flops", "budget.params": "--budget-params", "budget.layers": "--max-layers",
               "budget.latency_ms": "--budget-latency", "clip": "--frames/--size", "score": "--score",
               "seed": "--seed", "options": "--set"}


def resolve_clip(args: argparse.Namespace, defaults: SearchDefaults) -> Clip:
    preset = PRESETS[args.preset] if getattr(args, "preset", None) else None
    frames = args.frames or (preset.frames if preset else defaults.frames)
    size = args.size or (preset.size if preset else defaults.size)
    rate = getattr(args, "sampling_rate", None) or (preset.sampling_rate if preset else defaults.sampling_rate)
    return Clip(frames, size, rate)


def search_request(parser: argparse.ArgumentParser, args: argparse.Namespace, *, defaults: SearchDefaults = PAPER,
                   clip: Clip | None = None, num_classes: int | None = None,
                   out_dir: str | None = None) -> tuple[SearchStrategy, SearchRequest]:
    """The strategy and its request from the options, checked; a bad value exits 2 naming the option."""
    strategy = get_strategy(args.strategy)
    clip = clip or resolve_clip(args, defaults)
    preset = PRESETS[args.preset] if args.preset else None
    flops = args.budget_flops or (preset.budget_flops if preset else defaults.budget_flops)
    if args.max_layers is not None:
        layers = args.max_layers or None
    else:
        layers = preset.max_layers if preset else defaults.max_layers
    budget = Budget(flops=flops, params=args.budget_params, layers=layers,
                    latency_ms=getattr(args, "budget_latency", None))
    takes: Mapping[str, str] = getattr(strategy, "cli_options", {})  # flag name -> the strategy's option
    options: dict[str, Any] = dict(defaults.options) if not args.preset else {}
    for key, flag in STRATEGY_FLAGS.items():
        value = getattr(args, key)
        if key == "preset":
            value = value or defaults.preset
        elif key in ("iterations", "population") and value is None:
            value = getattr(defaults, key)
        elif value is None:
            continue
        if key not in takes:
            if getattr(args, key) is not None and key != "preset":
                parser.error(f"argument {flag}: strategy {strategy.name!r} does not take it")
            continue
        if key == "max_depth" and isinstance(value, str):
            value = {"official": PRESETS[args.preset or defaults.preset].official_depth_caps, "none": None}[value]
        options[takes[key]] = value
    options |= dict(args.strategy_options)
    request = SearchRequest(budget=budget, clip=clip, seed=args.seed, score=args.score, num_classes=num_classes,
                            options=options, out_dir=out_dir)
    check_request(parser, strategy, request)
    if budget.latency_ms is not None and args.latency_threads < 1:
        parser.error("argument --latency-threads: must be >= 1")
    return strategy, request


def check_request(parser: argparse.ArgumentParser, strategy: SearchStrategy, request: SearchRequest) -> None:
    """Ask the strategy to check the request; a problem exits 2 naming the option to change."""
    try:
        strategy.check(request)
    except RequestError as exc:
        field = exc.field
        if field == "options" and ("input frames" in str(exc) or "input.size" in str(exc)):
            field = "clip"  # the initial structure does not fit the clip: the clip options, not --set
        option = clip_option(parser, str(exc)) if field == "clip" else option_for(field)
        parser.error(f"argument {option}: {exc}")
    except ValueError as exc:  # e.g. a score that needs real clips
        parser.error(str(exc))


def option_for(field_name: str) -> str:
    """The command-line option behind a request field (``options.population_size`` -> ``--population``)."""
    if field_name in FIELD_FLAGS:
        return FIELD_FLAGS[field_name]
    if field_name.startswith("options."):
        name = field_name.split(".", 1)[1]
        from .strategy import STRATEGIES  # noqa: PLC0415

        for strategy in STRATEGIES.names():
            for key, option in getattr(STRATEGIES.get(strategy), "cli_options", {}).items():
                if option == name:
                    return STRATEGY_FLAGS[key]
        return f"--set {name}"
    return field_name


def defaults_from_config(path: str) -> dict[str, Any]:
    """Command-line defaults from a ``SearchConfig`` JSON (a search's ``config.json``, Tune's
    ``best_config.json``): ``parser.set_defaults(**defaults_from_config(path))``, then parse again so the
    options given on the command line override it."""
    from .evolution import SearchConfig  # noqa: PLC0415
    from .space import SpaceSettings  # noqa: PLC0415

    with open(path) as fh:
        data = json.load(fh)
    known = set(SearchConfig.__dataclass_fields__) | set(SpaceSettings.__dataclass_fields__)
    c = SearchConfig.from_dict({k: v for k, v in data.items() if k in known})
    space = {k: v for k, v in c.space_settings.to_dict().items() if v != getattr(SpaceSettings(), k)}
    return {"budget_flops": c.budget_flops, "budget_params": c.budget_params, "max_layers": c.max_layers or 0,
            "population": c.population_size, "iterations": c.iterations, "seed": c.seed, "score": c.score,
            "preset": c.preset, "initial": c.initial, "frames": c.frames, "size": c.size,
            "strategy_options": [("chunk", c.chunk)] + sorted(space.items())}


def parse_with_config(parser: argparse.ArgumentParser, argv: Any = None) -> argparse.Namespace:
    """Parse; with ``--config JSON`` (a SearchConfig), parse again over its values as defaults, so the options
    given on the command line override the file."""
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        try:
            parser.set_defaults(**defaults_from_config(args.config))
        except (OSError, ValueError, TypeError) as exc:
            parser.error(f"argument --config: {exc}")
        args = parser.parse_args(argv)
    return args
