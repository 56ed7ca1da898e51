"""Prepare a video dataset for fast training: re-encode every video (short GOPs), verify, resumable.

    python jobs/prepare_data.py SRC --out DST [--format F] [--short-side 256] [--keyint N] [--crf 23]
                                [--preset veryfast] [--no-fast-decode] [--retry-failed]

Writes DST as a dataset of the same format (same labels and splits) plus DST/manifest.parquet and
DST/prepare.json. One Ray Data task per video (the running cluster, RAY_ADDRESS, or a local Ray).
Rerun to resume: finished files are skipped. Exit 0 when every video was prepared or reported
(failures are listed); 2 for bad arguments or an unreadable SRC (one line, before any work); 28 when
the disk is full (one line; free space and rerun: it resumes); 1 when the job itself fails. The console
shows the job's own lines; Ray's go to its log files unless --verbose. See docs/video.md ("Preparing a
dataset") and docs/faults.md.
"""
from __future__ import annotations

import argparse
import os
import sys

from pipeline.faults import exits_on_out_of_space
from pipeline.options import add_ray_options, init_ray
from pipeline.video.formats import FORMATS, DatasetError
from pipeline.video.prepare import X264_PRESETS, PrepareSettings, check_paths


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive(kind: type):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def _crf(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 51:
        raise argparse.ArgumentTypeError(f"must be in [0, 51], got {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = _Parser(description=__doc__.splitlines()[0])
    p.add_argument("src", metavar="SRC", help="dataset folder or CSV file")
    p.add_argument("--out", required=True, metavar="DST", help="where the prepared dataset goes (not inside SRC)")
    p.add_argument("--format", choices=FORMATS, default=None, help="dataset format (default: detect)")
    p.add_argument("--short-side", type=_positive(int), default=256, help="output short side, never upscaled")
    p.add_argument("--keyint", type=_positive(int), default=None,
                   help="frames between keyframes (default: the source's frame rate, one per second)")
    p.add_argument("--crf", type=_crf, default=23, help="x264 quality, 0-51 (lower: better, bigger)")
    p.add_argument("--preset", choices=X264_PRESETS, default="veryfast", help="x264 speed preset")
    p.add_argument("--no-fast-decode", dest="fast_decode", action="store_false",
                   help="leave out x264's fastdecode tuning (smaller files, 2-3x slower clip decoding)")
    p.add_argument("--min-psnr", type=_positive(float), default=25.0, help="verification threshold (dB)")
    p.add_argument("--timeout", type=_positive(float), default=600.0,
                   help="seconds allowed per video (its process is killed 30 s later if FFmpeg hangs)")
    p.add_argument("--split", type=int, choices=(1, 2, 3), default=1, help="UCF101 official split")
    p.add_argument("--val-fraction", type=float, default=0.2, help="val share for formats without a split")
    p.add_argument("--seed", type=int, default=0, help="seed of that split")
    p.add_argument("--retry-failed", action="store_true", help="redo files that failed in an earlier run")
    p.add_argument("--cpus-per-task", type=_positive(float), default=1.0, help="CPUs per video task")
    add_ray_options(p)
    args = p.parse_args(argv)
    if not 0 <= args.val_fraction < 1:
        p.error(f"argument --val-fraction: must be in [0, 1), got {args.val_fraction}")
    if args.short_side < 2:
        p.error(f"argument --short-side: must be at least 2, got {args.short_side}")
    try:
        check_paths(args.src, args.out)
    except FileNotFoundError as e:
        p.error(f"argument SRC: {e}")
    except ValueError as e:
        p.error(f"argument --out: {e}")
    return args


def _start_ray(args: argparse.Namespace) -> None:
    """Ray with the jobs' quiet console (its own lines only with --verbose). Ray Data sets its loggers' levels
    when first imported: imported here first, so that init_ray's levels are the ones that stay."""
    import ray.data  # noqa: F401, PLC0415

    init_ray(args)


@exits_on_out_of_space
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from pipeline.video.prepare import prepare_dataset  # noqa: PLC0415 - PyAV only when there is work

    settings = PrepareSettings(short_side=args.short_side, keyint=args.keyint, crf=args.crf, preset=args.preset,
                               fast_decode=args.fast_decode, min_psnr=args.min_psnr, timeout=args.timeout)
    try:
        prepare_dataset(args.src, args.out, format=args.format, settings=settings, split=args.split,
                        val_fraction=args.val_fraction, seed=args.seed, retry_failed=args.retry_failed,
                        num_cpus=args.cpus_per_task, progress=lambda line: print(line, flush=True),
                        start_ray=lambda: _start_ray(args))
    except DatasetError as e:
        print(f"{os.path.basename(sys.argv[0])}: error: argument SRC: cannot read dataset: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
