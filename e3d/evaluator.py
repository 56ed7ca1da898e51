"""Cost (FLOPs, params, layers) and score of a genome: the search's inner loop.

For the entropy scores, cached per stage:

The numbers are exactly those of :func:`e3d.cost.cost` and :func:`e3d.scores.stentr` / ``homoentr`` on the
decoded spec (``tests/test_space.py`` checks equality, bit for bit for the score): each stage's FLOPs and
params come from :func:`e3d.cost._stage_cost`, and its score term is summed in the same order as
:mod:`e3d.scores` does. A stage's numbers depend only on ``(position, input width, gene)``, and a child
shares all but two or three of them with its parent, so they are cached: a genome costs a handful of dict
look-ups instead of ~25 us of spec building and scoring. ``flops`` and ``params`` come with the cost. Any
other registered score (:mod:`e3d.scores`) is computed on the decoded spec and cached per genome: analytic
ones in microseconds, forward ones (a torch model per genome) in milliseconds, averaged over ``repeats``.
"""
from __future__ import annotations

import math

from .cost import ceil_div
from .families.e3d import stage_cost as _stage_cost
from .scores import InfiniteScoreError, refinement
from .space import Genome, SearchSpace, StageGene
from .spec import ArchSpec, StageSpec

ENTROPY_SCORES = ("stentr", "homoentr")  # computed stage by stage, cached per stage
COST_SCORES = ("flops", "params")  # come with the cost


def check_search_score(name: str) -> None:
    """:class:`ValueError` unless ``name`` is a registered score a search can rank by (no real clips)."""
    from .scores import get_score  # noqa: PLC0415

    score = get_score(name)
    if score.needs_batch:
        raise ValueError(f"score {name!r} needs real clips; a search scores without data: choose a score "
                         f"that does not (see `e3d scores`)")


class Evaluator:
    """``evaluate(genome) -> (flops, params, layers, score)``; ``score`` is None when it is infinite (or the
    score cannot be computed for that network)."""

    def __init__(self, template: ArchSpec, score: str = "stentr", max_cache: int = 1 << 18, *,
                 space: "SearchSpace | None" = None, repeats: int = 1, seed: int = 0):
        check_search_score(score)
        if template.family != "e3d":
            raise ValueError(f"{template.name}: only the e3d family is searchable, got {template.family!r}")
        self.template, self.score, self.max_cache = template, score, max_cache
        self._refine = score == "stentr"
        self._generic = None
        if score not in ENTROPY_SCORES + COST_SCORES:
            from .scores import get_score  # noqa: PLC0415
            from .space import SearchSpace  # noqa: PLC0415

            self._generic = get_score(score)
            self._space = space or SearchSpace(template)
            self._repeats, self._seed = repeats, seed
            self._scored: dict[Genome, float | None] = {}
        t, stem = template.frames, template.stem
        self._frames = t
        # cost: stem FLOPs/params per output channel, spatial size entering each stage, head constants
        size = ceil_div(template.size, stem.stride[1])
        kvol = stem.kernel[0] * stem.kernel[1] * stem.kernel[2]
        self._stem_flops, self._stem_params = 3 * kvol * t * size * size, 3 * kvol + 2
        self._size_in: list[int] = []
        for s in template.stages:
            self._size_in.append(size)
            size = ceil_div(size, s.stride[1])
        self._head_vox = t * size * size
        self._hidden, self._classes = template.hidden, template.num_classes
        # score: the spatial size seen by each stage (floor division, as e3d.scores does)
        r = template.size // stem.stride[1]
        self._stem_term = math.log(3) + self._log_kernel(stem.kernel, r)
        self._r: list[int] = []
        for s in template.stages:
            r //= s.stride[1]
            self._r.append(r)
        self._strides = [s.stride for s in template.stages]
        self._cache: dict[tuple, tuple[int, int, float | None]] = {}

    def _log_kernel(self, kernel: tuple[int, int, int], r: int) -> float:
        volume = kernel[0] * kernel[1] * kernel[2]
        return math.log(volume * refinement(self._frames, r, kernel)) if self._refine else math.log(volume)

    def _stage(self, i: int, cin: int, gene: StageGene) -> tuple[int, int, float | None]:
        kt, k, out, b, n = gene
        stage = StageSpec(kernel=(kt, k, k), out=out, bottleneck=b, layers=n, stride=self._strides[i])
        flops, params, _ = _stage_cost(stage, cin, self._frames, self._size_in[i])
        try:
            term: float | None = (math.log(cin) + (n - 1) * math.log(out)
                                  + n * (self._log_kernel(stage.kernel, self._r[i]) + math.log(b)))
        except InfiniteScoreError:
            term = None
        return flops, params, term

    def cost(self, genome: Genome) -> tuple[int, int, int, None]:
        """``(flops, params, layers, None)``: the cost alone (an expensive score is not computed)."""
        return self._evaluate(genome, with_score=False)

    def evaluate(self, genome: Genome) -> tuple[int, int, int, float | None]:
        return self._evaluate(genome, with_score=True)

    def _evaluate(self, genome: Genome, with_score: bool) -> tuple[int, int, int, float | None]:
        stem, stages, head = genome
        cache = self._cache
        if len(cache) > self.max_cache:  # a pure cache: clearing it never changes a result
            cache.clear()
        flops, params, layers = self._stem_flops * stem, self._stem_params * stem, 2
        total: float | None = self._stem_term
        cin = stem
        for i, gene in enumerate(stages):
            key = (i, cin, gene)
            v = cache.get(key)
            if v is None:
                v = cache[key] = self._stage(i, cin, gene)
            flops += v[0]
            params += v[1]
            layers += 3 * gene[4]
            if total is not None:
                total = None if v[2] is None else total + v[2]
            cin = gene[2]
        hidden = self._hidden
        flops += cin * head * self._head_vox + head * hidden + hidden * self._classes
        params += cin * head + 2 * head + (head + 1) * hidden + (hidden + 1) * self._classes
        if not with_score:
            score = None
        elif self.score == "stentr" or self.score == "homoentr":
            score = None if total is None else 0.5 * (total + math.log(cin)) + math.log(head)
        elif self.score == "flops":
            score = float(flops)
        elif self.score == "params":
            score = float(params)
        else:
            score = self._score_generic(genome)
        return flops, params, layers, score

    def _score_generic(self, genome: Genome) -> float | None:
        cached = self._scored.get(genome, False)
        if cached is not False:
            return cached  # type: ignore[return-value]
        if len(self._scored) > self.max_cache:
            self._scored.clear()
        try:
            value: float | None = self._generic.evaluate(self._space.decode(genome), repeats=self._repeats,
                                                         seed=self._seed).mean
            if not math.isfinite(value):
                value = None
        except (InfiniteScoreError, ValueError, RuntimeError):  # e.g. a map too small for the network
            value = None
        self._scored[genome] = value
        return value
