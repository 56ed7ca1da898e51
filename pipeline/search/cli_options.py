"""Command-line options shared by ``jobs/search.py`` and ``jobs/tune_search.py``.

The e3d search options map onto :class:`e3d.evolution.SearchConfig` fields; every option defaults to None so
a job can tell "not given" (take the preset's value, or the checkpoint's when resuming) from "given".
Fields without a dedicated option are set with ``--set FIELD=JSON`` (e.g. ``--set width_max=512``).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import fields
from typing import Any

from e3d.evolution import PRESETS, SearchConfig
from e3d.search_cli import parse_amount, parse_count


def add_search_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    g = parser.add_argument_group("e3d search (SearchConfig)")
    g.add_argument("--preset", choices=sorted(PRESETS), help="model size: input, FLOPs budget, layer limit (default S)")
    g.add_argument("--config", metavar="JSON", help="a SearchConfig as JSON (e.g. a search's config.json)")
    g.add_argument("--iterations", type=parse_count, help="total iterations over all islands (paper: 500k)")
    g.add_argument("--population-size", "--population", dest="population_size", type=parse_count,
                   help="total population over all islands (paper: 512)")
    g.add_argument("--budget-flops", type=parse_amount, help="FLOPs (MACs) budget, e.g. 1.9G")
    g.add_argument("--budget-params", type=parse_amount, help="params budget, e.g. 3.5M")
    g.add_argument("--max-layers", type=int, help="conv layer limit")
    g.add_argument("--score", choices=("stentr", "homoentr"))
    g.add_argument("--seed", type=int)
    g.add_argument("--initial", help="initial structure: zoo name or spec JSON file")
    g.add_argument("--frames", type=int, help="override the preset's input frames")
    g.add_argument("--size", type=int, help="override the preset's input size")
    g.add_argument("--mutation-probs", type=float, nargs=4, metavar=("KERNEL", "WIDTH", "BTN", "DEPTH"),
                   help="weights of the four stage mutations")
    g.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                   help="any other SearchConfig field, e.g. --set width_max=512 (repeatable)")
    return parser


_DIRECT = ("iterations", "population_size", "budget_flops", "budget_params", "max_layers", "score", "seed",
           "initial", "frames", "size", "mutation_probs")


def search_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The SearchConfig fields given on the command line (not the preset or config file)."""
    out = {k: getattr(args, k) for k in _DIRECT if getattr(args, k, None) is not None}
    if out.get("mutation_probs") is not None:
        out["mutation_probs"] = tuple(out["mutation_probs"])
    known = {f.name for f in fields(SearchConfig)}
    for item in getattr(args, "set", []) or []:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in known:
            raise SystemExit(f"--set {item!r}: expected FIELD=JSON with FIELD one of {', '.join(sorted(known))}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # a bare string
    return out


def config_from_args(args: argparse.Namespace) -> tuple[SearchConfig, bool]:
    """``(config, explicit)``: the config, and whether anything about it was given on the command line."""
    overrides = search_overrides(args)
    explicit = bool(overrides) or args.preset is not None or args.config is not None
    if args.config:
        with open(args.config) as fh:
            data = json.load(fh)
        known = {f.name for f in fields(SearchConfig)}
        data = {k: v for k, v in data.items() if k in known}  # config.json carries extra keys (islands...)
        if args.preset is not None:
            data["preset"] = args.preset
        config = SearchConfig.from_dict(data | overrides)
    else:
        config = SearchConfig.from_preset(args.preset or "S")
        if overrides:
            config = SearchConfig.from_dict(config.to_dict() | overrides)
    return config, explicit


def add_tracking_options(parser: argparse.ArgumentParser, experiment: str) -> argparse.ArgumentParser:
    g = parser.add_argument_group("MLflow")
    g.add_argument("--mlflow-root", default="runs",
                   help="local tracking store folder (sqlite mlflow.db + artifacts), default ./runs")
    g.add_argument("--tracking-uri", help="an MLflow tracking URI instead of the local store")
    g.add_argument("--experiment", default=experiment, help=f"MLflow experiment (default {experiment})")
    g.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    return parser


def tracking_from_args(args: argparse.Namespace):
    from pipeline.tracking import Tracking  # noqa: PLC0415

    if args.no_mlflow:
        return None
    if args.tracking_uri:
        return Tracking(args.tracking_uri, args.experiment)
    return Tracking.local(args.mlflow_root, args.experiment)


def add_ray_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    g = parser.add_argument_group("Ray")
    g.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else start a local Ray)")
    g.add_argument("--num-cpus", type=int, help="CPUs of the local Ray started when no address is given")
    return parser


def init_ray(args: argparse.Namespace):
    import os  # noqa: PLC0415

    import ray  # noqa: PLC0415

    if ray.is_initialized():
        return ray
    address = args.address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"address": address, "log_to_driver": True}
    if address is None:
        kwargs |= {"include_dashboard": False}
        if args.num_cpus:
            kwargs["num_cpus"] = args.num_cpus
    ray.init(**kwargs)
    return ray
