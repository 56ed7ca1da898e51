"""Quiet consoles: Ray's own logs and progress bars only with ``--verbose`` (or in Ray's log files).

``init_ray(args)`` (pipeline.options) starts Ray with :func:`quiet_worker` as every worker's setup hook and
:func:`quiet_driver` applied here, so a job prints its own lines (stage starts, one line per epoch per
candidate, the summary table, the MLflow command) and Ray's warnings at ERROR level and above only. Ray
still writes everything to its session logs (``/tmp/ray/session_latest/logs``).
"""
from __future__ import annotations

import functools
import logging
import os
import re
import warnings

_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "ray.air", "ray.serve", "filelock", "mlflow", "alembic",
            "urllib3")


def _quiet_loggers() -> None:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:  # imported first: importing ray.data configures its loggers, which would undo the levels set below
        from ray.data import DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
    except Exception:  # pragma: no cover - Ray Data is part of the required extras
        pass
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def quiet_worker() -> None:
    """Ray worker setup hook (``runtime_env={"worker_process_setup_hook": "pipeline.quiet.quiet_worker"}``)."""
    os.environ.setdefault("E3D_TRAIN_LOG_LEVEL", "WARNING")  # Ray Train's LoggingConfig (pipeline.train.trainer)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    _quiet_loggers()


def quiet_driver() -> None:
    os.environ.setdefault("E3D_TRAIN_LOG_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    _quiet_loggers()


# the project's own lines: "[train] cand1 epoch 3/15: ...", "[search] ...", "[data] ..."
OWN_LINE = re.compile(r"^\[[a-z][a-z0-9_-]*\] ")


def own_lines_only(lines: list[str]) -> list[str]:
    return [line for line in lines if OWN_LINE.match(line)]


def filter_worker_output() -> bool:
    """Forward only the project's own lines from Ray workers to this console (Ray's go to its log files).
    Returns False (and leaves Ray's forwarding alone) if this Ray version has no such hook."""
    try:
        from ray._private import worker as ray_worker
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:  # pragma: no cover - a Ray without the dispatcher: keep its own forwarding
        return False
    ignore_prefix = ray_worker._should_ignore_worker_log_prefix(ray_worker.global_worker)

    from e3d.progress import suspended  # noqa: PLC0415

    def emit(data: dict) -> None:
        lines = own_lines_only(list(data.get("lines", [])))
        if lines:
            with suspended():  # the progress bars on screen move below the lines
                ray_worker.print_to_stdstream(dict(data, lines=lines), ignore_prefix=ignore_prefix)

    dispatcher.remove_handler("ray_print_logs")
    dispatcher.add_handler("ray_print_logs", functools.partial(emit))
    return True
