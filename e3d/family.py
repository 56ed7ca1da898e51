"""What a block family is (:class:`Family`) and the registry of families by name (``FAMILIES``).

A family says what the blocks of a spec are: the analytic cost of its stem and stages, their entropy-score
terms, the field names and checks its specs may carry, and the torch factories that build them. Everything
that needs to know a family asks :func:`get_family`: :func:`e3d.spec.validate`, :func:`e3d.cost.cost`,
:func:`e3d.scores.stentr` / ``homoentr`` and :func:`e3d.model.build_model`.

The families themselves are the modules of :mod:`e3d.families`; each registers an instance here when it is
imported, and ``import e3d`` imports them all. This module imports none of them (nor the spec, cost or model
modules that ask it), so the registry sits below its users and its entries: no import cycle.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .registry import Registry

if TYPE_CHECKING:  # torch stays out of `import e3d.cost`
    from torch import nn

    from .spec import ArchSpec, StageSpec


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Cost:
    """FLOPs (multiply-accumulates), parameters and conv layers of a network, as :meth:`Family.cost` counts them."""

    flops: int
    params: int
    layers: int

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    @property
    def mparams(self) -> float:
        return self.params / 1e6


class Family:
    """The skeleton every family shares: ``stem -> stages -> head (1x1x1 conv) -> classifier``.

    Subclasses fill in the stem and the stages (their cost, score terms and builders); the head and the
    classifier are common. A family whose network has another shape (e.g. two streams) overrides
    :meth:`cost`, :meth:`entropy` and :meth:`build` as a whole.
    """

    name: str = ""
    description: str = ""
    # family-specific JSON fields a spec of this family may carry: top-level and per stage (stored in
    # ``ArchSpec.extra`` / ``StageSpec.extra``, read with ``spec.get(name)``; check them in ``validate``)
    arch_fields: tuple[str, ...] = ()
    stage_fields: tuple[str, ...] = ()

    # -- spec ------------------------------------------------------------------------------------------
    def validate(self, spec: "ArchSpec", where: str) -> None:
        """Family-specific checks beyond :func:`e3d.spec.validate` (raise ``SpecError`` naming the field)."""

    # -- cost ------------------------------------------------------------------------------------------
    def stem_cost(self, spec: "ArchSpec", size_out: int) -> tuple[int, int, int]:
        """``(flops, params, conv layers)`` of the stem, whose output is ``size_out`` wide."""
        raise NotImplementedError

    def stage_cost(self, stage: "StageSpec", cin: int, frames: int, size_in: int) -> tuple[int, int, int]:
        """``(flops, params, output spatial size)`` of one stage fed ``cin`` channels at ``size_in``."""
        raise NotImplementedError

    def layers_per_block(self) -> int:
        """Conv layers each block adds to the layer count the search's layer limit bounds."""
        return 3

    def cost(self, spec: "ArchSpec") -> Cost:
        t = spec.frames
        size = ceil_div(spec.size, spec.stem.stride[1])
        flops, params, layers = self.stem_cost(spec, size)
        cin = spec.stem.out
        for stage in spec.stages:
            f, p, size = self.stage_cost(stage, cin, t, size)
            flops, params, cin = flops + f, params + p, stage.out
            layers += self.layers_per_block() * stage.layers
        head = spec.head.out
        flops += cin * head * t * size * size + head * spec.hidden + spec.hidden * spec.num_classes
        params += cin * head + 2 * head + (head + 1) * spec.hidden + (spec.hidden + 1) * spec.num_classes
        return Cost(flops=flops, params=params, layers=layers + 1)

    # -- entropy score ---------------------------------------------------------------------------------
    def stem_entropy(self, spec: "ArchSpec", r: int, refine: bool) -> float:
        """Sum of ``ln(C * kt * k * k * D)`` over the stem's convs (``r``: its output size, floor-divided)."""
        raise NotImplementedError

    def stage_entropy(self, stage: "StageSpec", cin: int, frames: int, r: int, refine: bool) -> float:
        """The same sum over one stage's convs (``r``: the stage's output size)."""
        raise NotImplementedError

    def entropy(self, spec: "ArchSpec", refine: bool) -> float:
        """``1/2 * sum_l ln(C_l * kvol_l * D_l) + ln(C_head)`` (E3D Eq. 6/8, the official code's form)."""
        r = spec.size // spec.stem.stride[1]
        total = self.stem_entropy(spec, r, refine)
        cin = spec.stem.out
        for stage in spec.stages:
            r //= stage.stride[1]
            total += self.stage_entropy(stage, cin, spec.frames, r, refine)
            cin = stage.out
        total += math.log(cin)  # head: 1x1x1 conv from the last stage
        return 0.5 * total + math.log(spec.head.out)

    # -- torch -----------------------------------------------------------------------------------------
    def create_stem(self, spec: "ArchSpec") -> "nn.Module":
        """``(B, 3, T, H, W) -> (B, stem.out, T, H / s, W / s)``."""
        raise NotImplementedError

    def create_stage(self, stage: "StageSpec", *, cin: int) -> "nn.Module":
        """``(B, cin, T, H, W) -> (B, stage.out, T, H / s, W / s)``."""
        raise NotImplementedError

    def build(self, spec: "ArchSpec", *, dropout: float = 0.5) -> "nn.Module":
        """The whole network: by default the common skeleton around this family's stem and stages."""
        from .network import VideoNet  # noqa: PLC0415 - torch only when building

        return VideoNet(spec, family=self, dropout=dropout)

    def __repr__(self) -> str:
        return f"<family {self.name}>"


FAMILIES: Registry[Family] = Registry("family")


def register_family(family: Family) -> Family:
    """Register an instance under ``family.name``."""
    return FAMILIES.add(family.name, family, family.description)


def get_family(name: str) -> Family:
    return FAMILIES.get(name)


def family_names() -> list[str]:
    return FAMILIES.names()
