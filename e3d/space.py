"""The E3D search space (Appendix E, DESIGN.md) and its mutation operators.

A candidate is a *genome*, a plain tuple of ints, so mutating, hashing and comparing it is cheap:

    genome = (stem_out, stages, head_out)
    stages = ((kt, k, out, bottleneck, layers), ...)       # one 5-tuple per stage

Everything else (input size, strides, stem kernel, classifier) is fixed by a *template* spec, the search's
initial structure; :meth:`SearchSpace.decode` turns a genome back into an :class:`~e3d.spec.ArchSpec`.

Mutation (Algorithm 1, lines 3-11): pick ``positions_per_child`` (2) distinct positions among the stem,
the stages and the head; a stage mutates one of kernel / output width / bottleneck / depth (chosen with
``mutation_probs``), the stem and head mutate their width. Every operator only picks among the moves
that change the gene and keep the spec valid (a multiple of ``width_step`` in
``[width_min, width_max]``, ``min_depth <= layers <= max_depth``, ``kt <= frames``), so a mutant is
never invalid; when no such move exists the gene is left alone. ``docs/search.md`` records the choices.
"""
from __future__ import annotations

import random
from bisect import bisect_right
from dataclasses import dataclass, field, fields
from itertools import accumulate
from typing import Sequence

from .channels import round_channels
from .spec import ArchSpec, ConvSpec, SpecError, StageSpec, Triple, validate

StageGene = tuple[int, int, int, int, int]  # kt, k, out, bottleneck, layers
Genome = tuple[int, tuple[StageGene, ...], int]  # stem out, stages, head out

KERNEL, WIDTH, BOTTLENECK, DEPTH = range(4)
MUTATION_NAMES = ("kernel", "width", "bottleneck", "depth")

PAPER_KERNELS: tuple[Triple, ...] = ((1, 3, 3), (1, 5, 5), (3, 3, 3))
PAPER_WIDTH_MULTIPLIERS = (2.0, 1.5, 1.25, 0.8, 0.6, 0.5)
PAPER_BOTTLENECK_RATIOS = (1.5, 2.0, 2.5, 3.0, 3.5, 4.0)
PAPER_DEPTH_STEPS = (-2, -1, 1, 2)


