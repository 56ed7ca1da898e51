#!/usr/bin/env python
"""Opt vs S vs ST vs S+ST: the fusion strategy's learned per-stage fusion (Opt) and the uniform variants, trained
with one recipe on your data (the supplement's generalisation check, §3, in small; docs/fusion.md).

    python jobs/fusion_variants.py --quick --out /tmp/fusion                    # smoke run, synthetic clips
    python jobs/fusion_variants.py --data ../shared/data/ucf101-6class-dev --out outputs/fusion_ucf \\
        --frames 8 --size 56 --sampling-rate 4 --epochs 8 --lr 0.02 --init torch --eval-clips 2 \\
        --no-log-model --num-cpus 2 --set epochs=8 --set 'variants=["S","ST","S+ST","E3D"]'

Every option of jobs/search_and_train.py, with --strategy fusion (the only one taken). It is the main job
twice on the same --out (one MLflow parent run, one search, one recipe): first the template is trained, its
probabilities read out and Opt trained; then the outcome's other candidates (S, ST and S+ST everywhere, E3D's own
kernels when `variants` asks for them) are trained as --also spec files, the finished search and Opt read back.
--top-k is 1: the variants come from the outcome. Rerunning the same command resumes.
Outputs in --out: fusion_comparison.md and fusion_comparison.json (the table: clip-level and multi-view top-1 per
variant), the variants' specs under fusion_variants/, and everything the main job writes (search/, summary.json).
Exit status 1: a variant's training failed; 2: a bad option (one line naming it); 28: the disk is full (one line;
free space and rerun: it resumes; docs/faults.md).
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from pipeline.faults import RECORDS_BYTES, check_free_space, exits_on_out_of_space  # noqa: E402
from pipeline.options import init_ray  # noqa: E402
from pipeline.search_and_train_options import job_config, main_job_parser  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = main_job_parser(__doc__, out="outputs/fusion_variants")
    parser.set_defaults(strategy="fusion")
    return parser


def config_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """The main job's config for the comparison; every input checked (exits 2 naming the option), nothing written."""
    if args.strategy != "fusion":
        parser.error(f"argument --strategy: the comparison runs strategy 'fusion', got {args.strategy!r}")
    if "--top-k" in getattr(parser, "typed", ()):
        parser.error("argument --top-k: the comparison trains Opt (top-k 1) and the outcome's variants")
    return job_config(parser, args)


@exits_on_out_of_space
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    config = config_from_args(parser, args)
    check_free_space(args.out, RECORDS_BYTES, "the search's checkpoints and the MLflow store")
    init_ray(args)
    from pipeline.fusion.compare import run_comparison  # noqa: PLC0415

    result = run_comparison(config)
    print(f"results: {os.path.join(result.out_dir, 'fusion_comparison.md')} and fusion_comparison.json")
    failed = [r["name"] for r in result.rows if r["error"]]
    if failed:
        print(f"error: training failed for {', '.join(failed)} (see {result.out_dir}/fusion_comparison.json)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
