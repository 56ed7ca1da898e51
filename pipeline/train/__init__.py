"""Training on Ray Train (TorchTrainer, Train V2), several candidates on Tune, MLflow tracking.

Public API::

    from pipeline.train import Recipe, train_one, train_candidates, plan_resources
    recipe = Recipe.paper("sthsth").scaled(epochs=4, batch_size=8)
    results = train_candidates(specs, dataset, clip=clip, recipe=recipe, tracking=tracking.child(parent_id),
                               out_dir="runs/job", eval_clips=2)
    print(format_table(results))

See docs/training.md.
"""
from .callbacks import LoopCallback
from .candidates import train_candidates
from .data import TensorSource, VideoSource, as_source
from .evaluate import Meter, ViewAccumulator, topk_correct
from .recipe import PRESETS, Recipe
from .report import CandidateResult, format_table, plot_curves, write_summary
from .resources import ClusterSnapshot, ResourcePlan, plan_resources
from .trainer import build_trainer, train_one

__all__ = ["Recipe", "PRESETS", "TensorSource", "VideoSource", "as_source", "Meter", "ViewAccumulator",
           "topk_correct", "CandidateResult", "format_table", "plot_curves", "write_summary", "ClusterSnapshot",
           "ResourcePlan", "plan_resources", "build_trainer", "train_one", "train_candidates", "LoopCallback"]
