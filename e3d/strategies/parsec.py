"""``parsec``: cost-aware probabilistic NAS over two-stream networks (Auto-TSNet supplement §1, PARSEC).

An architecture distribution ``P(A | alpha)`` of independent categoricals over the per-stage choices of the
``twostream`` family (:class:`TwoStreamSpace`: kernel, width and depth of every stage of both streams, the
fusion operation after every stage) is learnt jointly with the weights of a supernet that every sampled
architecture shares. Each step samples ``K`` (13) architectures, weights their data likelihoods (Eq. 1) and
adds the FLOPs term ``beta * log C(alpha)`` of Eq. 2-3 over the target range ``[t_min, t_max]``. The result
is the most probable architecture and the K most probable distinct ones. Training happens in
:mod:`pipeline.parsec` (Ray Train); this module holds the pure-Python parts: the space, Eq. 2's penalty,
the k-best architectures of a distribution, the settings and the strategy. ``docs/parsec.md`` has the
details and the measured results.

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

import heapq
import math
import random
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable, Mapping, Sequence

from ..families.twostream import FUSION_OPS, network_cost
from ..spec import ArchSpec, ConvSpec, StageSpec, make_extra
from ..strategy import (NEEDS_TRAINING, RequestError, SearchContext, SearchOutcome, SearchRequest, check_known_options,
                        register_strategy)

Kernel = tuple[int, int, int]


def round8(x: float) -> int:
    """A width: the nearest multiple of 8, at least 8."""
    return max(8, int(x + 4) // 8 * 8)


# -- the space -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpaceConfig:
    """The two-stream search space (the options of the same names). Stages are strided 2 after a stride-2
    stem; a stage of base width ``w`` offers widths ``round8(w * m)`` for ``m`` in ``width_mults`` (the
    dense stream: ``round8(w * dense_ratio * m)``), bottleneck ``round8(expansion * width)``."""

    alpha: int = 4
    stem: int = 16
    dense_stem: int = 8
    head: int = 432
    hidden: int = 2048
    widths: tuple[int, ...] = (24, 48, 96, 192)
    dense_ratio: float = 0.25
    width_mults: tuple[float, ...] = (0.5, 0.75, 1.0)
    depths: tuple[int, ...] = (1, 2, 3)
    kernels: tuple[Kernel, ...] = ((1, 3, 3), (1, 5, 5), (3, 3, 3))
    expansion: float = 2.25
    fusion_ops: tuple[str, ...] = FUSION_OPS
    width_scale: float | str = "auto"  # multiplies every width but the head's; "auto": see auto_width_scale

    def __post_init__(self) -> None:
        problems = []
        for name in ("alpha", "stem", "dense_stem", "head", "hidden"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                problems.append((name, f"must be a positive integer, got {v!r}"))
        for name in ("widths", "width_mults", "depths", "kernels", "fusion_ops"):
            if not getattr(self, name):
                problems.append((name, "must not be empty"))
        if any(not isinstance(w, int) or w < 1 for w in self.widths):
            problems.append(("widths", f"must be positive integers, got {list(self.widths)}"))
        if any(not isinstance(d, int) or d < 1 for d in self.depths):
            problems.append(("depths", f"must be positive integers, got {list(self.depths)}"))
        if not (self.width_scale == "auto" or (isinstance(self.width_scale, (int, float))
                                               and not isinstance(self.width_scale, bool) and self.width_scale > 0)):
            problems.append(("width_scale", f"must be 'auto' or a number > 0, got {self.width_scale!r}"))
        if any(not m > 0 for m in self.width_mults) or not self.dense_ratio > 0 or not self.expansion > 0:
            problems.append(("width_mults", "width multipliers, dense_ratio and expansion must be > 0"))
        for k in self.kernels:
            if len(k) != 3 or k[1] != k[2] or any(v % 2 == 0 or v < 1 for v in k):
                problems.append(("kernels", f"kernels are three odd sizes [t, k, k], got {list(k)}"))
        bad = [op for op in self.fusion_ops if op not in FUSION_OPS]
        if bad:
            problems.append(("fusion_ops", f"unknown fusion operation {bad[0]!r} (known: {', '.join(FUSION_OPS)})"))
        if problems:
            raise ValueError(*problems[0])

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "SpaceConfig":
        kw = {}
        for f in fields(cls):
            if f.name in options:
                v = options[f.name]
                if f.name == "kernels":
                    v = tuple(tuple(k) for k in v)
                elif isinstance(v, list):
                    v = tuple(v)
                kw[f.name] = v
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Variable:
    """One categorical of the distribution: ``name`` (``sparse2.width``, ``fusion0``, ...) and its choices."""

    name: str
    choices: tuple[Any, ...]

    @property
    def stream(self) -> str:
        """``sparse``, ``dense`` or ``fusion``: the search part (Table 2) the variable belongs to."""
        return "fusion" if self.name.startswith("fusion") else self.name.split(".")[0].rstrip("0123456789")


class TwoStreamSpace:
    """The architectures of a :class:`SpaceConfig` at one clip: a choice index per :class:`Variable`.

    Per stage ``i`` (in this order): ``sparse{i}.kernel``, ``sparse{i}.width``, ``sparse{i}.depth``,
    ``dense{i}.kernel``, ``dense{i}.width``, ``dense{i}.depth``, ``fusion{i}``. ``decode`` turns a tuple of
    indices into a ``twostream`` :class:`ArchSpec`; ``flops`` is its exact cost (the family's
    :func:`~e3d.families.twostream.network_cost`, without building the spec; cached).
    """

    def __init__(self, config: SpaceConfig, *, frames: int, size: int, num_classes: int):
        if config.width_scale == "auto":
            raise ValueError("resolve width_scale='auto' first (auto_width_scale)")
        self.config, self.frames, self.size, self.num_classes = config, frames, size, num_classes
        c, s = config, float(config.width_scale)
        self.stem, self.dense_stem = round8(c.stem * s), round8(c.dense_stem * s)
        self.variables: list[Variable] = []
        kernels = tuple(k for k in c.kernels if k[0] <= frames) or (min(c.kernels),)
        for i, w in enumerate(c.widths):
            sparse_w = tuple(sorted({round8(w * s * m) for m in c.width_mults}))
            dense_w = tuple(sorted({round8(w * s * c.dense_ratio * m) for m in c.width_mults}))
            self.variables += [Variable(f"sparse{i}.kernel", kernels), Variable(f"sparse{i}.width", sparse_w),
                               Variable(f"sparse{i}.depth", tuple(c.depths)),
                               Variable(f"dense{i}.kernel", kernels), Variable(f"dense{i}.width", dense_w),
                               Variable(f"dense{i}.depth", tuple(c.depths)),
                               Variable(f"fusion{i}", tuple(c.fusion_ops))]
        self.sizes = [len(v.choices) for v in self.variables]
        self._flops: dict[tuple[int, ...], int] = {}
        self._stages: dict[tuple, StageSpec] = {}

    @property
    def n_stages(self) -> int:
        return len(self.config.widths)

    def size_of_space(self) -> int:
        return math.prod(self.sizes)

    def index_of(self, name: str) -> int:
        return next(j for j, v in enumerate(self.variables) if v.name == name)

    def _stage(self, kernel: Kernel, width: int, depth: int) -> StageSpec:
        key = (kernel, width, depth)
        st = self._stages.get(key)
        if st is None:
            st = self._stages[key] = StageSpec(kernel=kernel, out=width, layers=depth, stride=(1, 2, 2),
                                               bottleneck=round8(self.config.expansion * width))
        return st

    def parts(self, index: Sequence[int]) -> tuple[tuple[StageSpec, ...], tuple[StageSpec, ...], tuple[str, ...]]:
        """The sparse stages, the dense stages and the fusion operations of architecture ``index``."""
        vals = [v.choices[j] for v, j in zip(self.variables, index)]
        sparse, dense, fusion = [], [], []
        for i in range(self.n_stages):
            sk, sw, sd, dk, dw, dd, op = vals[7 * i: 7 * i + 7]
            sparse.append(self._stage(sk, sw, sd))
            dense.append(self._stage(dk, dw, dd))
            fusion.append(op)
        return tuple(sparse), tuple(dense), tuple(fusion)

    def decode(self, index: Sequence[int], name: str = "parsec") -> ArchSpec:
        """The spec of the architecture ``index`` (one choice index per variable)."""
        c = self.config
        sparse, dense, fusion = self.parts(index)
        dense_d = [{"kernel": list(d.kernel), "out": d.out, "bottleneck": d.bottleneck, "layers": d.layers}
                   for d in dense]
        return ArchSpec(name=name, family="twostream", frames=self.frames, size=self.size,
                        stem=ConvSpec(kernel=(1, 3, 3), out=self.stem, stride=(1, 2, 2)), stages=sparse,
                        head=ConvSpec(kernel=(1, 1, 1), out=c.head), hidden=c.hidden, num_classes=self.num_classes,
                        extra=make_extra({"alpha": c.alpha, "fusion": list(fusion),
                                          "dense": {"stem": {"kernel": [1, 3, 3], "out": self.dense_stem},
                                                    "stages": dense_d}}))

    def flops(self, index: Sequence[int]) -> int:
        key = tuple(int(j) for j in index)
        f = self._flops.get(key)
        if f is None:
            sparse, dense, fusion = self.parts(key)
            c = self.config
            f = self._flops[key] = network_cost(
                frames=self.frames, size=self.size, alpha=c.alpha, stem=ConvSpec((1, 3, 3), self.stem, (1, 2, 2)),
                dense_stem=((1, 3, 3), self.dense_stem), stages=sparse, dense_stages=dense, fusion=fusion,
                head=c.head, hidden=c.hidden, num_classes=self.num_classes).flops
        return f

    def median_flops(self, draws: int = 101, seed: int = 0) -> float:
        """The median FLOPs of ``draws`` architectures drawn uniformly (seeded: a fixed sample)."""
        rng = random.Random(seed)
        values = sorted(self.flops(tuple(rng.randrange(n) for n in self.sizes)) for _ in range(draws))
        return float(values[draws // 2])

    def extremes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The cheapest and the dearest architecture: FLOPs grow with every width, depth, kernel volume and
        fusion operation independently of the other choices, so each variable's extreme choice is found with
        the others held at their first choice."""
        base = [0] * len(self.sizes)
        low, high = [], []
        for i, n in enumerate(self.sizes):
            costs = [self.flops(base[:i] + [j] + base[i + 1:]) for j in range(n)]
            low.append(min(range(n), key=costs.__getitem__))
            high.append(max(range(n), key=costs.__getitem__))
        return tuple(low), tuple(high)

    def flops_range(self) -> tuple[int, int]:
        low, high = self.extremes()
        return self.flops(low), self.flops(high)


