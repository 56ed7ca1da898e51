"""Batch inference on Ray Data: decode as CPU tasks, the network on an actor pool, per-video softmax on the driver.

    report = run_batch(model, preprocessing, list_videos(...), "pred/", BatchOptions(actors=2))

- The videos are numbered and cut into blocks of ``block_size``. Blocks whose part ``parts/part-NNNNN.parquet``
  exists are done; the others stream through one Ray Data pipeline:
  ``from_items`` (path, video id) -> ``map_batches`` decode (one video per call, CPU tasks: ``clips x crops`` view
  rows, :func:`pipeline.predict.views.video_views`, the job's own view decoding; a file that fails gives one row
  with its ``error``) -> ``map_batches`` on an actor pool (the network, ``batch_size`` views per forward pass,
  ``gpus_per_actor`` GPUs each) -> the driver, which averages each video's softmax over its views
  (:class:`pipeline.train.evaluate.ViewAccumulator`, as the job's evaluation does) and writes a block's part as soon
  as its last video is in (a temporary file renamed into place). Nothing holds more than the videos in flight.
- ``predictions.parquet`` is the parts in video order: ``path``, ``video_id``, ``top1``, ``topk`` and ``probs``
  (class names best first and their probabilities), ``views``, ``error`` (why a file gave no prediction), ``cpu_s``,
  and with labels ``label`` (the true class name) and ``label_rank`` (its rank among all classes, 1 = top-1);
  ``logits`` (each class's logit averaged over the views) with ``BatchOptions.logits``.
- ``manifest.json`` ties ``--out`` to its model, preprocessing and videos: a rerun with the same ones resumes,
  anything else is refused (or starts again with ``restart``).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from e3d.model_folder import Preprocessing

from .inputs import Videos
from .views import clip_config, error_line, video_views

PREDICTIONS_FILE = "predictions.parquet"
MANIFEST_FILE = "manifest.json"
METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion.png"
PARTS_DIR = "parts"


class ResumeError(ValueError):
    """``--out`` holds predictions made with another model, preprocessing or list of videos."""


@dataclass(frozen=True)
class BatchOptions:
    """``block_size``: videos per part file (the unit of resumption); ``batch_size``: views per forward pass;
    ``actors``: network actors (None: an autoscaling pool of 1 to what the cluster holds); ``gpus_per_actor``,
    ``cpus_per_actor``: each actor's share; ``decode_cpus``: CPUs per decode task; ``topk``: class names kept per
    video; ``logits``: also keep the averaged logits; ``decode_timeout``: seconds before a file counts as hung."""

    block_size: int = 64
    batch_size: int = 16
    actors: int | None = None
    gpus_per_actor: float = 0.0
    cpus_per_actor: float = 1.0
    decode_cpus: float = 1.0
    topk: int = 5
    logits: bool = False
    decode_timeout: float = 30.0


@dataclass
class BatchReport:
    """What :func:`run_batch` did; ``*_now`` count this session's work (a resumed run skips finished blocks)."""

    out: str
    predictions: str
    videos: int
    decoded: int
    undecodable: list[dict[str, str]]
    blocks: int
    blocks_now: int
    videos_now: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    decode_cpu_s: float = 0.0
    videos_per_s: float = float("nan")
    videos_per_cpu_s: float = float("nan")
    metrics: dict[str, Any] = field(default_factory=dict)
    confusion: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- the pipeline's two steps (run in Ray workers) ---------------------------------------------------------
