"""The measurements of ``docs/parsec.md``: Table 1 (the cost coefficient beta) on the synthetic data, and the
comparison on a real dataset (the searched net vs random search in the FLOPs band vs the ``evolution`` winner).

    from pipeline.parsec.experiments import BandComparisonSettings, Table1Settings, compare, table1
    table1(Table1Settings(out="runs/parsec-table1"))                    # beta in {0, .05, .1, .2}
    compare(BandComparisonSettings(data="../shared/data/ucf101-6class-dev", out="runs/parsec-ucf"))

The command line is ``jobs/parsec_experiments.py`` (``table1`` and ``compare``). Both run the ``parsec`` strategy
exactly as the main job does (Ray Train, checkpoints: a rerun with the same ``out`` resumes), on the Ray the
caller started (``ray.init``; the job's ``--address``/``--num-cpus``). ``table1`` decodes the synthetic clips once
(centre views) and searches on them in memory; ``compare`` searches on the dataset through Ray Data and trains
every compared network with the same recipe through :func:`pipeline.train.train_candidates` (the band:
:mod:`e3d.parsec.band`). The settings' defaults are reduced-scale runs that fit this machine (2 shared cores);
docs/parsec.md gives the values of a full run.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from e3d.strategy import Budget, Clip, SearchContext, SearchRequest, get_strategy
from pipeline.context import RayTrainer


@dataclass(frozen=True)
class Table1Settings:
    """Table 1 on the synthetic motion dataset: one ``parsec`` search per cost coefficient in ``betas``, each
    with the FLOPs range [``t_min``, ``t_max``] (FLOPs = multiply-accumulates), under ``out/beta-<beta>``."""

    out: str
    betas: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2)
    epochs: int = 8
    samples: int = 13  # K architectures per step
    batch_size: int = 4
    lr: float = 0.02  # the weights' learning rate
    arch_lr: float = 0.05  # Adam's rate for alpha (Table 2: 0.015, for 800 epochs)
    t_min: float = 0.0285e9
    t_max: float = 0.03e9
    frames: int = 8
    size: int = 40
    sampling_rate: int = 4
    classes: int = 4  # of the synthetic dataset
    clips_per_class: int = 24
    seed: int = 0  # the searches' seed
    data_seed: int = 0  # the synthetic dataset's seed

    def __post_init__(self):
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))  # a list given: the same record

    def search_options(self, beta: float) -> dict[str, Any]:
        """The ``parsec`` strategy's options of the search at ``beta``."""
        return {"epochs": self.epochs, "samples": self.samples, "beta": beta, "batch_size": self.batch_size,
                "arch_lr": self.arch_lr, "lr": self.lr, "t_max": self.t_max, "t_min": self.t_min}

    def search_request(self, beta: float, out: Path | str | None = None) -> SearchRequest:
        """The ``parsec`` request of the search at ``beta`` (written under ``out``)."""
        return SearchRequest(budget=Budget(flops=self.t_max), clip=Clip(self.frames, self.size), seed=self.seed,
                             options=self.search_options(beta), out_dir=None if out is None else str(out),
                             num_classes=self.classes)


@dataclass(frozen=True)
class BandComparisonSettings:
    """The comparison on a real dataset (``data``, any supported format): PARSEC's most probable net (range
    [``t_min``, ``t_max``], ``search_epochs``), ``band`` random nets of the same FLOPs band and the ``evolution``
    winner at the searched net's FLOPs, all trained for ``train_epochs`` with one recipe, under ``out``."""

    data: str
    out: str
    t_max: float = 0.06e9  # upper end of the FLOPs range (and budget)
    t_min: float = 0.054e9
    beta: float = 0.1
    search_epochs: int = 10  # PARSEC epochs (Table 2: 800 + 400)
    samples: int = 13
    arch_lr: float = 0.015
    train_epochs: int = 8  # epochs of every compared network
    batch_size: int = 8
    lr: float = 0.02
    band: int = 6  # random nets of the band (supplement §5: 16)
    evo_iterations: int = 20_000
    evo_population: int = 64
    frames: int = 8
    size: int = 56
    sampling_rate: int = 4
    eval_clips: int = 2
    seed: int = 0

    def search_options(self) -> dict[str, Any]:
        """The ``parsec`` strategy's options of the search."""
        return {"epochs": self.search_epochs, "samples": self.samples, "beta": self.beta, "t_max": self.t_max,
                "t_min": self.t_min, "arch_lr": self.arch_lr, "batch_size": self.batch_size, "lr": self.lr}

    def search_request(self, num_classes: int, out: Path | str | None = None) -> SearchRequest:
        """The ``parsec`` request of the search on a dataset of ``num_classes`` (written under ``out``)."""
        return SearchRequest(budget=Budget(flops=self.t_max), clip=Clip(self.frames, self.size, self.sampling_rate),
                             seed=self.seed, options=self.search_options(), out_dir=None if out is None else str(out),
                             num_classes=num_classes)


