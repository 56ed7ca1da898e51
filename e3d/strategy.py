"""The search-strategy contract: every strategy turns a budget, a clip shape and a seed into ranked specs.

    strategy = get_strategy("random")
    outcome = strategy.search(SearchRequest(budget=Budget(flops=0.3e9, layers=41), clip=Clip(8, 112), seed=0))
    outcome.best.spec                       # an ArchSpec; outcome.candidates is best first

Everything downstream (candidate selection, training, the summary, MLflow) consumes a
:class:`SearchOutcome` and never asks which strategy made it. A strategy declares what it ``needs``:
``("cpu",)`` for the training-free ones, ``("data", "training")`` for those that train a supernet: they read
:attr:`SearchContext.dataset` and hand the training to :attr:`SearchContext.trainer` (a :class:`SupernetTrainer`,
which the pipeline implements: ``e3d`` imports neither Ray nor MLflow). Strategy-specific settings travel in
:attr:`SearchRequest.options` and each strategy checks them (:meth:`SearchStrategy.check_options`) before
any work. ``docs/architecture.md`` says how to add one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

from .cost import Cost, cost
from .registry import Registry
from .spec import ArchSpec

CPU_ONLY = ("cpu",)
NEEDS_TRAINING = ("data", "training")


@dataclass(frozen=True)
class Budget:
    """Limits a found network must meet; None means no limit. ``layers`` counts conv layers (stem, 3 per
    block, head), the paper's layer limit. ``latency_ms`` needs a predictor (:attr:`SearchContext.latency`)."""

    flops: float | None = None
    params: float | None = None
    layers: int | None = None
    latency_ms: float | None = None

    def __post_init__(self) -> None:
        for name in ("flops", "params", "layers", "latency_ms"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"budget {name} must be positive, got {value}")

    def exceeded(self, c: Cost, latency_ms: float | None = None) -> tuple[str, str] | None:
        """None when ``c`` (and ``latency_ms``) fit, else ``(field, message)``: which limit, by how much."""
        if self.flops is not None and c.flops > self.flops:
            return "flops", f"FLOPs {c.flops / 1e9:.4f} G > budget {self.flops / 1e9:.4f} G"
        if self.params is not None and c.params > self.params:
            return "params", f"params {c.params / 1e6:.4f} M > budget {self.params / 1e6:.4f} M"
        if self.layers is not None and c.layers > self.layers:
            return "layers", f"{c.layers} layers > limit {self.layers}"
        if self.latency_ms is not None and latency_ms is not None and latency_ms > self.latency_ms:
            return "latency_ms", f"latency {latency_ms:.2f} ms > budget {self.latency_ms:.2f} ms"
        return None

    def violation(self, c: Cost, latency_ms: float | None = None) -> str | None:
        """None when ``c`` fits, else the message of :meth:`exceeded`."""
        hit = self.exceeded(c, latency_ms)
        return None if hit is None else hit[1]

    def to_dict(self) -> dict[str, Any]:
        return {"flops": self.flops, "params": self.params, "layers": self.layers, "latency_ms": self.latency_ms}


@dataclass(frozen=True)
class Clip:
    """The input the networks are searched (and later trained) at: ``3 x frames x size x size``."""

    frames: int
    size: int
    sampling_rate: int | None = None

    def __post_init__(self) -> None:
        if self.frames < 1 or self.size < 1 or (self.sampling_rate is not None and self.sampling_rate < 1):
            raise ValueError(f"clip sizes must be positive, got {self.frames}x{self.size}^2 "
                             f"(sampling rate {self.sampling_rate})")


@dataclass(frozen=True)
class Candidate:
    """One found architecture: the spec, its cost at the clip, every score computed for it, the value of
    the score it was ranked by, and where it came from (``source``: the strategy; ``info``: details such
    as an island, an iteration or a probability)."""

    spec: ArchSpec
    flops: int
    params: int
    layers: int
    score: float
    scores: Mapping[str, float] = field(default_factory=dict)
    source: str = ""
    info: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, spec: ArchSpec, score: float, *, source: str, scores: Mapping[str, float] | None = None,
           info: Mapping[str, Any] | None = None) -> "Candidate":
        """Cost the spec and add the analytic entropy scores (``inf``/None-free: an infinite STEntr is kept
        out of ``scores``)."""
        c = cost(spec)
        return cls(spec, c.flops, c.params, c.layers, float(score), dict(scores or {}) | entropy_scores(spec),
                   source, dict(info or {}))


