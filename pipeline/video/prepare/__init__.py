"""Prepare a video dataset for fast training: re-encode every video once, verify it, resumably, on Ray Data.

Clip decoding costs what the decoder must decode from the keyframe before a clip plus the clip's own
span, at the file's bit rate and entropy coder. Long-GOP H.264 (a keyframe every 250 frames) makes
every exact method decode from far back. ``prepare_dataset`` writes a copy of a dataset in which every
video is H.264 with a keyframe every ``keyint`` frames (default: one per second), short side
``short_side`` (default 256, never upscaled), quality ``crf``, x264's ``fastdecode`` tuning (no CABAC,
no deblocking filter), no B-frames and no audio. Frame count and order are kept: every decoded frame
is encoded once. See docs/video.md ("Preparing a dataset") for the choices and measured numbers.

Per file (``video.prepare_video``; no Ray):

1. ``encode``: ``decode.probe`` (frame count, rate, rotation; bad files raise ``VideoDecodeError``) and a demux
   pass for the packet timestamps. Regular timestamps give a constant-rate output at the source's
   rate; variable frame rate (an interval more than 25% off the median) keeps the source timestamps;
   missing or repeated timestamps (e.g. Xvid with packed B-frames) give a constant-rate output at the
   stream's rate ("retimed"). The manifest records which.
2. One sequential decode; each frame is scaled (area filter) to the output size in yuv420p, rotation
   metadata baked into the pixels, and encoded. The frames at the check indices are kept as RGB.
3. ``verify``: the output decodes fully with the same frame count (and, at a constant rate, the same
   frame rate), and ``decode.decode_clips`` on the output (which seeks, as training does) returns, at
   the check indices (three training clips of 16 frames every 5th, frame 0, the last frame and frames
   around three keyframes), frames within encoding noise of the source's: PSNR >= ``min_psnr``
   (default 25 dB; crf 23 gives 30-37 dB) and no neighbouring source frame twice as close (a shifted
   frame). Any failure marks the file failed.
4. The output is written to ``<output>.part`` and renamed when verified.

Per dataset (``dataset.prepare_dataset``): ``formats.load_dataset``, ``layout.plan`` (where each video goes), one
Ray Data task per file (``from_items`` + ``map``, 1 CPU each, from the cluster), a record per finished file in
``DST/.prepare/records/`` (``records``, written atomically by the task), then the format's index files
(``DatasetFormat.write_index``: same labels and splits), ``DST/manifest.parquet`` and ``DST/prepare.json``
(``report``). A rerun skips files whose record matches (same source size and mtime, same settings, output
present); failed files are not retried unless ``retry_failed``. Bad sources never stop the job: each gets a
failed record with its reason.

Modules: ``settings`` (PrepareSettings, PrepareError), ``encode``, ``verify``, ``video`` (one file, and the
child process with a hard time bound), ``layout``, ``records`` (resume records, the manifest), ``report``,
``dataset`` (the job).
"""
from __future__ import annotations

import importlib
from typing import Any

# name -> the module that defines it, imported on first use: the settings a job's --help lists need no PyAV
_WHERE = {"prepare_dataset": "dataset", "check_indices": "encode", "output_size": "encode", "check_paths": "layout",
          "plan": "layout", "read_manifest": "records", "compare_datasets": "report", "X264_PRESETS": "settings",
          "PrepareError": "settings", "PrepareSettings": "settings", "NEIGHBOUR_FACTOR": "verify",
          "check_frames": "verify", "prepare_video": "video", "prepare_video_bounded": "video",
          "run_bounded": "video"}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
