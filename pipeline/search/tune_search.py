"""Ray Tune over the evolutionary search's own hyper-parameters, at a fixed evaluation budget.

Each trial is a whole island search (:func:`pipeline.search.run_distributed_search`) with ``iterations``
iterations in total, whatever its settings; after every round it reports ``best_score`` (and
``median_score``, ``iterations``, ``round``), so ASHA (``time_attr="iterations"``: rungs fall at the same
evaluation counts for every trial) stops the weak ones early. Tuned: total population, the four mutation
weights, the number of islands, migration interval and size, and the chunk (iterations per island per
round). All trials use the same search seed, so they differ by their settings only.

Resources (no deadlock on a 2-CPU machine):

- ``trial_backend="local"`` (default): a trial steps its islands in its own process (the island model
  without actors, identical results to actors); it reserves ``trial_cpus`` (default 1, fractional allowed)
  and at most ``cluster CPUs / trial_cpus`` trials run at once. Nothing is ever waiting for a CPU that a
  running trial holds.
- ``trial_backend="ray"``: a trial's islands are Ray actors inside the trial's placement group
  (``[{CPU: trial_cpus}] + islands x [{CPU: actor_cpus}]``, captured as child tasks), so a trial starts
  only when all its actors fit; refused up front when the largest trial cannot fit the cluster.

Every trial is an MLflow run nested under the tuning job's run; trials stopped by ASHA are marked KILLED
with the tag ``e3d.stopped_by=ASHA``. The winning settings are printed and saved to
``<out_dir>/best_settings.json`` (with the ``jobs/search.py`` command that reruns them; the full
``SearchConfig`` is ``<out_dir>/best_config.json``), all trials to ``<out_dir>/trials.csv``.
"""
from __future__ import annotations

import json
import math
import os
import shlex
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from e3d.evolution import SearchConfig

TUNED = ("population_size", "p_kernel", "p_width", "p_bottleneck", "p_depth", "islands", "migration_interval",
         "migration_size", "chunk_iterations")


@dataclass(frozen=True)
class TuneSettings:
    """The tuning job: budget, sampling, ASHA, resources, and the search space (choices per knob)."""

    iterations: int = 50_000  # the fixed evaluation budget of every trial
    num_samples: int = 8
    seed: int = 0  # sampling of the trials' settings (the search seed comes from the base config)
    grace_period: int | None = None  # ASHA's first rung, in iterations (default iterations / 8)
    reduction_factor: float = 2.0
    max_concurrent_trials: int | None = None  # default: what fits the cluster's CPUs
    trial_cpus: float = 1.0
    trial_backend: str = "local"  # "local" (islands in the trial process) or "ray" (actors in its PG)
    actor_cpus: float = 0.5  # per island actor with trial_backend="ray"
    population_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    islands: tuple[int, ...] = (1, 2, 4)
    migration_intervals: tuple[int, ...] = (1, 2, 4)
    migration_sizes: tuple[int, ...] = (1, 2, 4, 8)
    chunk_iterations: tuple[int, ...] = (1000, 2500, 5000)
    prob_range: tuple[float, float] = (0.05, 1.0)  # each mutation weight ~ U(range), then normalised

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.num_samples < 1:
            raise ValueError("iterations and num_samples must be >= 1")
        if self.trial_backend not in ("local", "ray"):
            raise ValueError(f"trial_backend must be 'local' or 'ray', got {self.trial_backend!r}")
        if self.trial_cpus <= 0 or self.actor_cpus <= 0:
            raise ValueError("trial_cpus and actor_cpus must be > 0")
        if min(self.population_sizes) < max(self.islands):
            raise ValueError(f"every population size must hold one member per island: "
                             f"{min(self.population_sizes)} < {max(self.islands)} islands")
        lo, hi = self.prob_range
        if not 0 <= lo <= hi or hi <= 0:
            raise ValueError(f"prob_range must satisfy 0 <= low <= high, high > 0; got {self.prob_range}")

    def param_space(self) -> dict[str, Any]:
        from ray import tune  # noqa: PLC0415

        lo, hi = self.prob_range
        return {
            "population_size": tune.choice(list(self.population_sizes)),
            "p_kernel": tune.uniform(lo, hi), "p_width": tune.uniform(lo, hi),
            "p_bottleneck": tune.uniform(lo, hi), "p_depth": tune.uniform(lo, hi),
            "islands": tune.choice(list(self.islands)),
            "migration_interval": tune.choice(list(self.migration_intervals)),
            "migration_size": tune.choice(list(self.migration_sizes)),
            "chunk_iterations": tune.choice(list(self.chunk_iterations)),
        }

    def trial_bundles(self, islands: int) -> list[dict[str, float]]:
        if self.trial_backend == "local":
            return [{"CPU": self.trial_cpus}]
        return [{"CPU": self.trial_cpus}] + [{"CPU": self.actor_cpus}] * islands

    def concurrency(self, cluster_cpus: float) -> int:
        """Trials at once: as many of the largest trial as fit (at least 1), or ``max_concurrent_trials``."""
        largest = sum(b["CPU"] for b in self.trial_bundles(max(self.islands)))
        if largest > cluster_cpus + 1e-9:
            raise ValueError(f"a trial with {max(self.islands)} islands needs {largest:g} CPUs "
                             f"({self.trial_backend} backend), the cluster has {cluster_cpus:g}: it would never "
                             f"start. Lower actor_cpus/trial_cpus or the islands choices.")
        fit = max(1, int(math.floor(cluster_cpus / largest + 1e-9)))
        return min(fit, self.max_concurrent_trials) if self.max_concurrent_trials else fit

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def trial_config(base: SearchConfig, params: dict[str, Any], iterations: int) -> SearchConfig:
    """The search config of one trial: the base with the trial's population, mutation weights and budget."""
    probs = [float(params[k]) for k in ("p_kernel", "p_width", "p_bottleneck", "p_depth")]
    total = sum(probs)
    if total <= 0:
        probs, total = [1.0] * 4, 4.0
    return replace(base, population_size=int(params["population_size"]), iterations=int(iterations)).with_space(
        mutation_probs=tuple(p / total for p in probs))


