"""Prepare a video dataset for fast training: re-encode every video once, verify it, resumably, on Ray Data.

Clip decoding costs what the decoder must decode from the keyframe before a clip plus the clip's own
span, at the file's bit rate and entropy coder. Long-GOP H.264 (a keyframe every 250 frames) makes
every exact method decode from far back. ``prepare_dataset`` writes a copy of a dataset in which every
video is H.264 with a keyframe every ``keyint`` frames (default: one per second), short side
``short_side`` (default 256, never upscaled), quality ``crf``, x264's ``fastdecode`` tuning (no CABAC,
no deblocking filter), no B-frames and no audio. Frame count and order are kept: every decoded frame
is encoded once. See docs/video.md ("Preparing a dataset") for the choices and measured numbers.

Per file (``prepare_video``; no Ray):

1. ``decode.probe`` (frame count, rate, rotation; bad files raise ``VideoDecodeError``) and a demux
   pass for the packet timestamps. Regular timestamps give a constant-rate output at the source's
   rate; variable frame rate (an interval more than 25% off the median) keeps the source timestamps;
   missing or repeated timestamps (e.g. Xvid with packed B-frames) give a constant-rate output at the
   stream's rate ("retimed"). The manifest records which.
2. One sequential decode; each frame is scaled (area filter) to the output size in yuv420p, rotation
   metadata baked into the pixels, and encoded. The frames at the check indices are kept as RGB.
3. Verification: the output decodes fully with the same frame count (and, at a constant rate, the same
   frame rate), and ``decode.decode_clips`` on the output (which seeks, as training does) returns, at
   the check indices (three training clips of 16 frames every 5th, frame 0, the last frame and frames
   around three keyframes), frames within encoding noise of the source's: PSNR >= ``min_psnr``
   (default 25 dB; crf 23 gives 30-37 dB) and no neighbouring source frame twice as close (a shifted
   frame). Any failure marks the file failed.
4. The output is written to ``<output>.part`` and renamed when verified.

Per dataset (``prepare_dataset``): ``formats.load_dataset``, one Ray Data task per file
(``from_items`` + ``map``, 1 CPU each, from the cluster), a record per finished file in
``DST/.prepare/records/`` (written atomically by the task), then the format's index files (same labels
and splits), ``DST/manifest.parquet`` and ``DST/prepare.json``. A rerun skips files whose record
matches (same source size and mtime, same settings, output present); failed files are not retried
unless ``retry_failed``. Bad sources never stop the job: each gets a failed record with its reason.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator

import av
import numpy as np

from .decode import VideoDecodeError, clip_indices, decode_clips, probe
from .formats import DatasetError, VideoDataset, _find_file, _is_kinetics_csv, _ssv2_files, load_dataset  # same package

CHECK_FRAMES, CHECK_RATE = 16, 5  # the training clip whose frames are checked (docs/video.md's default)
VFR_TOLERANCE = 0.25  # an interval this far off the median (relative) makes a stream variable-rate
NEIGHBOUR_FACTOR = 0.5  # a frame is "shifted" when a neighbouring source frame has under this x its MSE
RECORDS_DIR = Path(".prepare") / "records"
MANIFEST, SUMMARY = "manifest.parquet", "prepare.json"
_CONTAINERS = {".mp4": "mp4", ".webm": "matroska"}  # SSv2 needs <id>.webm: Matroska holding H.264
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


class PrepareError(Exception):
    """A file that was decoded but not prepared (``kind``: "verify", "encode", "timeout")."""

    def __init__(self, reason: str, kind: str = "verify"):
        super().__init__(reason)
        self.reason, self.kind = reason, kind


@dataclass(frozen=True)
class PrepareSettings:
    """How every video is re-encoded (a changed setting makes a rerun redo the files).

    ``short_side``: output short side in pixels (rounded to even, never upscaled). ``keyint``: frames
    between keyframes (None: the source's frame rate, one per second). ``crf``: x264 quality (0-51,
    lower is better and bigger). ``preset``: x264 speed preset. ``fast_decode``: x264's fastdecode
    tuning. ``min_psnr``: verification threshold in dB. ``timeout``: seconds allowed per file.
    """

    short_side: int = 256
    keyint: int | None = None
    crf: int = 23
    preset: str = "veryfast"
    fast_decode: bool = True
    min_psnr: float = 25.0
    timeout: float = 600.0

    def __post_init__(self):
        if self.short_side < 2:
            raise ValueError(f"short_side must be >= 2, got {self.short_side}")
        if self.keyint is not None and self.keyint < 1:
            raise ValueError(f"keyint must be >= 1, got {self.keyint}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf must be in [0, 51], got {self.crf}")
        if self.preset not in X264_PRESETS:
            raise ValueError(f"preset must be one of {X264_PRESETS}, got {self.preset!r}")
        if self.min_psnr <= 0 or self.timeout <= 0:
            raise ValueError("min_psnr and timeout must be positive")

    def identity(self) -> dict:
        """The settings that decide the output's bytes and checks (not the timeout)."""
        return {k: v for k, v in asdict(self).items() if k != "timeout"}


