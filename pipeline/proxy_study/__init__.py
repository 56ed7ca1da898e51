"""How well does each training-free proxy predict accuracy? A correlation study (E3D Sec. 4.3, Fig. 3).

    study = StudyConfig(models=24, epochs=8, clip_frames=8, clip_size=112)
    summary = run_study(study, load_dataset("data/ucf101"), "outputs/proxy-study", tracking=tracking)

1. **Models**: ``models`` architectures drawn from the search space (:mod:`e3d.space`, the space the
   evolutionary search explores, at the study's clip size) stratified by FLOPs: the FLOPs range is cut
   into ``models`` log-spaced bands and each band gets one spec drawn uniformly among the feasible specs
   of the band (the random strategy's Gibbs sampler, :class:`e3d.strategies.random.UniformSampler`, under
   the band's upper edge, redrawn until the spec lands in the band). Specs with an infinite STEntr at the
   clip (which a search would refuse) and duplicates are redrawn. Optionally plus zoo references
   (``zoo``) and the winners of searches run with each of ``search_scores`` (the EA with that score, or
   ``random``: one uniform draw) at equal budget (iterations and population), each search's cost in
   CPU-seconds recorded.
2. **Scores**: every model (as trained: the clip size and the data's classes) with every registered
   score (or ``scores``), forward proxies averaged over ``repeats`` seeds; NASWOT reads a fixed batch of
   ``naswot_batch`` training clips (centre views). Parallel Ray tasks, one CPU and one torch thread each.
3. **Training**: :func:`pipeline.train.train_candidates`, one short recipe for all (one Ray Tune trial per
   model, checkpointed every epoch), final single-view validation top-1 per epoch and multi-view top-1.
4. **Analysis** (:func:`correlate`): per proxy against validation top-1 (and multi-view top-1): Kendall's
   tau-b and Spearman's rho with percentile-bootstrap 95% intervals, the top-k hit rate, the same within
   FLOPs bins, and tau at a quarter, half and all of the epochs (from the same runs); the statistics are
   :mod:`e3d.stats` (no Ray), shared with the comparison job.

Outputs in ``out``: ``models.csv``, ``correlations.json``, ``table.md``, ``scatter_<proxy>.png`` and
``scatter.png`` (Fig. 3 style), ``tau_vs_epochs.png``, ``searches.csv`` when searches ran; all of it in
MLflow too (a parent run with the analysis, one child run per trained model with its proxies).

Resume: ``study.json`` (the settings that decide the models), ``specs.json``, ``searches.json``,
``scores.json`` and ``naswot_batch.npy`` are written as soon as they exist and reused by the next run on the
same ``out``; a model whose training result is already there with every epoch is not trained again, the
others resume from their last checkpoint. More ``epochs`` extend the finished runs; other settings that
would change the models need another ``out``. ``docs/proxy-study.md`` has the choices and numbers.

Modules: ``config`` (StudyConfig, StudyError, the epoch budgets), ``models`` (sampling), ``searches``,
``scoring``, ``analysis``, ``table`` (the model rows, ``models.csv``), ``report`` (``table.md``, plots, the output
files), ``state`` (the files read back on resume), ``mlflow_runs``, ``run`` (``check_study``, ``run_study``).
"""
import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from .analysis import correlate  # noqa: E402
from .config import StudyConfig, StudyError, epoch_budgets, low_fidelity_names  # noqa: E402
from .models import Model, sample_specs  # noqa: E402
from .run import StudySummary, check_study, run_study  # noqa: E402
from .table import model_rows  # noqa: E402

__all__ = ["Model", "StudyConfig", "StudyError", "StudySummary", "check_study", "correlate", "epoch_budgets",
           "low_fidelity_names", "model_rows", "run_study", "sample_specs"]
