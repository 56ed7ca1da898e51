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
   FLOPs bins, and tau at a quarter, half and all of the epochs (from the same runs).

Outputs in ``out``: ``models.csv``, ``correlations.json``, ``table.md``, ``scatter_<proxy>.png`` and
``scatter.png`` (Fig. 3 style), ``tau_vs_epochs.png``, ``searches.csv`` when searches ran; all of it in
MLflow too (a parent run with the analysis, one child run per trained model with its proxies).

Resume: ``study.json`` (the settings that decide the models), ``specs.json``, ``searches.json``,
``scores.json`` and ``naswot_batch.npy`` are written as soon as they exist and reused by the next run on the
same ``out``; a model whose training result is already there with every epoch is not trained again, the
others resume from their last checkpoint. More ``epochs`` extend the finished runs; other settings that
would change the models need another ``out``. ``docs/proxy-study.md`` has the choices and numbers.
"""
from __future__ import annotations

import csv
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from e3d import zoo
from e3d.cost import cost
from e3d.scores import get_score, score_names
from e3d.spec import ArchSpec

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

S_BUDGET = (13, 160, 1.9e9)  # the S preset: frames, size, FLOPs budget (E3D-S's class)
EPOCH_FRACTIONS = (0.25, 0.5, 1.0)
# low-fidelity baselines: a network's own validation top-1 after its first epoch(s) of training, a predictor like
# any zero-cost proxy (the NAS-Bench-201 comparison every proxy should beat; no extra training: the same runs)
LOW_FIDELITY_EPOCHS = (1, 2)
RANDOM = "random"


class StudyError(ValueError):
    """A study that cannot run as asked (bad settings, or an ``out`` holding another study); ``field`` is
    the :class:`StudyConfig` field (or ``"out"`` / ``"data"``) to change."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


# -- settings ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StudyConfig:
    """Everything that determines a study. ``gflops``: the sampled FLOPs range at the clip (default 10% to
    100% of the S preset's 1.9 G budget scaled to the clip); ``scores``: empty = every registered score;
    ``search_scores``: scores to run the EA with (``"random"``: the random strategy), at
    ``search_gflops`` (default: the top of the range) with ``search_iterations``/``search_population``."""

    models: int = 24
    epochs: int = 8
    clip_frames: int = 8
    clip_size: int = 112
    sampling_rate: int = 4
    gflops: tuple[float, float] | None = None
    max_layers: int = 83
    scores: tuple[str, ...] = ()
    zoo: tuple[str, ...] = ()
    search_scores: tuple[str, ...] = ()
    search_gflops: float | None = None
    search_iterations: int = 200
    search_population: int = 16
    repeats: int = 1
    naswot_batch: int = 8
    batch_size: int = 8
    lr: float = 0.02
    init: str = "torch"
    hflip: bool = True
    eval_clips: int = 4
    eval_crops: int = 3
    max_concurrent: int | None = None
    bins: int = 3
    bootstrap: int = 1000
    top_k: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        positive = ("models", "epochs", "clip_frames", "clip_size", "sampling_rate", "search_iterations",
                    "search_population", "repeats", "batch_size", "eval_clips", "bins", "bootstrap")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise StudyError(name, f"must be a positive integer, got {value!r}")
        if self.naswot_batch < 2:
            raise StudyError("naswot_batch", f"must be >= 2 (a kernel over clips), got {self.naswot_batch}")
        if self.eval_crops not in (1, 3):
            raise StudyError("eval_crops", f"must be 1 or 3, got {self.eval_crops}")
        if self.max_layers < 5:
            raise StudyError("max_layers", f"must be >= 5 (stem, one block, head), got {self.max_layers}")
        if self.gflops is not None:
            lo, hi = self.gflops
            if not 0 < lo < hi:
                raise StudyError("gflops", f"must be a range 0 < MIN < MAX, got {lo} {hi}")
        if self.search_gflops is not None and not self.search_gflops > 0:
            raise StudyError("search_gflops", f"must be positive, got {self.search_gflops}")
        from pipeline.train.recipe import INITS

        if self.init not in INITS:
            raise StudyError("init", f"must be one of {', '.join(INITS)}, got {self.init!r}")
        if not self.lr > 0:
            raise StudyError("lr", f"must be positive, got {self.lr}")
        if self.top_k is not None and self.top_k < 1:
            raise StudyError("top_k", f"must be >= 1, got {self.top_k}")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise StudyError("max_concurrent", f"must be >= 1, got {self.max_concurrent}")
        for name in self.scores:
            try:
                get_score(name)
            except ValueError as exc:
                raise StudyError("scores", str(exc)) from None
        for name in self.zoo:
            if name not in zoo.names():
                raise StudyError("zoo", f"no zoo entry named {name!r} (known: {', '.join(zoo.names())})")
        for name in self.search_scores:
            if name != RANDOM:
                from e3d.evaluator import check_search_score

                try:
                    check_search_score(name)
                except ValueError as exc:
                    raise StudyError("search_scores", str(exc)) from None
        for name, values in (("scores", self.scores), ("zoo", self.zoo), ("search_scores", self.search_scores)):
            if len(set(values)) != len(values):
                raise StudyError(name, f"listed twice: {', '.join(values)}")

    @property
    def gflops_range(self) -> tuple[float, float]:
        if self.gflops is not None:
            return self.gflops
        frames, size, budget = S_BUDGET
        top = budget / 1e9 * (self.clip_frames / frames) * (self.clip_size / size) ** 2
        return (round(0.1 * top, 4), round(top, 4))

    @property
    def score_list(self) -> list[str]:
        return list(self.scores) or score_names()

    def recipe(self):
        from pipeline.train import Recipe

        return Recipe.paper("sthsth").scaled(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                                             init=self.init)

    def clip(self):
        from pipeline.video.clip import ClipConfig

        size = self.clip_size
        return ClipConfig(frames=self.clip_frames, sampling_rate=self.sampling_rate, size=size,
                          train_scale=(round(size * 8 / 7), round(size * 10 / 7)), hflip=self.hflip)

    def models_key(self) -> dict[str, Any]:
        """The settings that decide which models are trained and how (a resumed study must match them;
        ``epochs`` may grow, scores and the analysis may change)."""
        keys = ("models", "clip_frames", "clip_size", "sampling_rate", "max_layers", "zoo", "search_scores",
                "search_gflops", "search_iterations", "search_population", "batch_size", "lr", "init", "hflip",
                "eval_clips", "eval_crops", "seed")
        return {k: _jsonable(getattr(self, k)) for k in keys} | {"gflops": list(self.gflops_range)}

    def to_dict(self) -> dict[str, Any]:
        return {k: _jsonable(v) for k, v in asdict(self).items()}


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