def island_kwargs(params: dict[str, Any]) -> dict[str, Any]:
    islands = min(int(params["islands"]), int(params["population_size"]))
    return {"actors": islands, "chunk_iterations": int(params["chunk_iterations"]),
            "migration_interval": int(params["migration_interval"]), "migration_size": int(params["migration_size"])}


def _trial(params: dict[str, Any], ctx: dict[str, Any]) -> None:
    """One Tune trial: a whole search, reporting after every round."""
    from ray import tune  # noqa: PLC0415

    from pipeline.tracking import Tracking  # noqa: PLC0415

    from .islands import run_distributed_search  # noqa: PLC0415

    context = tune.get_context()
    trial_id = context.get_trial_id() or f"trial-{os.getpid()}"
    config = trial_config(SearchConfig.from_dict(ctx["config"]), params, ctx["iterations"])
    tracking = Tracking(**ctx["tracking"]) if ctx["tracking"] else None

    def report(info) -> None:
        tune.report({"best_score": info.best, "median_score": info.median, "iterations": info.total_iterations,
                     "round": info.round, "rounds": info.rounds, "iterations_per_s": info.iterations_per_s,
                     "mlflow_run_id": info.run_id or ""})

    backend = ctx["trial_backend"]
    run_distributed_search(
        config, out_dir=f"{ctx['out_dir'].rstrip('/')}/trials/{trial_id}", **island_kwargs(params),
        backend=backend, cpus_per_actor=ctx["actor_cpus"], spread=False, max_restarts=ctx["max_restarts"],
        tracking=tracking, overwrite=True, progress=False, on_round=report,
        mlflow_run_name=f"tune-{trial_id}",
        run_tags={"e3d.job": "tune-search", "e3d.trial_id": trial_id,
                  "e3d.tune_params": json.dumps(params, default=str)})


@dataclass
class TuneOutcome:
    best_params: dict[str, Any]
    best_score: float
    best_trial_id: str
    best_config: SearchConfig
    best_islands: dict[str, Any]
    trials: list[dict[str, Any]]
    out_dir: str
    parent_run_id: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    wall_s: float = 0.0

    def command(self) -> str:
        """The ``jobs/search.py`` command line that runs the winning settings at the base config's length
        (``best_config.json`` is the full ``SearchConfig``: population, mutation weights, budget, seed...)."""
        isl = self.best_islands
        argv = ["python", "jobs/search.py", "--config", str(Path(self.out_dir) / "best_config.json"),
                "--actors", str(isl["actors"]), "--chunk-iterations", str(isl["chunk_iterations"]),
                "--migration-interval", str(isl["migration_interval"]), "--migration-size",
                str(isl["migration_size"])]
        return shlex.join(argv)

    def to_dict(self) -> dict[str, Any]:
        return {"best_score": self.best_score, "trial_id": self.best_trial_id, "hyperparameters": self.best_params,
                "search_config": self.best_config.to_dict(), "island_settings": self.best_islands,
                "command": self.command(), "parent_run_id": self.parent_run_id, "trials": len(self.trials),
                "wall_s": round(self.wall_s, 2)}


