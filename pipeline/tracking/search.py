"""The island search's MLflow run: :class:`SearchMlflowCallback` listens to the island driver's events (the
search itself knows nothing of MLflow)."""
from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

from .params import log_dict_json, log_spec, search_params, spec_params
from .store import Tracking

log = logging.getLogger("pipeline.tracking")


class SearchMlflowCallback:
    """One MLflow run per island search (a :class:`pipeline.search.callbacks.SearchCallback`).

    Start: a new run named ``run_name`` (default ``<search name>-islands<N>``), nested under
    ``tracking.parent_run_id``, with the search's params; or, on resume, the checkpoint's run when this store
    still has it (tagged ``e3d.resumed_at_round_<r>``). Every round: ``best_score``, ``median_score``,
    ``total_iterations``, ``accepted``, ``acceptance_rate``, ``iterations_per_s``, ``restarts``,
    ``immigrants_accepted`` at step = round. Finish: the best spec's summary as ``best.*`` params,
    ``final_best_score``/``wall_s``/``final_iterations_per_s``, and the artifacts ``spec/<name>.json``,
    ``summary.json`` and the output files under ``search/``. The run ends FAILED if the search raised (KILLED if stopped).
    """

    def __init__(self, tracking: "Tracking", *, run_name: str | None = None, tags: Mapping[str, str] | None = None):
        self.tracking, self.run_name = tracking, run_name
        self.tags = {"e3d.job": "distributed-search"} | dict(tags or {})
        self._run = contextlib.ExitStack()
        self.mlflow: Any = None
        self.fs: Any = None

    def on_start(self, driver: Any) -> None:
        run_id = driver.run_id
        if run_id is not None:  # resuming: continue the checkpointed run if this store has it
            try:
                self.tracking.client().get_run(run_id)
            except Exception:
                log.warning("MLflow run %s of the checkpoint is not in %s: logging to a new run", run_id,
                            self.tracking.tracking_uri)
                run_id = driver.run_id = None
        name = self.run_name or f"{driver.name}-islands{driver.settings.actors}"
        run = self._run.enter_context(self.tracking.run(name, run_id=run_id, tags=self.tags))
        self.mlflow, self.fs = self.tracking.client(), driver.fs
        if run_id is None:
            driver.run_id = run.info.run_id
            self.mlflow.log_params(search_params(driver.config, driver.settings, driver.rounds))
            self.mlflow.set_tag("e3d.out_dir", driver.out_dir)
        else:
            self.mlflow.set_tag(f"e3d.resumed_at_round_{driver.start_round}", time.strftime("%Y-%m-%dT%H:%M:%S"))

    def on_round(self, info: Any) -> None:
        row = info.history_row
        self.mlflow.log_metrics({
            "best_score": info.best, "median_score": info.median, "total_iterations": info.total_iterations,
            "accepted": row["accepted"], "acceptance_rate": row["accepted"] / row["iterations"] if row["iterations"]
            else 0.0, "iterations_per_s": info.iterations_per_s, "restarts": info.restarts,
            "immigrants_accepted": row["immigrants_accepted"]}, step=info.round)

    def on_finish(self, result: Any) -> None:
        from pipeline.search.checkpoint import is_local  # noqa: PLC0415

        mlflow = self.mlflow
        mlflow.log_params({f"best.{k}": v for k, v in spec_params(result.best).items()})
        mlflow.log_metrics({"final_best_score": result.best_score, "wall_s": result.wall_s,
                            "final_iterations_per_s": result.iterations_per_s})
        log_spec(mlflow, result.best)
        log_dict_json(mlflow, result.summary(), "summary.json")
        with tempfile.TemporaryDirectory() as tmp:
            for path in result.files.values():
                local = path
                if not is_local(self.fs):
                    local = str(Path(tmp) / Path(path).name)
                    with self.fs.open_input_stream(path) as src:
                        Path(local).write_bytes(src.read())
                mlflow.log_artifact(local, artifact_path="search")

    def on_end(self, error: BaseException | None) -> None:
        if error is None:
            self._run.close()
        else:
            self._run.__exit__(type(error), error, error.__traceback__)