# -- 1. the models ----------------------------------------------------------------------------------------
@dataclass
class Model:
    """A model of the study: its spec at the clip (and the data's classes) and where it came from
    (``sample``, ``zoo`` or ``search:<score>``)."""

    name: str
    source: str
    spec: ArchSpec

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "spec": self.spec.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Model":
        return cls(d["name"], d["source"], ArchSpec.from_dict(d["spec"]))


def sample_specs(n: int, *, frames: int, size: int, gflops: tuple[float, float], seed: int = 0,
                 max_layers: int = 83, num_classes: int | None = None, max_draws: int = 400,
                 reject: Callable[[ArchSpec], bool] | None = None) -> list[ArchSpec]:
    """``n`` distinct specs of the E3D search space at ``frames x size^2``, one per log-spaced FLOPs band of
    ``gflops``, each uniform among the feasible specs of its band (seeded)."""
    from e3d.evaluator import Evaluator
    from e3d.space import SearchSpace
    from e3d.strategies.random import UniformSampler
    from e3d.strategy import Budget

    lo, hi = gflops[0] * 1e9, gflops[1] * 1e9
    template = zoo.initial_structure("S").with_input(frames, size)
    if num_classes is not None:
        template = template.with_num_classes(num_classes)
    space = SearchSpace.of(template)
    evaluator = Evaluator(template, "flops", space=space)
    rng = random.Random(seed)
    edges = [lo * (hi / lo) ** (i / n) for i in range(n + 1)]
    seen: set = set()
    specs: list[ArchSpec] = []
    for i in range(n):
        try:
            sampler = UniformSampler(space, evaluator, Budget(flops=edges[i + 1], layers=max_layers), rng)
        except ValueError as exc:
            raise StudyError("gflops", f"no network of the space fits {edges[i + 1] / 1e9:.4f} GFLOPs at "
                             f"{frames}x{size}^2 ({exc}); raise the FLOPs range") from None
        for _ in range(max_draws):
            genome = sampler.draw()
            flops = evaluator.cost(genome)[0]
            if flops < edges[i] or genome in seen:
                continue
            spec = space.decode(genome, f"s{i:02d}-{flops / 1e9:.3f}G")
            if reject is not None and reject(spec):
                continue
            seen.add(genome)
            specs.append(spec)
            break
        else:
            raise StudyError("gflops", f"no usable spec in the band {edges[i] / 1e9:.4f}-{edges[i + 1] / 1e9:.4f} "
                             f"GFLOPs after {max_draws} draws; widen the range or use fewer models")
    return specs


def infinite_stentr(spec: ArchSpec) -> bool:
    from e3d.scores import InfiniteScoreError, stentr

    try:
        stentr(spec)
        return False
    except InfiniteScoreError:
        return True


def cannot_run(spec: ArchSpec) -> str | None:
    """Why the network of ``spec`` cannot run on its own clip size (an op torch refuses at that size; the
    check is cheap), or None. A forward on the meta device: shapes only, no compute."""
    import torch

    from e3d.model import build_model

    try:
        with torch.device("meta"):
            build_model(spec)(torch.empty(1, 3, spec.frames, spec.size, spec.size))
    except (RuntimeError, ValueError) as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return None


def at_clip(spec: ArchSpec, config: StudyConfig, num_classes: int) -> ArchSpec:
    return spec.with_input(config.clip_frames, config.clip_size).with_num_classes(num_classes).replace(
        sampling_rate=config.sampling_rate)


def make_models(config: StudyConfig, num_classes: int) -> list[Model]:
    """The sampled models plus the zoo references, at the clip."""
    need_stentr = "stentr" in config.score_list

    def reject(spec: ArchSpec) -> bool:  # what a search would refuse, or what cannot be trained
        return (need_stentr and infinite_stentr(spec)) or cannot_run(spec) is not None

    specs = sample_specs(config.models, frames=config.clip_frames, size=config.clip_size,
                         gflops=config.gflops_range, seed=config.seed, max_layers=config.max_layers,
                         num_classes=num_classes, reject=reject)
    models = [Model(s.name, "sample", at_clip(s, config, num_classes)) for s in specs]
    for name in config.zoo:
        spec = at_clip(zoo.get(name), config, num_classes)
        problem = cannot_run(spec)
        if problem:
            raise StudyError("zoo", f"{name} cannot run at {config.clip_frames}x{config.clip_size}^2: {problem}")
        models.append(Model(name, "zoo", spec))
    return models


