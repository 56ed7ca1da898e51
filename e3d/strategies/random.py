"""``random``: specs drawn uniformly from the search space under the budget, ranked by the score.

The baseline every other strategy is compared with. The space is the evolutionary search's
(:mod:`e3d.space`: the template's input, strides and stem kernel; per stage a kernel of the kernel space, a
width on the width grid, a bottleneck ratio and a depth; stem and head widths), so the two differ only in
how they pick. Plain rejection sampling from the whole
grid almost never fits a budget (12 feasible specs in a million draws at 0.08 GFLOPs), so draws come from
a Gibbs sampler whose stationary distribution is uniform over the feasible specs (:class:`UniformSampler`);
a draw with an infinite score or already drawn is skipped. ``docs/search.md`` has the details.

Options: ``samples`` (distinct feasible specs to draw, default 1000), ``chunk`` (samples per history row),
``max_draws`` (give up after this many draws per sample; default 100), ``thin`` (Gibbs
sweeps between draws, default 2), ``preset`` / ``initial`` (the
template, as for ``evolution``) and the space settings (``kernels``, ``width_min``, ``width_max``,
``width_step``, ``bottleneck_ratios``, ``min_depth``, ``max_depth``).
"""
from __future__ import annotations

import random
import statistics
import time
from dataclasses import fields, replace
from typing import Any

from ..evaluator import Evaluator
from ..space import Genome, SearchSpace, SpaceSettings
from ..strategy import (CPU_ONLY, Budget, Candidate, RequestError, SearchContext, SearchOutcome, SearchRequest,
                        check_known_options, check_score, register_strategy)
from .evolution import field_of, latency_constraint, search_config

_SPACE = tuple(f.name for f in fields(SpaceSettings))
OPTIONS = ("samples", "chunk", "max_draws", "thin", "preset", "initial") + _SPACE
_UNBOUNDED_DEPTH = 64  # a stage's depth cap when neither max_depth nor the layer limit gives one


class UniformSampler:
    """Uniform draws of the genomes of ``space`` that fit ``budget``, by random-scan Gibbs sampling.

    The state is one feasible network: per stage a kernel, a width, a bottleneck ratio and a depth, plus
    the stem and head widths. A step picks one of these variables at random and redraws it uniformly among
    the values that keep the network within the budget, the others fixed. Cost grows with every width and
    depth, so the feasible set is closed downwards and connected through the smallest network: the chain's
    stationary distribution is uniform over the feasible genomes. ``burn_in`` sweeps (one sweep = as many
    steps as variables) start it from the smallest network; ``thin`` sweeps separate two draws.
    """

    def __init__(self, space: SearchSpace, evaluator: Evaluator, budget: Budget, rng: random.Random, *,
                 burn_in: int = 20, thin: int = 2):
        if budget.latency_ms is not None:
            raise ValueError("the uniform sampler checks FLOPs, params and layers; filter latency afterwards")
        self.space, self.evaluator, self.budget, self.rng, self.thin = space, evaluator, budget, rng, thin
        s, t = space, space.template
        self.widths = list(range(s.width_min, s.width_max + 1, s.width_step))
        self.kernels = [k for k in s.kernels if k[0] <= t.frames]
        self.ratios = list(s.bottleneck_ratios)
        n = len(t.stages)
        self.depths = [list(range(s.min_depth, min(c, _UNBOUNDED_DEPTH) + 1)) for c in s.depth_caps]
        small = min(range(len(self.kernels)), key=lambda j: self.kernels[j][0] * self.kernels[j][1] ** 2)
        low = min(range(len(self.ratios)), key=lambda j: self.ratios[j])
        # state: stem width, head width, and per stage [kernel index, width, ratio index, depth]
        self.stem, self.head = s.width_min, s.width_min
        self.stages = [[small, s.width_min, low, s.min_depth] for _ in range(n)]
        if not self.fits(self.genome()):
            raise ValueError(f"even the smallest network of the space ({self.describe_cost(self.genome())}) "
                             f"exceeds the budget; raise the budget or lower width_min / min_depth")
        self.variables = [("stem", -1), ("head", -1)] + [(v, i) for i in range(n)
                                                         for v in ("kernel", "width", "ratio", "depth")]
        self.steps(burn_in * len(self.variables))

    def genome(self) -> Genome:
        s = self.space
        stages = tuple((self.kernels[k][0], self.kernels[k][1], w, s.round_width(w * self.ratios[r]), d)
                       for k, w, r, d in self.stages)
        return (self.stem, stages, self.head)

    def fits(self, genome: Genome) -> bool:
        flops, params, layers, _ = self.evaluator.cost(genome)
        b = self.budget
        return not ((b.flops is not None and flops > b.flops) or (b.params is not None and params > b.params)
                    or (b.layers is not None and layers > b.layers))

    def describe_cost(self, genome: Genome) -> str:
        flops, params, layers, _ = self.evaluator.cost(genome)
        return f"{flops / 1e9:.4f} GFLOPs, {params / 1e6:.3f} M params, {layers} layers"

    def _set(self, var: tuple[str, int], value: int) -> None:
        kind, i = var
        if kind == "stem":
            self.stem = value
        elif kind == "head":
            self.head = value
        else:
            self.stages[i][("kernel", "width", "ratio", "depth").index(kind)] = value

    def _get(self, var: tuple[str, int]) -> int:
        kind, i = var
        if kind in ("stem", "head"):
            return self.stem if kind == "stem" else self.head
        return self.stages[i][("kernel", "width", "ratio", "depth").index(kind)]

    def _feasible(self, var: tuple[str, int]) -> list[int]:
        """The values of ``var`` that fit with the others fixed: a prefix of an ascending grid for widths and
        depths (binary search), every fitting choice for kernels and ratios."""
        kind, i = var
        if kind in ("kernel", "ratio"):
            choices = range(len(self.kernels if kind == "kernel" else self.ratios))
            out = []
            for v in choices:
                self._set(var, v)
                if self.fits(self.genome()):
                    out.append(v)
            return out
        values = self.depths[i] if kind == "depth" else self.widths
        lo, hi = 0, len(values)  # values[:lo] fit, values[hi:] do not
        while lo < hi:
            mid = (lo + hi) // 2
            self._set(var, values[mid])
            if self.fits(self.genome()):
                lo = mid + 1
            else:
                hi = mid
        return values[:lo]

    def steps(self, n: int) -> None:
        rng = self.rng
        for _ in range(n):
            var = self.variables[rng.randrange(len(self.variables))]
            current = self._get(var)
            options = self._feasible(var)
            self._set(var, options[rng.randrange(len(options))] if options else current)

    def draw(self) -> Genome:
        self.steps(self.thin * len(self.variables))
        return self.genome()


