"""The models of the study: specs sampled from the search space, stratified by FLOPs, plus zoo references."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from e3d import zoo
from e3d.spec import ArchSpec

from .config import StudyConfig, StudyError


@dataclass
class Model:
    """A model of the study: its spec at the clip (and the data's classes) and where it came from
    (``sample``, ``zoo`` or ``search:<score>``)."""

    name: str
    source: str
    spec: ArchSpec

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "spec": self.spec.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Model":
        return cls(d["name"], d["source"], ArchSpec.from_dict(d["spec"]))


def sample_specs(n: int, *, frames: int, size: int, gflops: tuple[float, float], seed: int = 0,
                 max_layers: int = 83, num_classes: int | None = None, max_draws: int = 400,
                 reject: Callable[[ArchSpec], bool] | None = None) -> list[ArchSpec]:
    """``n`` distinct specs of the E3D search space at ``frames x size^2``, one per log-spaced FLOPs band of
    ``gflops``, each uniform among the feasible specs of its band (seeded)."""
    from e3d.evaluator import Evaluator
    from e3d.space import SearchSpace
    from e3d.strategies.random import UniformSampler
    from e3d.strategy import Budget

    lo, hi = gflops[0] * 1e9, gflops[1] * 1e9
    template = zoo.initial_structure("S").with_input(frames, size)
    if num_classes is not None:
        template = template.with_num_classes(num_classes)
    space = SearchSpace.of(template)
    evaluator = Evaluator(template, "flops", space=space)
    rng = random.Random(seed)
    edges = [lo * (hi / lo) ** (i / n) for i in range(n + 1)]
    seen: set = set()
    specs: list[ArchSpec] = []
    for i in range(n):
        try:
            sampler = UniformSampler(space, evaluator, Budget(flops=edges[i + 1], layers=max_layers), rng)
        except ValueError as exc:
            raise StudyError("gflops", f"no network of the space fits {edges[i + 1] / 1e9:.4f} GFLOPs at "
                             f"{frames}x{size}^2 ({exc}); raise the FLOPs range") from None
        for _ in range(max_draws):
            genome = sampler.draw()
            flops = evaluator.cost(genome)[0]
            if flops < edges[i] or genome in seen:
                continue
            spec = space.decode(genome, f"s{i:02d}-{flops / 1e9:.3f}G")
            if reject is not None and reject(spec):
                continue
            seen.add(genome)
            specs.append(spec)
            break
        else:
            raise StudyError("gflops", f"no usable spec in the band {edges[i] / 1e9:.4f}-{edges[i + 1] / 1e9:.4f} "
                             f"GFLOPs after {max_draws} draws; widen the range or use fewer models")
    return specs


def infinite_stentr(spec: ArchSpec) -> bool:
    from e3d.scores import InfiniteScoreError, stentr

    try:
        stentr(spec)
        return False
    except InfiniteScoreError:
        return True


def cannot_run(spec: ArchSpec) -> str | None:
    """Why the network of ``spec`` cannot run on its own clip size (an op torch refuses at that size; the
    check is cheap), or None. A forward on the meta device: shapes only, no compute."""
    import torch

    from e3d.model import build_model

    try:
        with torch.device("meta"):
            build_model(spec)(torch.empty(1, 3, spec.frames, spec.size, spec.size))
    except (RuntimeError, ValueError) as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return None


def at_clip(spec: ArchSpec, config: StudyConfig, num_classes: int) -> ArchSpec:
    return spec.with_input(config.clip_frames, config.clip_size).with_num_classes(num_classes).replace(
        sampling_rate=config.sampling_rate)


def make_models(config: StudyConfig, num_classes: int) -> list[Model]:
    """The sampled models plus the zoo references, at the clip."""
    need_stentr = "stentr" in config.score_list

    def reject(spec: ArchSpec) -> bool:  # what a search would refuse, or what cannot be trained
        return (need_stentr and infinite_stentr(spec)) or cannot_run(spec) is not None

    specs = sample_specs(config.models, frames=config.clip_frames, size=config.clip_size,
                         gflops=config.gflops_range, seed=config.seed, max_layers=config.max_layers,
                         num_classes=num_classes, reject=reject)
    models = [Model(s.name, "sample", at_clip(s, config, num_classes)) for s in specs]
    for name in config.zoo:
        spec = at_clip(zoo.get(name), config, num_classes)
        problem = cannot_run(spec)
        if problem:
            raise StudyError("zoo", f"{name} cannot run at {config.clip_frames}x{config.clip_size}^2: {problem}")
        models.append(Model(name, "zoo", spec))
    return models
