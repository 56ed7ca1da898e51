"""A trained candidate's MLflow run: :class:`CandidateRun` opens (or resumes) it before ``trainer.fit()``, rank 0's
:class:`~pipeline.tracking.worker.WorkerMetricsLogger` fills it, and it closes with the final metrics, curves,
result record and model (the trainer itself knows nothing of MLflow)."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Mapping

from .store import PARENT_TAG, Tracking
from .worker import WorkerMetricsLogger


class CandidateRun:
    """One trained candidate's MLflow run: opened (or resumed) before ``trainer.fit()``, filled by rank 0's
    :class:`WorkerMetricsLogger` during training, closed by :meth:`finish` with the final metrics, curves,
    result record and model."""

    MARKER = "mlflow.json"  # in the candidate's folder: which run to resume

    def __init__(self, tracking: Tracking, client: Any, run_id: str, resumed: bool):
        self.tracking, self.client, self.run_id, self.resumed = tracking, client, run_id, resumed

    @classmethod
    def open(cls, tracking: Tracking, folder: Path, *, run_name: str, display_name: str, resume: bool,
             tags: Mapping[str, str]) -> "CandidateRun":
        """The run recorded in ``folder`` when resuming and this store still has it (moved under
        ``tracking.parent_run_id`` when a new job run resumes it), else a new run nested under it."""
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking.tracking_uri)
        marker = folder / cls.MARKER
        if resume and marker.is_file():
            info = json.loads(marker.read_text())
            if info.get("tracking_uri") == tracking.tracking_uri:
                try:
                    run = client.get_run(info["run_id"])
                    if run.info.lifecycle_stage == "active":
                        client.update_run(run.info.run_id, status="RUNNING")
                        old_parent = run.data.tags.get(PARENT_TAG)
                        if tracking.parent_run_id and old_parent != tracking.parent_run_id:
                            # resumed by a new job run: nest under it (the UI shows a run under one parent)
                            client.set_tag(run.info.run_id, PARENT_TAG, tracking.parent_run_id)
                            if old_parent:
                                client.set_tag(run.info.run_id, "e3d.previous_parent_run", old_parent)
                        return cls(tracking, client, run.info.run_id, resumed=True)
                except Exception:
                    pass
        run = client.create_run(tracking.experiment_id(), run_name=display_name,
                                tags=tracking.tags({"e3d.kind": "train", "e3d.train_run": run_name} | dict(tags)))
        marker.write_text(json.dumps({"tracking_uri": tracking.tracking_uri, "run_id": run.info.run_id,
                                      "experiment": tracking.experiment_name}) + "\n")
        return cls(tracking, client, run.info.run_id, resumed=False)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params; on a resumed run keep the first values and record changed ones as ``changed.*`` tags
        (MLflow refuses to change a param)."""
        from mlflow.entities import Param, RunTag

        existing = self.client.get_run(self.run_id).data.params
        new = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
        changed = [RunTag(f"changed.{k}", str(v)[:5000]) for k, v in params.items()
                   if k in existing and existing[k] != str(v)[:6000]]
        for i in range(0, len(new), 100):
            self.client.log_batch(self.run_id, params=new[i:i + 100])
        if changed:
            self.client.log_batch(self.run_id, tags=changed)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def worker_logger(self, log_every: int = 0) -> "WorkerMetricsLogger":
        """The loop callback that logs the workers' metrics into this run."""
        return WorkerMetricsLogger(self.tracking.tracking_uri, self.run_id, log_every)

    def finish(self, result: Any, *, result_file: Path, curves_file: Path, log_model: bool) -> None:
        """Curves, final metrics (step = epochs), the result record and the model (``log_model``, unless a
        no-op resume already has it); the run ends FINISHED, or FAILED with an ``e3d.error`` tag."""
        from mlflow.entities import Metric

        from pipeline.train.report import plot_curves

        status = "FINISHED"
        try:
            if result.history:
                plot_curves({result.name: result.history}, curves_file, result.name)
                self.log_artifact(curves_file, "plots")
            now = int(time.time() * 1000)
            finals = {"final_val_top1": result.val_top1, "final_val_top5": result.val_top5,
                      "best_val_top1": result.best_val_top1, "mv_top1": result.mv_top1, "mv_top5": result.mv_top5,
                      "total_train_time_s": result.train_time_s, "wall_time_s": result.wall_time_s,
                      "mean_train_clips_per_s": result.clips_per_s}
            self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, result.epochs)
                                                        for k, v in finals.items()
                                                        if v is not None and math.isfinite(float(v))])
            self.log_artifact(result_file, "result")
            if log_model and result.checkpoint and result.ok and not self._has_current_model(result):
                self.log_model(result.checkpoint)
        except Exception as exc:  # keep the training result even if an artifact fails
            print(f"[train] {result.name}: MLflow artifacts failed: {exc!r}")
        if result.error:
            self.client.set_tag(self.run_id, "e3d.error", result.error[:5000])
            status = "FAILED"
        self.client.set_terminated(self.run_id, status=status)

    def log_model(self, checkpoint_dir: str | Path) -> None:
        """``mlflow.pytorch.log_model`` of the trained network (CPU), with explicit pip requirements so nothing
        is inferred (offline, fast)."""
        import mlflow
        import mlflow.pytorch
        import torch

        from pipeline.train.checkpoint import model_from_checkpoint

        import numpy as np

        model, state = model_from_checkpoint(checkpoint_dir)
        spec = state["spec"]
        frames, size = spec["input"]["frames"], spec["input"]["size"]
        mlflow.set_tracking_uri(self.tracking.tracking_uri)
        with mlflow.start_run(run_id=self.run_id, nested=mlflow.active_run() is not None):
            # 'pt2' (torch.export): a safe format, no pickled code; an example batch of 2 keeps the batch
            # dimension dynamic (torch.export specialises size-1 dimensions)
            mlflow.pytorch.log_model(model.eval(), name="model", serialization_format="pt2",
                                     input_example=np.zeros((2, 3, frames, size, size), np.float32),
                                     pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "e3d-ray"],
                                     metadata={"spec": json.dumps(spec), "epoch": state["epoch"]})

    def _has_current_model(self, result: Any) -> bool:
        """Whether a resumed run that trained nothing new already has its final model logged."""
        if result.resumed_from_epoch < result.epochs:
            return False
        try:
            import mlflow

            mlflow.set_tracking_uri(self.tracking.tracking_uri)
            run = self.client.get_run(self.run_id)
            models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id],
                                                 filter_string=f"source_run_id = '{self.run_id}'",
                                                 output_format="list")
            return len(models) > 0
        except Exception:
            return False