# -- Eq. 2 -------------------------------------------------------------------------------------------
def flops_penalty(flops: float, t_min: float, t_max: float) -> float:
    """``cost(A) = max(0, F / T_max - 1) + max(0, 1 - F / T_min)`` (Eq. 2; the printed ``F / (T_max - 1)`` is
    read as ``F / T_max - 1``, which is zero inside the range like the other hinge): 0 in ``[t_min, t_max]``,
    the relative distance to the range outside it."""
    return max(0.0, flops / t_max - 1.0) + max(0.0, 1.0 - flops / t_min)


AUTO_MEDIAN = 1.1  # width_scale="auto": the space's median architecture costs this many times t_max


def auto_width_scale(config: SpaceConfig, *, frames: int, size: int, num_classes: int, t_max: float) -> float:
    """The width scale at which the median architecture of the space (uniform over it) costs ``AUTO_MEDIAN *
    t_max``: the target range then lies in the lower fifth to third of the space, as in Table 1, where the
    search without the cost term ends at twice the range. Bisection on the log scale (3 significant digits)."""
    def median(scale: float) -> float:
        return TwoStreamSpace(replace(config, width_scale=scale), frames=frames, size=size,
                              num_classes=num_classes).median_flops()

    lo, hi = -5.0, 6.0  # log2 of the scale
    target = AUTO_MEDIAN * t_max
    for _ in range(30):
        mid = (lo + hi) / 2
        if median(2 ** mid) < target:
            lo = mid
        else:
            hi = mid
    return float(f"{2 ** hi:.3g}")


