"""The measurements of ``docs/parsec.md``: Table 1 (the cost coefficient beta) on the synthetic data, and the
comparison on a real dataset (the searched net vs random search in the FLOPs band vs the ``evolution`` winner).

    python -m pipeline.parsec.experiments table1 --out runs/parsec-table1            # beta in {0, .05, .1, .2}
    python -m pipeline.parsec.experiments compare --data ../shared/data/ucf101-6class-dev --out runs/parsec-ucf

Both run the ``parsec`` strategy exactly as the main job does (Ray Train, checkpoints: a rerun with the same
``--out`` resumes). ``table1`` decodes the synthetic clips once (centre views) and searches on them in memory;
``compare`` searches on the dataset through Ray Data and trains every compared network with the same recipe
through :func:`pipeline.train.train_candidates` (the band: :mod:`e3d.parsec.band`). Reduced-scale defaults fit this
machine (2 shared cores); ``--help`` lists what to raise for a full run.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from e3d.strategy import Budget, Clip, SearchContext, SearchRequest, get_strategy
from pipeline.context import RayTrainer
from pipeline.options import add_ray_options, init_ray


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


def run_search(source: Any, out: Path, *, frames: int, size: int, t_max: float, seed: int = 0,
               options: dict[str, Any]) -> Any:
    """The ``parsec`` strategy on ``source`` with its outputs under ``out`` (resumed when there)."""
    from e3d.search_io import read_outcome, write_outcome

    done = read_outcome(out)
    if done is not None:
        return done
    request = SearchRequest(budget=Budget(flops=t_max), clip=Clip(frames, size), seed=seed, options=options,
                            out_dir=str(out), num_classes=source.num_classes)
    strategy = get_strategy("parsec")
    strategy.check(request)
    outcome = strategy.search(request, SearchContext(dataset=source, trainer=RayTrainer()))
    write_outcome(out, outcome)
    return outcome


# -- Table 1 --------------------------------------------------------------------------------------------
def table1(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    from pipeline.search_and_train import DataConfig, load_data
    from pipeline.video.clip import ClipConfig

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    init_ray(args)
    dataset = load_data(DataConfig(synthetic={"num_classes": args.classes, "clips_per_class": args.clips_per_class,
                                              "frames": 32, "size": 64}), out, seed=args.data_seed)
    clip = ClipConfig(frames=args.frames, sampling_rate=args.sampling_rate, size=args.size,
                      train_scale=(args.size, args.size), hflip=False)
    t0 = time.perf_counter()
    source = decoded_source(dataset, clip)
    decode_s = time.perf_counter() - t0
    rows = []
    for beta in args.betas:
        options = {"epochs": args.epochs, "samples": args.samples, "beta": beta, "batch_size": args.batch_size,
                   "arch_lr": args.arch_lr, "lr": args.lr, "t_max": args.t_max, "t_min": args.t_min}
        outcome = run_search(source, out / f"beta-{beta:g}", frames=args.frames, size=args.size, t_max=args.t_max,
                             seed=args.seed, options=options)
        h = outcome.history
        rows.append({"beta": beta, "t_min_gflops": args.t_min / 1e9, "t_max_gflops": args.t_max / 1e9,
                     "mode_gflops": outcome.extra["mode_gflops"], "expected_gflops": outcome.extra["expected_gflops"],
                     "in_band": outcome.extra["mode_in_band"], "entropy": outcome.extra["entropy"],
                     "mode_gflops_by_epoch": [round(r["mode_gflops"], 5) for r in h],
                     "expected_gflops_by_epoch": [round(r["expected_gflops"], 5) for r in h],
                     "val_top1_last": h[-1].get("val_top1"), "wall_s": outcome.wall_s, "cpu_s": outcome.cpu_s,
                     "width_scale": outcome.settings["space"]["width_scale"]})
        print(f"[table1] beta {beta:g}: mode {rows[-1]['mode_gflops']:.4f} G, expected "
              f"{rows[-1]['expected_gflops']:.4f} G, range [{args.t_min / 1e9:.4f}, {args.t_max / 1e9:.4f}]")
    ray.shutdown()
    from e3d.parsec.space import SpaceConfig, TwoStreamSpace

    space = TwoStreamSpace(SpaceConfig(width_scale=rows[0]["width_scale"]), frames=args.frames, size=args.size,
                           num_classes=args.classes)
    rng = np.random.default_rng(0)
    flops = np.array([space.flops(tuple(int(rng.integers(n)) for n in space.sizes)) for _ in range(5000)])
    share = {"below": float(np.mean(flops < args.t_min)), "in": float(np.mean((flops >= args.t_min)
                                                                             & (flops <= args.t_max))),
             "above": float(np.mean(flops > args.t_max)), "median_gflops": float(np.median(flops) / 1e9)}
    result = {"rows": rows, "space_share_uniform": share, "decode_s": decode_s, "settings": vars(args)}
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
def compare(args: argparse.Namespace) -> dict[str, Any]:
    """PARSEC's most probable net vs ``--band`` random nets of the FLOPs band vs the ``evolution`` winner at the
    searched net's FLOPs, all trained with one recipe."""
    import ray

    from e3d.parsec.band import band_median, band_specs
    from e3d.parsec.space import SpaceConfig, TwoStreamSpace
    from e3d.search_io import read_outcome, write_outcome
    from pipeline.train import train_candidates
    from pipeline.train.recipe import Recipe
    from pipeline.video.clip import ClipConfig
    from pipeline.video.formats import load_dataset

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    init_ray(args)
    t_start = time.perf_counter()
    dataset = load_dataset(args.data, seed=args.seed)
    clip = ClipConfig(frames=args.frames, sampling_rate=args.sampling_rate, size=args.size,
                      train_scale=(args.size, round(args.size * 8 / 7)), hflip=True)
    recipe = Recipe.paper("sthsth").scaled(epochs=args.train_epochs, batch_size=args.batch_size, lr=args.lr,
                                           init="torch")
    num_classes = len(dataset.classes)
    clip_req = Clip(args.frames, args.size, args.sampling_rate)

    evo_options = {"iterations": args.evo_iterations, "population_size": args.evo_population}

    # 1. PARSEC on the dataset (Ray Data decoding, Ray Train), as the main job runs it
    parsec_dir = out / "search-parsec"
    outcome = read_outcome(parsec_dir)
    if outcome is None:
        options = {"epochs": args.search_epochs, "samples": args.samples, "beta": args.beta, "t_max": args.t_max,
                   "t_min": args.t_min, "arch_lr": args.arch_lr, "batch_size": args.batch_size, "lr": args.lr}
        request = SearchRequest(budget=Budget(flops=args.t_max), clip=clip_req, seed=args.seed, options=options,
                                out_dir=str(parsec_dir), num_classes=num_classes)
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
        initial = evolution_initial(out, args.frames, args.size, searched_flops)
        if initial is not None:
            evo_options["initial"] = initial
        request = SearchRequest(budget=Budget(flops=searched_flops), clip=clip_req, seed=args.seed,
                                options=evo_options, out_dir=str(evo_dir), num_classes=num_classes)
        evo = get_strategy("evolution").search(request, SearchContext(progress=False))
        write_outcome(evo_dir, evo)
    evolution = evo.best.spec.replace(name="evolution")

    # 3. random search in the same FLOPs band, the same space
    space_cfg = SpaceConfig.from_options(outcome.settings["space"])
    space = TwoStreamSpace(space_cfg, frames=args.frames, size=args.size, num_classes=num_classes)
    t_min, t_max = outcome.settings["t_min"], outcome.settings["t_max"]
    band = band_specs(space, t_min, t_max, args.band, seed=args.seed)

    # 4. one recipe for all
    specs = [searched, evolution] + band
    results = train_candidates(specs, dataset, clip=clip, recipe=recipe, tracking=None, out_dir=out / "train",
                               eval_clips=args.eval_clips, eval_crops=3, seed=args.seed, log_model=False)
    rows = [{"name": r.name, "family": s.family, "gflops": r.flops / 1e9, "mparams": r.params / 1e6,
             "val_top1": r.val_top1, "mv_top1": r.mv_top1, "mv_top5": r.mv_top5, "train_time_s": r.train_time_s,
             "error": r.error} for s, r in zip(specs, results)]
    summary = {"rows": rows, "band_median_mv_top1": band_median(results[2:]),
               "band_median_val_top1": band_median(results[2:], "val_top1"),
               "parsec_search": {"wall_s": outcome.wall_s, "cpu_s": outcome.cpu_s, "epochs": len(outcome.history),
                                 "steps": outcome.extra.get("search_steps"),
                                 "mode_gflops": outcome.extra["mode_gflops"],
                                 "in_band": outcome.extra["mode_in_band"]},
               "evolution_search": {"wall_s": evo.wall_s, "cpu_s": evo.cpu_s, "gflops": evo.best.flops / 1e9},
               "band": [t_min / 1e9, t_max / 1e9], "total_wall_s": time.perf_counter() - t_start,
               "settings": vars(args), "videos": {"train": len(dataset.train), "val": len(dataset.val)}}
    (out / "compare.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    text = compare_markdown(summary)
    (out / "compare.md").write_text(text + "\n")
    print(text)
    ray.shutdown()
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


def main(argv: Sequence[str] | None = None) -> Any:
    p = argparse.ArgumentParser(prog="python -m pipeline.parsec.experiments", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("table1", help="Table 1: derived FLOPs for several cost coefficients, synthetic data")
    t.add_argument("--out", required=True)
    t.add_argument("--betas", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.2])
    t.add_argument("--epochs", type=int, default=8)
    t.add_argument("--samples", type=int, default=13, help="K architectures per step (13)")
    t.add_argument("--batch-size", type=int, default=4)
    t.add_argument("--lr", type=float, default=0.02, help="weights' learning rate")
    t.add_argument("--arch-lr", type=float, default=0.05, help="Adam's rate for alpha (Table 2: 0.015, for 800 epochs)")
    t.add_argument("--t-min", type=float, default=0.0285e9)
    t.add_argument("--t-max", type=float, default=0.03e9)
    t.add_argument("--frames", type=int, default=8)
    t.add_argument("--size", type=int, default=40)
    t.add_argument("--sampling-rate", type=int, default=4)
    t.add_argument("--classes", type=int, default=4)
    t.add_argument("--clips-per-class", type=int, default=24)
    add_ray_options(t).set_defaults(num_cpus=2)
    t.add_argument("--seed", type=int, default=0, help="the searches' seed")
    t.add_argument("--data-seed", type=int, default=0, help="the synthetic dataset's seed")
    c = sub.add_parser("compare", help="the searched net vs random nets of the FLOPs band vs the evolution winner")
    c.add_argument("--data", required=True, help="a video dataset folder (any supported format)")
    c.add_argument("--out", required=True)
    c.add_argument("--t-max", type=float, default=0.06e9, help="upper end of the FLOPs range (and budget)")
    c.add_argument("--t-min", type=float, default=0.054e9)
    c.add_argument("--beta", type=float, default=0.1)
    c.add_argument("--search-epochs", type=int, default=10, help="PARSEC epochs (Table 2: 800 + 400)")
    c.add_argument("--samples", type=int, default=13)
    c.add_argument("--arch-lr", type=float, default=0.015)
    c.add_argument("--train-epochs", type=int, default=8, help="epochs of every compared network")
    c.add_argument("--batch-size", type=int, default=8)
    c.add_argument("--lr", type=float, default=0.02)
    c.add_argument("--band", type=int, default=6, help="random nets of the band (supplement §5: 16)")
    c.add_argument("--evo-iterations", type=int, default=20_000)
    c.add_argument("--evo-population", type=int, default=64)
    c.add_argument("--frames", type=int, default=8)
    c.add_argument("--size", type=int, default=56)
    c.add_argument("--sampling-rate", type=int, default=4)
    c.add_argument("--eval-clips", type=int, default=2)
    add_ray_options(c).set_defaults(num_cpus=2)
    c.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    return {"table1": table1, "compare": compare}[args.command](args)


if __name__ == "__main__":
    main()
