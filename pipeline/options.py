"""Command-line options of the Ray jobs, defined once: data and clip, training, candidate selection, search
islands, MLflow and Ray. The search options themselves are :mod:`e3d.options` (shared with ``e3d``).

    parser = Parser(...)
    add_search_options(parser, DEMO); add_data_options(parser); add_training_options(parser); ...
    args = parser.parse_args()
    check_job_inputs(parser, args)          # every input checked before any work: exit 2 naming the option

The embedded demo's defaults (a generated dataset, a small search at 8 x 56^2, a short recipe) live here
and nowhere else: :data:`DEMO`, :data:`DEMO_DATA`, :data:`DEMO_RECIPE`. Nothing here imports Ray, MLflow or
torch: checking a command line takes well under a second.
"""
from __future__ import annotations

import argparse
import json
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e3d.options import (Parser, SearchDefaults, add_clip_options, non_negative_int, positive_float,  # noqa: F401
                         positive_int, resolve_clip, typed_option)

# -- the embedded demo --------------------------------------------------------------------------------------
# 8 x 56^2 clips (at 8 x 64^2 a 3x3x3 stage would see an 8x8x8 map, where STEntr is infinite), a search sized
# for training on a laptop CPU, candidates shallow enough to learn in a short run.
DEMO = SearchDefaults(frames=8, size=56, sampling_rate=4, budget_flops=0.08e9, max_layers=41, population=64,
                      iterations=20_000)
DEMO_DATA = {"num_classes": 4, "clips_per_class": 24, "frames": 32, "size": 64}
# PyTorch's default init and a fixed lr learn in 15 short epochs (docs/training.md "Short runs")
DEMO_RECIPE = {"epochs": 15, "batch_size": 8, "lr": 0.02, "init": "torch"}


@dataclass(frozen=True)
class TrainResources:
    """How the chosen networks train on Ray Train, the same in every job that trains them (the "resources and
    fault tolerance" options, :func:`train_resources_from_args`): ``max_concurrent`` networks at once, ``workers``
    and ``data_cpus`` per network (None: from the cluster, :func:`pipeline.train.plan_resources`),
    ``max_failures`` restarts from the last checkpoint, ``train_resource`` the custom Ray resource of the train
    nodes (:mod:`pipeline.train.resources`; "auto": ``train_gpu`` when the cluster has it or an autoscaler can
    add it), ``train_wait_s`` the longest wait for the autoscaler's train nodes."""

    max_concurrent: int | None = None
    workers: int | None = None
    data_cpus: float | None = None
    max_failures: int = 1
    train_resource: str | None = "auto"
    train_wait_s: float = 900.0

    def plan(self, networks: int) -> Any:
        """The :class:`pipeline.train.resources.ResourcePlan` for training ``networks`` on this cluster."""
        from pipeline.train import plan_resources  # noqa: PLC0415

        return plan_resources(networks, max_concurrent=self.max_concurrent, workers=self.workers,
                              data_cpus=self.data_cpus, train_resource=self.train_resource)

    def units(self, networks: int) -> int:
        """Train units (workers) wanted at once for ``networks``: what the autoscaler is asked for."""
        return min(networks, self.max_concurrent or networks) * (self.workers or 1)


RECIPES = ("sthsth", "k400")
INITS = ("model", "torch")
TRACKING_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks", "file")


# -- option groups ------------------------------------------------------------------------------------------
def add_data_options(parser: argparse.ArgumentParser, defaults: SearchDefaults = DEMO) -> argparse.ArgumentParser:
    from pipeline.video.formats import FORMATS  # noqa: PLC0415 - stdlib only

    g = parser.add_argument_group("data (pipeline.video)")
    g.add_argument("--data", metavar="PATH", help="a video dataset (folder-per-class, csv, kinetics, ssv2, ucf101); "
                                                  "default: a generated synthetic motion dataset")
    g.add_argument("--format", dest="data_format", choices=FORMATS, help="dataset format (default: detected)")
    g.add_argument("--train-scale", type=positive_int, nargs=2, metavar=("LOW", "HIGH"),
                   help="short-side scale jitter in training (default: --size to 1.15 x --size)")
    g.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None,
                   help="random horizontal flips in training (default: on for --data, off for the synthetic data; "
                        "use --no-hflip for direction-sensitive classes such as Something-Something)")
    add_clip_options(parser, defaults)
    return parser