# ---------------------------------------------------------------- one file

def output_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) of the output: the short side scaled to ``short_side`` when larger, each side then
    rounded to the nearest even number (down when not scaled; at least 2, as yuv420p needs)."""
    scale = min(1.0, short_side / min(height, width))

    def even(x: float) -> int:
        return max(2, int(x * scale / 2 + (0.5 if scale < 1 else 0.0)) * 2)

    return even(height), even(width)


@dataclass(frozen=True)
class _Timing:
    rate: Fraction  # frames per second (nominal)
    policy: str  # "cfr", "vfr kept" or "retimed"
    vfr: bool | None  # None when the timestamps are unusable
    time_base: Fraction  # of the output's timestamps
    pts: list[int] | None  # the kept timestamps ("vfr kept"), else frame i has pts i


def _timing(path: str) -> _Timing:
    """Decide the output timestamps from a demux pass over the source's packets."""
    with av.open(path, metadata_errors="ignore") as c:
        stream = c.streams.video[0]
        pts = [p.pts for p in c.demux(stream) if p.size > 0]
        tb, guessed, average = stream.time_base, stream.guessed_rate, stream.average_rate
    rate = next((Fraction(r) for r in (guessed, average) if r and 0.5 <= r <= 1000), None)
    usable = bool(pts) and None not in pts and len(set(pts)) == len(pts) and tb is not None
    if not usable:
        rate = rate or Fraction(25)
        return _Timing(rate, "retimed", None, 1 / rate, None)
    pts = sorted(pts)
    steps = np.diff(pts)
    median = float(np.median(steps)) if len(steps) else 0.0
    vfr = bool(len(steps)) and bool(np.any(np.abs(steps - median) > max(1.0, VFR_TOLERANCE * median)))
    if rate is None:  # no rate in the header: the median interval
        rate = Fraction(1 / (median * tb)).limit_denominator(1001) if median else Fraction(25)
    if vfr:
        return _Timing(rate, "vfr kept", True, Fraction(tb), [p - pts[0] for p in pts])
    return _Timing(rate, "cfr", False, 1 / rate, None)


