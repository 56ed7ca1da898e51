"""Searches at equal budget: the EA with each of ``search_scores`` (or one uniform draw, ``random``), their winners
and what they cost, as parallel Ray tasks."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

from .config import RANDOM, StudyConfig


@dataclass
class SearchRecord:
    """One search of the study: which score (or ``random``), its winner and what it cost."""

    search: str
    strategy: str
    score: str
    winner: str
    spec: dict[str, Any]
    best_score: float
    gflops: float
    cpu_s: float | None
    wall_s: float
    iterations: int
    population: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def search_request(score: str, *, frames: int, size: int, gflops: float, max_layers: int, iterations: int,
                   population: int, seed: int, num_classes: int) -> tuple[str, Any]:
    """``(strategy name, SearchRequest)`` of one search of the study: the EA ranking by ``score``, or for
    ``random`` one uniform draw under the budget (with a finite STEntr): the no-proxy baseline."""
    from e3d.strategy import Budget, Clip, SearchRequest

    if score == RANDOM:
        strategy, rank_by, options = "random", "stentr", {"samples": 1}
    else:
        strategy, rank_by, options = "evolution", score, {"population_size": population, "iterations": iterations,
                                                          "chunk": max(1, iterations)}
    return strategy, SearchRequest(budget=Budget(flops=gflops * 1e9, layers=max_layers), clip=Clip(frames, size),
                                   seed=seed, score=rank_by, num_classes=num_classes, options=options,
                                   name=f"win-{score}")


def search_one(score: str, **kwargs: Any) -> dict[str, Any]:
    """Run one search of the study in this process (one torch thread) and return its record (see
    :func:`search_request` for the arguments)."""
    import torch

    from e3d.strategy import SearchContext, get_strategy

    torch.set_num_threads(1)
    strategy, request = search_request(score, **kwargs)
    outcome = get_strategy(strategy).search(request, SearchContext(progress=False))
    best = outcome.best
    return SearchRecord(search=score, strategy=strategy, score=request.score, winner=f"win-{score}",
                        spec=best.spec.replace(name=f"win-{score}").to_dict(), best_score=float(best.score),
                        gflops=best.flops / 1e9, cpu_s=outcome.cpu_s, wall_s=outcome.wall_s,
                        iterations=0 if score == RANDOM else kwargs["iterations"],
                        population=0 if score == RANDOM else kwargs["population"]).to_dict()


def search_kwargs(config: StudyConfig, num_classes: int) -> dict[str, Any]:
    return dict(frames=config.clip_frames, size=config.clip_size,
                gflops=config.search_gflops or config.gflops_range[1], max_layers=config.max_layers,
                iterations=config.search_iterations, population=config.search_population, seed=config.seed,
                num_classes=num_classes)


def run_searches(config: StudyConfig, num_classes: int, done: Mapping[str, dict]) -> dict[str, dict]:
    """Every search of ``config.search_scores`` not in ``done``, as parallel Ray tasks (one CPU each)."""
    todo = [s for s in config.search_scores if s not in done]
    if not todo:
        return dict(done)
    import ray

    kwargs = search_kwargs(config, num_classes)
    task = ray.remote(num_cpus=1)(search_one)
    refs = {s: task.remote(s, **kwargs) for s in todo}
    print(f"[proxy-study] {len(todo)} search(es) at {kwargs['gflops']:.4f} GFLOPs, {config.search_iterations} "
          f"iterations x population {config.search_population}: {', '.join(todo)}")
    out = dict(done)
    for s, ref in refs.items():
        out[s] = ray.get(ref)
        cpu = out[s]["cpu_s"]
        print(f"[proxy-study] search {s}: winner {out[s]['gflops']:.4f} GFLOPs, score {out[s]['best_score']:.3f}, "
              f"{cpu if cpu is None else round(cpu, 1)} CPU-s")
    return out