# -- searches at equal budget ------------------------------------------------------------------------------
@dataclass
class SearchRecord:
    """One search of the study: which score (or ``random``), its winner and what it cost."""

    search: str
    strategy: str
    score: str
    winner: str
    spec: dict[str, Any]
    best_score: float
    gflops: float
    cpu_s: float | None
    wall_s: float
    iterations: int
    population: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def search_request(score: str, *, frames: int, size: int, gflops: float, max_layers: int, iterations: int,
                   population: int, seed: int, num_classes: int) -> tuple[str, Any]:
    """``(strategy name, SearchRequest)`` of one search of the study: the EA ranking by ``score``, or for
    ``random`` one uniform draw under the budget (with a finite STEntr): the no-proxy baseline."""
    from e3d.strategy import Budget, Clip, SearchRequest

    if score == RANDOM:
        strategy, rank_by, options = "random", "stentr", {"samples": 1}
    else:
        strategy, rank_by, options = "evolution", score, {"population_size": population, "iterations": iterations,
                                                          "chunk": max(1, iterations)}
    return strategy, SearchRequest(budget=Budget(flops=gflops * 1e9, layers=max_layers), clip=Clip(frames, size),
                                   seed=seed, score=rank_by, num_classes=num_classes, options=options,
                                   name=f"win-{score}")


def search_one(score: str, **kwargs: Any) -> dict[str, Any]:
    """Run one search of the study in this process (one torch thread) and return its record (see
    :func:`search_request` for the arguments)."""
    import torch

    from e3d.strategy import SearchContext, get_strategy

    torch.set_num_threads(1)
    strategy, request = search_request(score, **kwargs)
    outcome = get_strategy(strategy).search(request, SearchContext(progress=False))
    best = outcome.best
    return SearchRecord(search=score, strategy=strategy, score=request.score, winner=f"win-{score}",
                        spec=best.spec.replace(name=f"win-{score}").to_dict(), best_score=float(best.score),
                        gflops=best.flops / 1e9, cpu_s=outcome.cpu_s, wall_s=outcome.wall_s,
                        iterations=0 if score == RANDOM else kwargs["iterations"],
                        population=0 if score == RANDOM else kwargs["population"]).to_dict()


def _search_kwargs(config: StudyConfig, num_classes: int) -> dict[str, Any]:
    return dict(frames=config.clip_frames, size=config.clip_size,
                gflops=config.search_gflops or config.gflops_range[1], max_layers=config.max_layers,
                iterations=config.search_iterations, population=config.search_population, seed=config.seed,
                num_classes=num_classes)


def run_searches(config: StudyConfig, num_classes: int, done: Mapping[str, dict]) -> dict[str, dict]:
    """Every search of ``config.search_scores`` not in ``done``, as parallel Ray tasks (one CPU each)."""
    todo = [s for s in config.search_scores if s not in done]
    if not todo:
        return dict(done)
    import ray

    kwargs = _search_kwargs(config, num_classes)
    task = ray.remote(num_cpus=1)(search_one)
    refs = {s: task.remote(s, **kwargs) for s in todo}
    print(f"[proxy-study] {len(todo)} search(es) at {kwargs['gflops']:.4f} GFLOPs, {config.search_iterations} "
          f"iterations x population {config.search_population}: {', '.join(todo)}")
    out = dict(done)
    for s, ref in refs.items():
        out[s] = ray.get(ref)
        cpu = out[s]["cpu_s"]
        print(f"[proxy-study] search {s}: winner {out[s]['gflops']:.4f} GFLOPs, score {out[s]['best_score']:.3f}, "
              f"{cpu if cpu is None else round(cpu, 1)} CPU-s")
    return out


# -- 2. scores -----------------------------------------------------------------------------------------------
def naswot_clips(dataset: Any, config: StudyConfig, n: int, seed: int = 0) -> np.ndarray:
    """``n`` training clips (centre views at the clip size, normalised), one video each, seeded: the batch
    NASWOT scores every model on. ``(n, 3, T, S, S)`` float32."""
    from pipeline.video.decode import decode_clip
    from pipeline.video.transforms import center_crop, normalize

    clip = config.clip()
    items = list(dataset.train)
    random.Random(seed).shuffle(items)
    clips = []
    for item in items:
        try:
            raw = decode_clip(item.path, clip.frames, clip.sampling_rate, 0.5, size=clip.size, short=clip.short,
                              timeout=clip.decode_timeout)
        except Exception as exc:  # a bad file is skipped, as in training
            print(f"[proxy-study] naswot batch: skipping {item.path}: {exc}")
            continue
        clips.append(normalize(center_crop(raw, clip.size), clip.mean, clip.std))
        if len(clips) == n:
            return np.stack(clips)
    raise StudyError("naswot_batch", f"only {len(clips)} decodable training clips for the NASWOT batch of {n}")


def score_spec(spec_dict: dict[str, Any], names: Sequence[str], repeats: int, seed: int,
               batch: np.ndarray | None) -> dict[str, dict[str, Any]]:
    """Every score of ``names`` for one spec (one torch thread): ``{score: {mean, std, values}}`` or
    ``{score: {error}}`` when it cannot be computed."""
    import torch

    torch.set_num_threads(1)
    spec = ArchSpec.from_dict(spec_dict)
    tensor = None if batch is None else torch.from_numpy(np.array(batch))  # a writable copy of the shared batch
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        score = get_score(name)
        start = time.perf_counter()
        try:
            v = score.evaluate(spec, repeats=repeats, seed=seed, batch=tensor)
            out[name] = {"mean": v.mean, "std": v.std, "values": list(v.values),
                         "seconds": time.perf_counter() - start}
        except ValueError as exc:  # e.g. an infinite STEntr for a zoo network at this clip
            out[name] = {"error": str(exc), "mean": math.nan}
    return out