def check_indices(num_frames: int, keyint: int) -> list[int]:
    """Frame indices verified on the output: three training clips, both ends, around three keyframes."""
    idx = {0, num_frames - 1}
    for position in (0.0, 0.5, 1.0):
        idx.update(clip_indices(num_frames, CHECK_FRAMES, CHECK_RATE, position).tolist())
    keys = list(range(keyint, num_frames, keyint))
    for k in {keys[0], keys[len(keys) // 2], keys[-1]} if keys else ():
        idx.update((k - 1, k, k + 1))
    return sorted(i for i in idx if 0 <= i < num_frames)


class _Scaler:
    """Source frame -> yuv420p frame of the output size (area filter, rotation baked in)."""

    def __init__(self, size: tuple[int, int], rotation: int):
        self.height, self.width = size
        self.turns = int(round(rotation / 90)) % 4
        self.scale = av.video.reformatter.VideoReformatter()
        self.to_rgb = av.video.reformatter.VideoReformatter()

    def __call__(self, frame) -> av.VideoFrame:
        if not self.turns:
            return self.scale.reformat(frame, width=self.width, height=self.height, format="yuv420p",
                                       interpolation="AREA", threads=1)
        h, w = (self.width, self.height) if self.turns % 2 else (self.height, self.width)  # coded
        rgb = self.scale.reformat(frame, width=w, height=h, format="rgb24", interpolation="AREA", threads=1)
        upright = np.ascontiguousarray(np.rot90(rgb.to_ndarray(), self.turns))
        return av.VideoFrame.from_ndarray(upright, format="rgb24").reformat(format="yuv420p", threads=1)

    def rgb(self, frame: av.VideoFrame) -> np.ndarray:
        """What decoding the encoder's input gives: the reference for verification."""
        return self.to_rgb.reformat(frame, format="rgb24", threads=1).to_ndarray()


def _encoder_options(settings: PrepareSettings, keyint: int) -> dict[str, str]:
    options = {"preset": settings.preset, "crf": str(settings.crf), "threads": "1",
               "x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0:bframes=0"}
    if settings.fast_decode:
        options["tune"] = "fastdecode"
    return options


@dataclass
class _Encoded:
    frames: int
    size: tuple[int, int]  # (height, width)
    timing: _Timing
    keyint: int
    references: dict[int, np.ndarray]  # index -> RGB of the encoder's input
    checks: list[int]


def _encode(source: str, tmp: str, container_format: str, settings: PrepareSettings, deadline: float) -> _Encoded:
    info = probe(source, timeout=settings.timeout)
    timing = _timing(source)
    size = output_size(info.height, info.width, settings.short_side)
    keyint = settings.keyint or max(1, round(float(timing.rate)))
    checks = check_indices(info.num_frames, keyint)
    keep = {j for i in checks for j in (i - 1, i, i + 1)}
    scaler, references, count = _Scaler(size, info.rotation), {}, 0
    options = {"movflags": "+faststart"} if container_format == "mp4" else {}
    with av.open(source, metadata_errors="ignore") as src, av.open(tmp, "w", format=container_format,
                                                                    options=options) as out:
        stream = src.streams.video[0]
        stream.codec_context.thread_count = 1
        encoder = out.add_stream("libx264", rate=timing.rate)
        encoder.height, encoder.width = size
        encoder.pix_fmt = "yuv420p"
        encoder.time_base = encoder.codec_context.time_base = timing.time_base
        encoder.options = _encoder_options(settings, keyint)
        try:
            for i, frame in enumerate(_decoded(source, src, stream)):
                if time.monotonic() > deadline:
                    raise PrepareError(f"timeout: not done after {settings.timeout:g} s (frame {i})", "timeout")
                yuv = scaler(frame)
                if i in keep:
                    references[i] = scaler.rgb(yuv)
                yuv.pts, yuv.duration = _pts(timing, i)
                yuv.time_base, yuv.pict_type = timing.time_base, av.video.frame.PictureType.NONE
                out.mux(encoder.encode(yuv))
                count = i + 1
            if count == 0:
                raise VideoDecodeError(source, "no decodable frame", "short")
            out.mux(encoder.encode(None))
        except av.error.FFmpegError as e:  # the decoder's errors are VideoDecodeError already
            raise PrepareError(f"encoding failed after frame {count}: {e}", "encode") from None
    return _Encoded(count, size, timing, keyint, references, [c for c in checks if c < count])


def _decoded(path: str, container, stream) -> Iterator[av.VideoFrame]:
    """The frames of a sequential decode; a bit-stream error raises VideoDecodeError("decode")."""
    i = 0
    try:
        for frame in container.decode(stream):
            yield frame
            i += 1
    except av.error.FFmpegError as e:
        raise VideoDecodeError(path, f"decode error after frame {i}: {e}", "decode") from None


def _pts(timing: _Timing, i: int) -> tuple[int, int]:
    """(pts, duration) of output frame ``i`` in ``timing.time_base``."""
    if timing.pts is None:
        return i, 1
    pts = timing.pts
    if i + 1 < len(pts):
        return pts[i], pts[i + 1] - pts[i]
    step = int(np.median(np.diff(pts))) if len(pts) > 1 else 1
    return (pts[i] if i < len(pts) else pts[-1] + step * (i - len(pts) + 1)), step


def check_frames(decoded: dict[int, np.ndarray], references: dict[int, np.ndarray], *,
                 min_psnr: float) -> tuple[float, str | None]:
    """(lowest PSNR, None) when every decoded frame matches its source frame, else (…, the reason).

    A frame matches when its PSNR against the source frame at the same index is at least ``min_psnr``
    and no neighbouring source frame (index +-1) has under ``NEIGHBOUR_FACTOR`` x its squared error.
    """
    worst = float("inf")
    for i, frame in sorted(decoded.items()):
        ref = references[i]
        if frame.shape != ref.shape:
            return worst, f"frame {i}: shape {frame.shape} != source {ref.shape}"
        mse = _mse(frame, ref)
        psnr = 10 * np.log10(255.0 ** 2 / mse) if mse > 0 else float("inf")
        worst = min(worst, psnr)
        if psnr < min_psnr:
            return worst, f"frame {i}: PSNR {psnr:.1f} dB < {min_psnr:g} dB"
        for j in (i - 1, i + 1):
            if j in references and _mse(frame, references[j]) < NEIGHBOUR_FACTOR * mse:
                return worst, f"frame {i} matches source frame {j} better (shifted frames)"
    return worst, None


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    d = a.astype(np.float32) - b.astype(np.float32)
    return float(np.mean(d * d))


def _verify(path: str, enc: _Encoded, settings: PrepareSettings, deadline: float) -> dict:
    """Full decode (frame count, rate), then the clip decoder at the check indices; raises PrepareError."""
    try:
        with av.open(path) as c:
            stream = c.streams.video[0]
            rate, streams = stream.guessed_rate, len(c.streams)
            count = sum(1 for _ in c.decode(stream))
    except av.error.FFmpegError as e:
        raise PrepareError(f"output does not decode: {e}") from None
    if count != enc.frames:
        raise PrepareError(f"output has {count} frames, source {enc.frames}")
    if streams != 1:
        raise PrepareError(f"output has {streams} streams, expected 1 (video)")
    if enc.timing.vfr is False and (not rate or abs(float(rate) / float(enc.timing.rate) - 1) > 1e-3):
        raise PrepareError(f"output frame rate {rate} != source {enc.timing.rate}")
    remaining = max(1.0, deadline - time.monotonic())
    try:
        clips = decode_clips(path, 1, 1, start_indices=enc.checks, timeout=remaining)
    except VideoDecodeError as e:
        raise PrepareError(f"clip decoder fails on the output: {e.reason}") from None
    worst, problem = check_frames({i: c[0] for i, c in zip(enc.checks, clips)}, enc.references,
                                  min_psnr=settings.min_psnr)
    if problem:
        raise PrepareError(f"output differs from the source: {problem}")
    return {"frames_out": count, "fps_out": float(rate) if rate else None,
            "min_psnr": round(min(float(worst), 100.0), 2), "checked_frames": len(enc.checks)}  # 100: identical


def prepare_video(source: str, output: str, *, settings: PrepareSettings = PrepareSettings()) -> dict:
    """Re-encode ``source`` to ``output`` and verify it; returns its manifest record (never raises
    for a bad source: ``status`` is "ok" or "failed" with ``kind`` and ``reason``).

    The output appears only when verified (written as ``output + ".part"``, then renamed); its
    container follows its suffix (.mp4: MP4; .webm: Matroska).
    """
    wall, cpu = time.perf_counter(), time.process_time()
    record: dict = {"source": source, "status": "failed", "kind": None, "reason": None,
                    "bytes_in": _size(source), "bytes_out": None, "frames_in": None, "frames_out": None}
    tmp = output + ".part"
    try:
        suffix = Path(output).suffix.lower()
        if suffix not in _CONTAINERS:
            raise PrepareError(f"unsupported output suffix {suffix!r}", "encode")
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + settings.timeout
        enc = _encode(source, tmp, _CONTAINERS[suffix], settings, deadline)
        record.update(frames_in=enc.frames, height_out=enc.size[0], width_out=enc.size[1],
                      fps_in=float(enc.timing.rate), vfr=enc.timing.vfr, timing=enc.timing.policy,
                      keyint=enc.keyint)
        record.update(_verify(tmp, enc, settings, deadline))
        os.replace(tmp, output)
        record.update(status="ok", bytes_out=os.path.getsize(output))
    except VideoDecodeError as e:
        record.update(kind=e.kind, reason=e.reason)
    except PrepareError as e:
        record.update(kind=e.kind, reason=e.reason)
    except Exception as e:  # any other failure is this file's, never the job's
        record.update(kind="error", reason=f"{type(e).__name__}: {e}")
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    record.update(seconds=round(time.perf_counter() - wall, 4), cpu_seconds=round(time.process_time() - cpu, 4))
    return record


HARD_GRACE_S = 30.0  # past the timeout the per-frame checks enforce, the child process is killed


def run_bounded(fn: Callable, args: tuple, timeout: float) -> tuple[str, Any]:
    """``fn(*args)`` in a child process (forkserver: a clean process, never a fork of a threaded Ray worker)
    killed after ``timeout`` seconds of wall clock: ("ok", result), ("timeout", None) or ("crash", exit code).
    Bounds what Python's own checks cannot: an FFmpeg call that never returns."""
    import multiprocessing  # noqa: PLC0415

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, fn, args), daemon=True)
    proc.start()
    send.close()
    try:
        if receive.poll(timeout):
            try:
                return "ok", receive.recv()
            except EOFError:  # the child died without an answer
                proc.join(5)
                return "crash", proc.exitcode
        return "timeout", None
    finally:
        receive.close()
        if proc.is_alive():
            proc.kill()
        proc.join()