@dataclass(frozen=True, kw_only=True)
class SpaceSettings:
    """The search space's settings (the paper's values by default), apart from the template spec.

    ``kernels``: the kernel space; ``width_multipliers`` / ``bottleneck_ratios`` / ``depth_steps``: the
    mutation moves; widths are multiples of ``width_step`` in ``[width_min, width_max]``; a stage holds
    ``min_depth`` to ``max_depth`` blocks (a tuple: one cap per stage; None: no cap);
    ``mutation_probs``: weights of the kernel / width / bottleneck / depth mutations; a child mutates
    ``positions_per_child`` positions, among the stem and head too when ``mutate_stem_head``.
    """

    kernels: tuple[Triple, ...] = PAPER_KERNELS
    width_multipliers: tuple[float, ...] = PAPER_WIDTH_MULTIPLIERS
    bottleneck_ratios: tuple[float, ...] = PAPER_BOTTLENECK_RATIOS
    depth_steps: tuple[int, ...] = PAPER_DEPTH_STEPS
    width_min: int = 8
    width_max: int = 640
    width_step: int = 8
    min_depth: int = 1
    max_depth: int | tuple[int, ...] | None = None  # per stage when a tuple
    mutation_probs: tuple[float, float, float, float] = (0.25, 0.25, 0.25, 0.25)  # kernel/width/btn/depth
    positions_per_child: int = 2
    mutate_stem_head: bool = True

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(SpaceSettings)}

    @classmethod
    def from_dict(cls, data: dict) -> "SpaceSettings":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"space settings: unknown field {unknown[0]!r} (known: {', '.join(sorted(known))})")
        return cls(**{k: seq_or_tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass(frozen=True)
class SearchSpace(SpaceSettings):
    """The mutation operators over genomes around a fixed ``template`` spec (its input, strides, stem kernel
    and classifier stay), with :class:`SpaceSettings` as keyword arguments."""

    template: ArchSpec
    # lookup tables, filled in __post_init__ / lazily; not part of the identity
    _tables: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def of(cls, template: ArchSpec, settings: SpaceSettings | None = None) -> "SearchSpace":
        return cls(template, **(settings or SpaceSettings()).to_dict())

    @property
    def settings(self) -> SpaceSettings:
        return SpaceSettings(**SpaceSettings.to_dict(self))

    def __post_init__(self) -> None:
        t = self.template
        if t.family != "e3d":
            raise SpecError(f"{t.name}: the search space is the E3D family, got family {t.family!r}")
        step, lo, hi = self.width_step, self.width_min, self.width_max
        if step < 1 or lo < step or lo % step or hi % step or hi < lo:
            raise ValueError(f"width bounds must be multiples of width_step={step} with "
                             f"{step} <= width_min <= width_max, got [{lo}, {hi}]")
        for k in self.kernels:
            if len(k) != 3 or k[1] != k[2] or any(v < 1 or v % 2 == 0 for v in k):
                raise ValueError(f"kernel {list(k)}: expected an odd, square [kt, k, k]")
        if not any(k[0] <= t.frames for k in self.kernels):
            raise ValueError(f"no kernel in {self.kernels} fits {t.frames} input frames")
        if not self.width_multipliers or any(m <= 0 for m in self.width_multipliers):
            raise ValueError(f"width multipliers must be positive, got {self.width_multipliers}")
        if not self.bottleneck_ratios or any(r <= 0 for r in self.bottleneck_ratios):
            raise ValueError(f"bottleneck ratios must be positive, got {self.bottleneck_ratios}")
        if not self.depth_steps or 0 in self.depth_steps:
            raise ValueError(f"depth steps must be non-zero, got {self.depth_steps}")
        n = len(t.stages)
        caps = self.depth_caps
        if len(caps) != n:
            raise ValueError(f"max_depth has {len(caps)} entries for {n} stages: {self.max_depth}")
        if self.min_depth < 1 or any(c < self.min_depth for c in caps):
            raise ValueError(f"depth bounds must satisfy 1 <= min_depth <= max_depth, got "
                             f"min_depth={self.min_depth}, max_depth={self.max_depth}")
        probs = self.mutation_probs
        if len(probs) != 4 or any(p < 0 for p in probs) or sum(probs) <= 0:
            raise ValueError(f"mutation_probs are 4 non-negative weights (kernel, width, bottleneck, "
                             f"depth), got {probs}")
        if self.positions_per_child < 1:
            raise ValueError(f"positions_per_child must be >= 1, got {self.positions_per_child}")
        total = sum(probs)
        tables = self._tables
        tables["cum"] = [c / total for c in accumulate(probs)][:-1]
        tables["kernels"] = tuple(k for k in self.kernels if k[0] <= t.frames)
        tables["width"] = {w: self._width_moves(w) for w in range(lo, hi + 1, step)}
        tables["ratio"], tables["btn"], tables["depth"] = {}, {}, {}
        tables["kernel_moves"] = {(c[0], c[1]): tuple(o for o in tables["kernels"] if o != c)
                                  for c in self.kernels}
        tables["positions"] = tuple(range(n + 2)) if self.mutate_stem_head else tuple(range(1, n + 1))

    @property
    def depth_caps(self) -> tuple[int, ...]:
        """The maximum number of blocks of each stage."""
        n, cap = len(self.template.stages), self.max_depth
        if cap is None:
            return (1 << 30,) * n
        return (cap,) * n if isinstance(cap, int) else tuple(cap)

    # -- widths ------------------------------------------------------------------------------------
    def round_width(self, x: float) -> int:
        """Nearest multiple of ``width_step`` (ties to even, as Python's ``round``), clipped to the bounds.

        Ties-to-even reproduces Table 9: 1.5 x 24 -> 32, 1.5 x 120 -> 176, 2.5 x 184 -> 464.
        """
        return round_channels(x, self.width_step, ties="even", low=self.width_min, high=self.width_max)

    def _width_moves(self, w: int) -> tuple[int, ...]:
        """New widths reachable from ``w``, one per multiplier that changes it."""
        return tuple(v for v in (self.round_width(w * m) for m in self.width_multipliers) if v != w)

    def ratio_of(self, out: int, bottleneck: int) -> float:
        """The expansion ratio of the list closest to ``bottleneck / out`` (first one on a tie)."""
        cache = self._tables["ratio"]
        r = cache.get((out, bottleneck))
        if r is None:
            x = bottleneck / out
            r = cache[(out, bottleneck)] = min(self.bottleneck_ratios, key=lambda c: abs(c - x))
        return r

    def _bottleneck_moves(self, out: int, bottleneck: int) -> tuple[int, ...]:
        cache = self._tables["btn"]
        moves = cache.get((out, bottleneck))
        if moves is None:
            current = self.ratio_of(out, bottleneck)
            moves = tuple(b for b in (self.round_width(out * r) for r in self.bottleneck_ratios if r != current)
                          if b != bottleneck)
            cache[(out, bottleneck)] = moves
        return moves

    def _depth_moves(self, stage: int, layers: int) -> tuple[int, ...]:
        cache = self._tables["depth"]
        moves = cache.get((stage, layers))
        if moves is None:
            hi = self.depth_caps[stage]
            moves = cache[(stage, layers)] = tuple(layers + d for d in self.depth_steps
                                                   if self.min_depth <= layers + d <= hi)
        return moves

    # -- mutation operators (each returns the gene unchanged when no valid move exists) ---------------
    def mutate_kernel(self, gene: StageGene, rng: random.Random) -> StageGene:
        """Replace the kernel by another one of the kernel space."""
        kt, k, out, btn, layers = gene
        moves = self._tables["kernel_moves"].get((kt, k))
        if moves is None:  # a kernel outside the space (initial structure): any kernel of the space
            moves = self._tables["kernels"]
        if not moves:
            return gene
        kt, k, _ = moves[rng.randrange(len(moves))]
        return (kt, k, out, btn, layers)

    def mutate_width(self, gene: StageGene, rng: random.Random) -> StageGene:
        """Scale the output width by a multiplier; the bottleneck keeps its expansion ratio."""
        kt, k, out, btn, layers = gene
        moves = self._tables["width"][out]
        if not moves:
            return gene
        new = moves[rng.randrange(len(moves))]
        return (kt, k, new, self.round_width(new * self.ratio_of(out, btn)), layers)

    def mutate_bottleneck(self, gene: StageGene, rng: random.Random) -> StageGene:
        """Set the bottleneck to ``ratio x output width`` with another ratio of the list."""
        kt, k, out, btn, layers = gene
        moves = self._bottleneck_moves(out, btn)
        if not moves:
            return gene
        return (kt, k, out, moves[rng.randrange(len(moves))], layers)

    def mutate_depth(self, gene: StageGene, rng: random.Random, stage: int = 0) -> StageGene:
        """Add one of the depth steps (+-1, +-2) within ``[min_depth, max_depth[stage]]``."""
        kt, k, out, btn, layers = gene
        moves = self._depth_moves(stage, layers)
        if not moves:
            return gene
        return (kt, k, out, btn, moves[rng.randrange(len(moves))])

    def mutate_conv_width(self, width: int, rng: random.Random) -> int:
        """Stem (conv1) or head (conv7) width: scaled by a multiplier."""
        moves = self._tables["width"][width]
        return moves[rng.randrange(len(moves))] if moves else width

    def mutate_stage(self, gene: StageGene, rng: random.Random, stage: int = 0) -> StageGene:
        kind = bisect_right(self._tables["cum"], rng.random())
        if kind == KERNEL:
            return self.mutate_kernel(gene, rng)
        if kind == WIDTH:
            return self.mutate_width(gene, rng)
        if kind == BOTTLENECK:
            return self.mutate_bottleneck(gene, rng)
        return self.mutate_depth(gene, rng, stage)

    def mutate(self, genome: Genome, rng: random.Random) -> Genome:
        """A child of ``genome``: ``positions_per_child`` distinct positions (stem, stages, head) mutated."""
        stem, stages, head = genome
        positions = self._tables["positions"]
        picks = rng.sample(positions, min(self.positions_per_child, len(positions)))
        new = list(stages)
        last = len(stages) + 1
        for p in picks:
            if p == 0:
                stem = self.mutate_conv_width(stem, rng)
            elif p == last:
                head = self.mutate_conv_width(head, rng)
            else:
                new[p - 1] = self.mutate_stage(new[p - 1], rng, p - 1)
        return (stem, tuple(new), head)

    # -- genome <-> spec -----------------------------------------------------------------------------
    def check_width(self, width: int, where: str) -> None:
        if not (self.width_min <= width <= self.width_max and width % self.width_step == 0):
            raise SpecError(f"{where}: {width} is not a multiple of {self.width_step} in "
                            f"[{self.width_min}, {self.width_max}]")

    def encode(self, spec: ArchSpec) -> Genome:
        """The genome of ``spec``; :class:`SpecError` if it is not in this space (fixed parts or widths)."""
        t = self.template
        fixed = ("family", "frames", "size", "hidden", "num_classes")
        for name in fixed:
            if getattr(spec, name) != getattr(t, name):
                raise SpecError(f"{spec.name}: {name} {getattr(spec, name)!r} differs from the search "
                                f"template's {getattr(t, name)!r}")
        if (spec.stem.kernel, spec.stem.stride) != (t.stem.kernel, t.stem.stride):
            raise SpecError(f"{spec.name}: the stem kernel/stride is fixed to {t.stem.kernel}/{t.stem.stride}")
        if tuple(s.stride for s in spec.stages) != tuple(s.stride for s in t.stages):
            raise SpecError(f"{spec.name}: stage count and strides must match the search template "
                            f"({len(t.stages)} stages, strides {[s.stride[1] for s in t.stages]})")
        self.check_width(spec.stem.out, f"{spec.name}.stem.out")
        self.check_width(spec.head.out, f"{spec.name}.head.out")
        genes = []
        for i, s in enumerate(spec.stages):
            self.check_width(s.out, f"{spec.name}.stages[{i}].out")
            self.check_width(s.bottleneck, f"{spec.name}.stages[{i}].bottleneck")
            if not self.min_depth <= s.layers <= self.depth_caps[i]:
                raise SpecError(f"{spec.name}.stages[{i}].layers: {s.layers} is outside the depth bounds "
                                f"[{self.min_depth}, {self.depth_caps[i]}]")
            genes.append((s.kernel[0], s.kernel[1], s.out, s.bottleneck, s.layers))
        return (spec.stem.out, tuple(genes), spec.head.out)

    def decode(self, genome: Genome, name: str | None = None) -> ArchSpec:
        """The validated spec of ``genome`` (the template's input, strides, stem kernel and classifier)."""
        t = self.template
        stem, stages, head = genome
        spec = t.replace(
            name=name or t.name,
            stem=ConvSpec(kernel=t.stem.kernel, out=stem, stride=t.stem.stride),
            stages=tuple(StageSpec(kernel=(kt, k, k), out=out, bottleneck=btn, layers=n, stride=ts.stride)
                         for (kt, k, out, btn, n), ts in zip(stages, t.stages)),
            head=ConvSpec(kernel=(1, 1, 1), out=head))
        validate(spec)
        return spec


def genome_layers(genome: Genome) -> int:
    """Conv layers (stem + 3 per block + head), as :func:`e3d.cost.num_layers` counts them."""
    return 2 + 3 * sum(g[4] for g in genome[1])


def describe(genome: Genome) -> str:
    """One-line summary, e.g. ``stem 24 | 155 24/32 x3 | 333 48/96 x6 | ... | head 512``."""
    stem, stages, head = genome
    body = " | ".join(f"{kt}{k}{k} {o}/{b} x{n}" for kt, k, o, b, n in stages)
    return f"stem {stem} | {body} | head {head}"


def seq_or_tuple(x: Sequence) -> tuple:
    """Nested lists (from JSON) back to the nested tuples a genome is made of."""
    return tuple(seq_or_tuple(v) if isinstance(v, (list, tuple)) else v for v in x)
