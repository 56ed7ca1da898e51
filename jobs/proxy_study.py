#!/usr/bin/env python
"""Proxy/accuracy correlation study: sample architectures across a FLOPs range, train them briefly, score
them with every registered proxy, and report how well each proxy ranks them (E3D Sec. 4.3, Fig. 3).

    python jobs/proxy_study.py --models 8 --epochs 2 --clip-frames 4 --clip-size 32    # synthetic videos
    python jobs/proxy_study.py --data ~/ucf101 --models 24 --epochs 8 --clip-frames 8 --clip-size 112 \\
        --zoo E3D-S,X3D-S --out outputs/proxy-study
    python jobs/proxy_study.py --data ~/ucf101 --search-scores stentr,homoentr,zen,maedet,random \\
        --search-iterations 200 --search-population 16 --out outputs/proxy-study-search

Every model trains with one short recipe (SGD, warm-up + cosine, PyTorch init) as a Ray Tune trial,
checkpointed each epoch; re-running the same command on the same --out resumes: finished models are not
trained again. Outputs in --out: models.csv, correlations.json, table.md, scatter_<proxy>.png,
scatter.png, tau_vs_epochs.png (and searches.csv); MLflow: a parent run with all of it, one child run per
model (default store <out>/mlruns). The work is pipeline.proxy_study (see docs/proxy-study.md).
Exit status 28: the disk is full (one line; free space and rerun: it resumes; docs/faults.md).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from pipeline.faults import exits_on_out_of_space  # noqa: E402 - one line and exit 28 on a full disk


def names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def build_parser() -> argparse.ArgumentParser:
    from e3d.options import Parser, positive_float, positive_int  # noqa: PLC0415
    from pipeline.options import add_ray_options, add_tracking_options  # noqa: PLC0415
    from pipeline.video.formats import FORMATS  # noqa: PLC0415

    p = Parser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
               epilog=__doc__)
    p.add_argument("--out", default="outputs/proxy-study", help="outputs, checkpoints, state (resume here)")
    g = p.add_argument_group("data")
    g.add_argument("--data", metavar="PATH", help="a video dataset (default: generated synthetic motion videos)")
    g.add_argument("--format", dest="data_format", choices=FORMATS, help="dataset format (default: detected)")
    g.add_argument("--synthetic-dir", metavar="DIR", help="where to write the synthetic videos (default <out>/data)")
    g.add_argument("--clip-frames", type=positive_int, default=8, help="frames per clip (default 8)")
    g.add_argument("--clip-size", type=positive_int, default=112,
                   help="crop size; models are sampled, scored and trained at it (default 112)")
    g.add_argument("--sampling-rate", type=positive_int, default=4, help="frames skipped between sampled frames")
    g.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None,
                   help="random flips in training (default: on for --data, off for the synthetic motion videos)")
    g = p.add_argument_group("models")
    g.add_argument("--models", type=positive_int, default=24, help="architectures sampled from the search space")
    g.add_argument("--gflops", type=positive_float, nargs=2, metavar=("MIN", "MAX"),
                   help="FLOPs range at the clip (default 10-100%% of the S budget scaled to the clip)")
    g.add_argument("--max-layers", type=positive_int, default=83, help="conv layer limit of the sampled specs")
    g.add_argument("--zoo", type=names, default=(), help="zoo references to add, e.g. E3D-S,X3D-S")
    g.add_argument("--search-scores", type=names, default=(),
                   help="also train the winner of an EA run with each score (and 'random'), e.g. "
                        "stentr,homoentr,zen,maedet,random")
    g.add_argument("--search-gflops", type=positive_float, help="the searches' FLOPs budget (default: the range's MAX)")
    g.add_argument("--search-iterations", type=positive_int, default=200, help="EA iterations per search")
    g.add_argument("--search-population", type=positive_int, default=16, help="EA population per search")
    g = p.add_argument_group("scores")
    g.add_argument("--scores", type=names, default=(), help="proxies to study (default: every registered score)")
    g.add_argument("--repeats", type=positive_int, default=1, help="seeds averaged per forward proxy")
    g.add_argument("--naswot-batch", type=positive_int, default=8, help="training clips NASWOT scores on")
    g = p.add_argument_group("training (one short recipe for every model)")
    g.add_argument("--epochs", type=positive_int, default=8)
    g.add_argument("--batch-size", type=positive_int, default=8, help="clips per worker per step")
    g.add_argument("--lr", type=positive_float, default=0.02, help="peak learning rate")
    g.add_argument("--init", default="torch", help="weight init, one of pipeline.train.recipe.INITS "
                                                   "(default torch: PyTorch's, for short runs)")
    g.add_argument("--eval-clips", type=positive_int, default=4, help="clips per video in the multi-view evaluation")
    g.add_argument("--eval-crops", type=int, choices=(1, 3), default=3, help="crops per clip")
    g.add_argument("--max-concurrent", type=positive_int, help="models training at once (default: as many as fit)")
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("analysis")
    g.add_argument("--bins", type=positive_int, default=3, help="FLOPs bins for the within-bin correlation")
    g.add_argument("--bootstrap", type=positive_int, default=1000, help="bootstrap resamples for the 95%% intervals")
    g.add_argument("--top-k", type=positive_int, help="k of the top-k hit rate (default: a quarter of the models)")
    add_tracking_options(p, "e3d-proxy-study", optional=True, models=False)
    add_ray_options(p)
    return p


@exits_on_out_of_space
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from pipeline.options import check_data, check_out, init_ray, tracking_from_args  # noqa: PLC0415
    from pipeline.proxy_study import StudyConfig, StudyError, check_study, run_study  # noqa: PLC0415

    out = check_out(parser, args.out).resolve()
    try:
        config = StudyConfig(
            models=args.models, epochs=args.epochs, clip_frames=args.clip_frames, clip_size=args.clip_size,
            sampling_rate=args.sampling_rate, gflops=tuple(args.gflops) if args.gflops else None,
            max_layers=args.max_layers, scores=args.scores, zoo=args.zoo, search_scores=args.search_scores,
            search_gflops=args.search_gflops, search_iterations=args.search_iterations,
            search_population=args.search_population, repeats=args.repeats, naswot_batch=args.naswot_batch,
            batch_size=args.batch_size, lr=args.lr, init=args.init,
            hflip=args.hflip if args.hflip is not None else bool(args.data), eval_clips=args.eval_clips,
            eval_crops=args.eval_crops, max_concurrent=args.max_concurrent, bins=args.bins,
            bootstrap=args.bootstrap, top_k=args.top_k, seed=args.seed)
        dataset = check_data(parser, args) or synthetic_data(args, out)
        models = check_study(config, dataset)
    except StudyError as exc:
        parser.error(f"argument --{exc.field.replace('_', '-')}: {exc.message}")

    init_ray(args)
    tracking = tracking_from_args(args, out)
    t0 = time.perf_counter()
    try:
        summary = run_study(config, dataset, out, tracking=tracking, models=models)
    except StudyError as exc:
        parser.error(f"argument --{exc.field.replace('_', '-')}: {exc.message}")
    failed = [r["name"] for r in summary.rows if r["error"]]
    print(f"wall time {time.perf_counter() - t0:.0f} s; {len(summary.trained)} model(s) trained now, "
          f"{len(summary.reused)} reused; outputs in {out}")
    if failed:
        print(f"failed: {', '.join(failed)}")
    if tracking is not None:
        from pipeline.tracking import ui_hint  # noqa: PLC0415

        print(f"MLflow UI:\n{ui_hint(tracking)}")
    return 1 if failed else 0


def synthetic_data(args: argparse.Namespace, out: Path):
    """The synthetic motion videos of the demo (generated once under ``--synthetic-dir``)."""
    from pipeline.options import DEMO_DATA  # noqa: PLC0415
    from pipeline.video.formats import load_dataset  # noqa: PLC0415
    from pipeline.video.synthetic import make_synthetic_dataset  # noqa: PLC0415

    root = Path(args.synthetic_dir) if args.synthetic_dir else out / "data" / "synthetic"
    make_synthetic_dataset(root, **DEMO_DATA, seed=args.seed)
    return load_dataset(root)


if __name__ == "__main__":
    sys.exit(main())
