"""``parsec``: cost-aware probabilistic NAS over two-stream networks (Auto-TSNet supplement §1, PARSEC).

An architecture distribution ``P(A | alpha)`` of independent categoricals over the per-stage choices of the
``twostream`` family (:class:`TwoStreamSpace`: kernel, width and depth of every stage of both streams, the
fusion operation after every stage) is learnt jointly with the weights of a supernet that every sampled
architecture shares. Each step samples ``K`` (13) architectures, weights their data likelihoods (Eq. 1) and
adds the FLOPs term ``beta * log C(alpha)`` of Eq. 2-3 over the target range ``[t_min, t_max]``. The result
is the most probable architecture and the K most probable distinct ones. The space is :mod:`e3d.parsec.space`,
the distribution, Eq. 2's penalty and the supernet :mod:`e3d.parsec.distribution` and :mod:`e3d.parsec.supernet`;
the training runs on the pipeline's :class:`~e3d.strategy.SupernetTrainer` (Ray Train). This module holds the
settings and the strategy. ``docs/parsec.md`` has the details and the measured results.

Options (``--set NAME=VALUE``): ``epochs`` (30), ``samples`` (K, 13), ``beta`` (0.1), ``t_min`` / ``t_max``
(FLOPs; default ``band_low * budget`` and the budget), ``band_low`` (0.9), ``epsilon`` (0.01: ``log(epsilon
+ C)``), ``arch_lr`` (0.015, Adam), ``lr`` (weights, SGD; default the job recipe's rate, else Table 2's 0.4
per 256 clips), ``batch_size`` (the job recipe's, else 8), ``weight_decay`` (5e-5), ``momentum`` (0.9),
``warmup`` (0.25: fraction of epochs, per search part, that train weights only), ``staged`` (false: Table 2's
two parts, sparse stream then dense stream + fusion), ``stage_split`` (2/3: the sparse part's share of the
epochs, Table 2's 800 / 1200), ``top_k`` (candidates returned, default K), ``workers`` (Ray Train workers),
``recompute`` (false: keep the K graphs of a step; true: score without graphs and re-run the architectures that
carry the weight, less memory),
``expected_draws`` (64: draws for the logged expected FLOPs) and the space: ``alpha`` (4), ``stem`` (16),
``dense_stem`` (8), ``head`` (432), ``hidden`` (2048), ``widths`` ([24, 48, 96, 192]: the sparse stages' base
widths), ``dense_ratio`` (0.25), ``width_mults`` ([0.5, 0.75, 1.0]), ``depths`` ([1, 2, 3]), ``kernels``
([[1,3,3], [1,5,5], [3,3,3]]), ``expansion`` (2.25: bottleneck / width), ``fusion_ops`` (all four).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from ..parsec.space import SpaceConfig, TwoStreamSpace, resolve_space
from ..strategy import (NEEDS_TRAINING, RequestError, SearchContext, SearchOutcome, SearchRequest, check_known_options,
                        register_strategy)


@dataclass(frozen=True)
class ParsecSettings:
    """Everything a PARSEC search runs with (the strategy's options, resolved)."""

    epochs: int = 30
    samples: int = 13
    beta: float = 0.1
    t_min: float = 0.0
    t_max: float = 0.0
    epsilon: float = 0.01
    arch_lr: float = 0.015
    lr: float | None = None
    batch_size: int = 8
    weight_decay: float = 5e-5
    momentum: float = 0.9
    warmup: float = 0.25
    staged: bool = False
    stage_split: float = 2 / 3
    recompute: bool = False
    top_k: int | None = None
    workers: int | None = None
    expected_draws: int = 64
    space: SpaceConfig = field(default_factory=SpaceConfig)

    def parts(self) -> list[tuple[str, int, int]]:
        """The search parts as ``(name, first epoch, end epoch)``: one part ``all``, or Table 2's
        ``sparse`` then ``dense+fusion``."""
        if not self.staged:
            return [("all", 0, self.epochs)]
        cut = min(self.epochs - 1, max(1, round(self.epochs * self.stage_split)))
        return [("sparse", 0, cut), ("dense+fusion", cut, self.epochs)]

    def part_of(self, epoch: int) -> tuple[str, int, int]:
        return next(p for p in self.parts() if p[1] <= epoch < p[2])

    def updates_arch(self, epoch: int) -> bool:
        """False during the first ``warmup`` of each part's epochs (weights only)."""
        _, first, end = self.part_of(epoch)
        return epoch >= first + math.ceil(self.warmup * (end - first) - 1e-9)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"space": self.space.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ParsecSettings":
        d = dict(d)
        space = SpaceConfig.from_options(d.pop("space", {}))
        return cls(**d, space=space)


_SETTINGS = tuple(f.name for f in fields(ParsecSettings) if f.name != "space")
OPTIONS = tuple(n for n in _SETTINGS if n not in ("t_min", "t_max")) + ("t_min", "t_max", "band_low") + tuple(
    f.name for f in fields(SpaceConfig))
_INT = ("epochs", "samples", "batch_size", "top_k", "workers", "expected_draws")
_FLOAT = ("beta", "epsilon", "arch_lr", "lr", "weight_decay", "momentum", "warmup", "stage_split", "t_min", "t_max",
          "band_low")


def settings_from_request(request: SearchRequest, recipe: Any = None) -> ParsecSettings:
    """Resolve the options (RequestError naming the option when one is bad); ``recipe``: the job's
    :class:`pipeline.train.recipe.Recipe`, whose batch size (and, unless ``lr`` is set, rate) the supernet takes."""
    options = dict(request.options)
    check_known_options("parsec", options, OPTIONS)
    for key in _INT:
        v = options.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise RequestError(f"options.{key}", f"strategy 'parsec': option {key!r} must be a positive integer, "
                                                 f"got {v!r}")
    for key in _FLOAT:
        v = options.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or not math.isfinite(v)):
            raise RequestError(f"options.{key}", f"strategy 'parsec': option {key!r} must be a number >= 0, got {v!r}")
    for key in ("staged", "recompute"):
        if key in options and not isinstance(options[key], bool):
            raise RequestError(f"options.{key}", f"strategy 'parsec': option {key!r} is true or false, "
                                                 f"got {options[key]!r}")
    for key in ("warmup", "momentum", "stage_split", "band_low"):
        v = options.get(key)
        if v is not None and not (0 <= v < 1 if key in ("warmup", "momentum") else 0 < v < 1):
            interval = "[0, 1)" if key in ("warmup", "momentum") else "(0, 1)"
            raise RequestError(f"options.{key}", f"strategy 'parsec': option {key!r} must be in {interval}, "
                                                 f"got {v!r}")
    for key in ("epsilon", "arch_lr", "lr"):
        if options.get(key) == 0:
            raise RequestError(f"options.{key}", f"strategy 'parsec': option {key!r} must be > 0")
    try:
        space = SpaceConfig.from_options(options)
    except (ValueError, TypeError) as exc:
        name, message = exc.args if len(exc.args) == 2 else ("widths", str(exc))
        raise RequestError(f"options.{name}", f"strategy 'parsec': option {name!r} {message}") from None
    budget = request.budget.flops
    t_max = options.get("t_max", budget)
    if t_max is None:
        raise RequestError("budget.flops", "strategy 'parsec' needs a FLOPs range: a FLOPs budget (its upper end) "
                                           "or the options t_min and t_max")
    t_min = options.get("t_min", options.get("band_low", 0.9) * t_max)
    if not 0 < t_min < t_max:
        raise RequestError("options.t_min", f"strategy 'parsec': the FLOPs range needs 0 < t_min < t_max, got "
                                            f"[{t_min:.4g}, {t_max:.4g}]")
    try:
        space = resolve_space(space, frames=request.clip.frames, size=request.clip.size,
                              num_classes=request.num_classes or 2, t_max=t_max)
    except ValueError as exc:  # a spec of the space is not valid at this clip
        raise RequestError("clip", f"strategy 'parsec': {exc}") from None
    kw = {k: options[k] for k in _SETTINGS if k in options and k not in ("t_min", "t_max")}
    if recipe is not None:
        kw.setdefault("batch_size", recipe.batch_size)
        if recipe.lr is not None:
            kw.setdefault("lr", recipe.lr)
    settings = ParsecSettings(**kw, t_min=float(t_min), t_max=float(t_max), space=space)
    if settings.staged and settings.epochs < 2:
        raise RequestError("options.epochs", "strategy 'parsec': a staged search needs at least 2 epochs")
    return settings