def score_models(models: Sequence[Model], names: Sequence[str], *, repeats: int, seed: int,
                 batch: np.ndarray | None, done: Mapping[str, dict]) -> dict[str, dict]:
    """Scores of every model (those missing from ``done``), as parallel Ray tasks (one CPU each)."""
    import ray

    out = {m: dict(v) for m, v in done.items()}
    todo = [(m, [n for n in names if n not in out.get(m.name, {})]) for m in models]
    todo = [(m, ns) for m, ns in todo if ns]
    if not todo:
        return out
    print(f"[proxy-study] scoring {len(todo)} model(s) with {', '.join(names)}")
    task = ray.remote(num_cpus=1)(score_spec)
    batch_ref = ray.put(batch)
    refs = [(m, task.remote(m.spec.to_dict(), ns, repeats, seed, batch_ref)) for m, ns in todo]
    for m, ref in refs:
        out.setdefault(m.name, {}).update(ray.get(ref))
    return out


# -- 4. analysis (no Ray) ----------------------------------------------------------------------------------
def kendall(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties in either variable accounted); NaN when a variable is constant or n < 2."""
    from scipy.stats import kendalltau

    if len(x) < 2:
        return math.nan
    return float(kendalltau(x, y).statistic)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan
    return float(spearmanr(x, y).statistic)


def kendall_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of every row pair of ``x``, ``y`` (shape ``(B, n)``) at once; NaN where undefined.
    The same statistic as :func:`kendall` (``scipy.stats.kendalltau``), vectorised for the bootstrap."""
    sx = np.sign(x[:, :, None] - x[:, None, :])
    sy = np.sign(y[:, :, None] - y[:, None, :])
    n = x.shape[1]
    pairs = n * (n - 1) / 2
    concordance = (sx * sy).sum(axis=(1, 2)) / 2
    untied_x = pairs - (sx == 0).sum(axis=(1, 2)) / 2 + n / 2  # the diagonal is not a pair
    untied_y = pairs - (sy == 0).sum(axis=(1, 2)) / 2 + n / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((untied_x > 0) & (untied_y > 0), concordance / np.sqrt(untied_x * untied_y), np.nan)


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of every row pair (average ranks for ties), vectorised; NaN where undefined."""
    from scipy.stats import rankdata

    rx, ry = rankdata(x, axis=1), rankdata(y, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    den = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(axis=1) / den, np.nan)


_ROWS = {"kendall": kendall_rows, "spearman": spearman_rows}


def bootstrap_ci(x: Sequence[float], y: Sequence[float], stat: Callable[[Sequence[float], Sequence[float]], float],
                 *, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat`` (:func:`kendall` or :func:`spearman`, computed vectorised
    over the resamples) over models resampled with replacement; resamples where the statistic is undefined
    (e.g. constant accuracy) are dropped. Widened to contain the point estimate when the bootstrap
    distribution lies on one side of it (only with very few models). NaN when undefined."""
    x_a, y_a = np.asarray(x, float), np.asarray(y, float)
    point = stat(x_a, y_a)
    if len(x_a) < 3 or not math.isfinite(point):
        return (math.nan, math.nan)
    idx = np.random.default_rng(seed).integers(0, len(x_a), (n_boot, len(x_a)))
    values = _ROWS[stat.__name__](x_a[idx], y_a[idx])
    values = values[np.isfinite(values)]
    if len(values) < max(10, n_boot // 10):
        return (math.nan, math.nan)
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return (float(min(lo, point)), float(max(hi, point)))


def top_k_hit_rate(x: Sequence[float], y: Sequence[float], k: int) -> float:
    """Of the ``k`` models the proxy ranks highest, the fraction that are among the ``k`` most accurate (a
    model tied with the k-th best accuracy counts as among them)."""
    if len(x) < k or k < 1 or len(set(y)) < 2:  # equal accuracies: nothing to hit
        return math.nan
    order = sorted(range(len(x)), key=lambda i: -x[i])[:k]
    kth = sorted(y, reverse=True)[k - 1]
    return sum(1 for i in order if y[i] >= kth) / k


def flops_bins(flops: Sequence[float], bins: int) -> list[list[int]]:
    """Model indices split into ``bins`` consecutive groups of (nearly) equal size by FLOPs."""
    order = sorted(range(len(flops)), key=lambda i: flops[i])
    return [list(chunk) for chunk in np.array_split(order, bins) if len(chunk)]


def binned_kendall(x: Sequence[float], y: Sequence[float], flops: Sequence[float], bins: int
                   ) -> tuple[float, list[dict[str, Any]]]:
    """Kendall's tau within each FLOPs bin of at least 3 models, and their mean weighted by the number of
    pairs in each bin: how well the proxy orders models of similar FLOPs."""
    detail, num, den = [], 0.0, 0
    for idx in flops_bins(flops, bins):
        xs, ys = [x[i] for i in idx], [y[i] for i in idx]
        tau = kendall(xs, ys) if len(idx) >= 3 else math.nan
        detail.append({"gflops": [min(flops[i] for i in idx), max(flops[i] for i in idx)], "n": len(idx),
                       "kendall_tau": tau, "spearman_rho": spearman(xs, ys) if len(idx) >= 3 else math.nan})
        if math.isfinite(tau):
            pairs = len(idx) * (len(idx) - 1) // 2
            num += tau * pairs
            den += pairs
    return (num / den if den else math.nan), detail


def _finite_pairs(rows: Sequence[Mapping[str, Any]], proxy: str, target: str) -> list[Mapping[str, Any]]:
    return [r for r in rows if _finite(r.get(proxy)) and _finite(r.get(target))]


def _finite(v: Any) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def correlate_one(rows: Sequence[Mapping[str, Any]], proxy: str, target: str, *, bins: int, n_boot: int, seed: int,
                  top_k: int | None) -> dict[str, Any]:
    """The statistics of ``proxy`` against ``target`` over the rows where both are finite."""
    use = _finite_pairs(rows, proxy, target)
    x = [float(r[proxy]) for r in use]
    y = [float(r[target]) for r in use]
    k = top_k or max(1, math.ceil(len(use) / 4))
    binned, detail = binned_kendall(x, y, [float(r["gflops"]) for r in use], bins)
    return {"n": len(use), "kendall_tau": kendall(x, y), "kendall_ci": bootstrap_ci(x, y, kendall, n_boot=n_boot,
                                                                                    seed=seed),
            "spearman_rho": spearman(x, y), "spearman_ci": bootstrap_ci(x, y, spearman, n_boot=n_boot, seed=seed),
            "binned_kendall_tau": binned, "bins": detail, "top_k": k, "top_k_hit_rate": top_k_hit_rate(x, y, k)}


def epoch_budgets(epochs: int) -> list[int]:
    """The epochs after a quarter, half and all of the run (distinct, at least 1)."""
    return sorted({max(1, round(f * epochs)) for f in EPOCH_FRACTIONS})


def correlate(rows: Sequence[Mapping[str, Any]], proxies: Sequence[str], *, epochs: int, bins: int = 3,
              n_boot: int = 1000, seed: int = 0, top_k: int | None = None) -> dict[str, dict[str, Any]]:
    """``{proxy: {n, kendall_tau, kendall_ci, spearman_rho, spearman_ci, binned_kendall_tau, bins, top_k,
    top_k_hit_rate, multi_view: {...the same against mv_top1}, by_epoch: {"<e>": {kendall_tau,
    spearman_rho, n}}}}`` against the final validation top-1 (``val_top1``)."""
    out = {}
    for p in proxies:
        kw = dict(bins=bins, n_boot=n_boot, seed=seed, top_k=top_k)
        res = correlate_one(rows, p, "val_top1", **kw)
        res["multi_view"] = correlate_one(rows, p, "mv_top1", **kw)
        res["by_epoch"] = {}
        for e in epoch_budgets(epochs):
            use = _finite_pairs(rows, p, f"val_top1_e{e}")
            x, y = [float(r[p]) for r in use], [float(r[f"val_top1_e{e}"]) for r in use]
            res["by_epoch"][str(e)] = {"fraction": e / epochs, "n": len(use), "kendall_tau": kendall(x, y),
                                       "spearman_rho": spearman(x, y)}
        out[p] = res
    return out


# -- outputs ------------------------------------------------------------------------------------------------
def model_rows(models: Sequence[Model], scores: Mapping[str, Mapping[str, dict]], results: Mapping[str, Any],
               proxies: Sequence[str], epochs: int) -> list[dict[str, Any]]:
    """One row per model: name, source, gflops and mparams at the trained clip, the spec summary, every
    proxy, the accuracies (final, multi-view, and after each epoch budget), training time."""
    rows = []
    for m in models:
        c = cost(m.spec)
        r = results.get(m.name)
        hist = {int(h["epoch"]): h for h in (r.history if r is not None else [])}
        row: dict[str, Any] = {"name": m.name, "source": m.source, "gflops": round(c.flops / 1e9, 5),
                               "mparams": round(c.params / 1e6, 5), "layers": c.layers,
                               "kernels": m.spec.kernel_pattern, "depths": "-".join(map(str, m.spec.depths)),
                               "widths": "-".join(map(str, m.spec.widths))}
        for p in proxies:
            row[p] = scores.get(m.name, {}).get(p, {}).get("mean", math.nan)
        ok = r is not None and r.ok
        row["val_top1"] = r.val_top1 if ok else math.nan
        row["mv_top1"] = r.mv_top1 if ok else math.nan
        row["best_val_top1"] = r.best_val_top1 if ok else math.nan
        for e in epoch_budgets(epochs):
            row[f"val_top1_e{e}"] = float(hist[e].get("val_top1", math.nan)) if ok and e in hist else math.nan
        for e in low_fidelity(epochs):
            row[f"top1_after_{e}ep"] = float(hist[e].get("val_top1", math.nan)) if ok and e in hist else math.nan
        row["epochs"] = r.epochs if r is not None else 0
        row["train_time_s"] = round(r.train_time_s, 1) if r is not None else math.nan
        row["error"] = (r.error or "") if r is not None else "not trained"
        rows.append(row)
    return rows


def low_fidelity(epochs: int) -> list[int]:
    """The epochs whose accuracy is a low-fidelity predictor of the final one (fewer than the whole run)."""
    return [e for e in LOW_FIDELITY_EPOCHS if e < epochs]


def low_fidelity_names(epochs: int) -> list[str]:
    """Their columns in the model rows and names in the correlations: ``top1_after_1ep``, ..."""
    return [f"top1_after_{e}ep" for e in low_fidelity(epochs)]


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    return path


def _clean(obj: Any) -> Any:
    """NaN/inf -> None and tuples -> lists, so the JSON is standard."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _fmt(v: Any, nd: int = 3) -> str:
    return f"{v:.{nd}f}" if _finite(v) else "–"


def _sig(v: Any) -> str:
    return f"{v:.3g}" if _finite(v) else "–"


def _ci(ci: Sequence[Any]) -> str:
    return f"[{_fmt(ci[0], 2)}, {_fmt(ci[1], 2)}]" if ci and _finite(ci[0]) else ""


def format_table(corr: Mapping[str, Mapping[str, Any]], epochs: int) -> str:
    """Markdown: per proxy n, tau [CI], rho [CI], binned tau, top-k hit rate, tau per epoch budget, and the
    multi-view tau/rho."""
    budgets = epoch_budgets(epochs)
    head = (["proxy", "n", "Kendall τ [95% CI]", "Spearman ρ [95% CI]", "τ within FLOPs bins", "top-k hit"]
            + [f"τ @ {e}/{epochs} ep" for e in budgets] + ["multi-view τ", "multi-view ρ"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p, c in corr.items():
        mv = c["multi_view"]
        cells = [p, str(c["n"]), f"{_fmt(c['kendall_tau'])} {_ci(c['kendall_ci'])}".strip(),
                 f"{_fmt(c['spearman_rho'])} {_ci(c['spearman_ci'])}".strip(), _fmt(c["binned_kendall_tau"]),
                 f"{_fmt(c['top_k_hit_rate'], 2)} (k={c['top_k']})"]
        cells += [_fmt(c["by_epoch"][str(e)]["kendall_tau"]) for e in budgets]
        cells += [_fmt(mv["kendall_tau"]), _fmt(mv["spearman_rho"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def format_searches(searches: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]) -> str:
    by_name = {r["name"]: r for r in rows}
    head = ["search", "strategy", "ranked by", "iterations × population", "cost (CPU-s)", "wall (s)",
            "winner", "winner GFLOPs", "winner score", "val top-1", "multi-view top-1"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in searches:
        r = by_name.get(s["winner"], {})
        size = "1 draw" if s["strategy"] == RANDOM else f"{s['iterations']} × {s['population']}"
        cells = [s["search"], s["strategy"], s["score"], size, _sig(s["cpu_s"]), _sig(s["wall_s"]),
                 s["winner"] + (f" (not trained: {s['error']})" if s.get("error") else ""), _fmt(s["gflops"], 4),
                 _fmt(s["best_score"], 2), _fmt(r.get("val_top1"), 1), _fmt(r.get("mv_top1"), 1)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_scatter(rows: Sequence[Mapping[str, Any]], proxies: Sequence[str], corr: Mapping[str, Any],
                 folder: Path) -> list[Path]:
    """Fig. 3 style: validation top-1 against each proxy, colour = GFLOPs, sampled models as dots, zoo
    references as stars and search winners as triangles (labelled); one PNG per proxy and one grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def draw(ax, p):
        use = _finite_pairs(rows, p, "val_top1")
        if not use:
            ax.set_title(f"{p}: no finite values")
            return None
        gf = [r["gflops"] for r in rows if _finite(r.get("gflops"))]
        vmin, vmax = min(gf), max(gf)
        sc = None
        for kind, marker, size in (("sample", "o", 30), ("zoo", "*", 140), ("search", "^", 70)):
            sub = [r for r in use if r["source"].split(":")[0] == kind]
            if not sub:
                continue
            sc = ax.scatter([r[p] for r in sub], [r["val_top1"] for r in sub], c=[r["gflops"] for r in sub],
                            cmap="viridis", vmin=vmin, vmax=vmax, marker=marker, s=size, edgecolors="k",
                            linewidths=0.4, label=kind)
            if kind != "sample":
                for r in sub:
                    ax.annotate(r["name"], (r[p], r["val_top1"]), fontsize=7, xytext=(3, 3),
                                textcoords="offset points")
        c = corr[p]
        ax.set_title(f"{p}: τ={_fmt(c['kendall_tau'], 2)} {_ci(c['kendall_ci'])}, ρ={_fmt(c['spearman_rho'], 2)}, "
                     f"binned τ={_fmt(c['binned_kendall_tau'], 2)}", fontsize=8)
        ax.set(xlabel=p, ylabel="val top-1 (%)")
        ax.grid(alpha=0.3)
        return sc

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for p in proxies:
        fig, ax = plt.subplots(figsize=(5, 4))
        sc = draw(ax, p)
        if sc is not None:
            fig.colorbar(sc, ax=ax, label="GFLOPs")
            ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        paths.append(folder / f"scatter_{p}.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    cols = min(4, len(proxies))
    nrows = math.ceil(len(proxies) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.6 * nrows), squeeze=False)
    for ax, p in zip(axes.flat, proxies):
        draw(ax, p)
    for ax in list(axes.flat)[len(proxies):]:
        ax.axis("off")
    fig.tight_layout()
    paths.append(folder / "scatter.png")
    fig.savefig(paths[-1], dpi=90)
    plt.close(fig)
    return paths


def plot_tau_vs_epochs(corr: Mapping[str, Any], epochs: int, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = epoch_budgets(epochs)
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (p, c) in enumerate(corr.items()):
        ys = [c["by_epoch"][str(e)]["kendall_tau"] for e in budgets]
        ax.plot(budgets, [y if _finite(y) else np.nan for y in ys], "o-", color=f"C{i % 10}", label=p)
    ax.axhline(0, color="k", lw=0.5)
    ax.set(xlabel="epochs of training (same runs)", ylabel="Kendall τ vs val top-1", xticks=budgets,
           title="proxy rank correlation vs training budget")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# -- the study ----------------------------------------------------------------------------------------------
@dataclass
class StudySummary:
    out: Path
    models: list[Model]
    rows: list[dict[str, Any]]
    correlations: dict[str, Any]
    searches: list[dict[str, Any]]
    trained: list[str] = field(default_factory=list)   # models trained (or resumed) by this call
    reused: list[str] = field(default_factory=list)    # finished models taken from an earlier call
    files: list[Path] = field(default_factory=list)
    parent_run_id: str | None = None


def _read_json(path: Path, default: Any) -> Any:
    """A state file of the study (``default`` when absent); a corrupt one is set aside and what it held redone."""
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        from e3d.statefile import set_aside  # noqa: PLC0415

        print(f"[study] {path} is corrupt ({exc}): set aside as {set_aside(path).name}; redoing what it held")
        return default


def _write_json(path: Path, data: Any) -> Path:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_clean(data), indent=2) + "\n")
    tmp.replace(path)
    return path


