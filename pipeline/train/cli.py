"""Command-line options for training jobs (``jobs/train.py``; reusable by ``jobs/search_and_train.py``).

Every option maps onto one field of :class:`Recipe`, :class:`pipeline.video.ray_data.ClipConfig` or a
keyword of :func:`pipeline.train.train_candidates`; unset options keep the library's defaults.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from e3d import zoo
from e3d.spec import ArchSpec, SpecError, load_specs

from .recipe import INITS, PRESETS, Recipe

# The embedded demo: synthetic motion videos small enough to train two networks on 2 CPUs in minutes.
DEMO_DATA = dict(num_classes=4, clips_per_class=24, size=64, frames=32)
DEMO_CLIP = dict(frames=8, sampling_rate=4, size=64, train_scale=(64, 72), hflip=False)
# PyTorch's default init and a fixed lr: see recipe.INITS and docs/training.md ("Short runs").
DEMO_RECIPE = dict(epochs=15, batch_size=8, lr=0.02, init="torch")


def resolve_specs(items: list[str]) -> list[ArchSpec]:
    """Zoo names or spec JSON files (one spec or a list per file), in order."""
    specs: list[ArchSpec] = []
    for item in items:
        if Path(item).suffix == ".json" or Path(item).is_file():
            specs.extend(load_specs(item))
        else:
            try:
                specs.append(zoo.get(item))
            except KeyError as exc:
                raise SpecError(f"{item!r} is neither a spec file nor a zoo entry ({exc.args[0]})") from None
    return specs


def add_data_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    g = parser.add_argument_group("data (pipeline.video)")
    g.add_argument("--data", metavar="PATH", help="a video dataset (folder, csv, kinetics, ssv2, ucf101); "
                                                  "default: generate the synthetic motion dataset")
    g.add_argument("--format", help="dataset format (default: detected)")
    g.add_argument("--synthetic-dir", metavar="DIR", help="where to write the synthetic dataset "
                                                          "(default <out>/data/synthetic)")
    g.add_argument("--frames", type=int, help="frames per clip")
    g.add_argument("--sampling-rate", type=int, help="frames skipped between sampled frames")
    g.add_argument("--size", type=int, help="crop size (the network is trained at frames x size x size)")
    g.add_argument("--train-scale", type=int, nargs=2, metavar=("LOW", "HIGH"), help="short-side scale jitter")
    g.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None,
                   help="random horizontal flips (off for direction-sensitive classes; default: on for real "
                        "data, off for the synthetic motion data)")
    return parser


def add_training_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    g = parser.add_argument_group("training recipe (defaults: the paper's, Table 10, scaled)")
    g.add_argument("--preset", choices=sorted(PRESETS), default="sthsth", help="paper recipe to scale")
    g.add_argument("--epochs", type=int, help="epochs (warm-up keeps its fraction of the run)")
    g.add_argument("--batch-size", type=int, help="clips per worker per step")
    g.add_argument("--lr", type=float, help="absolute peak learning rate (default: the preset's, linearly "
                                            "scaled to the global batch)")
    g.add_argument("--warmup-epochs", type=float, help="override the scaled warm-up")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--label-smoothing", type=float)
    g.add_argument("--no-amp", action="store_true", help="full precision on GPUs too")
    g.add_argument("--init", choices=sorted(INITS), help="weight init: 'model' (e3d.model's X3D-style init, the "
                                                       "paper runs') or 'torch' (PyTorch defaults: short runs)")
    g.add_argument("--eval-clips", type=int, default=None, help="K clips per video in the final evaluation")
    g.add_argument("--eval-crops", type=int, default=3, choices=(1, 3), help="crops per clip (default 3)")
    g = parser.add_argument_group("resources and fault tolerance")
    g.add_argument("--max-concurrent", type=int, help="candidates training at once (default: as many as fit)")
    g.add_argument("--workers", type=int, help="Train workers per candidate (default: from the cluster)")
    g.add_argument("--data-cpus", type=float, help="CPUs for Ray Data per candidate (default: from the cluster)")
    g.add_argument("--max-failures", type=int, default=1, help="restarts from the last checkpoint on worker loss")
    g.add_argument("--no-resume", action="store_true",
                   help="train from scratch even if the same run was checkpointed under --out")
    g.add_argument("--seed", type=int, default=0)
    return parser


def recipe_from_args(args: argparse.Namespace, demo: bool = False) -> Recipe:
    base = Recipe.paper(args.preset)
    if demo:
        base = base.scaled(**DEMO_RECIPE)
    changes: dict[str, Any] = {}
    for key in ("weight_decay", "label_smoothing", "init"):
        if getattr(args, key, None) is not None:
            changes[key] = getattr(args, key)
    if getattr(args, "no_amp", False):
        changes["amp"] = False
    recipe = base.scaled(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, **changes)
    if args.warmup_epochs is not None:
        recipe = recipe.scaled(warmup_epochs=args.warmup_epochs)
    return recipe


def clip_from_args(args: argparse.Namespace, demo: bool = False):
    from pipeline.video.ray_data import ClipConfig

    base: dict[str, Any] = dict(DEMO_CLIP) if demo else {}
    for key in ("frames", "sampling_rate", "size"):
        if getattr(args, key, None) is not None:
            base[key] = getattr(args, key)
    if args.train_scale:
        base["train_scale"] = tuple(args.train_scale)
    elif "size" in base and not demo:
        size = base["size"]
        base["train_scale"] = (round(size * 8 / 7), round(size * 10 / 7))  # 256-320 for 224, as ClipConfig
    elif demo and args.size:
        base["train_scale"] = (args.size, round(args.size * 9 / 8))
    if args.hflip is not None:
        base["hflip"] = args.hflip
    return ClipConfig(**base)


def dataset_from_args(args: argparse.Namespace, out: Path):
    """``(VideoDataset, is_demo)``: ``--data``, or the synthetic motion dataset (generated once)."""
    from pipeline.video.formats import load_dataset
    from pipeline.video.synthetic import make_synthetic_dataset

    if args.data:
        return load_dataset(args.data, args.format), False
    root = Path(args.synthetic_dir) if args.synthetic_dir else out / "data" / "synthetic"
    make_synthetic_dataset(root, **DEMO_DATA, seed=args.seed)
    return load_dataset(root), True


def describe_args(args: argparse.Namespace) -> dict[str, str]:
    return {f"job.{k}": json.dumps(v) if isinstance(v, (list, tuple, dict)) else str(v)
            for k, v in vars(args).items() if v is not None}
