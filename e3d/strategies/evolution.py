"""``evolution``: the E3D paper's maximum-entropy evolutionary search (Algorithm 1, :mod:`e3d.evolution`).

Options (``SearchRequest.options``): any :class:`~e3d.evolution.SearchConfig` field the request does not
set itself (``population_size``, ``iterations``, ``preset``, ``initial``, ``chunk``) and any space setting
(``max_depth``, ``kernels``, ``mutation_probs``, ...). The request gives the budget, the clip, the seed and
the score. Backends: this process (default), or whatever ``SearchContext.evolution_backend`` runs, e.g.
the Ray island actors of :mod:`pipeline.search` (``run(config, out_dir=..., tracking=..., progress=...)``
returning an object with ``population``, ``history`` and ``island_history``).
"""
from __future__ import annotations

import time
from dataclasses import fields
from typing import Any

from ..evolution import SearchConfig, outcome_from_population, run_name
from ..space import SpaceSettings
from ..strategy import (CPU_ONLY, RequestError, SearchContext, SearchOutcome, SearchRequest, check_known_options,
                        check_score, check_start, register_strategy)

# set by the request, not by options
_FROM_REQUEST = ("budget_flops", "budget_params", "max_layers", "frames", "size", "seed", "score")
OPTIONS = tuple(f.name for f in fields(SearchConfig) if f.name not in _FROM_REQUEST + ("space_settings",)) + tuple(
    f.name for f in fields(SpaceSettings))


def search_config(request: SearchRequest) -> SearchConfig:
    """The EA's full config: the request's budget, clip, seed and score, plus the options."""
    b = request.budget
    if b.flops is None:
        raise ValueError("strategy 'evolution' needs a FLOPs budget")
    base = {"budget_flops": b.flops, "budget_params": b.params, "max_layers": b.layers,
            "frames": request.clip.frames, "size": request.clip.size, "seed": request.seed, "score": request.score}
    options = dict(request.options)
    preset = options.pop("preset", "S")
    return SearchConfig.from_preset(preset, **(options | base)) if preset else SearchConfig.from_dict(options | base)


def field_of(message: str, request: SearchRequest) -> str:
    """The request field a config error is about (for the message that names the option to change)."""
    if request.budget.flops is None:
        return "budget.flops"
    for name, field in (("max_layers", "budget.layers"), ("budget_params", "budget.params"),
                        ("budgets", "budget.flops"), ("initial structure", "options.initial")):
        if name in message:
            return field
    for name in OPTIONS:
        if name in message:
            return f"options.{name}"
    return "options"


def latency_constraint(request: SearchRequest, context: SearchContext, space: Any):
    """A genome -> "within the latency budget" check from ``context.latency`` (a spec -> ms callable or an
    object with ``predict``); None without a latency budget."""
    if request.budget.latency_ms is None:
        return None
    if context.latency is None:
        raise RequestError("budget.latency_ms", "a latency budget needs a latency predictor (SearchContext.latency;"
                                                " the jobs build one from --latency-device)")
    predict = getattr(context.latency, "predict", context.latency)
    limit = request.budget.latency_ms
    return lambda genome: predict(space.decode(genome)) <= limit


class EvolutionStrategy:
    name = "evolution"
    description = "E3D's evolutionary search maximising a score under the budget (Algorithm 1); Ray islands"
    needs = CPU_ONLY
    cli_options = {"iterations": "iterations", "population": "population_size", "preset": "preset",
                   "initial": "initial", "max_depth": "max_depth", "kernels": "kernels",
                   "mutation_probs": "mutation_probs"}
    quick_options = {"iterations": 400, "population_size": 16}
    # what the pipeline asks of a strategy (``getattr(strategy, name, False)``; the other strategies declare none):
    resumable = True  # on islands, a stopped search continues from request.out_dir's checkpoint (``--resume``)
    tunable = True  # pipeline.search.tune_search tunes its settings (jobs/tune_search.py)
    settings_file = "config.json"  # outcome.settings, the full SearchConfig, as a file that ``--config`` reads

    def runs_on_islands(self, request: SearchRequest, context: SearchContext) -> bool:
        """Whether ``request`` runs on the lent island backend (``SearchContext.evolution_backend``), which
        checkpoints rounds under ``request.out_dir`` (a folder or a pyarrow URI): not without one, and not
        under a latency budget (its predictor stays in this process)."""
        return context.evolution_backend is not None and request.budget.latency_ms is None

    def check(self, request: SearchRequest) -> None:
        check_known_options(self.name, request.options, OPTIONS)
        check_score(request)
        try:
            config = search_config(request)
            start = config.initial_spec()
        except (ValueError, KeyError) as exc:
            message = str(exc.args[0] if isinstance(exc, KeyError) else exc)
            raise RequestError(field_of(message, request), message) from None
        check_start(start, request, "the initial structure")

    def search(self, request: SearchRequest, context: SearchContext | None = None) -> SearchOutcome:
        from ..evolution import search  # noqa: PLC0415

        self.check(request)
        context = context or SearchContext()
        config = search_config(request)
        name = request.name or run_name(config)
        start, cpu0 = time.perf_counter(), time.process_time()
        constraint = latency_constraint(request, context, config.space(config.initial_spec()))
        if not self.runs_on_islands(request, context):
            result = search(config, progress=context.progress, constraint=constraint)
            history = [h.to_dict() for h in result.history]
            cpu_s = time.process_time() - cpu0
            extra: dict[str, Any] = {"iterations": sum(h["iterations"] for h in history), "backend": "process"}
        else:
            result = context.evolution_backend.run(config, out_dir=request.out_dir, tracking=context.tracking,
                                                   progress=context.progress)
            history = [h.to_dict() for h in result.history]
            # each island is a single-threaded loop: its busy wall time is its CPU time
            cpu_s = sum(float(r.get("wall_s", 0.0)) for r in getattr(result, "island_history", []))
            extra = {"iterations": result.iterations, "backend": "islands", "islands": result.settings.actors,
                     "restarts": result.restarts}
        return outcome_from_population(result.population, history, config=config, name=name, best_name=name,
                                       wall_s=time.perf_counter() - start, cpu_s=cpu_s, extra=extra)


STRATEGY = register_strategy(EvolutionStrategy())