def _decode_batch(batch: dict, cfg: Any, clips: int, crops: int) -> dict:
    """One video -> its view rows (or one row naming its error), with the decode's CPU time."""
    out: dict[str, list] = {"clip": [], "video_id": [], "n_views": [], "error": [], "cpu_s": []}
    for vid, path in zip(batch["video_id"], batch["path"]):
        t0 = time.process_time()
        try:
            views, error = video_views(str(path), cfg, clips, crops), ""
        except Exception as exc:  # a bad file must never stop the job: one row says why
            views, error = np.zeros((1, *cfg.clip_shape()), np.float32), error_line(exc) or "error"
        cpu = time.process_time() - t0
        n = len(views)
        out["clip"] += list(views)
        out["video_id"] += [int(vid)] * n
        out["n_views"] += [0 if error else n] * n
        out["error"] += [error] * n
        out["cpu_s"] += [cpu / n] * n
    return {"clip": np.stack(out["clip"]), "video_id": np.asarray(out["video_id"], np.int64),
            "n_views": np.asarray(out["n_views"], np.int64), "error": np.asarray(out["error"], dtype=object),
            "cpu_s": np.asarray(out["cpu_s"], np.float64)}


class _Network:
    """The network on one actor: view rows -> their logits (rows naming an error pass through with zeros)."""

    def __init__(self, payload: Any, threads: int | None):
        import ray
        import torch

        from e3d.model import build_model
        from e3d.spec import ArchSpec

        if isinstance(payload, list):  # [ObjectRef]: the weights travel through the object store once
            payload = ray.get(payload[0])
        if threads:
            torch.set_num_threads(max(1, int(threads)))
        self.device = torch.device("cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu")
        model = build_model(ArchSpec.from_dict(payload["spec"]), dropout=payload["dropout"])
        model.load_state_dict(payload["state"])
        self.model = model.to(self.device).eval()
        self.num_classes = int(payload["num_classes"])

    def __call__(self, batch: dict) -> dict:
        import torch

        t0 = time.process_time()
        ok = np.asarray([not e for e in batch["error"]])
        logits = np.zeros((len(ok), self.num_classes), np.float32)
        if ok.any():
            with torch.no_grad():
                x = torch.from_numpy(np.ascontiguousarray(batch["clip"][ok])).to(self.device)
                logits[ok] = self.model(x).float().cpu().numpy()
        cpu = (time.process_time() - t0) / max(1, len(ok))
        return {"video_id": batch["video_id"], "n_views": batch["n_views"], "error": batch["error"],
                "logits": logits, "cpu_s": batch["cpu_s"] + cpu, "decode_cpu_s": batch["cpu_s"]}


