"""Run a comparison: every arm searches at every seed, every winner is trained with one recipe, every network is
evaluated multi-view on the same validation videos; then the statistics (:mod:`pipeline.compare.report`).

    from pipeline.compare import CompareConfig, run_comparison
    result = run_comparison(CompareConfig(arms=parse_arms("evolution:stentr,random"), seeds=2, ...))

Layout of ``out_dir`` (a rerun with the same ``out_dir`` resumes: finished searches are read back, finished
trainings are not redone, an unfinished training continues from its last epoch):

    compare.json                      the config and the MLflow parent run
    searches/<arm>/s<seed>/           each search's outcome files (and its own checkpoints)
    networks/<arm>-s<seed>.json       each trained network's record (with its per-video predictions)
    train/                            Ray Train's runs and checkpoints, MLflow-logged candidate folders
    results.csv summary.json table.md compare.png

Searches of the training-free arms run as Ray tasks (one CPU each, in parallel); the training-based ones
(``dnas``, ``parsec``, ``fusion``) run one after the other, each on Ray Train. The networks of one seed train
together as Tune trials (:func:`pipeline.train.train_candidates`), with that seed's data order and init.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from e3d.cost import cost
from e3d.spec import ArchSpec
from e3d.statefile import CorruptFile, read_json, set_aside, write_json
from e3d.strategy import Budget, Clip, SearchContext, SearchOutcome, get_strategy
from pipeline.options import TrainResources
from pipeline.context import RayTrainer

from .arms import Arm, SearchSettings, arm_request

STATE_FILE = "compare.json"
NETWORKS = "networks"


@dataclass(frozen=True)
class CompareConfig:
    """A comparison. ``seeds``: seeds of the arms whose search is training-free (0..seeds-1);
    ``training_seeds``: of the arms that train a supernet and of zoo networks (default ``seeds``). ``options``: per strategy, its
    own settings (``{"dnas": {"epochs": 2}}``). ``resources``: how the networks train on Ray Train, as in the main
    job (:class:`pipeline.options.TrainResources`). The data's split is the same for every seed (split seed 0),
    so every network is evaluated on the same validation videos."""

    arms: tuple[Arm, ...]
    out_dir: str = "outputs/compare"
    data: Any = None  # pipeline.search_and_train.DataConfig
    clip: Any = None  # pipeline.video.clip.ClipConfig
    recipe: Any = None  # pipeline.train.recipe.Recipe
    budget: Budget = field(default_factory=lambda: Budget(flops=0.08e9, layers=41))
    iterations: int | None = None
    population: int | None = None
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    seeds: int = 3
    training_seeds: int | None = None
    eval_clips: int = 2
    eval_crops: int = 3
    resources: TrainResources = field(default_factory=TrainResources)
    tracking_uri: str | None = None
    experiment: str = "e3d-compare"
    n_boot: int = 10_000
    latency_table: str | None = None  # a latency table file (`e3d latency`): each network's predicted latency

    def seeds_of(self, arm: Arm) -> list[int]:
        """Seeds 0..n-1: ``seeds`` for the arms with a training-free search, ``training_seeds`` for the rest (the
        supernet strategies, and zoo networks, whose only variation is the training's)."""
        n = self.seeds if arm.searches and arm.training_free else (self.training_seeds or self.seeds)
        return list(range(n))

    def search_settings(self, num_classes: int) -> SearchSettings:
        clip = Clip(self.clip.frames, self.clip.size, self.clip.sampling_rate)
        return SearchSettings(budget=self.budget, clip=clip, num_classes=num_classes, iterations=self.iterations,
                              population=self.population, options=self.options)

    def to_dict(self) -> dict[str, Any]:
        return {"arms": [a.name for a in self.arms], "out_dir": self.out_dir,
                "data": asdict(self.data) if self.data is not None else None,
                "clip": asdict(self.clip) if self.clip is not None else None,
                "recipe": self.recipe.to_dict() if self.recipe is not None else None,
                "budget": self.budget.to_dict(), "iterations": self.iterations, "population": self.population,
                "options": self.options, "seeds": self.seeds, "training_seeds": self.training_seeds,
                "eval": [self.eval_clips, self.eval_crops], "latency_table": self.latency_table}


@dataclass
class Network:
    """One trained network of the comparison: its arm and seed, cost, search and training seconds, accuracy
    and per-video predictions (``predictions``: ``video_id``, ``pred``, ``label`` lists)."""

    arm: str
    strategy: str
    score: str
    seed: int
    name: str
    gflops: float = math.nan
    mparams: float = math.nan
    search_cpu_s: float = 0.0
    search_wall_s: float = 0.0
    train_s: float = math.nan
    train_cpu_s: float = math.nan
    val_top1: float = math.nan
    mv_top1: float = math.nan
    latency_ms: float | None = None
    epochs: int = 0
    spec: dict[str, Any] = field(default_factory=dict)
    rank: int = 0  # the network's rank in its search's outcome (-1: a zoo network)
    over_budget: bool = False  # no candidate of the search fit the budget: its best was trained
    predictions: dict[str, list[int]] | None = None
    mlflow_run_id: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.predictions is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Plan:
    """What a comparison will do: the searches and trainings still to run, and those done before."""

    searches: list[tuple[Arm, int]]
    trainings: list[tuple[Arm, int]]
    searches_done: int = 0
    trainings_done: int = 0

    def describe(self) -> str:
        by_kind = {"training-free": 0, "training-based": 0}
        for arm, _ in self.searches:
            by_kind["training-free" if arm.training_free else "training-based"] += 1
        return (f"{len(self.searches)} searches to run ({by_kind['training-free']} training-free, "
                f"{by_kind['training-based']} training-based; {self.searches_done} done before), "
                f"{len(self.trainings)} networks to train ({self.trainings_done} done before)")


def network_name(arm: Arm, seed: int) -> str:
    return f"{arm.slug}-s{seed}"


def make_plan(config: CompareConfig, out: Path) -> Plan:
    from e3d.search_io import read_outcome  # noqa: PLC0415

    plan = Plan([], [])
    for arm in config.arms:
        for seed in config.seeds_of(arm):
            if arm.searches:
                if read_outcome(search_dir(out, arm, seed)) is None:
                    plan.searches.append((arm, seed))
                else:
                    plan.searches_done += 1
            if read_network(out, arm, seed, config) is None:
                plan.trainings.append((arm, seed))
            else:
                plan.trainings_done += 1
    return plan


def search_dir(out: Path, arm: Arm, seed: int) -> Path:
    return out / "searches" / arm.slug / f"s{seed}"


def read_network(out: Path, arm: Arm, seed: int, config: CompareConfig) -> Network | None:
    """The finished network's record, or None (absent, failed, or trained for fewer epochs than asked)."""
    net = _load_network(out, arm, seed)
    if net is None or not net.ok or net.epochs < config.recipe.epochs:
        return None
    return net


def _load_network(out: Path, arm: Arm, seed: int) -> Network | None:
    """A network's record as written, or None (absent; corrupt: set aside, and trained again, which its Ray Train
    checkpoint makes cheap)."""
    path = out / NETWORKS / f"{network_name(arm, seed)}.json"
    try:
        data = read_json(path)
        return None if data is None else Network(**data)
    except (CorruptFile, TypeError) as exc:
        moved = set_aside(path)
        print(f"[compare] {path} is corrupt ({exc}): set aside as {moved.name}; the network is trained again")
        return None


def _write_network(out: Path, net: Network) -> None:
    write_json(out / NETWORKS / f"{net.name}.json", net.to_dict(), indent=1, default=str)


# -- searches -------------------------------------------------------------------------------------------------
def _search_task(strategy: str, request: Any) -> SearchOutcome:
    """A training-free search in a Ray task (no data, no tracking: the driver logs it)."""
    return get_strategy(strategy).search(request, SearchContext(progress=False))


def run_searches(config: CompareConfig, plan: Plan, out: Path, dataset: Any, tracking: Any, *,
                 say: Callable[..., None] = print) -> None:
    """Run the plan's searches: the training-free ones as parallel Ray tasks, then the training-based ones."""
    import ray  # noqa: PLC0415

    from e3d.search_io import write_outcome  # noqa: PLC0415

    settings = config.search_settings(len(dataset.classes))
    free = [(a, s) for a, s in plan.searches if a.training_free]
    trained = [(a, s) for a, s in plan.searches if not a.training_free]
    task = ray.remote(num_cpus=1)(_search_task)
    pending = {task.remote(a.strategy, arm_request(a, settings, s)): (a, s) for a, s in free}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        arm, seed = pending.pop(done[0])
        outcome = ray.get(done[0])
        files = write_outcome(search_dir(out, arm, seed), outcome)
        _log_search(tracking, arm, seed, outcome, files)
        say(f"[search] {arm.name} seed {seed}: {outcome.best.flops / 1e9:.4f} GFLOPs, score {outcome.best.score:.3f}, "
            f"{outcome.wall_s:.1f} s")
    for arm, seed in trained:
        folder = search_dir(out, arm, seed)
        request = arm_request(arm, settings, seed, out_dir=str(folder))
        say(f"[search] {arm.name} seed {seed}: training its supernet on {len(dataset.train)} videos")
        with tracking.run(f"search-{network_name(arm, seed)}", tags={"e3d.stage": "search",
                                                                    "e3d.arm": arm.name}) as run:
            context = SearchContext(tracking=tracking, run_id=run.info.run_id, dataset=dataset, clip=config.clip,
                                    recipe=config.recipe, trainer=RayTrainer(), progress=False)
            outcome = get_strategy(arm.strategy).search(request, context)
            files = write_outcome(folder, outcome)
            _log_outcome_params(tracking.client(), arm, seed, outcome, files)
        say(f"[search] {arm.name} seed {seed}: {outcome.best.flops / 1e9:.4f} GFLOPs in {outcome.wall_s:.0f} s")


def _log_search(tracking: Any, arm: Arm, seed: int, outcome: SearchOutcome, files: dict[str, Path]) -> None:
    with tracking.run(f"search-{network_name(arm, seed)}", tags={"e3d.stage": "search", "e3d.arm": arm.name}):
        _log_outcome_params(tracking.client(), arm, seed, outcome, files)


def _log_outcome_params(mlflow: Any, arm: Arm, seed: int, outcome: SearchOutcome, files: dict[str, Path]) -> None:
    from pipeline.tracking import spec_params  # noqa: PLC0415

    mlflow.log_params({"arm": arm.name, "strategy": outcome.strategy, "score": arm.score or "none", "seed": seed}
                      | spec_params(outcome.best.spec))
    mlflow.log_metrics({"search_wall_s": outcome.wall_s, "search_cpu_s": float(outcome.cpu_s or 0.0)})
    for path in files.values():
        mlflow.log_artifact(str(path), artifact_path="search")


# -- trainings ------------------------------------------------------------------------------------------------
def winner(config: CompareConfig, out: Path, arm: Arm, seed: int) -> tuple[ArchSpec, SearchOutcome | None, int]:
    """The network an arm contributes at ``seed`` and its rank in the search's outcome: the best-ranked candidate
    within the budget (FLOPs and layers; a strategy whose cost term is soft, such as PARSEC's, may rank one above
    it first), else the best one (rank 0, reported as over the budget); a zoo network at the clip (rank -1)."""
    from e3d.search_io import read_outcome  # noqa: PLC0415
    from e3d.zoo import get  # noqa: PLC0415

    name = network_name(arm, seed)
    if not arm.searches:
        return get(arm.zoo).with_input(config.clip.frames, config.clip.size).replace(name=name), None, -1
    outcome = read_outcome(search_dir(out, arm, seed))
    if outcome is None:
        raise RuntimeError(f"no search outcome for {arm.name} seed {seed} under {search_dir(out, arm, seed)}")
    rank = next((i for i, c in enumerate(outcome.candidates) if config.budget.exceeded(cost(c.spec)) is None), 0)
    return outcome.candidates[rank].spec.replace(name=name), outcome, rank


def run_trainings(config: CompareConfig, plan: Plan, out: Path, dataset: Any, tracking: Any, *,
                  say: Callable[..., None] = print) -> None:
    """Train the plan's networks, one seed at a time (that seed's data order and init for all of them)."""
    from pipeline.train import train_candidates  # noqa: PLC0415

    latency = latency_predictor(config.latency_table)
    for seed in sorted({s for _, s in plan.trainings}):
        arms = [a for a, s in plan.trainings if s == seed]
        chosen = [(a, *winner(config, out, a, seed)) for a in arms]
        specs = [spec for _, spec, _, _ in chosen]
        say(f"[train] seed {seed}: " + ", ".join(f"{s.name} ({_gflops(s):.4f} GFLOPs)" for s in specs))
        for arm, spec, _, rank in chosen:
            over = config.budget.exceeded(cost(spec)) if rank >= 0 else None
            if over is not None:
                say(f"[train] {spec.name}: no candidate of the search fits the budget ({over[1]}); its best is trained")
            elif rank > 0:
                say(f"[train] {spec.name}: the search's candidate #{rank + 1}, the best within the budget")
        placement = config.resources.plan(len(specs))
        results = train_candidates(specs, dataset, clip=config.clip, recipe=config.recipe, tracking=tracking,
                                   out_dir=out / "train", eval_clips=config.eval_clips, eval_crops=config.eval_crops,
                                   plan=placement, max_failures=config.resources.max_failures, seed=seed,
                                   log_model=False)
        cpus = placement.num_workers * (placement.cpus_per_worker or 1.0) + (placement.data_cpus or 0.0)
        for (arm, spec, outcome, rank), result in zip(chosen, results):
            net = Network(arm=arm.name, strategy=arm.strategy or "zoo", score=arm.score or "", seed=seed,
                          name=spec.name, gflops=(result.train_flops or result.flops) / 1e9,
                          mparams=result.params / 1e6,
                          search_cpu_s=float(outcome.cpu_s or 0.0) if outcome is not None else 0.0,
                          search_wall_s=float(outcome.wall_s) if outcome is not None else 0.0,
                          train_s=result.train_time_s, train_cpu_s=result.train_time_s * cpus,
                          val_top1=result.val_top1, mv_top1=result.mv_top1, epochs=result.epochs,
                          latency_ms=_predict(latency, spec),
                          spec=spec.to_dict(), predictions=result.mv_predictions, rank=rank,
                          over_budget=rank >= 0 and config.budget.exceeded(cost(spec)) is not None,
                          mlflow_run_id=result.mlflow_run_id, error=result.error)
            if result.ok and result.mv_predictions is None:
                net.error = "the training record has no per-video predictions"
            _write_network(out, net)
            if not net.ok:
                say(f"[train] {net.name}: FAILED: {net.error}")


def latency_predictor(path: str | None) -> Callable[[ArchSpec], float] | None:
    """A spec -> predicted milliseconds function from a latency table file (blocks it lacks are estimated by its
    per-op model, never measured here: the table's device may be another machine); None without a file."""
    if not path:
        return None
    from e3d.latency import LatencyTable  # noqa: PLC0415

    return LatencyTable.load(path, on_missing="estimate").predict


def _predict(latency: Callable[[ArchSpec], float] | None, spec: ArchSpec) -> float | None:
    """The predicted latency, or None (no table, or the table cannot predict this spec: said, never fatal)."""
    if latency is None:
        return None
    try:
        return float(latency(spec))
    except (ValueError, KeyError) as exc:
        print(f"[compare] no latency for {spec.name}: {exc}")
        return None


def _gflops(spec: ArchSpec) -> float:
    return cost(spec).flops / 1e9


# -- the whole comparison ---------------------------------------------------------------------------------------
@dataclass
class CompareResult:
    networks: list[Network]
    summary: dict[str, Any]
    table: str
    verdict: str
    files: dict[str, str]
    tracking_uri: str | None
    parent_run_id: str | None
    wall_s: float


def run_comparison(config: CompareConfig, *, verbose: bool = True, estimate: bool = True) -> CompareResult:
    """Plan (with a time estimate), search, train, evaluate and report; log everything to MLflow."""
    import ray  # noqa: PLC0415

    from pipeline.search_and_train import load_data  # noqa: PLC0415
    from pipeline.tracking import Tracking, log_dict_json, ui_hint  # noqa: PLC0415

    from .estimate import estimate_hours  # noqa: PLC0415
    from .report import write_report  # noqa: PLC0415

    start = time.time()
    say = print if verbose else (lambda *a, **k: None)
    out = Path(config.out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not ray.is_initialized():
        ray.init(include_dashboard=False)
    tracking = (Tracking(config.tracking_uri, config.experiment) if config.tracking_uri
                else Tracking.local(out / "mlruns", config.experiment))
    state_path = out / STATE_FILE
    try:
        state = read_json(state_path) or {}
    except CorruptFile as exc:
        say(f"[compare] {state_path} is corrupt ({exc}): set aside as {set_aside(state_path).name}; "
            f"a new MLflow parent run is opened")
        state = {}
    dataset = load_data(config.data, out, seed=0)  # one split for every seed: the same validation videos
    say(f"[data] {len(dataset.classes)} classes, {len(dataset.train)} train / {len(dataset.val)} val videos")

    plan = make_plan(config, out)
    say(f"[plan] {len(config.arms)} arms ({', '.join(a.name for a in config.arms)}): {plan.describe()}")
    if estimate and (plan.searches or plan.trainings):
        hours = estimate_hours(config, plan, dataset)
        say(f"[plan] estimated {hours['total_h']:.2f} h on this cluster ({hours['how']})")

    with tracking.run("compare", run_id=state.get("parent_run_id")) as parent:
        if "parent_run_id" not in state:
            state = {"parent_run_id": parent.info.run_id, "config": config.to_dict()}
            write_json(state_path, state, indent=1, default=str)
            mlflow = tracking.client()
            b = config.budget
            mlflow.log_params({"arms": ",".join(a.name for a in config.arms), "seeds": config.seeds,
                               "training_seeds": config.training_seeds or config.seeds,
                               "budget_gflops": b.flops / 1e9 if b.flops else "none", "max_layers": b.layers or "none",
                               "clip": f"{config.clip.frames}x{config.clip.size}^2/{config.clip.sampling_rate}",
                               "epochs": config.recipe.epochs, "data": config.data.path or "synthetic",
                               "train_videos": len(dataset.train), "val_videos": len(dataset.val)})
            log_dict_json(mlflow, config.to_dict(), "compare_config.json")
        child = tracking.child(parent.info.run_id)
        run_searches(config, plan, out, dataset, child, say=say)
        run_trainings(config, plan, out, dataset, child, say=say)
        networks = [n for a in config.arms for s in config.seeds_of(a)
                    if (n := _load_network(out, a, s)) is not None]
        report = write_report(networks, config, out, classes=dataset.classes, n_val=len(dataset.val))
        mlflow = tracking.client()
        for arm, row in report.summary["arms"].items():
            key = arm.replace(":", "_")
            if row["mv_top1_mean"] is not None:
                mlflow.log_metric(f"{key}_mv_top1", row["mv_top1_mean"])
        for path in report.files.values():
            mlflow.log_artifact(path)
        wall = time.time() - start
        mlflow.log_metric("wall_s", wall)
    say("\n" + report.table + "\n\n" + report.verdict)
    say(f"\nThe runs in the MLflow UI:\n{ui_hint(tracking)}")
    return CompareResult(networks=networks, summary=report.summary, table=report.table, verdict=report.verdict,
                         files=report.files, tracking_uri=tracking.tracking_uri,
                         parent_run_id=state["parent_run_id"], wall_s=wall)