def _child(send: Any, fn: Callable, args: tuple) -> None:
    send.send(fn(*args))
    send.close()


def _prepare_plain(source: str, output: str, settings: dict) -> dict:
    return prepare_video(source, output, settings=PrepareSettings(**settings))


def prepare_video_bounded(source: str, output: str, *, settings: PrepareSettings = PrepareSettings()) -> dict:
    """:func:`prepare_video` with a hard wall-clock bound: ``settings.timeout`` plus :data:`HARD_GRACE_S`, after
    which the file's process is killed and the file marked failed ("timeout")."""
    limit = settings.timeout + HARD_GRACE_S
    status, value = run_bounded(_prepare_plain, (source, output, asdict(settings)), limit)
    if status == "ok":
        return value
    Path(output + ".part").unlink(missing_ok=True)
    reason = (f"timeout: killed after {limit:g} s (the encoder or decoder hung)" if status == "timeout"
              else f"the file's process died (exit code {value})")
    return {"source": source, "status": "failed", "kind": "timeout" if status == "timeout" else "crash",
            "reason": reason, "bytes_in": _size(source), "bytes_out": None, "frames_in": None, "frames_out": None,
            "seconds": limit if status == "timeout" else None, "cpu_seconds": None}


def _size(path: str) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None


# ---------------------------------------------------------------- dataset layout

