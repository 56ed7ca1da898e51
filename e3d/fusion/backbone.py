"""The backbone the learnt fusion strategy is mapped onto: an ``e3d`` spec scaled to a budget and turned into the
``e3d-fused`` family with one fusion unit per stage or block (S -> 1xkxk, ST -> ktxkxk, S+ST -> both in parallel;
:mod:`e3d.families.fused`)."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..channels import round_channels
from ..cost import cost
from ..families.fused import block_units, default_unit, with_fusion
from ..spec import ArchSpec, ConvSpec
from ..strategy import Budget


def scale_widths(spec: ArchSpec, factor: float) -> ArchSpec:
    """Every width (stem, stage outputs and bottlenecks, head) times ``factor``, rounded to multiples of 8 (a tie
    to the even one), at least 8."""
    if factor == 1.0:
        return spec
    def width(w: int) -> int:
        return round_channels(w * factor, 8, ties="even")

    stages = tuple(replace(s, out=width(s.out), bottleneck=width(s.bottleneck)) for s in spec.stages)
    stem, head = spec.stem, spec.head
    return spec.replace(stem=ConvSpec(stem.kernel, width(stem.out), stem.stride), stages=stages,
                        head=ConvSpec(head.kernel, width(head.out), head.stride))


def fused(spec: ArchSpec, units: list[Any], name: str, *, kt: int = 3) -> ArchSpec:
    """``spec``'s shape in the ``e3d-fused`` family with ``units`` per stage (a unit or a list per block)."""
    kt = min(kt, spec.frames)
    out = spec.replace(name=name, family="e3d-fused",
                       stages=tuple(with_fusion(s, u, kt=kt) for s, u in zip(spec.stages, units)))
    out.with_input()  # validate
    return out


def units_of(spec: ArchSpec) -> list[str]:
    """The units a plain e3d spec runs: ST where a stage's kernel has time, S otherwise."""
    return [default_unit(s.kernel) for s in spec.stages]


class BudgetError(ValueError):
    """No width factor makes the backbone fit; ``field`` is the budget field it exceeds (``flops``, ...)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def fit_budget(backbone: ArchSpec, budget: Budget, *, grow: bool) -> tuple[ArchSpec, float]:
    """The backbone with the largest width factor (from 1.0 downwards; upwards too when ``grow``) at which S+ST
    everywhere (the most expensive candidate) fits ``budget``; :class:`BudgetError` when none does."""
    def fits(factor: float) -> bool:
        spec = scale_widths(backbone, factor)
        return budget.exceeded(cost(fused(spec, ["S+ST"] * len(spec.stages), "probe"))) is None

    factors = [round(1.0 - 0.05 * i, 2) for i in range(19)]  # 1.0 .. 0.1
    if grow and fits(1.0):
        factors = [round(1.0 + 0.125 * i, 3) for i in range(32, -1, -1)]  # 5.0 .. 1.0
    for f in factors:
        if fits(f):
            return scale_widths(backbone, f), f
    hit = budget.exceeded(cost(fused(scale_widths(backbone, 0.1), ["S+ST"] * len(backbone.stages), "probe")))
    raise BudgetError(hit[0] if hit else "flops", f"backbone {backbone.name!r} with S+ST everywhere does not fit the "
                                                  f"budget even at 0.1 x its widths: {hit[1] if hit else ''}")


def network_key(spec: ArchSpec) -> tuple:
    """Two specs that build the same network (an all-S / all-ST e3d-fused spec is the plain e3d one)."""
    units = tuple(tuple(block_units(s)) if spec.family == "e3d-fused" else (default_unit(s.kernel),) * s.layers
                  for s in spec.stages)
    shape = tuple((s.kernel, s.out, s.bottleneck, s.layers, s.stride) for s in spec.stages)
    return (spec.frames, spec.size, spec.stem, shape, spec.head, spec.hidden, spec.num_classes, units)