def tune_search(base: SearchConfig, settings: TuneSettings = TuneSettings(), *, out_dir: str | Path,
                tracking: Any = None, max_restarts: int = 3, verbose: int = 0) -> TuneOutcome:
    """Tune the search's hyper-parameters; Ray must be initialised (or a local one is started)."""
    import ray  # noqa: PLC0415
    from ray import tune  # noqa: PLC0415
    from ray.tune.schedulers import ASHAScheduler  # noqa: PLC0415
    from ray.tune.search import BasicVariantGenerator  # noqa: PLC0415

    if not ray.is_initialized():
        ray.init()
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    concurrency = settings.concurrency(float(ray.cluster_resources().get("CPU", 1)))
    grace = settings.grace_period or max(1, settings.iterations // 8)
    start = time.perf_counter()

    def run(parent_run_id: str | None) -> TuneOutcome:
        ctx = {"config": base.to_dict(), "iterations": settings.iterations, "out_dir": str(out),
               "tracking": tracking.child(parent_run_id).as_dict() if tracking is not None else None,
               "trial_backend": settings.trial_backend, "actor_cpus": settings.actor_cpus,
               "max_restarts": max_restarts}
        from ray.tune.execution.placement_groups import PlacementGroupFactory  # noqa: PLC0415

        trainable = tune.with_resources(
            tune.with_parameters(_trial, ctx=ctx),
            lambda params: PlacementGroupFactory(settings.trial_bundles(min(int(params["islands"]),
                                                                            int(params["population_size"])))))
        tuner = tune.Tuner(
            trainable, param_space=settings.param_space(),
            tune_config=tune.TuneConfig(
                metric="best_score", mode="max", num_samples=settings.num_samples,
                max_concurrent_trials=concurrency,
                search_alg=BasicVariantGenerator(random_state=settings.seed),
                # max_t one past the budget: ASHA stops a trial that reaches max_t at once, which would kill a
                # finished search before it writes its outputs and closes its MLflow run
                scheduler=ASHAScheduler(time_attr="iterations", max_t=settings.iterations + 1,
                                        grace_period=grace, reduction_factor=settings.reduction_factor)),
            run_config=tune.RunConfig(name="tune", storage_path=str(out / "ray_results"), verbose=verbose))
        grid = tuner.fit()
        trials = _trial_rows(grid, settings.iterations)
        done = [t for t in trials if t.get("best_score") is not None]
        if not done:
            errors = "; ".join(str(e).splitlines()[0] for e in grid.errors[:3])
            raise RuntimeError(f"no trial reported a score ({len(grid.errors)} errors: {errors})")
        best = max(done, key=lambda t: (t["best_score"], -t["index"]))
        params = best["params"]
        outcome = TuneOutcome(best_params=params, best_score=best["best_score"], best_trial_id=best["trial_id"],
                              best_config=trial_config(base, params, base.iterations),
                              best_islands=island_kwargs(params), trials=trials, out_dir=str(out),
                              parent_run_id=parent_run_id, wall_s=time.perf_counter() - start)
        if tracking is not None:
            _close_stopped_runs(tracking, trials)
        outcome.files = _write_outcome(outcome, out)
        return outcome

    if tracking is None:
        return run(None)
    with tracking.run("tune-search", tags={"e3d.job": "tune-search"}) as parent:
        mlflow = tracking.client()
        mlflow.log_params({f"tune.{k}": json.dumps(v) if isinstance(v, (list, tuple)) else v
                           for k, v in settings.to_dict().items()} | {"tune.concurrency": concurrency,
                                                                      "tune.grace_period": grace})
        mlflow.log_params({f"base.{k}": json.dumps(v) if isinstance(v, (list, tuple)) else v
                           for k, v in base.to_dict().items() if k != "iterations"})
        outcome = run(parent.info.run_id)
        mlflow.log_metrics({"best_score": outcome.best_score, "trials": len(outcome.trials),
                            "stopped_early": sum(t["stopped_early"] for t in outcome.trials)})
        mlflow.log_params({f"best.{k}": v for k, v in outcome.best_params.items()})
        mlflow.set_tag("e3d.best_trial_id", outcome.best_trial_id)
        for path in outcome.files.values():
            mlflow.log_artifact(path)
        return outcome


def run_tune_job(base: SearchConfig, settings: TuneSettings, *, out_dir: str, tracking: Any = None,
                 verbose: int = 0) -> int:
    """``jobs/tune_search.py``: tune, print the winner (and the ``jobs/search.py`` command that runs it at full
    length), the JSON summary last; exit status 2 when no trial can run (e.g. it never fits the cluster)."""
    import sys  # noqa: PLC0415

    try:
        outcome = tune_search(base, settings, out_dir=out_dir, tracking=tracking, verbose=verbose)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stopped = sum(t["stopped_early"] for t in outcome.trials)
    print(f"\n{len(outcome.trials)} trials ({stopped} stopped early by ASHA) in {outcome.wall_s:.1f} s; "
          f"best score {outcome.best_score:.4f} (trial {outcome.best_trial_id}):", file=sys.stderr)
    for k, v in outcome.best_params.items():
        print(f"  {k:20s} {v:.4f}" if isinstance(v, float) else f"  {k:20s} {v}", file=sys.stderr)
    print(f"  mutation_probs       {', '.join(f'{p:.3f}' for p in outcome.best_config.space_settings.mutation_probs)} "
          f"(kernel, width, bottleneck, depth; normalised)", file=sys.stderr)
    print(f"rerun at full length:\n  {outcome.command()}", file=sys.stderr)
    for key, path in outcome.files.items():
        print(f"  {key:14s} {path}", file=sys.stderr)
    print(json.dumps({"best_score": outcome.best_score, "trial_id": outcome.best_trial_id,
                      "hyperparameters": outcome.best_params, "island_settings": outcome.best_islands,
                      "best_settings": outcome.files.get("best_settings")}))
    return 0


def _trial_rows(grid: Any, budget: int) -> list[dict[str, Any]]:
    rows = []
    for index, result in enumerate(grid):
        m = result.metrics or {}
        params = {k: result.config[k] for k in TUNED if k in result.config}
        iterations = m.get("iterations")
        rows.append({
            "index": index, "trial_id": m.get("trial_id", ""), "params": params,
            "best_score": m.get("best_score"), "median_score": m.get("median_score"), "iterations": iterations,
            "rounds_done": m.get("round"), "mlflow_run_id": m.get("mlflow_run_id") or None,
            "stopped_early": bool(iterations is not None and iterations < budget),
            "error": str(result.error).splitlines()[0] if result.error else None,
        })
    return rows


def _close_stopped_runs(tracking: Any, trials: Sequence[dict[str, Any]]) -> None:
    """A trial ASHA stops is killed with its process: end its MLflow run as KILLED and say why."""
    from mlflow.tracking import MlflowClient  # noqa: PLC0415

    client = MlflowClient(tracking.tracking_uri)
    for t in trials:
        run_id = t["mlflow_run_id"]
        if not run_id:
            continue
        try:
            run = client.get_run(run_id)
        except Exception:  # pragma: no cover - the run was never created
            continue
        if t["stopped_early"]:
            client.set_tag(run_id, "e3d.stopped_by", "ASHA")
            client.log_metric(run_id, "stopped_at_iterations", t["iterations"])
        if t["stopped_early"] and run.info.status != "FINISHED":  # RUNNING, or FAILED by the stop's exception
            client.set_terminated(run_id, "KILLED")
        elif run.info.status == "RUNNING":  # a trial that died without closing its run
            client.set_terminated(run_id, "FAILED")


def _write_outcome(outcome: TuneOutcome, out: Path) -> dict[str, str]:
    best = out / "best_settings.json"
    best.write_text(json.dumps(outcome.to_dict(), indent=2, default=str) + "\n")
    config = out / "best_config.json"  # jobs/search.py --config reads it
    config.write_text(json.dumps(outcome.best_config.to_dict(), indent=2) + "\n")
    trials = out / "trials.csv"
    keys = ["index", "trial_id", "best_score", "median_score", "iterations", "rounds_done", "stopped_early",
            *TUNED, "mlflow_run_id", "error"]
    import csv  # noqa: PLC0415

    with trials.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        for t in outcome.trials:
            writer.writerow({k: t.get(k) for k in keys if k in t} | t["params"])
    return {"best_settings": str(best), "best_config": str(config), "trials": str(trials)}