def resolve_space(config: SpaceConfig, *, frames: int, size: int, num_classes: int, t_max: float) -> SpaceConfig:
    """``config`` with a numeric ``width_scale``."""
    if config.width_scale != "auto":
        return config
    return replace(config, width_scale=auto_width_scale(config, frames=frames, size=size, num_classes=num_classes,
                                                        t_max=t_max))


# -- the distribution's most probable architectures ----------------------------------------------------
def k_most_probable(log_probs: Sequence[Sequence[float]], k: int, *, distinct: Callable[[tuple[int, ...]], Any] = None,
                    max_pops: int = 100_000) -> list[tuple[tuple[int, ...], float]]:
    """The ``k`` most probable assignments of independent categoricals (``log_probs[v][j]``: log P(variable v
    = choice j)), best first, with their log-probabilities; ``distinct`` (an assignment -> key) keeps only the
    first assignment of each key. Best-first search over per-variable ranks (Lawler/Murty for a product
    distribution): exact, and it touches ``O(k * variables)`` assignments."""
    order = [sorted(range(len(lp)), key=lambda j, lp=lp: -lp[j]) for lp in log_probs]

    def logp(ranks: tuple[int, ...]) -> float:
        return math.fsum(log_probs[v][order[v][r]] for v, r in enumerate(ranks))

    start = tuple(0 for _ in log_probs)
    heap, seen, out, keys, pops = [(-logp(start), start)], {start}, [], set(), 0
    while heap and len(out) < k and pops < max_pops:
        neg, ranks = heapq.heappop(heap)
        pops += 1
        assignment = tuple(order[v][r] for v, r in enumerate(ranks))
        key = distinct(assignment) if distinct else assignment
        if key not in keys:
            keys.add(key)
            out.append((assignment, -neg))
        for v in range(len(ranks)):
            if ranks[v] + 1 < len(order[v]):
                nxt = ranks[:v] + (ranks[v] + 1,) + ranks[v + 1:]
                if nxt not in seen:
                    seen.add(nxt)
                    heapq.heappush(heap, (-logp(nxt), nxt))
    return out