def decoded_source(dataset: Any, clip: Any, *, seed: int = 0):
    """A :class:`pipeline.train.data.TensorSource` of every video's centre clip (decoded once, one process)."""
    from pipeline.train.data import TensorSource
    from pipeline.video.decode import decode_clip
    from pipeline.video.transforms import center_crop, normalize

    def load(items):
        xs, ys = [], []
        for it in items:
            c = decode_clip(it.path, clip.frames, clip.sampling_rate, 0.5, size=clip.size, short=clip.short)
            xs.append(normalize(center_crop(c, clip.size), clip.mean, clip.std))
            ys.append(int(it.label))
        return np.stack(xs), np.asarray(ys)

    tx, ty = load(dataset.train)
    vx, vy = load(dataset.val)
    return TensorSource(tx, ty, vx, vy, list(dataset.classes), sampling_rate=clip.sampling_rate)


def run_search(source: Any, request: SearchRequest) -> Any:
    """The ``parsec`` strategy's ``request`` on ``source``, its outputs under ``request.out_dir`` (resumed when
    there)."""
    from e3d.search_io import read_outcome, write_outcome

    done = read_outcome(request.out_dir)
    if done is not None:
        return done
    strategy = get_strategy("parsec")
    strategy.check(request)
    outcome = strategy.search(request, SearchContext(dataset=source, trainer=RayTrainer()))
    write_outcome(request.out_dir, outcome)
    return outcome


