"""Before a comparison starts: how long will it take? An estimate from a few timed steps on this machine.

Timed here, in the driver, in a few seconds: decoding a few training videos at the clip (``decode_s`` per
clip), a training step and an evaluation pass of a network at the budget (a uniform draw of the space at the
budget: a typical arm's network) and of each zoo network, and a short run of each analytic strategy. Then

    training  = epochs x train videos x (step / batch + decode / CPUs)  +  views x (forward + decode) + overhead
    supernet search (dnas, parsec, fusion) = its epochs x train videos x step / batch x ``SUPERNET_FACTOR``

Ray Train runs one network at a time on a small machine and several on a large one, so the total divides by
the number that fit (:func:`pipeline.train.plan_resources`). It is an estimate: the supernets' factor is a
rough measurement on these machines (docs/compare.md), and contention between processes is not modelled.
"""
from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

SUPERNET_FACTOR = 3.0  # a supernet step vs a step of a network at the budget (measured: docs/compare.md)
FIT_OVERHEAD_S = 15.0  # starting a Ray Train run (controller, worker, datasets) on these machines
DEFAULT_EPOCHS = {"dnas": 70, "parsec": 30, "fusion": 15}


def _time_decode(dataset: Any, clip: Any, n: int = 4) -> float:
    from pipeline.video.decode import VideoDecodeError, decode_clip  # noqa: PLC0415

    times = []
    for item in dataset.train[:n]:
        t0 = time.perf_counter()
        try:
            decode_clip(item.path, clip.frames, clip.sampling_rate, 0.5, size=clip.size)
        except VideoDecodeError:
            continue
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) if times else 0.05


def _time_network(spec: Any, batch: int, threads: int) -> tuple[float, float]:
    """(seconds per training step at ``batch``, seconds per evaluated clip) of ``spec``, random inputs."""
    import torch  # noqa: PLC0415

    from e3d.model import build_model  # noqa: PLC0415

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = build_model(spec)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        x = torch.randn(batch, 3, spec.frames, spec.size, spec.size)
        y = torch.randint(0, spec.num_classes, (batch,))
        steps = []
        for _ in range(3):
            t0 = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps.append(time.perf_counter() - t0)
        model.eval()
        with torch.no_grad():
            t0 = time.perf_counter()
            model(x)
            forward = (time.perf_counter() - t0) / batch
        return float(np.median(steps[1:])), forward
    finally:
        torch.set_num_threads(before)


def _time_search(arm: Any, settings: Any) -> float:
    """Seconds of one analytic search, from a run at a tenth of its iterations (at most 2000)."""
    from dataclasses import replace  # noqa: PLC0415

    from e3d.strategy import get_strategy  # noqa: PLC0415

    from .arms import arm_request  # noqa: PLC0415

    request = arm_request(arm, settings, 0)
    key = "samples" if arm.strategy == "random" else "iterations"
    full = int(request.options.get(key, 1000 if key == "samples" else 20_000))
    if arm.is_baseline or full <= 200:
        return 0.5
    short = max(100, min(2000, full // 10))
    t0 = time.perf_counter()
    get_strategy(arm.strategy).search(replace(request, options=dict(request.options) | {key: short}))
    return (time.perf_counter() - t0) * full / short


def estimate_hours(config: Any, plan: Any, dataset: Any) -> dict[str, Any]:
    """The plan's expected wall time: ``{"total_h", "searches_h", "trainings_h", "how"}``."""
    import ray  # noqa: PLC0415

    from e3d.strategies.random import RandomSearch  # noqa: PLC0415
    from e3d.strategy import SearchRequest  # noqa: PLC0415

    from e3d.zoo import get  # noqa: PLC0415

    cpus = max(1, int(ray.cluster_resources().get("CPU", os.cpu_count() or 1)))
    settings = config.search_settings(len(dataset.classes))
    typical = RandomSearch().search(SearchRequest(budget=settings.budget, clip=settings.clip, seed=0,
                                                  score="flops", num_classes=settings.num_classes,
                                                  options={"samples": 1})).best.spec
    batch = config.recipe.batch_size
    threads = min(cpus, os.cpu_count() or 1)
    decode = _time_decode(dataset, config.clip)
    timed: dict[str, tuple[float, float]] = {}

    def network_time(spec: Any) -> tuple[float, float]:
        key = spec.to_json()
        if key not in timed:
            timed[key] = _time_network(spec, batch, threads)
        return timed[key]

    n_train, views = len(dataset.train), len(dataset.val) * config.eval_clips * config.eval_crops
    data_share = decode / max(1, cpus - 1)

    def training_s(spec: Any) -> float:
        step, forward = network_time(spec)
        epoch = n_train * (step / batch + data_share) + len(dataset.val) * (forward + data_share)
        return config.recipe.epochs * epoch + views * (forward + data_share) + FIT_OVERHEAD_S

    train_s = 0.0
    for arm, _seed in plan.trainings:  # zoo networks are timed as themselves, searched arms as the typical network
        spec = typical if arm.searches else get(arm.zoo).with_input(config.clip.frames, config.clip.size)
        train_s += training_s(spec)
    search_s, free_s = 0.0, {}
    step, _ = network_time(typical)
    for arm, _seed in plan.searches:
        if arm.training_free:
            if arm.name not in free_s:
                free_s[arm.name] = _time_search(arm, settings)
            search_s += free_s[arm.name] / cpus  # parallel Ray tasks
        else:
            epochs = int(config.options.get(arm.strategy, {}).get("epochs", DEFAULT_EPOCHS.get(arm.strategy, 10)))
            search_s += epochs * n_train * (step * SUPERNET_FACTOR / batch + data_share) + FIT_OVERHEAD_S
    total = search_s + train_s
    how = (f"{len(plan.searches)} searches ~{search_s / 3600:.2f} h, {len(plan.trainings)} trainings "
           f"~{train_s / 3600:.2f} h; timed: decode {decode * 1e3:.0f} ms/clip, a {batch}-clip step of a network "
           f"at the budget {step:.2f} s, {cpus} CPUs")
    return {"total_h": total / 3600, "searches_h": search_s / 3600, "trainings_h": train_s / 3600, "how": how}