def entropy_scores(spec: ArchSpec) -> dict[str, float]:
    """STEntr (when finite at the spec's input) and HomoEntr: the columns every outcome table carries."""
    from .scores import InfiniteScoreError, homoentr, stentr  # noqa: PLC0415

    out = {"homoentr": homoentr(spec)}
    try:
        out["stentr"] = stentr(spec)
    except InfiniteScoreError:
        pass
    return out


@dataclass
class SearchOutcome:
    """What a strategy returns: candidates best first, a history (one row per round / step / chunk), the
    settings it ran with, and its cost in seconds (``cpu_s``: CPU-seconds summed over its processes where
    the strategy can tell)."""

    strategy: str
    score_name: str
    candidates: list[Candidate]
    history: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    cpu_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.candidates:
            raise ValueError(f"strategy {self.strategy!r} found no candidate")

    @property
    def best(self) -> Candidate:
        return self.candidates[0]

    def summary(self) -> dict[str, Any]:
        b = self.best
        return {"strategy": self.strategy, "score": self.score_name, "best": b.spec.name, "best_score": b.score,
                "best_gflops": round(b.flops / 1e9, 4), "best_mparams": round(b.params / 1e6, 4),
                "candidates": len(self.candidates), "wall_s": round(self.wall_s, 3),
                "cpu_s": None if self.cpu_s is None else round(self.cpu_s, 3)} | self.extra


@dataclass(frozen=True)
class SearchRequest:
    """What every strategy is given. ``options`` are the strategy's own settings (checked by it);
    ``out_dir`` is where it may checkpoint and write its outputs (None: nowhere)."""

    budget: Budget
    clip: Clip
    seed: int = 0
    score: str = "stentr"
    num_classes: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    out_dir: str | None = None
    name: str | None = None  # prefix of the candidates' names (default: the strategy's)


class SupernetTrainer(Protocol):
    """Trains what a training strategy learns (a supernet, a template) where the pipeline trains, on Ray Train;
    lent through :attr:`SearchContext.trainer` (the pipeline's is :class:`pipeline.context.RayTrainer`)."""

    def run(self, strategy: str, request: SearchRequest, context: SearchContext, settings: Any) -> Any:
        """Train strategy ``strategy``'s network with its resolved ``settings`` on ``context.dataset``,
        checkpointing under ``request.out_dir`` and resuming from it. ``dnas`` and ``parsec`` get their
        :class:`SearchOutcome` back, ``fusion`` its trained template."""

    def log_files(self, context: SearchContext, files: Sequence[Path], artifact_path: str) -> None:
        """Add ``files`` to the search's MLflow run (``context.run_id``) under ``artifact_path``; nothing
        without one."""


@dataclass
class SearchContext:
    """Services the pipeline lends a strategy; every one is optional (``e3d`` alone passes none).

    ``evolution_backend``: runs the evolutionary search elsewhere (Ray islands); ``tracking``: where to log
    (a :class:`pipeline.tracking.Tracking` whose parent is the job's run) and ``run_id``: the search's own
    MLflow run, opened by the job; for the strategies that train: ``dataset`` (a
    :class:`pipeline.video.formats.VideoDataset` or a source of :mod:`pipeline.train.data`), ``clip`` (a
    :class:`pipeline.video.clip.ClipConfig`), ``recipe`` (the job's :class:`pipeline.train.recipe.Recipe`, to
    scale theirs from), ``trainer`` (the :class:`SupernetTrainer` that runs their training) and ``callbacks``
    (extra callbacks of the training loop's workers, e.g. the fault injection of the tests); ``latency``: a
    spec -> milliseconds predictor for latency budgets; ``progress``: show a progress bar.
    """

    evolution_backend: Any = None
    tracking: Any = None
    run_id: str | None = None
    dataset: Any = None
    clip: Any = None
    recipe: Any = None
    trainer: SupernetTrainer | None = None
    callbacks: Sequence[Any] = ()
    latency: Any = None
    progress: bool | None = None

    def training(self, strategy: str, what: str) -> SupernetTrainer:
        """The trainer of a strategy that trains ``what``; :class:`ValueError` naming what to pass when the
        data or the trainer is missing."""
        if self.dataset is None or self.trainer is None:
            raise ValueError(f"strategy {strategy!r} trains {what}: it needs the job's data and the pipeline's "
                             f"trainer (run it through jobs/search_and_train.py, or pass SearchContext(dataset=..., "
                             f"clip=..., trainer=pipeline.context.RayTrainer()))")
        return self.trainer


