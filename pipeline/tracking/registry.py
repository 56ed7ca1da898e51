"""The champion in MLflow's model registry (:func:`register_champion`) and a model folder beside its logged model
(:func:`log_model_folder`)."""
from __future__ import annotations

from pathlib import Path

from .store import Tracking


def register_champion(tracking: Tracking, run_id: str, model_name: str, *, alias: str = "champion") -> int | None:
    """Register the model logged by candidate run ``run_id`` as a new version of ``model_name`` and point
    ``alias`` at it; the version, or None when that run logged no model."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking.tracking_uri)
    client = MlflowClient(tracking.tracking_uri)
    run = client.get_run(run_id)
    models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id],
                                         filter_string=f"source_run_id = '{run_id}'", output_format="list")
    if not models:
        return None
    version = mlflow.register_model(models[0].model_uri, model_name)
    client.set_registered_model_alias(model_name, alias, version.version)
    return int(version.version)


def log_model_folder(tracking: Tracking, run_id: str, folder: str | Path, artifact_path: str = "model_folder") -> None:
    """A model folder (``config.json``, ``model.safetensors``, ``README.md``: :mod:`e3d.model_folder`) as artifacts of
    run ``run_id``, beside the ``torch.export`` model that run logged: loadable with ``e3d.load`` once downloaded."""
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking.tracking_uri).log_artifacts(run_id, str(folder), artifact_path)
