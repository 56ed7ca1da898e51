"""The search space of the differentiable video NAS (Zhou et al., ACML 2021), torch-free: its expected
FLOPs (Eq. 4), the Viterbi decoding of the head-layer path and the derivation of ``r2plus1d`` specs.

The supernet (:mod:`e3d.dnas.supernet`) is a trellis. The stem is one fixed node; every searched stage
has one node per candidate head width (Table 1). An edge ``i -> j`` from a node of stage ``s - 1`` to one of
stage ``s`` is a head layer (a basic op ``w_i -> w_j`` with the stage's stride) with path weight
``p_ij = softmax_j(beta_ij)`` (Eq. 1: normalised over the ``m`` successors of ``i``); every node then runs the
stage's stack layers, each a softmax mixture of {dilation 1, 2, 4, skip} (Eq. 2-3; ``alpha`` is shared by the
nodes of a stage, one row per stack layer). After the last stage every node feeds the head conv and the
classifier.

Read as a Markov chain that starts at the stem and steps along the edges with probabilities ``p_ij``, the
expected FLOPs of the network is Eq. 4's recursion, taken all the way down::

    C(i) = stack_i + sum_j p_ij * (head_ij + C(j)),      C(i in the last stage) = stack_i + tail_i
    stack_i = sum_l sum_o w_o^l * cost(o at width w_i)   (skip costs nothing)
    total   = stem + sum_j p_0j * (head_0j + C(j))

With one-hot weights this is exactly :func:`e3d.cost.cost` of the derived spec (``tests/test_dnas_space.py``).
Derivation: each stack layer takes its argmax op (skips dropped), the path is the Viterbi path of maximal
``sum log p_ij`` (the most probable path of the chain; ``path_score="sum"``: the paper's literal "maximum sum of
weights"), and the next best paths (:func:`k_best_paths`) give further candidates.
"""
from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

from ..channels import round_channels
from ..cost import ceil_div
from ..families.r2plus1d import op_cost
from ..spec import ArchSpec, ConvSpec, StageSpec, make_extra, validate

Triple = tuple[int, int, int]
SKIP = 0  # the skip op in ``DnasSpace.ops`` (the others are temporal dilations)
ALL_OPS = (1, 2, 4, SKIP)

# Table 1: per searched stage (2..7) the candidate head widths, the most stack layers and (ours) the stride
TABLE1 = (((48, 56, 64), 0, 2), ((72, 96, 112), 5, 2), ((128, 144, 160, 176), 10, 2), ((192, 208, 224), 5, 2),
          ((240, 256, 272, 288), 5, 1), ((480, 496, 512), 1, 1))
TABLE1_STEM, TABLE1_HEAD = 32, 512


def op_name(op: int) -> str:
    return "skip" if op == SKIP else f"d{op}"


@dataclass(frozen=True)
class StageSpace:
    """One searched stage: candidate head ``widths``, up to ``max_stack`` stack layers, spatial ``stride``."""

    widths: tuple[int, ...]
    max_stack: int
    stride: int = 2
    kernel: Triple = (3, 3, 3)


