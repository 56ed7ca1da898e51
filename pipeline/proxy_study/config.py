"""The study's settings (:class:`StudyConfig`), its error, and the epoch budgets it reports at."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from e3d import zoo
from e3d.scores import get_score, score_names

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


def epoch_budgets(epochs: int) -> list[int]:
    """The epochs after a quarter, half and all of the run (distinct, at least 1)."""
    return sorted({max(1, round(f * epochs)) for f in EPOCH_FRACTIONS})


def low_fidelity(epochs: int) -> list[int]:
    """The epochs whose accuracy is a low-fidelity predictor of the final one (fewer than the whole run)."""
    return [e for e in LOW_FIDELITY_EPOCHS if e < epochs]


def low_fidelity_names(epochs: int) -> list[str]:
    """Their columns in the model rows and names in the correlations: ``top1_after_1ep``, ..."""
    return [f"top1_after_{e}ep" for e in low_fidelity(epochs)]