# -- bookkeeping on the driver -----------------------------------------------------------------------------
def model_payload(model: Any) -> dict[str, Any]:
    drop = [m for m in model.modules() if type(m).__name__ == "Dropout"]
    return {"spec": model.spec.to_dict(), "dropout": float(drop[-1].p) if drop else 0.5,
            "state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "num_classes": int(model.spec.num_classes)}


def fingerprint(payload: dict[str, Any], pre: Preprocessing, videos: Videos, options: BatchOptions) -> dict[str, Any]:
    """What ties an output folder to its inputs (compared on resume)."""
    h = hashlib.sha1(json.dumps(payload["spec"], sort_keys=True).encode())
    for k in sorted(payload["state"]):
        h.update(k.encode())
        h.update(payload["state"][k].numpy().tobytes())
    items = hashlib.sha1(json.dumps([videos.paths, videos.labels]).encode()).hexdigest()
    return {"version": 1, "model": h.hexdigest(), "preprocessing": pre.to_dict(), "videos": len(videos.paths),
            "inputs": items, "block_size": options.block_size, "topk": options.topk, "logits": options.logits}


def _schema(labelled: bool, logits: bool):
    import pyarrow as pa

    fields = [("path", pa.string()), ("video_id", pa.int64())]
    if labelled:
        fields += [("label", pa.string()), ("label_rank", pa.int32())]
    fields += [("top1", pa.string()), ("topk", pa.list_(pa.string())), ("probs", pa.list_(pa.float64())),
               ("views", pa.int32()), ("error", pa.string()), ("cpu_s", pa.float64()), ("decode_cpu_s", pa.float64())]
    if logits:
        fields.append(("logits", pa.list_(pa.float32())))
    return pa.schema(fields)


def _write_part(path: Path, rows: list[dict[str, Any]], schema) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = sorted(rows, key=lambda r: r["video_id"])
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
    os.replace(tmp, path)


def resume_conflict(out: str | os.PathLike, manifest: dict[str, Any]) -> str | None:
    """Why ``out`` cannot be resumed with ``manifest`` (one line), or None (nothing there, or the same run)."""
    mf = Path(out) / MANIFEST_FILE
    if not mf.is_file():
        return None
    try:
        old = json.loads(mf.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        old = None
    if old == manifest:
        return None
    what = [k for k in manifest if not isinstance(old, dict) or old.get(k) != manifest[k]]
    return (f"{out} holds predictions of another run (different {', '.join(what) or 'manifest'}); give another "
            "--out or --restart")


def _prepare_out(out: Path, manifest: dict[str, Any], restart: bool) -> Path:
    parts = out / PARTS_DIR
    conflict = None if restart else resume_conflict(out, manifest)
    if conflict:
        raise ResumeError(conflict)
    if restart:
        shutil.rmtree(parts, ignore_errors=True)
        for f in (PREDICTIONS_FILE, METRICS_FILE, CONFUSION_FILE):
            (out / f).unlink(missing_ok=True)
    parts.mkdir(parents=True, exist_ok=True)
    for stray in parts.glob(".*.tmp"):  # a part being written when the last run was killed
        stray.unlink()
    tmp = out / f".{MANIFEST_FILE}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, out / MANIFEST_FILE)
    return parts


def part_path(parts: Path, block: int) -> Path:
    return parts / f"part-{block:05d}.parquet"


class _Collector:
    """The driver's side: per-video softmax averaged over its view rows as they arrive, a block's part written when
    its last video is in. Holds only the videos and blocks in flight."""

    def __init__(self, videos: Videos, labels: list[str], options: BatchOptions, parts: Path, schema: Any,
                 pending: list[int], report: BatchReport, say: Callable[[str], None],
                 on_block: Callable[[int], None] | None):
        from pipeline.train.evaluate import ViewAccumulator

        self.videos, self.labels, self.options, self.parts, self.schema = videos, labels, options, parts, schema
        self.report, self.say, self.on_block = report, say, on_block
        self.index = {name: i for i, name in enumerate(labels)}
        n, size = len(videos.paths), options.block_size
        self.remaining = {b: min(n, (b + 1) * size) - b * size for b in pending}
        self.rows: dict[int, list[dict[str, Any]]] = {b: [] for b in pending}
        self.pending = len(pending)
        self.step = max(1, len(pending) // 10)
        self.acc = ViewAccumulator(len(labels))
        self.logit_sums: dict[int, np.ndarray] = {}
        self.costs: dict[int, list[float]] = {}
        self.t0 = time.perf_counter()

    def take(self, batch: dict) -> None:
        """One batch of the actors' output rows (any videos' views, in any order)."""
        import torch

        vids, nviews, errors = batch["video_id"].tolist(), batch["n_views"].tolist(), batch["error"]
        for vid, cpu, dcpu in zip(vids, batch["cpu_s"].tolist(), batch["decode_cpu_s"].tolist()):
            c = self.costs.setdefault(vid, [0.0, 0.0])
            c[0] += cpu
            c[1] += dcpu
            self.report.cpu_s += cpu
            self.report.decode_cpu_s += dcpu
        for vid, e in zip(vids, errors):
            if e:
                self._finish(vid, None, 0, str(e))
        ok = np.asarray([not e for e in errors])
        if not ok.any():
            return
        logits, ok_vids = batch["logits"][ok], np.asarray(vids)[ok]
        self.acc.add(torch.from_numpy(logits), np.zeros(len(ok_vids), np.int64), ok_vids)  # the job's averaging
        if self.options.logits:
            for vid, row in zip(ok_vids.tolist(), logits.astype(np.float64)):
                self.logit_sums[vid] = self.logit_sums.get(vid, 0.0) + row
        expected = dict(zip(vids, nviews))
        for vid in dict.fromkeys(ok_vids.tolist()):
            if self.acc.views[vid] == expected[vid]:  # every view of this video is in
                views = self.acc.views.pop(vid)
                probs = self.acc.probs.pop(vid) / views
                self.acc.labels.pop(vid)
                self._finish(vid, probs, views, None)

    def _finish(self, vid: int, probs: np.ndarray | None, views: int, error: str | None) -> None:
        import torch

        labelled = self.videos.labels is not None
        label = self.videos.labels[vid] if labelled else None
        cpu, dcpu = self.costs.pop(vid, [0.0, 0.0])
        row: dict[str, Any] = {"path": self.videos.paths[vid], "video_id": vid, "views": views, "error": error,
                               "cpu_s": cpu, "decode_cpu_s": dcpu, "top1": None, "topk": None, "probs": None}
        if probs is not None:
            order = torch.from_numpy(probs).topk(len(self.labels)).indices.tolist()  # topk_correct's order
            k = min(self.options.topk, len(self.labels))
            row |= {"top1": self.labels[order[0]], "topk": [self.labels[i] for i in order[:k]],
                    "probs": [float(probs[i]) for i in order[:k]]}
            if labelled:
                row["label_rank"] = order.index(self.index[label]) + 1 if label in self.index else None
            if self.options.logits:
                row["logits"] = (self.logit_sums.pop(vid) / views).astype(np.float32).tolist()
        if labelled:
            row["label"] = label
        b = vid // self.options.block_size
        self.rows[b].append(row)
        self.remaining[b] -= 1
        self.report.videos_now += 1
        if self.remaining[b] == 0:
            _write_part(part_path(self.parts, b), self.rows.pop(b), self.schema)
            done = self.pending - len(self.rows)
            if done % self.step == 0 or not self.rows:
                self.say(f"[predict] {done}/{self.pending} blocks, {self.report.videos_now} videos, "
                         f"{self.report.videos_now / (time.perf_counter() - self.t0):.2f} videos/s")
            if self.on_block is not None:
                self.on_block(b)


def _pipeline(videos: Videos, ids: list[int], pre: Preprocessing, payload: dict[str, Any], options: BatchOptions):
    """The Ray Dataset of the network's output rows for the videos ``ids``."""
    import ray

    ds = ray.data.from_items([{"video_id": v, "path": videos.paths[v]} for v in ids],
                             override_num_blocks=max(1, min(len(ids), math.ceil(len(ids) / 2))))
    # decode tasks are retried when their worker dies; their remote args differing from the actors' also keeps
    # Ray Data from fusing the decoding into the network's actors (decoding stays on CPU tasks)
    ds = ds.map_batches(_decode_batch, batch_size=1, batch_format="numpy", num_cpus=options.decode_cpus,
                        max_retries=3, fn_kwargs={"cfg": clip_config(pre, decode_timeout=options.decode_timeout),
                                                  "clips": pre.clips, "crops": pre.crops})
    return ds.map_batches(_Network, batch_size=options.batch_size, batch_format="numpy",
                          compute=_actor_pool(options), num_cpus=options.cpus_per_actor,
                          num_gpus=options.gpus_per_actor or None,
                          fn_constructor_kwargs={"payload": [ray.put(payload)],  # nested: fetched by the actor
                                                 "threads": max(1, int(options.cpus_per_actor))})


def run_batch(model: Any, pre: Preprocessing, videos: Videos, out: str | os.PathLike,
              options: BatchOptions = BatchOptions(), *, restart: bool = False, say: Callable[[str], None] = print,
              on_block: Callable[[int], None] | None = None) -> BatchReport:
    """Label ``videos`` with ``model`` (see the module doc); Ray must be initialised. ``on_block(block)`` is called
    after each part is written (progress, tests)."""
    out = Path(out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    payload = model_payload(model)
    parts = _prepare_out(out, fingerprint(payload, pre, videos, options), restart)
    labels = list(pre.labels)
    labelled = videos.labels is not None
    schema = _schema(labelled, options.logits)
    n, size = len(videos.paths), options.block_size
    blocks = math.ceil(n / size)
    pending = [b for b in range(blocks) if not part_path(parts, b).is_file()]
    say(f"[predict] {videos.description}: {blocks} blocks of {size}, {blocks - len(pending)} already done; "
        f"{pre.clips} clips x {pre.crops} crops of {pre.frames}x{pre.size}^2 every {pre.sampling_rate} frames")
    report = BatchReport(out=str(out), predictions=str(out / PREDICTIONS_FILE), videos=n, decoded=0, undecodable=[],
                         blocks=blocks, blocks_now=len(pending))
    t0 = time.perf_counter()
    if pending:
        ids = [v for b in pending for v in range(b * size, min(n, (b + 1) * size))]
        collector = _Collector(videos, labels, options, parts, schema, pending, report, say, on_block)
        stream = iter(_pipeline(videos, ids, pre, payload, options).iter_batches(batch_size=None, batch_format="numpy"))
        try:
            for batch in stream:
                collector.take(batch)
        finally:  # an exception (a kill, ^C) closes the stream: the pipeline and its actors shut down
            stream.close()
        if collector.rows:
            raise RuntimeError(f"the pipeline ended with {len(collector.rows)} blocks unfinished (videos lost)")
    report.wall_s = time.perf_counter() - t0
    if report.videos_now:
        report.videos_per_s = report.videos_now / report.wall_s
        report.videos_per_cpu_s = report.videos_now / report.cpu_s if report.cpu_s > 0 else float("nan")
    _finish_outputs(out, parts, blocks, labels, labelled, report, schema)
    return report


def _actor_pool(options: BatchOptions):
    import ray

    if options.actors:
        return ray.data.ActorPoolStrategy(size=options.actors)
    res = ray.cluster_resources()
    if options.gpus_per_actor:
        most = int(res.get("GPU", 0) // options.gpus_per_actor)
    else:
        most = int((res.get("CPU", 1) - options.decode_cpus) // max(options.cpus_per_actor, 1e-9))
    return ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, most))


def _finish_outputs(out: Path, parts: Path, blocks: int, labels: list[str], labelled: bool, report: BatchReport,
                    schema) -> None:
    """``predictions.parquet`` from the parts, the undecodable files, and with labels the metrics and confusion."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.concat_tables([pq.read_table(part_path(parts, b), schema=schema) for b in range(blocks)])
    table = table.sort_by("video_id")
    tmp = out / f".{PREDICTIONS_FILE}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, out / PREDICTIONS_FILE)
    errors = table.column("error").to_pylist()
    paths = table.column("path").to_pylist()
    report.undecodable = [{"path": p, "error": e} for p, e in zip(paths, errors) if e]
    report.decoded = len(paths) - len(report.undecodable)
    metrics: dict[str, Any] = {"videos": len(paths), "decoded": report.decoded,
                               "undecodable": len(report.undecodable)}
    if labelled:
        from .report import accuracy, plot_confusion

        metrics |= accuracy(table.column("label").to_pylist(), table.column("label_rank").to_pylist(),
                            table.column("top1").to_pylist(), labels)
        if metrics.get("scored"):
            title = f"top-1 {metrics['top1']:.1f} % over {metrics['scored']} videos"
            report.confusion = str(plot_confusion(metrics["confusion"], labels, out / CONFUSION_FILE, title=title))
    report.metrics = metrics
    doc = metrics | {"throughput": {k: getattr(report, k) for k in ("videos_now", "wall_s", "cpu_s", "decode_cpu_s",
                                                                    "videos_per_s", "videos_per_cpu_s")},
                     "undecodable_files": report.undecodable}
    (out / METRICS_FILE).write_text(json.dumps(doc, indent=2, default=float) + "\n")
