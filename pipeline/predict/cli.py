"""``e3d predict MODEL VIDEO [VIDEO ...]``: the top-k labels of videos, decoded with the views the model was
evaluated with.

    e3d predict outputs/search_and_train clip.mp4              # a job's champion (its model folder when written)
    e3d predict runs/x/candidates/rank1-ab12cd34 a.avi b.mp4   # one trained candidate
    e3d predict model/ clip.mp4 --json --topk 3                # a model folder; one JSON object per video

MODEL is a model folder (config.json + model.safetensors), a job's output folder (its champion) or a candidate
folder. Each video prints its top-k class names with their probabilities (the softmax averaged over clips x
crops views), or one line saying why it could not be decoded. Exit status: 0, 1 when a video could not be
decoded, 2 for bad input (a one-line message naming the argument).
"""
from __future__ import annotations

import argparse
import json
import sys

from e3d.options import positive_int


def add_predict_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("predict", help="top-k labels of videos with a trained network",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="a model folder, a job's output folder or a candidate folder")
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files")
    p.add_argument("--topk", type=positive_int, default=5, help="class names per video (default 5)")
    p.add_argument("--json", action="store_true", help="one JSON object per video instead of the table")
    p.add_argument("--clips", type=positive_int, help="clips per video (default: the model's evaluation)")
    p.add_argument("--crops", type=int, choices=(1, 3), help="crops per clip (default: the model's evaluation)")
    p.add_argument("--labels", metavar="FILE", help="class names (label_map.json, a model's config.json or one name "
                                                    "a line) for a candidate that did not record them")
    p.add_argument("--threads", type=positive_int, help="torch threads (default: torch's)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="views per forward pass (default 16)")
    p.set_defaults(func=run_predict_command)
    return p


def run_predict_command(args: argparse.Namespace) -> int:
    from e3d.model_folder import ModelFolderError
    from e3d.model_source import open_model, read_labels
    from e3d.spec import SpecError

    try:
        labels = read_labels(args.labels) if args.labels else None
    except ModelFolderError as exc:
        print(f"e3d predict: error: --labels: {exc}", file=sys.stderr)
        return 2
    try:
        found = open_model(args.model, labels=labels, clips=args.clips, crops=args.crops)
    except (ModelFolderError, SpecError) as exc:
        print(f"e3d predict: error: MODEL: {exc}", file=sys.stderr)
        return 2
    try:
        import av  # noqa: F401 - PyAV decodes the videos
    except ImportError:
        print("e3d predict: error: PyAV is not installed: pip install 'e3d-ray[ray]'", file=sys.stderr)
        return 2
    import torch

    from .single import format_prediction, predict_videos

    if args.threads:
        torch.set_num_threads(args.threads)
    pre = found.preprocessing
    for note in found.notes:
        print(f"e3d predict: note: {note}", file=sys.stderr)
    if not args.json:
        print(f"{found.kind} {found.path} ({found.card.name or found.model.spec.name}): {len(pre.labels)} classes, "
              f"{pre.clips} clips x {pre.crops} crops of {pre.frames}x{pre.size}^2 every {pre.sampling_rate} frames")
    failed = 0
    for p in predict_videos(found.model, pre, args.videos, topk=args.topk, batch_size=args.batch_size):
        failed += p.error is not None
        print(json.dumps(p.to_dict()) if args.json else format_prediction(p), flush=True)
    return 1 if failed else 0