@dataclass(frozen=True)
class DnasSpace:
    """The supernet's search space at one clip size (``frames x size^2``)."""

    frames: int
    size: int
    stages: tuple[StageSpace, ...]
    num_classes: int = 400
    stem_width: int = TABLE1_STEM
    stem_kernel: Triple = (3, 7, 7)
    stem_stride: int = 2
    head_width: int = TABLE1_HEAD
    hidden: int = 2048
    ops: tuple[int, ...] = ALL_OPS  # the stack layers' candidate ops: dilations, SKIP
    mid_ratio: float = 1.0          # a basic op's width between its spatial and temporal conv, per output width

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("the search space has no stage")
        if not self.ops or len(set(self.ops)) != len(self.ops) or any(o < 0 for o in self.ops):
            raise ValueError(f"ops must be distinct dilations (>= 1) or {SKIP} (skip), got {self.ops}")
        if all(o == SKIP for o in self.ops):
            raise ValueError("ops: at least one op must be a convolution")
        for i, st in enumerate(self.stages):
            if not st.widths or min(st.widths) < 1 or st.max_stack < 0 or st.stride not in (1, 2):
                raise ValueError(f"stage {i}: bad widths {st.widths}, max_stack {st.max_stack} or stride {st.stride}")
            if st.kernel[0] > self.frames:
                raise ValueError(f"stage {i}: temporal kernel {st.kernel[0]} exceeds the {self.frames} frames")

    # -- shape ---------------------------------------------------------------------------------------
    @property
    def widths(self) -> list[tuple[int, ...]]:
        return [s.widths for s in self.stages]

    def mid(self, width: int) -> int:
        return max(1, int(round(width * self.mid_ratio)))

    def sizes(self) -> list[int]:
        """Spatial output size of the stem, then of each stage."""
        out = [ceil_div(self.size, self.stem_stride)]
        for st in self.stages:
            out.append(ceil_div(out[-1], st.stride))
        return out

    def paths(self) -> int:
        return math.prod(len(s.widths) for s in self.stages)

    def size_of_space(self) -> int:
        """Width paths x the op choices of every stack layer, skips counted by position: 5.84e18 for Table 1's
        space, the paper's number (Sec. 3.3)."""
        n = self.paths()
        for st in self.stages:
            n *= len(self.ops) ** st.max_stack
        return n

    # -- cost ----------------------------------------------------------------------------------------
    def cost_tables(self) -> "CostTables":
        """The FLOPs (MACs) of every piece of the supernet, as :func:`e3d.cost.cost` counts them."""
        t, sizes = self.frames, self.sizes()
        c = self.stem_width
        stem = op_cost(3, c, c, self.stem_kernel, t, sizes[0])[0]
        head, op = [], []
        prev = (c,)
        for s, st in enumerate(self.stages):
            r = sizes[s + 1]
            head.append([[op_cost(wi, self.mid(wj), wj, st.kernel, t, r)[0] for wj in st.widths] for wi in prev])
            op.append([op_cost(wj, self.mid(wj), wj, st.kernel, t, r)[0] for wj in st.widths])
            prev = st.widths
        r = sizes[-1]
        tail = [w * self.head_width * t * r * r + self.head_width * self.hidden + self.hidden * self.num_classes
                for w in prev]
        return CostTables(stem=stem, head=head, op=op, tail=tail)

    # -- specs ---------------------------------------------------------------------------------------
    def spec(self, path: Sequence[int], stack_ops: Sequence[Sequence[int]], name: str = "dnas") -> ArchSpec:
        """The network of ``path`` (a width index per stage) with ``stack_ops`` (per stage, the op of each stack
        layer; skips are dropped)."""
        if len(path) != len(self.stages) or len(stack_ops) != len(self.stages):
            raise ValueError(f"need one width index and one op list per stage ({len(self.stages)})")
        stages = []
        for st, j, ops in zip(self.stages, path, stack_ops):
            w = st.widths[j]
            dil = [int(o) for o in ops if o != SKIP]
            stages.append(StageSpec(kernel=st.kernel, out=w, bottleneck=self.mid(w), layers=1 + len(dil),
                                    stride=(1, st.stride, st.stride), extra=make_extra({"dilations": dil})))
        spec = ArchSpec(name=name, family="r2plus1d", frames=self.frames, size=self.size,
                        stem=ConvSpec(self.stem_kernel, self.stem_width, (1, self.stem_stride, self.stem_stride)),
                        stages=tuple(stages), head=ConvSpec((1, 1, 1), self.head_width), hidden=self.hidden,
                        num_classes=self.num_classes)
        validate(spec)
        return spec

    # -- serialization -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DnasSpace":
        d = dict(d)
        d["stages"] = tuple(StageSpace(widths=tuple(s["widths"]), max_stack=s["max_stack"], stride=s["stride"],
                                       kernel=tuple(s["kernel"])) for s in d["stages"])
        for k in ("stem_kernel", "ops"):
            d[k] = tuple(d[k])
        return cls(**d)


@dataclass(frozen=True)
class CostTables:
    """``stem``; ``head[s][i][j]``: the head layer of stage ``s`` from node ``i`` of the stage before (the stem
    for ``s = 0``) to node ``j``; ``op[s][j]``: one (non-skip) stack layer at node ``j`` of stage ``s`` (the
    dilation changes no count); ``tail[j]``: head conv + classifier after node ``j`` of the last stage."""

    stem: int
    head: list[list[list[int]]]
    op: list[list[int]]
    tail: list[int]