def add_training_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    g = parser.add_argument_group("training recipe (the paper's Table 10, scaled to the run)")
    g.add_argument("--recipe", choices=RECIPES, default="sthsth", help="paper recipe to scale (default sthsth)")
    g.add_argument("--epochs", type=positive_int, help="epochs (default: demo 15; warm-up keeps its fraction)")
    g.add_argument("--batch-size", type=positive_int, help="clips per worker per step (default 8)")
    g.add_argument("--lr", type=positive_float, help="peak learning rate (default: the recipe's, linearly scaled "
                                                     f"to the global batch; demo {DEMO_RECIPE['lr']})")
    g.add_argument("--warmup-epochs", type=float, help="override the scaled warm-up")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--label-smoothing", type=float)
    g.add_argument("--no-amp", action="store_true", help="full precision on GPUs too")
    g.add_argument("--init", choices=INITS, help="weight init: 'model' (e3d.model's, the paper runs; default with "
                                                  "--data) or 'torch' (PyTorch defaults; the demo's short runs)")
    g.add_argument("--eval-clips", type=positive_int, help="K clips x crops per video in the final evaluation "
                                                           "(default 2)")
    g.add_argument("--eval-crops", type=int, choices=(1, 3), default=3, help="crops per clip (default 3)")
    g = parser.add_argument_group("resources and fault tolerance")
    g.add_argument("--max-concurrent", type=positive_int, help="candidates training at once (default: as many as fit)")
    g.add_argument("--workers", type=positive_int, help="Train workers per candidate (default: from the cluster)")
    g.add_argument("--data-cpus", type=positive_float, help="CPUs for Ray Data per candidate (default: from the cluster)")
    g.add_argument("--max-failures", type=non_negative_int, default=1,
                   help="restarts from the last checkpoint on worker loss (default 1)")
    g.add_argument("--train-resource", type=_resource_name, default="auto", metavar="NAME",
                   help="custom Ray resource marking the train nodes: each Train worker asks for one unit, and the "
                        "job asks the autoscaler for them before training (default auto: train_gpu, cluster.yaml's "
                        "train nodes, when the cluster has it or an autoscaler runs; GPU: plain GPUs; none: no pin)")
    g.add_argument("--train-wait", type=positive_float, default=900.0, metavar="SECONDS",
                   help="longest wait for the autoscaler's train nodes before training (default 900)")
    return parser


def train_resources_from_args(args: argparse.Namespace) -> TrainResources:
    """The :class:`TrainResources` of the "resources and fault tolerance" options (:func:`add_training_options`)."""
    return TrainResources(max_concurrent=args.max_concurrent, workers=args.workers, data_cpus=args.data_cpus,
                          max_failures=args.max_failures, train_resource=args.train_resource,
                          train_wait_s=args.train_wait)


def add_selection_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    g = parser.add_argument_group("candidates")
    g.add_argument("--top-k", type=positive_int, default=2, help="structurally distinct candidates to train (default 2)")
    g.add_argument("--select", choices=("top", "pareto"), default="top",
                   help="top: the best-ranked; pareto: spread along the score/FLOPs/params front (default top)")
    g.add_argument("--distinct-by", type=_distinct_by, default=("kernels", "depths"),
                   help="what makes two candidates distinct, e.g. kernels,depths (default) or kernels,depths,widths")
    g.add_argument("--also", action="append", default=[], metavar="NAME",
                   help="also train a zoo entry or spec file on the same data at the same clip (e.g. X3D-S)")
    return parser


def add_island_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    g = parser.add_argument_group("search islands (evolution on Ray actors)")
    g.add_argument("--actors", type=positive_int, help="islands, one Ray actor each (default: from the cluster's CPUs)")
    g.add_argument("--chunk-iterations", type=positive_int, help="iterations per island per round (default 25000)")
    g.add_argument("--migration-interval", type=positive_int, help="rounds between migrations (default 1)")
    g.add_argument("--migration-size", type=non_negative_int, help="elites each island sends on (default 4)")
    g.add_argument("--cpus-per-actor", type=positive_float, default=1.0, help="CPUs per island actor (default 1)")
    g.add_argument("--actor-resources", type=_resources, metavar="JSON",
                   help='custom Ray resources per island, e.g. \'{"search_cpu": 1}\' (cluster.yaml\'s search nodes)')
    g.add_argument("--max-restarts", type=non_negative_int, default=3, help="restarts per island after actor deaths")
    g.add_argument("--search-resource", type=_resource_name, default="auto", metavar="NAME",
                   help="custom Ray resource marking the search nodes: each island asks for --cpus-per-actor of it "
                        "(default auto: search_cpu, cluster.yaml's search nodes, when the cluster has it; none: "
                        "anywhere; --actor-resources overrides)")
    return parser


