"""Dataset health check before a long training run.

    python jobs/inspect_data.py DATASET [--format F] [--frames 16] [--size 224] [--json]

Prints counts per class, decodable/undecodable files with reasons, a duration/fps/resolution
summary and clip throughput. Exit 0 whenever the report was produced (bad files are findings);
exit 2 when the dataset itself cannot be read.
"""
from __future__ import annotations

import argparse
import json
import sys

from pipeline.video.formats import FORMATS, DatasetError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset", help="dataset folder or CSV file")
    p.add_argument("--format", choices=FORMATS, default=None, help="dataset format (default: detect)")
    p.add_argument("--frames", type=int, default=16, help="frames per clip")
    p.add_argument("--sampling-rate", type=int, default=5, help="take every N-th frame")
    p.add_argument("--size", type=int, default=224, help="clip size (short side and crop)")
    p.add_argument("--limit", type=int, default=None, help="check a seeded random sample of N videos")
    p.add_argument("--workers", type=int, default=None, help="checking processes (default: one per core)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds before a file counts as hung")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    from pipeline.video.health import check_dataset, default_workers, format_report  # noqa: PLC0415 - PyAV

    try:
        report = check_dataset(args.dataset, args.format, frames=args.frames, sampling_rate=args.sampling_rate,
                               size=args.size, limit=args.limit, workers=args.workers or default_workers(), timeout=args.timeout,
                               seed=args.seed)
    except (DatasetError, OSError) as e:
        print(f"cannot read dataset: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
