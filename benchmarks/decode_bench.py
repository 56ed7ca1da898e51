"""Training-clip decoding speed: clips per second per core, and the Ray Data pipeline's clips/s.

    python benchmarks/decode_bench.py [--clips 90] [--rounds 3] [--no-ray] [--no-prepared | --only-prepared]
                                      [--json out.json]

A training clip is 16 frames, every 5th, short side 256 (bilinear), a random 224x224 crop: uint8
[16, 224, 224, 3] (normalisation, the same for every method, is left out). Compared on one core, at
the same random positions, interleaved in rounds; the per-core figure is clips per CPU-second of the
process (wall-clock figures beside it), so that other load on a shared machine distorts it little:

- ours:   pipeline.video.decode.decode_clip (seek to the keyframe, decode up to the clip's last
          frame, convert + resize only the 16 kept frames with libswscale)
- naive:  decode every frame of the video to RGB, take the 16, resize them with torch
- decord: decord.VideoReader(width, height).get_batch (a reference, when decord is installed)

Data: the real UCF101 clips in ../shared/data/ucf101-6class-dev/ (when present; Xvid, 320x240) and
generated H.264 clips (256x256, 150 frames at 25 fps, noisy), with a keyframe every 250 frames (x264's
default: one GOP per clip, so every exact method decodes from frame 0) and every 25 frames (1 s).
Also checked on the UCF clips: whether each method returns the frames a full decode gives at the
clip's indices (a frame counts as wrong when another frame within 8 positions matches better).

Prepared files (``--no-prepared`` skips this): each long-GOP and UCF file is re-encoded with
pipeline.video.prepare.prepare_video at its defaults (short side 256, a keyframe per second, crf 23,
x264 fastdecode, no B-frames) on one core: videos per CPU-second, size before/after. Then ``ours`` on
the originals beside ``ours`` on the prepared files, same clips, interleaved. Frame correctness of the
prepared clips (4 positions per file): against the source's full decode at the prepared size (a frame
is wrong when its PSNR is under prepare's threshold, 25 dB, or a source frame within 8 positions has
under half its squared error), and against the prepared file's own full decode (exact).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from pipeline.video.decode import clip_indices, decode_clip
from pipeline.video.prepare import NEIGHBOUR_FACTOR, PrepareSettings, output_size, prepare_video
from pipeline.video.synthetic import render_clip, write_video
from pipeline.video.transforms import random_crop

UCF_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ucf101-6class-dev"
FRAMES, RATE, SHORT, CROP = 16, 5, 256, 224


def short_side(h: int, w: int, size: int) -> tuple[int, int]:
    scale = size / min(h, w)
    return round(h * scale), round(w * scale)


def ours(path: str, position: float, rng: np.random.Generator) -> np.ndarray:
    return random_crop(decode_clip(path, FRAMES, RATE, position, size=SHORT), CROP, rng)


def naive(path: str, position: float, rng: np.random.Generator) -> np.ndarray:
    with av.open(path) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    clip = torch.from_numpy(np.stack([frames[i] for i in clip_indices(len(frames), FRAMES, RATE, position)]))
    h, w = short_side(*clip.shape[1:3], SHORT)
    resized = torch.nn.functional.interpolate(clip.permute(0, 3, 1, 2).float(), size=(h, w), mode="bilinear")
    return random_crop(resized.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy(), CROP, rng)


def decord_clip(path: str, position: float, rng: np.random.Generator) -> np.ndarray:
    import decord

    with av.open(path) as c:  # decord needs the output size up front
        s = c.streams.video[0]
        h, w = short_side(s.height, s.width, SHORT)
    reader = decord.VideoReader(path, width=w, height=h, num_threads=1)
    return random_crop(reader.get_batch(list(clip_indices(len(reader), FRAMES, RATE, position))).asnumpy(), CROP, rng)


def have_decord() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def generated_clips(root: Path, gop: int, count: int = 6) -> list[str]:
    """``count`` noisy synthetic clips, 256x256, 150 frames at 25 fps, H.264 with a keyframe every ``gop``."""
    paths = []
    for k in range(count):
        name = ("right", "left", "clockwise", "growing")[k % 4]
        path = root / f"{name}_{k}_gop{gop}.mp4"
        write_video(path, render_clip(name, np.random.default_rng(k), size=256, frames=150), fps=25, gop=gop)
        paths.append(str(path))
    return paths


def clips_per_second(methods: dict, paths: list[str], clips: int, rounds: int,
                     seed: int = 0) -> dict[str, dict[str, float]]:
    """Each method decodes the same ``clips`` (path, position) pairs, interleaved in ``rounds``.

    Per method: clips per CPU-second of this process ("cpu": what one core does, robust to other
    load on a shared machine) and per wall-clock second ("wall").
    """
    rng = np.random.default_rng(seed)
    jobs = [(paths[i % len(paths)], float(rng.random())) for i in range(clips)]
    spent = {name: np.zeros(2) for name in methods}
    for r in range(rounds):
        part = jobs[r::rounds]
        for name, fn in methods.items():
            crop_rng = np.random.default_rng(r)
            start = np.array([time.process_time(), time.perf_counter()])
            for path, position in part:
                out = fn(path, position, crop_rng)
            spent[name] += np.array([time.process_time(), time.perf_counter()]) - start
            assert out.shape == (FRAMES, CROP, CROP, 3), (name, out.shape)
    return {name: {"cpu": clips / s[0], "wall": clips / s[1]} for name, s in spent.items()}


def wrong_frames(paths: list[str], positions: int = 4) -> dict[str, str]:
    """Clips whose frames are not the full decode's at the clip's indices, per method (no resize)."""
    import_decord = have_decord()
    bad = {"ours": 0, "decord": 0}
    offsets: list[int] = []
    total = 0
    for path in paths:
        with av.open(path) as c:
            ref = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(np.int16)
        for pos in np.linspace(0, 1, positions):
            idx = clip_indices(len(ref), FRAMES, RATE, float(pos))
            got = {"ours": decode_clip(path, FRAMES, RATE, float(pos))}
            if import_decord:
                import decord

                got["decord"] = decord.VideoReader(path, num_threads=1).get_batch(list(idx)).asnumpy()
            total += 1
            for name, clip in got.items():
                shifts = []
                for frame, i in zip(clip.astype(np.int16), idx):
                    near = range(max(0, i - 8), min(len(ref), i + 9))
                    best = min(near, key=lambda j: np.abs(ref[j] - frame).mean())
                    shifts.append(best - i)
                if any(shifts):
                    bad[name] += 1
                    if name == "decord":
                        offsets += [s for s in shifts if s]
    out = {"ours": f"{bad['ours']}/{total}"}
    if import_decord:
        out["decord"] = f"{bad['decord']}/{total}" + (f" (off by {min(offsets)}..{max(offsets)})" if offsets else "")
    return out


def prepare_files(paths: list[str], out_dir: Path, settings: PrepareSettings) -> dict:
    """Prepare every file on this core: the mapping source -> output and the cost."""
    out_dir.mkdir(parents=True, exist_ok=True)
    mapping, cpu, wall, records = {}, 0.0, 0.0, []
    for k, path in enumerate(paths):
        output = out_dir / f"{k:03d}_{Path(path).stem}.mp4"
        start = np.array([time.process_time(), time.perf_counter()])
        record = prepare_video(path, str(output), settings=settings)
        spent = np.array([time.process_time(), time.perf_counter()]) - start
        cpu, wall = cpu + spent[0], wall + spent[1]
        records.append(record)
        if record["status"] == "ok":
            mapping[path] = str(output)
    ok = [r for r in records if r["status"] == "ok"]
    return {"mapping": mapping, "videos": len(paths), "ok": len(ok),
            "failed": [(r["source"], r["reason"]) for r in records if r["status"] != "ok"],
            "videos_per_cpu_s": len(paths) / cpu, "videos_per_wall_s": len(paths) / wall,
            "frames_per_cpu_s": sum(r["frames_in"] for r in ok) / cpu,
            "mb_in": sum(r["bytes_in"] for r in ok) / 1e6, "mb_out": sum(r["bytes_out"] for r in ok) / 1e6,
            "min_psnr": min((r["min_psnr"] for r in ok), default=None)}


def prepared_wrong_frames(mapping: dict[str, str], min_psnr: float, positions: int = 4) -> dict:
    """Clips and frames of the prepared files that are not the source's frames at the clip's indices."""
    bad_clips = bad_frames = exact_bad = total = 0
    for source, prepared in mapping.items():
        with av.open(prepared) as c:
            s = c.streams.video[0]
            h, w = s.height, s.width
            own = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(s)]).astype(np.float32)
        ref = np.stack(_scaled_source(source, h, w)).astype(np.float32)
        for pos in np.linspace(0, 1, positions):
            idx = clip_indices(len(ref), FRAMES, RATE, float(pos))
            clip = decode_clip(prepared, FRAMES, RATE, float(pos)).astype(np.float32)
            wrong = 0
            for frame, i in zip(clip, idx):
                mse = np.mean((frame - ref[i]) ** 2)
                near = [j for j in range(max(0, i - 8), min(len(ref), i + 9)) if j != i]
                shifted = any(np.mean((frame - ref[j]) ** 2) < NEIGHBOUR_FACTOR * mse for j in near)
                psnr = 10 * np.log10(255 ** 2 / mse) if mse else float("inf")
                wrong += bool(shifted or psnr < min_psnr)
            exact_bad += any(np.abs(frame - own[i]).max() > 0 for frame, i in zip(clip, idx))
            bad_frames += wrong
            bad_clips += wrong > 0
            total += 1
    return {"vs_source": f"{bad_clips}/{total} clips, {bad_frames}/{total * FRAMES} frames",
            "vs_own_full_decode": f"{exact_bad}/{total} clips"}


def _scaled_source(path: str, h: int, w: int) -> list[np.ndarray]:
    """Every frame of the source at the prepared size, as prepare_video scales it (area, via yuv420p)."""
    with av.open(path, metadata_errors="ignore") as c:
        return [f.reformat(width=w, height=h, format="yuv420p", interpolation="AREA").to_ndarray(format="rgb24")
                for f in c.decode(video=0)]


def prepared_section(sets: dict[str, list[str]], tmp: Path, clips: int, rounds: int) -> dict:
    settings = PrepareSettings()
    results = {}
    print(f"\nprepared files (short side {settings.short_side}, a keyframe per second, crf {settings.crf}, "
          f"fastdecode, no B-frames), one core; clips per CPU-second (wall in brackets):")
    print(f"{'data':40s} {'prep videos/CPU-s':>17s} {'MB in->out':>14s} {'original':>15s} {'prepared':>15s}"
          f" {'gain':>6s}  wrong frames vs source | vs own full decode")
    for name, paths in sets.items():
        prep = prepare_files(paths, tmp / "prepared" / name.split()[0].replace("/", "_") / str(len(results)),
                             settings)
        mapping = prep.pop("mapping")
        kept = [p for p in paths if p in mapping]
        methods = {"original": ours, "prepared": lambda path, pos, rng: ours(mapping[path], pos, rng)}
        rates = clips_per_second(methods, kept, clips, rounds)
        gain = rates["prepared"]["cpu"] / rates["original"]["cpu"]
        wrong = prepared_wrong_frames(mapping, settings.min_psnr)
        results[name] = {"prepare": prep, "decode": rates, "gain": gain, "wrong_frames": wrong}
        print(f"{name:40s} {prep['videos_per_cpu_s']:17.2f} {prep['mb_in']:6.1f}->{prep['mb_out']:5.1f} "
              + " ".join(f"{rates[m]['cpu']:6.1f} ({rates[m]['wall']:5.1f})" for m in methods)
              + f" {gain:5.1f}x  {wrong['vs_source']} | {wrong['vs_own_full_decode']}"
              + (f"  ({len(prep['failed'])} failed: {prep['failed']})" if prep["failed"] else ""))
    return results


def ray_pipeline(paths: list[str], epochs: int = 2) -> dict:
    import ray

    from pipeline.video.formats import VideoItem
    from pipeline.video.ray_data import ClipConfig, train_dataset

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        cpus = int(ray.cluster_resources()["CPU"])
        ds = train_dataset([VideoItem(p, 0) for p in paths], ClipConfig(frames=FRAMES, sampling_rate=RATE,
                                                                       size=CROP, train_scale=(SHORT, SHORT)))
        rates = []
        for _ in range(epochs):
            start, n = time.perf_counter(), 0
            for batch in ds.iter_batches(batch_size=8, batch_format="numpy"):
                n += len(batch["label"])
            rates.append(n / (time.perf_counter() - start))
    finally:
        ray.shutdown()
    return {"cpus": cpus, "clips_per_s_by_epoch": rates, "clips_per_s": rates[-1], "per_cpu": rates[-1] / cpus}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=90, help="clips per method and data set")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray Data pipeline")
    parser.add_argument("--no-prepared", action="store_true", help="skip the prepared-files section")
    parser.add_argument("--only-prepared", action="store_true", help="run the prepared-files section alone")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    methods = {"ours": ours, "naive": naive} | ({"decord": decord_clip} if have_decord() else {})
    results: dict = {"clip": f"{FRAMES}x{CROP}^2, sampling rate {RATE}, short side {SHORT}",
                     "load_average_before": os.getloadavg()[0]}
    sets = {}
    if UCF_DIR.is_dir():
        sets["ucf101 (Xvid 320x240)"] = sorted(str(p) for p in UCF_DIR.glob("*/*.avi"))
    with tempfile.TemporaryDirectory() as tmp:
        for gop in (250, 25):
            sets[f"generated (H.264 256x256, keyframe/{gop})"] = generated_clips(Path(tmp), gop)
        print(f"clips per CPU-second, one core ({results['clip']}); load average {results['load_average_before']:.1f}"
              " (per wall-clock second in brackets)")
        if not args.no_prepared:
            to_prepare = {k: v for k, v in sets.items() if "keyframe/25)" not in k}  # UCF and keyframe/250
            results["prepared"] = prepared_section(to_prepare, Path(tmp), args.clips, args.rounds)
        if args.only_prepared:
            sets = {}
        else:
            print(f"\n{'data':40s} " + " ".join(f"{m:>15s}" for m in methods) + "   ours/naive")
        for name, paths in sets.items():
            rates = clips_per_second(methods, paths, args.clips, args.rounds)
            speedup = rates["ours"]["cpu"] / rates["naive"]["cpu"]
            results[name] = rates | {"speedup_vs_naive": speedup}
            print(f"{name:40s} " + " ".join(f"{rates[m]['cpu']:6.1f} ({rates[m]['wall']:5.1f})" for m in methods)
                  + f"   {speedup:.2f}x")
        if UCF_DIR.is_dir() and not args.only_prepared:
            results["wrong_frame_clips_ucf"] = wrong_frames(sets["ucf101 (Xvid 320x240)"])
            print("clips with wrong frames vs a full decode (UCF, 4 positions each):",
                  results["wrong_frame_clips_ucf"])
        if not args.no_ray and not args.only_prepared:
            paths = sets.get("ucf101 (Xvid 320x240)") or next(iter(sets.values()))
            ray_rates = ray_pipeline(paths)
            results["ray_data"] = ray_rates
            print(f"Ray Data train_dataset (float32 clips, {ray_rates['cpus']} CPUs): {ray_rates['clips_per_s']:.1f}"
                  f" clips/s, {ray_rates['per_cpu']:.1f} per CPU (epochs: "
                  + ", ".join(f"{r:.1f}" for r in ray_rates["clips_per_s_by_epoch"]) + ")")
    results["load_average_after"] = os.getloadavg()[0]
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