class ParsecStrategy:
    name = "parsec"
    description = ("PARSEC (Auto-TSNet): cost-aware probabilistic NAS over two-stream nets, a supernet trained "
                   "with Ray Train")
    needs = NEEDS_TRAINING
    cli_options: dict[str, str] = {}  # --set epochs=N: the shared --iterations default (20000) is no epoch count
    quick_options = {"epochs": 2, "samples": 3, "expected_draws": 16}

    def check(self, request: SearchRequest) -> None:
        settings = settings_from_request(request)
        if request.budget.latency_ms is not None:
            raise RequestError("budget.latency_ms", "strategy 'parsec' constrains FLOPs only (Eq. 2)")
        space = TwoStreamSpace(settings.space, frames=request.clip.frames, size=request.clip.size,
                               num_classes=request.num_classes or 2)
        try:
            low, high = space.flops_range()
        except ValueError as exc:  # a spec of the space is not valid at this clip
            raise RequestError("clip", f"strategy 'parsec': {exc}") from None
        if settings.t_min > high or settings.t_max < low:
            raise RequestError("budget.flops", f"strategy 'parsec': the FLOPs range [{settings.t_min / 1e9:.4g}, "
                                               f"{settings.t_max / 1e9:.4g}] G misses the space's "
                                               f"[{low / 1e9:.4g}, {high / 1e9:.4g}] G at {request.clip.frames}x"
                                               f"{request.clip.size}^2; change the budget or the space "
                                               f"(--set widths=[...], depths=[...])")

    def search(self, request: SearchRequest, context: SearchContext | None = None) -> SearchOutcome:
        context = context or SearchContext()
        trainer = context.training(self.name, "a supernet")
        self.check(request)
        return trainer.run(self.name, request, context, settings_from_request(request, context.recipe))


STRATEGY = register_strategy(ParsecStrategy())