def _check_state(config: StudyConfig, out: Path) -> dict[str, Any]:
    """``study.json``: created on the first run, checked on the next ones."""
    path = out / "study.json"
    state = _read_json(path, None)
    key = config.models_key()
    if state is None:
        state = {"models_key": key, "config": config.to_dict(), "created": time.strftime("%Y-%m-%d %H:%M:%S")}
        _write_json(path, state)
        return state
    old = state.get("models_key", {})
    changed = sorted(k for k in set(old) | set(key) if old.get(k) != key.get(k))
    if changed:
        raise StudyError("out", f"{out} holds a study with other settings ({', '.join(f'{k}: {old.get(k)!r} -> {key.get(k)!r}' for k in changed)}); "
                         f"use another --out, or the same settings to resume it")
    return state


def _finished_results(train_dir: Path, models: Sequence[Model], epochs: int) -> dict[str, Any]:
    """Training results already on disk with all ``epochs`` and a multi-view evaluation, by model name."""
    from pipeline.train import CandidateResult

    wanted = {json.dumps(m.spec.to_dict(), sort_keys=True): m.name for m in models}
    found: dict[str, Any] = {}
    for path in sorted(train_dir.glob("candidates/*/result.json")):
        try:
            r = CandidateResult.from_dict(json.loads(path.read_text()))
        except (ValueError, TypeError, KeyError):
            continue
        name = wanted.get(json.dumps(r.spec, sort_keys=True))
        if name and r.ok and r.epochs == epochs and _finite(r.mv_top1):
            found[name] = r
    return found