class RequestError(ValueError):
    """A request a strategy cannot run; ``field`` names what to change: ``budget.flops``, ``budget.params``,
    ``budget.layers``, ``budget.latency_ms``, ``clip``, ``score``, ``seed`` or ``options.<name>``."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@runtime_checkable
class SearchStrategy(Protocol):
    """A search strategy; register an instance with :func:`register_strategy`."""

    name: str
    description: str
    needs: tuple[str, ...]
    # the shared command-line flags it takes, by the option name it gives them, e.g. {"iterations": "samples"}
    # (flags: iterations, population, preset, initial, max_depth, kernels, mutation_probs)
    cli_options: Mapping[str, str]
    # options that make a smoke-test-sized run (the main job's --quick), e.g. {"samples": 40}
    quick_options: Mapping[str, Any]

    def check(self, request: SearchRequest) -> None:
        """Raise :class:`RequestError` when the request cannot run (unknown or bad options, a budget the
        starting point does not fit, ...); quick: the pipeline calls it before any work."""

    def search(self, request: SearchRequest, context: SearchContext | None = None) -> SearchOutcome:
        """Run (or resume, from ``request.out_dir``) the search."""


STRATEGIES: Registry[SearchStrategy] = Registry("strategy")


def register_strategy(strategy: SearchStrategy) -> SearchStrategy:
    return STRATEGIES.add(strategy.name, strategy, strategy.description)


def get_strategy(name: str) -> SearchStrategy:
    """The registered strategy ``name``; :class:`ValueError` naming the known ones otherwise."""
    _load_builtin()
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES.names())} "
                         f"(see `e3d strategies`)")
    return STRATEGIES.get(name)


def strategy_names() -> list[str]:
    _load_builtin()
    return STRATEGIES.names()


def _load_builtin() -> None:
    from . import strategies  # noqa: F401, PLC0415 - its modules register the built-in strategies


# -- helpers shared by strategies ------------------------------------------------------------------------
def rank(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Best first by score (stable: equal scores keep their order)."""
    return sorted(candidates, key=lambda c: -c.score if math.isfinite(c.score) else math.inf)


def top_k_distinct(candidates: Sequence[Candidate], k: int,
                   by: Sequence[str] = ("kernels", "depths")) -> list[Candidate]:
    """The ``k`` best candidates whose specs differ pairwise in ``by`` (any of ``family``, ``kernels``,
    ``depths``, ``widths``, ``bottlenecks``, ``input``): structurally different networks to train rather
    than ``k`` width variants of the best one. Greedy, best first; ``candidates`` must be ranked."""
    # "kernels" includes the family's own fields (a fusion unit, dilations, a second stream's stages)
    keys = {"family": lambda s: s.family, "kernels": lambda s: (s.kernel_pattern, s.extra, tuple(x.extra for x in s.stages)),
            "depths": lambda s: s.depths,
            "widths": lambda s: s.widths, "bottlenecks": lambda s: tuple(x.bottleneck for x in s.stages),
            "input": lambda s: (s.frames, s.size)}
    unknown = [b for b in by if b not in keys]
    if unknown:
        raise ValueError(f"distinct by {unknown[0]!r}: choose among {', '.join(keys)}")
    seen: set = set()
    out: list[Candidate] = []
    for cand in candidates:
        sig = tuple(keys[b](cand.spec) for b in by)
        if sig not in seen:
            seen.add(sig)
            out.append(cand)
            if len(out) == k:
                break
    return out


def check_known_options(strategy: str, options: Mapping[str, Any], known: Sequence[str]) -> None:
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise RequestError(f"options.{unknown[0]}", f"strategy {strategy!r}: unknown option {unknown[0]!r} "
                                                    f"(known: {', '.join(sorted(known))})")


def check_score(request: SearchRequest) -> None:
    """:class:`RequestError` (field ``score``) unless the request's score is registered and needs no data."""
    from .evaluator import check_search_score  # noqa: PLC0415

    try:
        check_search_score(request.score)
    except ValueError as exc:
        raise RequestError("score", str(exc)) from None


def check_start(spec: ArchSpec, request: SearchRequest, what: str) -> None:
    """:class:`RequestError` unless ``spec`` (a strategy's starting point) fits the budget and has a finite
    score at the request's clip."""
    from .scores import get_score  # noqa: PLC0415

    hit = request.budget.exceeded(cost(spec))
    if hit is not None:
        raise RequestError(f"budget.{hit[0]}", f"{what} {spec.name!r} at {spec.frames}x{spec.size}^2 does not fit: "
                                               f"{hit[1]}")
    score = get_score(request.score)
    if score.kind == "analytic":
        try:
            score(spec)
        except ValueError as exc:  # an infinite STEntr at this clip
            raise RequestError("clip", f"{what} {spec.name!r}: {exc}") from None
