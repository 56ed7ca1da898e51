#!/usr/bin/env python
"""Search architectures on the cluster's CPUs, train the best on its GPUs (or CPUs), compare them in MLflow.

    python jobs/search_and_train.py                         # embedded demo: synthetic clips, small search,
                                                            # 2 candidates trained on CPU (minutes here)
    python jobs/search_and_train.py --strategy random --quick
    python jobs/search_and_train.py --data ~/ucf101 --format ucf101 --frames 16 --size 112 \\
        --budget-flops 1.2G --iterations 200k --epochs 30 --also X3D-S
    ray submit cluster.yaml jobs/search_and_train.py -- --data /data/ssv2 --preset S --iterations 500k \\
        --population 512 --epochs 100 --tracking-uri http://mlflow.internal:5000

Every option is checked before any work starts (a bad one exits with status 2 and a line naming it).
Re-running with the same ``--out`` resumes the search and every candidate's training where they stopped.
A full disk ends the job with one line and exit status 28: free some space and run the same command (a corrupt
file under ``--out`` is set aside and redone from the last good state; docs/faults.md).
This script only parses arguments: the work is :func:`pipeline.search_and_train.run_job` (the installed
package, so ``ray submit``, which uploads this file alone, works).
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
    return main_job_parser(__doc__)


def config_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """The job's config; every input checked (exits 2 naming the option), nothing written."""
    return job_config(parser, args)


@exits_on_out_of_space
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    config = config_from_args(parser, args)
    check_free_space(args.out, RECORDS_BYTES, "the search's checkpoints and the MLflow store")
    init_ray(args)
    from pipeline.search_and_train import run_job  # noqa: PLC0415

    result = run_job(config)
    failed = [c.name for c in result.candidates if not c.ok]
    if failed:
        print(f"error: training failed for {', '.join(failed)} (see {result.out_dir}/summary.json)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