def islands_from_args(args: argparse.Namespace) -> Any:
    """The :class:`pipeline.context.IslandBackend` of the island options (:func:`add_island_options`)."""
    from pipeline.context import IslandBackend  # noqa: PLC0415

    return IslandBackend(actors=args.actors, chunk_iterations=args.chunk_iterations,
                         migration_interval=args.migration_interval, migration_size=args.migration_size,
                         cpus_per_actor=args.cpus_per_actor, resources=args.actor_resources,
                         max_restarts=args.max_restarts, search_resource=args.search_resource)


def add_tracking_options(parser: argparse.ArgumentParser, experiment: str, *, optional: bool = False,
                         models: bool = True) -> argparse.ArgumentParser:
    g = parser.add_argument_group("MLflow")
    g.add_argument("--tracking-uri", type=_tracking_uri, default=os.environ.get("MLFLOW_TRACKING_URI") or None,
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite under --out/mlruns)")
    g.add_argument("--experiment", default=experiment, help=f"MLflow experiment (default {experiment})")
    if models:
        g.add_argument("--no-log-model", action="store_true", help="do not log the final models to MLflow")
    if optional:
        g.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    return parser


def tracking_from_args(args: argparse.Namespace, out: str | Path):
    """The job's :class:`pipeline.tracking.Tracking`: ``--tracking-uri``, else a SQLite store under
    ``<out>/mlruns`` (everything a job writes stays under its ``--out``); None with ``--no-mlflow``."""
    from pipeline.tracking import Tracking  # noqa: PLC0415

    if getattr(args, "no_mlflow", False):
        return None
    if args.tracking_uri:
        return Tracking(args.tracking_uri, args.experiment)
    return Tracking.local(Path(out).expanduser() / "mlruns", args.experiment)


def add_ray_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    g = parser.add_argument_group("Ray")
    g.add_argument("--address", type=_address, help="Ray cluster address: auto, HOST:PORT or ray://HOST:PORT "
                                                    "(default: $RAY_ADDRESS, else start a local Ray)")
    g.add_argument("--num-cpus", type=positive_int, help="CPUs of the local Ray started when no address is given")
    g.add_argument("--verbose", action="store_true", help="show Ray's own logs and progress bars on the console "
                                                          "(they always go to Ray's log files)")
    return parser


# -- value types ----------------------------------------------------------------------------------------------
def _distinct_by(text: str) -> tuple[str, ...]:
    allowed = ("family", "kernels", "depths", "widths", "bottlenecks", "input")
    keys = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in keys if k not in allowed]
    if bad or not keys:
        raise argparse.ArgumentTypeError(f"choose among {', '.join(allowed)}, comma-separated; got {text!r}")
    return keys


def _resources(text: str) -> dict[str, float]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc.msg}): {text!r}") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, (int, float)) and v > 0
                                              for k, v in value.items()):
        raise argparse.ArgumentTypeError(f"expected an object of positive amounts, e.g. '{{\"search_cpu\": 1}}'; "
                                         f"got {text!r}")
    return {k: float(v) for k, v in value.items()}


def _resource_name(text: str) -> str | None:
    """A Ray resource name, ``auto`` or ``none`` (None)."""
    if text.lower() in ("none", "off"):
        return None
    if text == "auto" or (text and all(c.isalnum() or c in "_-.:" for c in text)):
        return text
    raise argparse.ArgumentTypeError(f"expected auto, none or a Ray resource name (letters, digits, _-.:), "
                                     f"got {text!r}")


def _tracking_uri(text: str) -> str:
    parsed = urllib.parse.urlparse(text)
    if parsed.username or parsed.password:  # a URI is printed and logged: credentials travel in the environment
        raise argparse.ArgumentTypeError("put no credentials in the URI (it is printed and logged): set "
                                         "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD instead")
    scheme = parsed.scheme
    if scheme not in TRACKING_SCHEMES:
        raise argparse.ArgumentTypeError(f"expected a URI with one of the schemes {', '.join(TRACKING_SCHEMES)} "
                                         f"(e.g. sqlite:////abs/mlflow.db or http://host:5000), got {text!r}")
    if scheme == "sqlite" and not text.startswith("sqlite:///"):
        raise argparse.ArgumentTypeError(f"a SQLite store is written sqlite:///relative.db or "
                                         f"sqlite:////abs/path.db, got {text!r}")
    return text


def _address(text: str) -> str:
    if text == "auto" or text.startswith("ray://"):
        return text
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected auto, HOST:PORT or ray://HOST:PORT, got {text!r}")
    return text