class RandomSearch:
    name = "random"
    description = "uniform samples of the search space under the budget, ranked by the score (baseline)"
    needs = CPU_ONLY
    cli_options = {"iterations": "samples", "preset": "preset", "initial": "initial", "max_depth": "max_depth",
                   "kernels": "kernels"}
    quick_options = {"samples": 40}

    def check(self, request: SearchRequest) -> None:
        options = request.options
        check_known_options(self.name, options, OPTIONS)
        check_score(request)
        for key in ("samples", "chunk", "max_draws", "thin"):
            if key in options and (isinstance(options[key], bool) or not isinstance(options[key], int)
                                   or options[key] < 1):
                raise RequestError(f"options.{key}", f"strategy 'random': option {key!r} must be a positive "
                                                     f"integer, got {options[key]!r}")
        space, evaluator = self._space(request)
        try:
            UniformSampler(space, evaluator, replace(request.budget, latency_ms=None), random.Random(0), burn_in=0)
        except ValueError as exc:
            raise RequestError("budget.flops", str(exc)) from None

    def _space(self, request: SearchRequest) -> tuple[SearchSpace, Evaluator]:
        opts = {k: v for k, v in request.options.items() if k not in ("samples", "chunk", "max_draws", "thin")}
        try:
            config = search_config(replace(request, options=opts))
            template = config.initial_spec()
            space = config.space(template)
        except (ValueError, KeyError) as exc:
            message = str(exc.args[0] if isinstance(exc, KeyError) else exc)
            raise RequestError(field_of(message, request), message) from None
        return space, Evaluator(template, config.score, space=space, seed=request.seed)

    def search(self, request: SearchRequest, context: SearchContext | None = None) -> SearchOutcome:
        from ..progress import Progress  # noqa: PLC0415

        self.check(request)
        context = context or SearchContext()
        opts = dict(request.options)
        samples, chunk = opts.pop("samples", 1000), opts.pop("chunk", 100)
        max_draws, thin = opts.pop("max_draws", 100), opts.pop("thin", 2)
        space, evaluator = self._space(request)
        template = space.template
        start, cpu0 = time.perf_counter(), time.process_time()
        # latency is not monotone in the sampler's sense: the chain walks the FLOPs/params/layers-feasible set
        # and draws over the latency budget are skipped (uniform over the networks within every limit)
        sampler = UniformSampler(space, evaluator, replace(request.budget, latency_ms=None), random.Random(request.seed),
                                 thin=thin)
        constraint = latency_constraint(request, context, space)
        found: dict[Genome, float] = {}
        history: list[dict[str, Any]] = []
        draws = rejected = duplicates = invalid = 0
        name = request.name or f"random-seed{request.seed}"
        with Progress(samples, enabled=context.progress, unit="spec") as bar:
            while len(found) < samples:
                if draws >= max_draws * samples:
                    raise RuntimeError(f"strategy 'random': only {len(found)} of {samples} feasible specs after "
                                       f"{draws} draws; the budget leaves too little of the space")
                genome = sampler.draw()
                draws += 1
                if genome in found:
                    duplicates += 1
                    continue
                score = evaluator.evaluate(genome)[3]
                if score is None:
                    invalid += 1
                    continue
                if constraint is not None and not constraint(genome):
                    rejected += 1
                    continue
                found[genome] = score
                bar.update(1)
                if len(found) % chunk == 0 or len(found) == samples:
                    scores = list(found.values())
                    history.append({"step": len(found), "total_iterations": len(found), "draws": draws,
                                    "rejected": rejected, "duplicates": duplicates, "invalid": invalid,
                                    "acceptance_rate": len(found) / draws, "best": max(scores),
                                    "median": statistics.median(scores),
                                    "wall_s": time.perf_counter() - start})
        ranked = sorted(found.items(), key=lambda kv: -kv[1])  # stable: equal scores keep draw order
        candidates = [Candidate.of(space.decode(g, name if r == 0 else f"{name}-{r:03d}"), s, source=self.name,
                                   info={"draw_order": list(found).index(g)} if r < 16 else {})
                      for r, (g, s) in enumerate(ranked)]
        settings = {"samples": samples, "chunk": chunk, "max_draws": max_draws, "thin": thin,
                    "budget": request.budget.to_dict(),
                    "clip": {"frames": request.clip.frames, "size": request.clip.size}, "seed": request.seed,
                    "score": request.score, "template": template.name, "space": space.settings.to_dict()}
        return SearchOutcome(strategy=self.name, score_name=request.score, candidates=candidates, history=history,
                             settings=settings, wall_s=time.perf_counter() - start,
                             cpu_s=time.process_time() - cpu0,
                             extra={"iterations": samples, "draws": draws, "acceptance_rate": samples / draws})


STRATEGY = register_strategy(RandomSearch())