# -- Table 1 --------------------------------------------------------------------------------------------
def table1(settings: Table1Settings) -> dict[str, Any]:
    """One ``parsec`` search per beta on the synthetic data (resumed when done), then the table: writes
    ``table1.json`` and ``table1.md`` to ``settings.out`` and returns the record of ``table1.json``."""
    from pipeline.search_and_train import DataConfig, load_data
    from pipeline.video.clip import ClipConfig

    s = settings
    out = Path(s.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    dataset = load_data(DataConfig(synthetic={"num_classes": s.classes, "clips_per_class": s.clips_per_class,
                                              "frames": 32, "size": 64}), out, seed=s.data_seed)
    clip = ClipConfig(frames=s.frames, sampling_rate=s.sampling_rate, size=s.size, train_scale=(s.size, s.size),
                      hflip=False)
    t0 = time.perf_counter()
    source = decoded_source(dataset, clip)
    decode_s = time.perf_counter() - t0
    rows = []
    for beta in s.betas:
        outcome = run_search(source, s.search_request(beta, out / f"beta-{beta:g}"))
        h = outcome.history
        rows.append({"beta": beta, "t_min_gflops": s.t_min / 1e9, "t_max_gflops": s.t_max / 1e9,
                     "mode_gflops": outcome.extra["mode_gflops"], "expected_gflops": outcome.extra["expected_gflops"],
                     "in_band": outcome.extra["mode_in_band"], "entropy": outcome.extra["entropy"],
                     "mode_gflops_by_epoch": [round(r["mode_gflops"], 5) for r in h],
                     "expected_gflops_by_epoch": [round(r["expected_gflops"], 5) for r in h],
                     "val_top1_last": h[-1].get("val_top1"), "wall_s": outcome.wall_s, "cpu_s": outcome.cpu_s,
                     "width_scale": outcome.settings["space"]["width_scale"]})
        print(f"[table1] beta {beta:g}: mode {rows[-1]['mode_gflops']:.4f} G, expected "
              f"{rows[-1]['expected_gflops']:.4f} G, range [{s.t_min / 1e9:.4f}, {s.t_max / 1e9:.4f}]")
    from e3d.parsec.space import SpaceConfig, TwoStreamSpace

    space = TwoStreamSpace(SpaceConfig(width_scale=rows[0]["width_scale"]), frames=s.frames, size=s.size,
                           num_classes=s.classes)
    rng = np.random.default_rng(0)
    flops = np.array([space.flops(tuple(int(rng.integers(n)) for n in space.sizes)) for _ in range(5000)])
    share = {"below": float(np.mean(flops < s.t_min)), "in": float(np.mean((flops >= s.t_min) & (flops <= s.t_max))),
             "above": float(np.mean(flops > s.t_max)), "median_gflops": float(np.median(flops) / 1e9)}
    result = {"rows": rows, "space_share_uniform": share, "decode_s": decode_s, "settings": asdict(s)}
    (out / "table1.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (out / "table1.md").write_text(table1_markdown(rows, share) + "\n")
    print(table1_markdown(rows, share))
    return result


def table1_markdown(rows: Sequence[dict[str, Any]], share: dict[str, float]) -> str:
    lines = ["| beta | T_min (G) | T_max (G) | derived arch. GFLOPs | in range | expected GFLOPs | entropy |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['beta']:g} | {r['t_min_gflops']:.4f} | {r['t_max_gflops']:.4f} | "
                     f"{r['mode_gflops']:.4f} | {'yes' if r['in_band'] else 'no'} | {r['expected_gflops']:.4f} | "
                     f"{r['entropy']:.2f} |")
    lines.append(f"\nUniform over the space: {100 * share['below']:.1f} % below the range, {100 * share['in']:.1f} % "
                 f"in it, {100 * share['above']:.1f} % above (median {share['median_gflops']:.4f} G).")
    return "\n".join(lines)


# -- the comparison on a real dataset -----------------------------------------------------------------------
def compare(settings: BandComparisonSettings) -> dict[str, Any]:
    """PARSEC's most probable net vs ``settings.band`` random nets of the FLOPs band vs the ``evolution`` winner at
    the searched net's FLOPs, all trained with one recipe (finished searches and trainings are read back): writes
    ``compare.json`` and ``compare.md`` to ``settings.out`` and returns the record of ``compare.json``."""
    from e3d.parsec.band import band_median, band_specs
    from e3d.parsec.space import SpaceConfig, TwoStreamSpace
    from e3d.search_io import read_outcome, write_outcome
    from pipeline.train import train_candidates
    from pipeline.train.recipe import Recipe
    from pipeline.video.clip import ClipConfig
    from pipeline.video.formats import load_dataset

    s = settings
    out = Path(s.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    dataset = load_dataset(s.data, seed=s.seed)
    clip = ClipConfig(frames=s.frames, sampling_rate=s.sampling_rate, size=s.size,
                      train_scale=(s.size, round(s.size * 8 / 7)), hflip=True)
    recipe = Recipe.paper("sthsth").scaled(epochs=s.train_epochs, batch_size=s.batch_size, lr=s.lr, init="torch")
    num_classes = len(dataset.classes)
    clip_req = Clip(s.frames, s.size, s.sampling_rate)

    evo_options = {"iterations": s.evo_iterations, "population_size": s.evo_population}

    # 1. PARSEC on the dataset (Ray Data decoding, Ray Train), as the main job runs it
    parsec_dir = out / "search-parsec"
    outcome = read_outcome(parsec_dir)
    if outcome is None:
        request = s.search_request(num_classes, parsec_dir)
        outcome = get_strategy("parsec").search(request, SearchContext(dataset=dataset, clip=clip, recipe=recipe,
                                                                       trainer=RayTrainer()))
        write_outcome(parsec_dir, outcome)
    searched = outcome.best.spec.replace(name="parsec")
    searched_flops = outcome.best.flops
    print(f"[compare] parsec: {searched_flops / 1e9:.4f} GFLOPs in {outcome.wall_s:.0f} s")

    # 2. the evolution winner at the searched net's FLOPs (analytic, STEntr, single-stream E3D blocks)
    evo_dir = out / "search-evolution"
    evo = read_outcome(evo_dir)
    if evo is None:
        initial = evolution_initial(out, s.frames, s.size, searched_flops)
        if initial is not None:
            evo_options["initial"] = initial
        request = SearchRequest(budget=Budget(flops=searched_flops), clip=clip_req, seed=s.seed,
                                options=evo_options, out_dir=str(evo_dir), num_classes=num_classes)
        evo = get_strategy("evolution").search(request, SearchContext(progress=False))
        write_outcome(evo_dir, evo)
    evolution = evo.best.spec.replace(name="evolution")

    # 3. random search in the same FLOPs band, the same space
    space_cfg = SpaceConfig.from_options(outcome.settings["space"])
    space = TwoStreamSpace(space_cfg, frames=s.frames, size=s.size, num_classes=num_classes)
    t_min, t_max = outcome.settings["t_min"], outcome.settings["t_max"]
    band = band_specs(space, t_min, t_max, s.band, seed=s.seed)

    # 4. one recipe for all
    specs = [searched, evolution] + band
    results = train_candidates(specs, dataset, clip=clip, recipe=recipe, tracking=None, out_dir=out / "train",
                               eval_clips=s.eval_clips, eval_crops=3, seed=s.seed, log_model=False)
    rows = [{"name": r.name, "family": spec.family, "gflops": r.flops / 1e9, "mparams": r.params / 1e6,
             "val_top1": r.val_top1, "mv_top1": r.mv_top1, "mv_top5": r.mv_top5, "train_time_s": r.train_time_s,
             "error": r.error} for spec, r in zip(specs, results)]
    summary = {"rows": rows, "band_median_mv_top1": band_median(results[2:]),
               "band_median_val_top1": band_median(results[2:], "val_top1"),
               "parsec_search": {"wall_s": outcome.wall_s, "cpu_s": outcome.cpu_s, "epochs": len(outcome.history),
                                 "steps": outcome.extra.get("search_steps"),
                                 "mode_gflops": outcome.extra["mode_gflops"],
                                 "in_band": outcome.extra["mode_in_band"]},
               "evolution_search": {"wall_s": evo.wall_s, "cpu_s": evo.cpu_s, "gflops": evo.best.flops / 1e9},
               "band": [t_min / 1e9, t_max / 1e9], "total_wall_s": time.perf_counter() - t_start,
               "settings": asdict(s), "videos": {"train": len(dataset.train), "val": len(dataset.val)}}
    (out / "compare.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    text = compare_markdown(summary)
    (out / "compare.md").write_text(text + "\n")
    print(text)
    return summary


def evolution_initial(out: Path, frames: int, size: int, budget: float) -> str | None:
    """None when Table 8's initial structure costs at most half the budget at the clip (the EA's default start);
    else Table 8 at half its widths (head included), written to ``out/evolution-initial.json``: small clips
    make the default start too dear for small budgets."""
    from e3d import zoo
    from e3d.channels import round_channels
    from e3d.cost import cost
    from e3d.spec import save_specs

    def halved(width: int) -> int:
        return round_channels(width / 2, 8, ties="up")

    spec = zoo.initial_structure("S").with_input(frames, size)
    if cost(spec).flops <= budget / 2:
        return None
    half = spec.replace(name="E3D-init-half", stem=spec.stem.__class__(spec.stem.kernel, halved(spec.stem.out),
                                                                      spec.stem.stride),
                        stages=tuple(s.__class__(s.kernel, halved(s.out), halved(s.bottleneck), s.layers, s.stride)
                                     for s in spec.stages),
                        head=spec.head.__class__(spec.head.kernel, halved(spec.head.out), spec.head.stride))
    path = out / "evolution-initial.json"
    save_specs(half, path)
    return str(path)


def compare_markdown(summary: dict[str, Any]) -> str:
    lines = ["| network | family | GFLOPs | params (M) | val top-1 (last epoch) | multi-view top-1 | top-5 | train s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        lines.append(f"| {r['name']} | {r['family']} | {r['gflops']:.4f} | {r['mparams']:.2f} | {r['val_top1']:.1f} | "
                     f"{r['mv_top1']:.1f} | {r['mv_top5']:.1f} | {r['train_time_s']:.0f} |"
                     + (f" failed: {r['error']}" if r["error"] else ""))
    p, e = summary["parsec_search"], summary["evolution_search"]
    lines.append(f"\nRandom band [{summary['band'][0]:.4f}, {summary['band'][1]:.4f}] G: median multi-view top-1 "
                 f"{summary['band_median_mv_top1']:.1f} over {len(summary['rows']) - 2} nets. PARSEC search: "
                 f"{p['epochs']} epochs, {p['steps']} steps, {p['wall_s']:.0f} s wall, {p['cpu_s']:.0f} CPU-s; "
                 f"evolution: {e['wall_s']:.1f} s wall, {e['cpu_s']:.1f} CPU-s.")
    return "\n".join(lines)