def sample_band(space: TwoStreamSpace, t_min: float, t_max: float, n: int, *, seed: int = 0,
                max_draws: int = 2_000_000) -> list[tuple[int, ...]]:
    """``n`` distinct architectures drawn uniformly from those of ``space`` whose FLOPs lie in
    ``[t_min, t_max]`` (rejection sampling from the uniform distribution over the space: uniform over the
    band; supplement §5's random search)."""
    rng = random.Random(seed)
    found: dict[tuple[int, ...], None] = {}
    draws = 0
    while len(found) < n:
        if draws >= max_draws:
            raise RuntimeError(f"only {len(found)} of {n} architectures in [{t_min / 1e9:.4g}, {t_max / 1e9:.4g}] "
                               f"GFLOPs after {draws} draws; widen the band")
        index = tuple(rng.randrange(s) for s in space.sizes)
        draws += 1
        if index not in found and t_min <= space.flops(index) <= t_max:
            found[index] = None
    return list(found)


# -- settings ------------------------------------------------------------------------------------------
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
        if context.dataset is None:
            raise RequestError("options", "strategy 'parsec' trains a supernet: it needs data (run it through "
                                          "jobs/search_and_train.py, or pass SearchContext(dataset=..., clip=...))")
        self.check(request)
        settings = settings_from_request(request, context.recipe)
        from pipeline.parsec.search import run_parsec  # noqa: PLC0415 - Ray and torch only when searching

        return run_parsec(request, context, settings)


STRATEGY = register_strategy(ParsecStrategy())