def check_study(config: StudyConfig, dataset: Any) -> list[Model]:
    """Everything that can be checked before any work: the data against the settings and the FLOPs range
    against the search space (samples the models, which takes well under a second). Raises
    :class:`StudyError` naming the setting; returns the sampled and zoo models."""
    if not dataset.train or not dataset.val:
        raise StudyError("data", f"{dataset.root}: needs training and validation videos, has "
                                 f"{len(dataset.train)} / {len(dataset.val)}")
    if any(get_score(p).needs_batch for p in config.score_list) and len(dataset.train) < config.naswot_batch:
        raise StudyError("naswot_batch", f"{config.naswot_batch} clips asked, the data has "
                                         f"{len(dataset.train)} training videos")
    from e3d.strategy import RequestError, get_strategy

    for score in config.search_scores:
        strategy, request = search_request(score, **_search_kwargs(config, len(dataset.classes)))
        try:
            get_strategy(strategy).check(request)
        except RequestError as exc:
            field = {"budget.flops": "search_gflops", "budget.layers": "max_layers", "clip": "clip_size"}.get(
                exc.field, "search_scores")
            raise StudyError(field, f"search {score!r}: {exc}") from None
    return make_models(config, len(dataset.classes))


def run_study(config: StudyConfig, dataset: Any, out: str | os.PathLike, *, tracking: Any = None,
              models: Sequence[Model] | None = None, log: Callable[[str], None] = print) -> StudySummary:
    """Run (or resume) the study on ``dataset`` (a ``pipeline.video.formats.VideoDataset``), writing into
    ``out``; ``tracking`` (a :class:`pipeline.tracking.Tracking`) for MLflow, None for none; ``models``: what
    :func:`check_study` returned (else sampled again; a resumed study reads its own). Starts a local Ray (no
    dashboard) unless one is running."""
    import ray

    out = Path(out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    state = _check_state(config, out)
    num_classes = len(dataset.classes)
    proxies = config.score_list
    t0 = time.perf_counter()

    # 1. models (sampled + zoo) and search winners, fixed on the first run
    specs_path = out / "specs.json"
    if specs_path.is_file():
        models = [Model.from_dict(d) for d in _read_json(specs_path, [])]
    else:
        models = list(models) if models is not None else make_models(config, num_classes)
        _write_json(specs_path, [m.to_dict() for m in models])
    if not ray.is_initialized():
        ray.init(include_dashboard=False)
    searches = run_searches(config, num_classes, _read_json(out / "searches.json", {}))
    if config.search_scores:
        _write_json(out / "searches.json", searches)
    names = {m.name for m in models}
    keys = {m.spec.key(): m.name for m in models}
    for s in config.search_scores:
        rec = searches[s]
        spec = at_clip(ArchSpec.from_dict(rec["spec"]), config, num_classes)
        if rec["winner"] in names:
            continue
        if spec.key() in keys:  # the search found a model already in the study: train it once
            log(f"[proxy-study] search {s}: winner is {keys[spec.key()]}")
            rec["winner"] = keys[spec.key()]
            continue
        problem = cannot_run(spec)
        if problem:
            log(f"[proxy-study] search {s}: winner cannot run at the clip, not trained: {problem}")
            rec["error"] = problem
            continue
        models.append(Model(rec["winner"], f"search:{s}", spec))
        names.add(rec["winner"])
        keys[spec.key()] = rec["winner"]
    log(f"[proxy-study] {len(models)} models ({sum(m.source == 'sample' for m in models)} sampled in "
        f"{config.gflops_range[0]:.4f}-{config.gflops_range[1]:.4f} GFLOPs at {config.clip_frames}x"
        f"{config.clip_size}^2, {len(config.zoo)} zoo, {len(config.search_scores)} search winners); proxies: "
        f"{', '.join(proxies)}")

    # 2. scores
    batch = None
    if any(get_score(p).needs_batch for p in proxies):
        batch_path = out / "naswot_batch.npy"
        if batch_path.is_file():
            batch = np.load(batch_path)
        else:
            batch = naswot_clips(dataset, config, config.naswot_batch, seed=config.seed)
            np.save(batch_path, batch)
    t_scores = time.perf_counter()
    scores = score_models(models, proxies, repeats=config.repeats, seed=config.seed, batch=batch,
                          done=_read_json(out / "scores.json", {}))
    _write_json(out / "scores.json", scores)
    log(f"[proxy-study] scores ready ({time.perf_counter() - t_scores:.0f} s; {time.perf_counter() - t0:.0f} s in)")

    # 3. training (inside the parent MLflow run, reused on resume)
    parent_ctx = _parent_run(tracking, state, out, config)
    with parent_ctx as parent:
        parent_id = None if parent is None else parent.info.run_id
        train_dir = out / "train"
        finished = _finished_results(train_dir, models, config.epochs)
        todo = [m for m in models if m.name not in finished]
        results = dict(finished)
        if finished:
            log(f"[proxy-study] {len(finished)} model(s) already trained for {config.epochs} epochs: "
                f"{', '.join(sorted(finished))}")
        if todo:
            from pipeline.train import train_candidates

            trained = train_candidates([m.spec for m in todo], dataset, clip=config.clip(), recipe=config.recipe(),
                                       tracking=None if tracking is None else tracking.child(parent_id),
                                       out_dir=train_dir, eval_clips=config.eval_clips, eval_crops=config.eval_crops,
                                       max_concurrent=config.max_concurrent, seed=config.seed, log_model=False)
            results.update({m.name: r for m, r in zip(todo, trained)})
            log(f"[proxy-study] trained {len(todo)} model(s) ({time.perf_counter() - t0:.0f} s in)")

        # 4. analysis and outputs
        rows = model_rows(models, scores, results, proxies, config.epochs)
        predictors = list(proxies) + low_fidelity_names(config.epochs)  # zero-cost proxies, then a first epoch
        corr = correlate(rows, predictors, epochs=config.epochs, bins=config.bins, n_boot=config.bootstrap,
                         seed=config.seed, top_k=config.top_k)
        search_list = [searches[s] for s in config.search_scores]
        files = write_outputs(out, rows, proxies, corr, search_list, config)
        if tracking is not None and parent is not None:
            _log_mlflow(tracking, parent_id, rows, proxies, corr, results, files, scores, time.perf_counter() - t0)
    log(f"[proxy-study] done in {time.perf_counter() - t0:.0f} s; outputs in {out}")
    return StudySummary(out=out, models=models, rows=rows, correlations=corr, searches=search_list,
                        trained=[m.name for m in todo], reused=sorted(finished), files=files,
                        parent_run_id=parent_id)


def write_outputs(out: Path, rows: list[dict[str, Any]], proxies: Sequence[str], corr: dict[str, Any],
                  searches: Sequence[Mapping[str, Any]], config: StudyConfig) -> list[Path]:
    files = [write_csv(rows, out / "models.csv"), _write_json(out / "correlations.json", corr)]
    table = (f"# Proxy study: {len(rows)} models, {config.epochs} epochs at {config.clip_frames}x{config.clip_size}^2\n\n"
             f"Against the final validation top-1 (single view); binned = within {config.bins} FLOPs bins; "
             f"top-k hit: of the proxy's top k, the fraction among the k most accurate; top1_after_Nep: each network's "
             f"own validation top-1 after its first N epochs (the low-fidelity baseline, from the same runs).\n\n"
             + format_table(corr, config.epochs))
    if searches:
        table += "\n## Searches at equal budget\n\n" + format_searches(searches, rows)
        files.append(write_csv([dict(s, spec=json.dumps(s["spec"])) for s in searches], out / "searches.csv"))
    (out / "table.md").write_text(table)
    files.append(out / "table.md")
    files += plot_scatter(rows, proxies, corr, out)
    files.append(plot_tau_vs_epochs(corr, config.epochs, out / "tau_vs_epochs.png"))
    print(table)
    return files


class _NoRun:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _parent_run(tracking: Any, state: dict[str, Any], out: Path, config: StudyConfig):
    """The study's parent MLflow run: the one of ``study.json`` when it still exists, else a new one."""
    if tracking is None:
        return _NoRun()
    import contextlib

    @contextlib.contextmanager
    def ctx():
        run_id = state.get("parent_run_id") if state.get("tracking_uri") == tracking.tracking_uri else None
        if run_id is not None:
            try:
                tracking.client().get_run(run_id)
            except Exception:  # deleted, or another store
                run_id = None
        with tracking.run(f"proxy-study-{time.strftime('%Y%m%d-%H%M%S')}", run_id=run_id,
                          tags={"e3d.kind": "proxy-study"}) as parent:
            if run_id is None:
                state.update(parent_run_id=parent.info.run_id, tracking_uri=tracking.tracking_uri)
                _write_json(out / "study.json", state)
                mlflow = tracking.client()
                mlflow.log_params({f"study.{k}": json.dumps(v) if isinstance(v, (list, dict)) else v
                                   for k, v in config.to_dict().items()})
            yield parent
    return ctx()


def _log_mlflow(tracking: Any, parent_id: str, rows, proxies, corr, results, files, scores, seconds) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking.tracking_uri)
    metrics = {"models": len(rows), "study_time_s": seconds}
    for p, c in corr.items():
        for key in ("kendall_tau", "spearman_rho", "binned_kendall_tau", "top_k_hit_rate"):
            if _finite(c[key]):
                metrics[f"{key}.{p}"] = c[key]
        if _finite(c["multi_view"]["kendall_tau"]):
            metrics[f"mv_kendall_tau.{p}"] = c["multi_view"]["kendall_tau"]
    for k, v in metrics.items():
        client.log_metric(parent_id, k, float(v))
    for f in files:
        client.log_artifact(parent_id, str(f), "proxy_study")
    for row in rows:  # the proxies on each model's own (child) run
        r = results.get(row["name"])
        if r is None or not r.mlflow_run_id:
            continue
        try:
            for p in proxies:
                if _finite(row[p]):
                    client.log_metric(r.mlflow_run_id, f"proxy.{p}", float(row[p]))
                    std = scores.get(row["name"], {}).get(p, {}).get("std")
                    if _finite(std) and std > 0:
                        client.log_metric(r.mlflow_run_id, f"proxy_std.{p}", float(std))
            client.set_tag(r.mlflow_run_id, "e3d.study_source", row["source"])
        except Exception as exc:  # a report, never a reason to fail the study
            print(f"[proxy-study] could not log proxies to run {r.mlflow_run_id}: {exc!r}")
