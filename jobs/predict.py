#!/usr/bin/env python
"""Batch inference: label every video of a dataset (or a folder of videos) with a trained network, on Ray Data.

    python jobs/predict.py --model outputs/search_and_train --data ../shared/data/ucf101-6class --out pred/
    python jobs/predict.py --model model/ --data incoming/ --format files --out pred/ --logits
    python jobs/predict.py --model model/ --data /data/k400 --split val --out s3-mounted/pred \\
        --gpus-per-actor 1 --actors 8 --batch-size 64 --address auto

MODEL is a model folder, a job's output folder (its champion) or a candidate folder. Videos are decoded as Ray
Data CPU tasks with the views the network was evaluated with (clips x crops, as the training job's multi-view
evaluation), the network runs on an actor pool (--actors, --gpus-per-actor, --batch-size views per pass), the
softmax is averaged per video. Output under --out: predictions.parquet (path, top1, topk, probs, label and
label_rank where the data has labels, error, optionally logits), metrics.json (top-1/top-5, undecodable files,
throughput) and confusion.png where the data has labels. A killed run resumes: rerun the same command and the
blocks already written (parts/) are not redone (a full disk ends the run with one line and exit status 28: free
some space and rerun). On a cluster (--address auto) the same command spreads over
its nodes. Every option is checked before any work (exit 2 and a line naming it).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from e3d.options import Parser, positive_float, positive_int  # noqa: E402
from pipeline.faults import check_free_space, exits_on_out_of_space  # noqa: E402
from pipeline.options import add_ray_options, check_out, init_ray  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    from pipeline.predict.inputs import INPUT_FORMATS, SPLITS  # noqa: PLC0415 - stdlib only

    p = Parser(description=__doc__.split("\n")[0], epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("what to label")
    g.add_argument("--model", required=True, metavar="MODEL",
                   help="a model folder, a job's output folder (its champion) or a candidate folder")
    g.add_argument("--data", required=True, metavar="PATH", help="a dataset (folder-per-class, csv, kinetics, ssv2, "
                                                                 "ucf101), a folder of videos or one video")
    g.add_argument("--format", dest="data_format", choices=INPUT_FORMATS,
                   help="dataset format; 'files': every video under --data, unlabelled (default: detected)")
    g.add_argument("--split", choices=SPLITS, default="all",
                   help="which videos of a dataset: all (default), train or val (the training jobs' split for --seed)")
    g.add_argument("--seed", type=int, default=0, help="seed of the split of formats without one (default 0, as "
                                                       "the jobs)")
    g.add_argument("--labels", metavar="FILE", help="class names for a candidate that did not record them "
                                                    "(label_map.json or one name a line)")
    g.add_argument("--clips", type=positive_int, help="clips per video (default: the model's evaluation)")
    g.add_argument("--crops", type=int, choices=(1, 3), help="crops per clip (default: the model's evaluation)")
    g = p.add_argument_group("output")
    g.add_argument("--out", required=True, metavar="PRED", help="output folder (a rerun resumes it)")
    g.add_argument("--topk", type=positive_int, default=5, help="class names kept per video (default 5)")
    g.add_argument("--logits", action="store_true", help="also keep each class's logit averaged over the views")
    g.add_argument("--restart", action="store_true", help="discard what --out holds and start again")
    g = p.add_argument_group("inference on Ray Data")
    g.add_argument("--block-size", type=positive_int, default=64, help="videos per part file, the unit a killed run "
                                                                       "resumes from (default 64)")
    g.add_argument("--batch-size", type=positive_int, default=16, help="views per forward pass (default 16)")
    g.add_argument("--actors", type=positive_int, help="network actors (default: an autoscaling pool up to what the "
                                                       "cluster holds)")
    g.add_argument("--gpus-per-actor", type=float, default=0.0, help="GPUs per network actor (default 0: CPU)")
    g.add_argument("--cpus-per-actor", type=positive_float, default=1.0, help="CPUs per network actor (default 1)")
    g.add_argument("--decode-cpus", type=positive_float, default=1.0, help="CPUs per decode task (default 1)")
    g.add_argument("--decode-timeout", type=positive_float, default=30.0,
                   help="seconds before a file counts as hung (default 30)")
    add_ray_options(p)
    return p


@exits_on_out_of_space
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    if args.gpus_per_actor < 0:
        parser.error(f"argument --gpus-per-actor: must be >= 0, got {args.gpus_per_actor:g}")
    out = check_out(parser, args.out).resolve()

    from e3d.model_folder import ModelFolderError  # noqa: PLC0415
    from e3d.model_source import open_model, read_labels  # noqa: PLC0415
    from e3d.spec import SpecError  # noqa: PLC0415
    from pipeline.predict.batch import BatchOptions, fingerprint, model_payload, resume_conflict  # noqa: PLC0415
    from pipeline.predict.inputs import list_videos  # noqa: PLC0415
    from pipeline.video.formats import DatasetError  # noqa: PLC0415

    try:
        labels = read_labels(args.labels) if args.labels else None
    except ModelFolderError as exc:
        parser.error(f"argument --labels: {exc}")
    try:
        found = open_model(args.model, labels=labels, clips=args.clips, crops=args.crops)
    except (ModelFolderError, SpecError) as exc:
        parser.error(f"argument --model: {exc}")
    try:
        videos = list_videos(args.data, format=args.data_format, split=args.split, seed=args.seed)
    except (DatasetError, OSError) as exc:
        parser.error(f"argument --data: {exc}")
    options = BatchOptions(block_size=args.block_size, batch_size=args.batch_size, actors=args.actors,
                           gpus_per_actor=args.gpus_per_actor, cpus_per_actor=args.cpus_per_actor,
                           decode_cpus=args.decode_cpus, topk=args.topk, logits=args.logits,
                           decode_timeout=args.decode_timeout)
    pre = found.preprocessing
    conflict = None if args.restart else resume_conflict(out, fingerprint(model_payload(found.model), pre, videos,
                                                                          options))
    if conflict:
        parser.error(f"argument --out: {conflict}")
    for note in found.notes:
        print(f"[predict] note: {note}")
    if videos.labels is not None:
        unknown = sorted(set(videos.labels) - set(pre.labels))
        if unknown:
            print(f"[predict] note: {len(unknown)} of the data's classes are not the network's "
                  f"({', '.join(unknown[:5])}{', ...' if len(unknown) > 5 else ''}): their videos are not scored")
    # a Parquet row per video: its path, top-k names and probabilities (and logits): a few hundred bytes to a few kB
    check_free_space(out, len(videos.paths) * (2e3 + (8 * len(pre.labels) if args.logits else 0)) + 1e6,
                     "the predictions")
    print(f"[predict] {found.kind} {found.path} ({found.card.name or found.model.spec.name}, "
          f"{len(pre.labels)} classes)")

    ray = init_ray(args)
    res = ray.cluster_resources()
    if not _autoscaled():
        actors = args.actors or 1
        need_cpu = args.decode_cpus + actors * args.cpus_per_actor
        if res.get("CPU", 0) < need_cpu:
            parser.error(f"argument --cpus-per-actor: the cluster has {res.get('CPU', 0):g} CPUs; {actors} network "
                         f"actor(s) and one decode task need {need_cpu:g} (lower --actors, --cpus-per-actor or "
                         "--decode-cpus)")
        if args.gpus_per_actor and res.get("GPU", 0) < actors * args.gpus_per_actor:
            parser.error(f"argument --gpus-per-actor: the cluster has {res.get('GPU', 0):g} GPUs for {actors} "
                         f"actor(s) of {args.gpus_per_actor:g}")

    from pipeline.predict.batch import ResumeError, run_batch  # noqa: PLC0415

    try:
        report = run_batch(found.model, pre, videos, out, options, restart=args.restart)
    except ResumeError as exc:
        parser.error(f"argument --out: {exc}")
    m = report.metrics
    if report.undecodable:
        print(f"[predict] {len(report.undecodable)} undecodable file(s) (listed in metrics.json):")
        for item in report.undecodable[:20]:
            print(f"[predict]   {item['path']}: {item['error']}")
        if len(report.undecodable) > 20:
            print(f"[predict]   ... and {len(report.undecodable) - 20} more")
    if report.videos_now:
        share = report.decode_cpu_s / report.cpu_s if report.cpu_s else float("nan")
        print(f"[predict] {report.videos_now} videos in {report.wall_s:.1f} s: {report.videos_per_s:.2f} videos/s, "
              f"{report.videos_per_cpu_s:.2f} videos per CPU-second ({report.cpu_s:.0f} CPU-s, "
              f"{share:.0%} of it decoding)")
    if m.get("scored"):
        print(f"[predict] top-1 {m['top1']:.2f} %, top-5 {m['top5']:.2f} % over {m['scored']} labelled videos; "
              f"confusion matrix: {report.confusion}")
    print(f"[predict] {report.decoded}/{report.videos} videos labelled: {report.predictions} "
          f"(wall time {time.perf_counter() - t0:.0f} s)")
    return 0


def _autoscaled() -> bool:
    try:
        from pipeline.train.resources import has_autoscaler  # noqa: PLC0415

        return has_autoscaler()
    except Exception:  # no autoscaler status: a plain local Ray
        return False


if __name__ == "__main__":
    sys.exit(main())