# -- checks that need more than one value ---------------------------------------------------------------------
def check_data(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Any:
    """Read ``--data`` (the dataset index only, no decoding); None for the synthetic data."""
    if not args.data:
        return None
    from pipeline.video.formats import DatasetError, load_dataset  # noqa: PLC0415

    try:
        return load_dataset(args.data, args.data_format, seed=args.seed)
    except (DatasetError, OSError) as exc:
        parser.error(f"argument --data: {exc}")


def check_specs(parser: argparse.ArgumentParser, items: list[str], option: str) -> list[Any]:
    from e3d.spec import SpecError  # noqa: PLC0415
    from e3d.zoo import resolve_specs  # noqa: PLC0415

    try:
        return resolve_specs(items)
    except SpecError as exc:
        parser.error(f"argument {option}: {exc}")


def check_out(parser: argparse.ArgumentParser, out: str) -> Path:
    path = Path(out).expanduser()
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                parser.error(f"argument --out: {parent} exists and is not a folder")
            if not os.access(parent, os.W_OK):
                parser.error(f"argument --out: {parent} is not writable")
            break
    return path


def train_scale(args: argparse.Namespace, size: int) -> tuple[int, int]:
    """``--train-scale``, else short sides from ``size`` to ``1.15 * size`` (the main job's jitter since its
    first release: run directories written before keep resuming; pass 256 320 for Kinetics-style 224 crops)."""
    if args.train_scale:
        lo, hi = args.train_scale
        return lo, hi
    return size, int(size * 1.15)


def check_clip(parser: argparse.ArgumentParser, args: argparse.Namespace, clip_shape: Any, *, demo: bool) -> Any:
    """The :class:`pipeline.video.ray_data.ClipConfig` of the options."""
    from pipeline.video.clip import ClipConfig  # noqa: PLC0415

    lo, hi = train_scale(args, clip_shape.size)
    try:
        return ClipConfig(frames=clip_shape.frames, sampling_rate=clip_shape.sampling_rate or 4, size=clip_shape.size,
                          train_scale=(lo, hi), hflip=args.hflip if args.hflip is not None else not demo)
    except ValueError as exc:
        parser.error(f"argument --train-scale: {exc}" if args.train_scale
                     else f"argument {typed_option(parser, '--size')}: {exc}")


def check_recipe(parser: argparse.ArgumentParser, args: argparse.Namespace, *, demo: bool) -> Any:
    from pipeline.train.recipe import Recipe  # noqa: PLC0415 - pure Python

    base = Recipe.paper(args.recipe)
    defaults = DEMO_RECIPE if demo else {"epochs": 15, "batch_size": 8}
    changes: dict[str, Any] = {}
    for key in ("weight_decay", "label_smoothing"):
        if getattr(args, key, None) is not None:
            changes[key] = getattr(args, key)
    changes["init"] = args.init or ("torch" if demo else "model")
    if args.no_amp:
        changes["amp"] = False
    if args.warmup_epochs is not None:
        changes["warmup_epochs"] = args.warmup_epochs
    try:
        return base.scaled(epochs=args.epochs or defaults["epochs"], batch_size=args.batch_size or defaults["batch_size"],
                           lr=args.lr or (DEMO_RECIPE["lr"] if demo else None), **changes)
    except ValueError as exc:
        option = next((f"--{k.replace('_', '-')}" for k in ("warmup_epochs", "weight_decay", "label_smoothing")
                       if k in str(exc)), "--epochs")
        parser.error(f"argument {option}: {exc}")


# -- doing ---------------------------------------------------------------------------------------------------
def init_ray(args: argparse.Namespace):
    """Start (or connect to) Ray. Unless ``--verbose``, the console shows the project's own lines only: Ray's
    logs, warnings and progress bars go to its log files (:mod:`pipeline.quiet`)."""
    import logging  # noqa: PLC0415

    import ray  # noqa: PLC0415

    if ray.is_initialized():
        return ray
    address = args.address or os.environ.get("RAY_ADDRESS") or None
    verbose = getattr(args, "verbose", False)
    kwargs: dict[str, Any] = {"address": address, "log_to_driver": True}
    if address is None:
        kwargs |= {"include_dashboard": False}
        if args.num_cpus:
            kwargs["num_cpus"] = args.num_cpus
    if not verbose:
        from pipeline.quiet import quiet_driver  # noqa: PLC0415

        quiet_driver()
        kwargs |= {"logging_level": logging.ERROR,
                   "runtime_env": {"worker_process_setup_hook": "pipeline.quiet.quiet_worker"}}
    ray.init(**kwargs)
    if not verbose:
        from pipeline.quiet import filter_worker_output  # noqa: PLC0415

        filter_worker_output()
    return ray
