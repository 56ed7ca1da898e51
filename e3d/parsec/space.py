"""The two-stream search space of PARSEC (Auto-TSNet supplement §1): per stage the kernel, width and depth of
both streams and the fusion operation after it, as independent categorical :class:`Variable` s; a choice index per
variable decodes to a ``twostream`` :class:`~e3d.spec.ArchSpec` whose exact FLOPs the space knows without building it.
``width_scale="auto"`` scales the widths so that the target FLOPs range lies in the lower part of the space.
"""
from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping, Sequence

from ..channels import round_channels
from ..families.twostream import FUSION_OPS, network_cost
from ..spec import ArchSpec, ConvSpec, StageSpec, make_extra

Kernel = tuple[int, int, int]


@dataclass(frozen=True)
class SpaceConfig:
    """The two-stream search space (the options of the same names). Stages are strided 2 after a stride-2
    stem; a stage of base width ``w`` offers widths ``round8(w * m)`` for ``m`` in ``width_mults`` (the
    dense stream: ``round8(w * dense_ratio * m)``), bottleneck ``round8(expansion * width)``; ``round8`` is
    :func:`~e3d.channels.round_channels` to a multiple of 8, a tie up."""

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
        self.stem = round_channels(c.stem * s, 8, ties="up")
        self.dense_stem = round_channels(c.dense_stem * s, 8, ties="up")
        self.variables: list[Variable] = []
        kernels = tuple(k for k in c.kernels if k[0] <= frames) or (min(c.kernels),)
        for i, w in enumerate(c.widths):
            sparse_w = tuple(sorted({round_channels(w * s * m, 8, ties="up") for m in c.width_mults}))
            dense_w = tuple(sorted({round_channels(w * s * c.dense_ratio * m, 8, ties="up")
                                    for m in c.width_mults}))
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
                                               bottleneck=round_channels(self.config.expansion * width, 8,
                                                                                     ties="up"))
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