def check_paths(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """FileNotFoundError when SRC is missing; ValueError when DST and SRC's folder overlap (DST inside
    SRC or around it) or DST is a file."""
    src_path = Path(os.path.realpath(src))
    if not src_path.exists():
        raise FileNotFoundError(f"{src}: no such file or directory")
    src_dir = src_path if src_path.is_dir() else src_path.parent
    dst_path = Path(os.path.realpath(dst))
    if dst_path == src_dir or src_dir in dst_path.parents:
        raise ValueError(f"{dst} is inside the source dataset {src_dir}")
    if dst_path in src_dir.parents:
        raise ValueError(f"{dst} contains the source dataset {src_dir}")
    if dst_path.exists() and not dst_path.is_dir():
        raise ValueError(f"{dst} exists and is not a folder")


def _base(ds: VideoDataset) -> Path:
    root = Path(ds.root)
    return root if root.is_dir() else root.parent


def plan(ds: VideoDataset) -> list[dict]:
    """One row per video: source, output (relative to DST), label, split. Raises DatasetError on clashes.

    folder: ``{train,val}/<class>/<path below the class folder>``; ssv2: the same relative path
    (``<id>.webm``); others: the path relative to the dataset's folder (outside it: ``external/``).
    The suffix becomes .mp4 (ssv2 keeps .webm); files whose names differ only in their extension (``a.avi``,
    ``a.webm``) keep it before the new one (``a.avi.mp4``, ``a.webm.mp4``).
    """
    base, rows = _base(ds), []
    suffix = ".webm" if ds.format == "ssv2" else ".mp4"
    for split, items in (("train", ds.train), ("val", ds.val)):
        for item in items:
            rel = Path(os.path.relpath(item.path, base))
            if ds.format == "folder":
                parts = rel.parts
                cls = ds.classes[item.label]
                k = parts.index(cls) if cls in parts[:-1] else len(parts) - 1
                rel = Path(split, cls, *parts[k + 1:])
            elif rel.parts[0] == "..":
                rel = Path("external", hashlib.sha1(item.path.encode()).hexdigest()[:10], rel.name)
            rows.append({"source": item.path, "output": rel, "label": item.label, "split": split})
    stems = Counter(r["output"].with_suffix(suffix) for r in rows)
    seen: dict[str, str] = {}
    for r in rows:
        rel = r["output"]
        out = (rel.with_suffix(suffix) if stems[rel.with_suffix(suffix)] == 1 else rel.with_name(rel.name + suffix))
        r["output"] = out.as_posix()
        if r["output"] in seen:
            raise DatasetError(f"{r['source']} and {seen[r['output']]} would both be written to {r['output']}")
        seen[r["output"]] = r["source"]
    return rows


def write_index(ds: VideoDataset, dst: Path, done: list[dict]) -> list[Path]:
    """Write the index files that make ``dst`` a dataset of ``ds.format`` with the prepared videos."""
    base, written = _base(ds), []

    def copy(path: Path) -> None:
        target = dst / path.relative_to(base)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        written.append(target)

    if ds.format == "csv":
        lines = ["path,label,split"] + [f"{_csv_field(r['output'])},{_csv_field(ds.classes[r['label']])},{r['split']}"
                                        for r in done]
        written.append(_write_text(dst / "labels.csv", "\n".join(lines) + "\n"))
    elif ds.format == "kinetics":
        root = Path(ds.root)
        files = [root] if root.is_file() else [p for p in sorted(root.glob("*.csv")) + sorted(
            root.glob("annotations/*.csv")) if _is_kinetics_csv(p)]
        for f in files:
            copy(f)
    elif ds.format == "ssv2":
        for f in _ssv2_files(Path(ds.root)) or ():
            copy(f)
    elif ds.format == "ucf101":
        class_ind = _find_file(Path(ds.root), "classInd.txt")
        copy(class_ind)
        renamed = {_tail(r["source"]): r["output"] for r in done}
        for lst in sorted(class_ind.parent.glob("*list0[0-9].txt")):
            kept = []
            for line in lst.read_text().splitlines():
                parts = line.split()
                if parts and _tail(parts[0]) in renamed:
                    kept.append(" ".join([_tail(renamed[_tail(parts[0])])] + parts[1:]))
            written.append(_write_text(dst / lst.relative_to(base), "\n".join(kept) + "\n"))
    return written


def _tail(path: str) -> str:
    """``<class folder>/<file>`` of a UCF101 path (how its lists name videos)."""
    return "/".join(Path(path.replace("\\", "/")).parts[-2:])


def _csv_field(value: str) -> str:
    return '"' + value.replace('"', '""') + '"' if any(c in value for c in ',"\n') else value


def _write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------- records (resume)

def _record_path(dst: Path, source: str) -> Path:
    return dst / RECORDS_DIR / (hashlib.sha1(source.encode()).hexdigest()[:20] + ".json")


def _save_record(dst: Path, record: dict) -> None:
    _write_text(_record_path(dst, record["source"]), json.dumps(record))


def _load_records(dst: Path, say: Callable[[str], None] = print) -> dict[str, dict]:
    """The records of earlier runs; a corrupt one is set aside (``*.corrupt-<time>``) and its file redone."""
    from e3d.statefile import set_aside  # noqa: PLC0415

    out, bad = {}, []
    for path in sorted((dst / RECORDS_DIR).glob("*.json")):
        try:
            record = json.loads(path.read_text())
            out[record["source"]] = record
        except (ValueError, KeyError, TypeError):
            bad.append(set_aside(path))
    if bad:
        say(f"{len(bad)} corrupt record(s) under {dst / RECORDS_DIR} set aside (e.g. {bad[0].name}); their videos "
            f"are prepared again")
    return out


def _source_id(path: str) -> dict:
    try:
        st = os.stat(path)
        return {"source_size": st.st_size, "source_mtime_ns": st.st_mtime_ns}
    except OSError:
        return {"source_size": None, "source_mtime_ns": None}


def _is_done(row: dict, record: dict | None, dst: Path, settings: PrepareSettings, retry_failed: bool) -> bool:
    if record is None or record.get("output") != row["output"] or record.get("settings") != settings.identity():
        return False
    if any(record.get(k) != v for k, v in _source_id(row["source"]).items()):
        return False
    if record["status"] != "ok":
        return not retry_failed
    out = dst / row["output"]
    return out.is_file() and out.stat().st_size == record.get("bytes_out")


def _prepare_row(row: dict, *, dst: str, settings: dict) -> dict:
    """Ray Data task body: prepare one file, record it; the record travels back as one JSON column."""
    s = PrepareSettings(**settings)
    record = prepare_video_bounded(row["source"], str(Path(dst, row["output"])), settings=s)
    record.update(row, settings=s.identity(), **_source_id(row["source"]))
    _save_record(Path(dst), record)
    return {"record": json.dumps(record)}


# ---------------------------------------------------------------- the job

def prepare_dataset(src: str | os.PathLike, dst: str | os.PathLike, *, format: str | None = None,
                    settings: PrepareSettings = PrepareSettings(), split: int = 1, val_fraction: float = 0.2,
                    seed: int = 0, retry_failed: bool = False, num_cpus: float = 1.0,
                    progress: Callable[[str], None] | None = print,
                    start_ray: Callable[[], Any] | None = None) -> dict:
    """Prepare every video of ``src`` into ``dst`` on Ray Data; returns the summary (also in prepare.json).

    ``format``/``split``/``val_fraction``/``seed`` read the source as ``formats.load_dataset``.
    Uses the running Ray session or starts one (``start_ray``, e.g. the jobs' quiet ``init_ray``; default a local
    Ray) when there are files to prepare. ``progress`` gets one line per file.
    Raises ``formats.DatasetError`` / ValueError for an unreadable source or bad paths, before any work.
    """
    check_paths(src, dst)
    ds = load_dataset(src, format, val_fraction=val_fraction, seed=seed, split=split)
    rows = plan(ds)
    dst = Path(os.path.abspath(dst))
    say = progress or (lambda _: None)
    records = _load_records(dst, say)
    todo = [r for r in rows if not _is_done(r, records.get(r["source"]), dst, settings, retry_failed)]
    say(f"{len(rows)} videos ({ds.format}, {len(ds.classes)} classes): {len(rows) - len(todo)} already done, "
        f"{len(todo)} to prepare")
    if todo:  # outputs are about the sources' size (docs/video.md: 0.5-0.6x at 256 short side)
        from pipeline.faults import check_free_space  # noqa: PLC0415

        check_free_space(dst, sum(_size(r["source"]) or 0 for r in todo) + 16e6, f"preparing {len(todo)} videos",
                         say=say)
    for r in todo:  # a file whose output moves (e.g. another split seed): drop the old output
        old = records.get(r["source"], {}).get("output")
        if old and old != r["output"]:
            (dst / old).unlink(missing_ok=True)
    start = time.perf_counter()
    records.update(_run(todo, dst, settings, num_cpus, say, start_ray) if todo else {})
    wall = time.perf_counter() - start
    current = [records[r["source"]] | r for r in rows]
    _remove_stale(dst, {r["source"] for r in rows}, records)
    ok = [r for r in current if r["status"] == "ok"]
    write_index(ds, dst, ok)
    _write_manifest(dst / MANIFEST, current)
    summary = _summary(ds, dst, current, todo, wall, settings, split)
    _write_text(dst / SUMMARY, json.dumps(summary, indent=2))
    for line in _summary_lines(summary):
        say(line)
    return summary


def _run(todo: list[dict], dst: Path, settings: PrepareSettings, num_cpus: float,
         say: Callable[[str], None], start_ray: Callable[[], Any] | None = None) -> dict[str, dict]:
    """One Ray Data task per file; returns the records by source (crashed tasks get a failed record)."""
    import ray

    started = not ray.is_initialized()
    if started:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        start_ray() if start_ray is not None else ray.init(include_dashboard=False)
    ctx = ray.data.DataContext.get_current()
    saved = ctx.enable_progress_bars, ctx.max_errored_blocks
    ctx.enable_progress_bars, ctx.max_errored_blocks = False, -1  # our own progress; a crashed task is one file
    out: dict[str, dict] = {}
    try:
        with warnings.catch_warnings():  # Ray 2.60's map() has no named max_retries; its default (-1) would
            warnings.simplefilter("ignore", DeprecationWarning)  # retry a file that kills its worker forever
            data = ray.data.from_items(todo, override_num_blocks=len(todo)).map(
                _prepare_row, fn_kwargs={"dst": str(dst), "settings": asdict(settings)}, num_cpus=num_cpus,
                max_retries=1)
        for row in data.iter_rows():
            record = json.loads(row["record"])
            out[record["source"]] = record
            say(_progress_line(len(out), len(todo), record))
    finally:
        ctx.enable_progress_bars, ctx.max_errored_blocks = saved
        if started:
            ray.shutdown()
    for row in todo:
        if row["source"] not in out:  # the task died (worker crash) twice: report, do not stop
            record = row | {"status": "failed", "kind": "crash", "reason": "task crashed (worker died) twice",
                            "settings": settings.identity(), **_source_id(row["source"])}
            Path(dst, row["output"] + ".part").unlink(missing_ok=True)
            _save_record(dst, record)
            out[row["source"]] = record
            say(_progress_line(len(out), len(todo), record))
    return out


def _progress_line(k: int, n: int, r: dict) -> str:
    if r["status"] == "ok":
        return (f"[{k}/{n}] ok     {r['output']}: {r['frames_out']} frames, {r['width_out']}x{r['height_out']}, "
                f"{r['bytes_out'] / 1e6:.2f} MB, {r['cpu_seconds']:.2f} CPU-s")
    return f"[{k}/{n}] FAILED {r['source']} ({r['kind']}): {r['reason']}"


def _remove_stale(dst: Path, planned: set[str], records: dict[str, dict]) -> None:
    """Outputs and records of sources no longer in the dataset (never anything this job did not write)."""
    for source, record in records.items():
        if source not in planned:
            if record.get("output"):
                (dst / record["output"]).unlink(missing_ok=True)
            _record_path(dst, source).unlink(missing_ok=True)


_MANIFEST_COLUMNS = ("source", "output", "label", "split", "status", "kind", "reason", "frames_in", "frames_out",
                     "width_out", "height_out", "fps_in", "fps_out", "vfr", "timing", "keyint", "min_psnr",
                     "checked_frames", "bytes_in", "bytes_out", "seconds", "cpu_seconds")


def _write_manifest(path: Path, records: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([{k: r.get(k) for k in _MANIFEST_COLUMNS} for r in records])
    tmp = path.with_name(path.name + ".part")
    pq.write_table(table, tmp, write_page_checksum=True)
    os.replace(tmp, path)


def read_manifest(dst: str | os.PathLike) -> list[dict]:
    """The manifest of a prepared dataset as a list of records."""
    import pyarrow.parquet as pq

    path = Path(dst) / MANIFEST
    try:
        return pq.read_table(path, page_checksum_verification=True).to_pylist()
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError; FileNotFoundError an OSError
        raise DatasetError(f"{path}: unreadable manifest ({exc}); rerun jobs/prepare_data.py to rewrite it") from None


def compare_datasets(src: VideoDataset, dst: VideoDataset, records: list[dict], root: Path) -> list[str]:
    """Differences in classes, labels or splits between a source and its copy prepared into ``root``
    (empty: the same)."""
    problems = []
    if dst.classes != src.classes:
        lost = sorted(set(src.classes) - set(dst.classes))
        problems.append(f"classes differ (lost: {lost})" if lost else "classes differ")
    where = {os.path.realpath(it.path): (split, dst.classes[it.label])
             for split, items in (("train", dst.train), ("val", dst.val)) for it in items}
    for r in records:
        if r["status"] != "ok":
            continue
        got = where.get(os.path.realpath(root / r["output"]))
        if got != (r["split"], src.classes[r["label"]]):
            problems.append(f"{r['output']}: {got} instead of {(r['split'], src.classes[r['label']])}")
    return problems


def _summary(ds: VideoDataset, dst: Path, records: list[dict], todo: list[dict], wall: float,
             settings: PrepareSettings, split: int) -> dict:
    ok = [r for r in records if r["status"] == "ok"]
    failed = [r for r in records if r["status"] != "ok"]
    redone = {r["source"] for r in todo}
    this_run = [r for r in records if r["source"] in redone]
    cpu = sum(r.get("cpu_seconds") or 0 for r in this_run)
    try:
        problems = compare_datasets(ds, load_dataset(dst, ds.format, split=split), records, dst)
    except ValueError as e:  # DatasetError included: e.g. nothing was prepared
        problems = [f"prepared dataset does not load: {e}"]
    return {
        "source": ds.root, "destination": str(dst), "format": ds.format, "settings": asdict(settings),
        "videos": len(records), "ok": len(ok), "failed": len(failed), "prepared_now": len(this_run),
        "skipped_done": len(records) - len(this_run), "missing_in_source": len(ds.missing),
        "vfr": sum(1 for r in ok if r.get("vfr")), "retimed": sum(1 for r in ok if r.get("timing") == "retimed"),
        "bytes_in": sum(r.get("bytes_in") or 0 for r in ok), "bytes_out": sum(r.get("bytes_out") or 0 for r in ok),
        "wall_seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
        "videos_per_cpu_second": round(len(this_run) / cpu, 3) if cpu else None,
        "labels_and_splits_preserved": not problems, "problems": problems[:20],
        "failures": [{"source": r["source"], "kind": r["kind"], "reason": r["reason"]} for r in failed],
    }


def _summary_lines(s: dict) -> list[str]:
    lines = [f"prepared {s['ok']}/{s['videos']} videos into {s['destination']} ({s['prepared_now']} now, "
             f"{s['skipped_done']} already done); failed {s['failed']}"]
    if s["prepared_now"]:
        lines.append(f"this run: {s['wall_seconds']:.1f} s wall, {s['cpu_seconds']:.1f} CPU-s, "
                     f"{s['videos_per_cpu_second']} videos per CPU-second")
    if s["bytes_in"]:
        lines.append(f"size: {s['bytes_in'] / 1e6:.1f} MB -> {s['bytes_out'] / 1e6:.1f} MB; "
                     f"variable frame rate kept: {s['vfr']}, retimed: {s['retimed']}")
    lines += [f"failed: {f['source']} ({f['kind']}): {f['reason']}" for f in s["failures"]]
    lines.append("labels and splits: " + ("preserved" if s["labels_and_splits_preserved"]
                                          else "DIFFER: " + "; ".join(s["problems"])))
    return lines


__all__ = ["PrepareSettings", "PrepareError", "prepare_video", "prepare_dataset", "plan", "write_index",
           "check_paths", "check_frames", "check_indices", "compare_datasets", "output_size", "read_manifest"]