def table1_space(frames: int = 16, size: int = 224, num_classes: int = 400, *, width_mult: float = 1.0,
                 width_divisor: int = 8, max_stack: Sequence[int] | None = None,
                 strides: Sequence[int] | None = None, search_channels: bool = True, search_ops: bool = True,
                 search_depth: bool = True, fixed_stack: Sequence[int] | None = None, mid_ratio: float = 1.0,
                 stem_kernel: Triple = (3, 7, 7), kernel: Triple = (3, 3, 3), hidden: int = 2048) -> DnasSpace:
    """Table 1's space at ``frames x size^2`` (six searched stages after the fixed stem), optionally narrower
    (``width_mult``: every width scaled and rounded to ``width_divisor``, duplicates merged) and shallower
    (``max_stack``: the most stack layers per stage, default 0, 5, 10, 5, 5, 1).

    Table 6's ablation switches: ``search_channels=False`` keeps one width per stage (the middle candidate,
    the upper one of an even list); ``search_ops=False`` makes every stack op dilation 1 (+ skip);
    ``search_depth=False`` drops the skip op, so every stage has ``fixed_stack`` stack layers (default: the
    maximum). At least one switch must stay on.
    """
    if not (search_channels or search_ops or search_depth):
        raise ValueError("nothing to search: turn on search_channels, search_ops or search_depth")
    n = len(TABLE1)
    caps = list(max_stack) if max_stack is not None else [m for _, m, _ in TABLE1]
    strides = list(strides) if strides is not None else [s for _, _, s in TABLE1]
    if len(caps) != n or len(strides) != n:
        raise ValueError(f"max_stack and strides need one value per searched stage ({n})")
    if fixed_stack is not None and len(fixed_stack) != n:
        raise ValueError(f"fixed_stack needs one value per searched stage ({n})")

    def width(w: int) -> int:  # a tie up, as the measured searches ran
        return round_channels(w * width_mult, width_divisor, ties="up")

    stages = []
    for k, ((widths, _, _), cap, stride) in enumerate(zip(TABLE1, caps, strides)):
        scaled = tuple(dict.fromkeys(width(w) for w in widths))
        if not search_channels:
            scaled = (scaled[len(scaled) // 2],)
        layers = cap if search_depth or fixed_stack is None else fixed_stack[k]
        stages.append(StageSpace(widths=scaled, max_stack=int(layers), stride=int(stride), kernel=kernel))
    dil = (1, 2, 4) if search_ops else (1,)
    ops = dil + ((SKIP,) if search_depth else ())
    return DnasSpace(frames=frames, size=size, stages=tuple(stages), num_classes=num_classes,
                     stem_width=width(TABLE1_STEM), stem_kernel=stem_kernel, head_width=width(TABLE1_HEAD),
                     hidden=hidden, ops=ops, mid_ratio=mid_ratio)


# -- Eq. 4 ---------------------------------------------------------------------------------------------
def expected_flops(space: DnasSpace, alpha: Sequence[Sequence[Sequence[float]]],
                   beta: Sequence[Sequence[Sequence[float]]], tables: CostTables | None = None) -> float:
    """Expected FLOPs under op weights ``alpha[s][l][o]`` and path weights ``beta[s][i][j]`` (both already
    softmaxed; ``beta[0]`` has one row, the stem's)."""
    tables = tables or space.cost_tables()
    conv = [0.0 if o == SKIP else 1.0 for o in space.ops]
    n = len(space.stages)
    mass = [sum(w * c for row in alpha[s] for w, c in zip(row, conv)) for s in range(n)]
    after = [mass[-1] * op + tail for op, tail in zip(tables.op[-1], tables.tail)]  # C(j), last stage
    for s in range(n - 2, -1, -1):
        nxt = s + 1
        after = [mass[s] * tables.op[s][i]
                 + sum(p * (h + c) for p, h, c in zip(beta[nxt][i], tables.head[nxt][i], after))
                 for i in range(len(space.stages[s].widths))]
    return tables.stem + sum(p * (h + c) for p, h, c in zip(beta[0][0], tables.head[0][0], after))


# -- Viterbi -------------------------------------------------------------------------------------------
def k_best_paths(weights: Sequence[Sequence[Sequence[float]]], k: int = 1) -> list[tuple[float, tuple[int, ...]]]:
    """The ``k`` paths of largest total weight through a layered graph, best first.

    ``weights[s][i][j]`` is the edge from node ``i`` of layer ``s`` to node ``j`` of layer ``s + 1``; layer 0 has
    ``len(weights[0])`` nodes. A path is its node index in every layer after layer 0, with its start node
    prepended when layer 0 has more than one. Viterbi with ``k`` survivors per node (exact: a path among the
    ``k`` best overall has a prefix among the ``k`` best into its node). Ties: the lexicographically smaller
    path first.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    starts = len(weights[0])
    best: list[list[tuple[float, tuple[int, ...]]]] = [[(0.0, (i,) if starts > 1 else ())] for i in range(starts)]
    for layer in weights:
        n_next = len(layer[0])
        nxt = []
        for j in range(n_next):
            cands = [(score + layer[i][j], path + (j,)) for i, kept in enumerate(best) for score, path in kept]
            nxt.append(heapq.nsmallest(k, cands, key=lambda c: (-c[0], c[1])))
        best = nxt
    return heapq.nsmallest(k, [c for kept in best for c in kept], key=lambda c: (-c[0], c[1]))


def brute_force_paths(weights: Sequence[Sequence[Sequence[float]]], k: int = 1) -> list[tuple[float, tuple[int, ...]]]:
    """Every path scored, the ``k`` best (the reference :func:`k_best_paths` is tested against)."""
    starts = len(weights[0])
    layers = [range(len(layer[0])) for layer in weights]
    out = []
    for start in range(starts):
        for rest in itertools.product(*layers):
            nodes = (start,) + rest
            score = sum(weights[s][nodes[s]][nodes[s + 1]] for s in range(len(weights)))
            out.append((score, ((start,) if starts > 1 else ()) + rest))
    return sorted(out, key=lambda c: (-c[0], c[1]))[:k]


# -- derivation ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Derived:
    """One derived network: the spec, its width path, its stack ops and the path's score."""

    spec: ArchSpec
    path: tuple[int, ...]
    stack_ops: tuple[tuple[int, ...], ...]
    path_score: float
    log_prob: float  # log of the chain's probability of the path plus each chosen op's log weight


def argmax_ops(space: DnasSpace, alpha: Sequence[Sequence[Sequence[float]]]) -> tuple[tuple[int, ...], ...]:
    """Each stack layer's op of largest weight (the first on ties), per stage, skips included."""
    return tuple(tuple(space.ops[max(range(len(row)), key=lambda o: (row[o], -o))] for row in alpha[s])
                 for s in range(len(space.stages)))


def derive(space: DnasSpace, alpha: Sequence[Sequence[Sequence[float]]], beta: Sequence[Sequence[Sequence[float]]],
           *, k: int = 1, path_score: str = "log", name: str = "dnas") -> list[Derived]:
    """The ``k`` best networks: argmax ops per stack layer, the ``k`` best head-layer paths (Viterbi)."""
    if path_score not in ("log", "sum"):
        raise ValueError(f"path_score must be 'log' or 'sum', got {path_score!r}")
    ops = argmax_ops(space, alpha)
    op_logp = sum(math.log(max(max(row), 1e-300)) for s in range(len(space.stages)) for row in alpha[s])
    logw = [[[math.log(max(p, 1e-300)) for p in row] for row in b] for b in beta]
    weights = logw if path_score == "log" else [[list(row) for row in b] for b in beta]
    out = []
    for rank, (score, path) in enumerate(k_best_paths(weights, k)):
        logp = sum(logw[s][path[s - 1] if s else 0][path[s]] for s in range(len(path)))
        spec = space.spec(path, ops, name if rank == 0 else f"{name}-{rank:03d}")
        out.append(Derived(spec, tuple(path), ops, float(score), float(logp + op_logp)))
    return out


def one_hot_weights(space: DnasSpace, path: Sequence[int], stack_ops: Sequence[Sequence[int]]):
    """``(alpha, beta)`` that put all weight on ``path`` and ``stack_ops`` (every stage lists ``max_stack`` ops)."""
    alpha = [[[1.0 if o == op else 0.0 for o in space.ops] for op in stack_ops[s]] for s in range(len(space.stages))]
    beta, prev = [], 1
    for s, st in enumerate(space.stages):
        rows = [[0.0] * len(st.widths) for _ in range(prev)]
        for row in rows:  # rows off the path are irrelevant to the cost; give them a valid distribution
            row[path[s]] = 1.0
        beta.append(rows)
        prev = len(st.widths)
    return alpha, beta


def uniform_weights(space: DnasSpace):
    """``(alpha, beta)`` at the search's start (all architecture parameters zero)."""
    alpha = [[[1.0 / len(space.ops)] * len(space.ops) for _ in range(st.max_stack)] for st in space.stages]
    beta, prev = [], 1
    for st in space.stages:
        beta.append([[1.0 / len(st.widths)] * len(st.widths) for _ in range(prev)])
        prev = len(st.widths)
    return alpha, beta


__all__ = ["SKIP", "ALL_OPS", "TABLE1", "StageSpace", "DnasSpace", "CostTables", "table1_space", "expected_flops",
           "k_best_paths", "brute_force_paths", "Derived", "argmax_ops", "derive", "one_hot_weights",
           "uniform_weights", "op_name"]
