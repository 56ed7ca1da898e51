"""MLflow conventions shared by every job (DESIGN.md "MLflow"), and the callbacks that log to it.

One experiment per job, a parent run per job, child runs for the search and for each trained candidate
(linked by the ``mlflow.parentRunId`` tag, so the UI nests them). The default store is a SQLite file, so
``mlflow ui --backend-store-uri sqlite:///<abs path>/mlflow.db`` works offline; any other tracking URI
(an MLflow server) is accepted. Artifacts go to a folder beside the database unless told otherwise.

The search and the trainer know nothing of MLflow: :class:`SearchMlflowCallback` listens to the island
driver's events, :class:`CandidateRun` opens and closes a trained candidate's run around ``trainer.fit()``
and :class:`WorkerMetricsLogger` is the Train workers' loop callback that logs the epochs into it.

Modules: ``store`` (:class:`Tracking`, the store's URI and UI), ``params`` (run params and JSON artifacts),
``search`` (the island search's run), ``candidate`` (a trained candidate's run), ``worker`` (the Train workers'
metrics logger), ``registry`` (the champion in the model registry, model folders). Importing them loads only the
standard library and ``e3d``: MLflow, torch and ``pipeline.train`` are imported inside the functions that use them.
"""
from .candidate import CandidateRun
from .params import candidate_params, log_dict_json, log_spec, search_params, spec_params
from .registry import log_model_folder, register_champion
from .search import SearchMlflowCallback
from .store import (EXPERIMENT_KIND_TAG, MODEL_TRAINING, PARENT_TAG, Tracking, default_tracking_uri, ui_command,
                    ui_hint, ui_url)
from .worker import WorkerMetricsLogger

__all__ = ["PARENT_TAG", "EXPERIMENT_KIND_TAG", "MODEL_TRAINING", "Tracking", "default_tracking_uri", "ui_command",
           "ui_url", "ui_hint", "spec_params", "log_spec", "log_dict_json", "search_params", "candidate_params",
           "SearchMlflowCallback", "CandidateRun", "WorkerMetricsLogger", "register_champion", "log_model_folder"]
