"""A trained network as a model folder, as model hubs lay them out: ``config.json``, ``model.safetensors``,
``README.md``.

    write_model_folder("best/", model, preprocessing, card=CardInfo(...))   # the folder, from a network in memory
    model, pre = e3d.load("best/")             # the network in eval mode (CPU) and how to feed it
    pre.frames, pre.size, pre.sampling_rate, pre.mean, pre.std, pre.clips, pre.crops, pre.labels

- ``config.json``: ``spec`` (the trained :class:`~e3d.spec.ArchSpec`, so the folder rebuilds the network with
  :func:`e3d.model.build_model`), ``dropout``, ``id2label``/``label2id``, ``preprocessing`` (this module's
  :class:`Preprocessing`), ``cost`` (FLOPs, params and latency at the clip) and what the card says
  (``provenance``, ``recipe``, ``results``).
- ``model.safetensors``: the network's ``state_dict`` (weights and BatchNorm buffers), nothing executable.
- ``README.md``: the model card (:mod:`e3d.model_card`), YAML front matter as model hubs read it.

No Ray, no MLflow, no video decoding here: decoding a video into views is :mod:`pipeline.predict`; this
module says what the views are. ``safetensors`` is imported when a function needs it.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
FORMAT_VERSION = 1
LIBRARY = "e3d-ray"
KINETICS_MEAN = (0.45, 0.45, 0.45)  # pipeline.video.transforms's defaults (what every job trains with)
KINETICS_STD = (0.225, 0.225, 0.225)


class ModelFolderError(ValueError):
    """A folder that is not a readable model folder; the message names the file and the problem."""


@dataclass(frozen=True)
class Preprocessing:
    """How a video becomes the network's input, and what its outputs mean.

    A video gives ``clips`` clips of ``frames`` frames, one every ``sampling_rate`` decoded frames, at the
    centres of equal segments of the video; each clip's short side is resized to ``resize`` pixels and cut
    into ``crops`` crops of ``size`` x ``size`` (1: the centre; 3: along the long side); each view is
    ``(x / 255 - mean) / std`` per RGB channel, laid out ``(3, frames, size, size)``. The prediction is the
    softmax averaged over the ``clips * crops`` views; ``labels[i]`` names output ``i``. ``short``: what a
    video shorter than a clip does ("pad" repeats its last frame, "loop" starts again).
    """

    frames: int
    size: int
    sampling_rate: int
    labels: tuple[str, ...]
    clips: int = 1
    crops: int = 1
    resize: int | None = None
    mean: tuple[float, float, float] = KINETICS_MEAN
    std: tuple[float, float, float] = KINETICS_STD
    short: str = "pad"

    def __post_init__(self):
        object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))
        object.__setattr__(self, "mean", tuple(float(x) for x in self.mean))
        object.__setattr__(self, "std", tuple(float(x) for x in self.std))
        if min(self.frames, self.size, self.sampling_rate, self.clips) < 1:
            raise ValueError("frames, size, sampling_rate and clips must be >= 1")
        if self.crops not in (1, 3):
            raise ValueError(f"crops must be 1 or 3, got {self.crops}")
        if self.resize is not None and self.resize < self.size:
            raise ValueError(f"resize {self.resize} is smaller than the crop size {self.size}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std need 3 values each, std > 0")
        if not self.labels:
            raise ValueError("labels: the network's classes need names")

    @property
    def views(self) -> int:
        return self.clips * self.crops

    @property
    def short_side(self) -> int:
        """The short side a clip is resized to before cropping."""
        return self.resize or self.size

    def with_views(self, clips: int | None = None, crops: int | None = None) -> "Preprocessing":
        from dataclasses import replace

        return replace(self, clips=clips or self.clips, crops=crops or self.crops)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = list(self.labels)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Preprocessing":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown preprocessing keys {unknown}")
        return cls(**data)


@dataclass
class CardInfo:
    """What the model card says beyond the network itself (every field optional).

    ``provenance``: how the architecture was found (``strategy``, ``score``, ``budget``, ``seed``, ``candidate``);
    ``recipe``: the training recipe (``Recipe.to_dict()``); ``results``: ``mv_top1``/``mv_top5`` (percent, multi-view
    over ``mv_videos`` validation videos), ``val_top1``, ``epochs``; ``dataset``: name and ``root``;
    ``latency_ms``: batch-1 latency at the clip (measured when None and ``measure_latency``).
    """

    name: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    latency_ms: float | None = None
    latency_device: str = "cpu, 1 thread, batch 1"
    weights: str = "trained"  # or "init" / "random": a spec without training


def _state_tensors(model: Any) -> dict[str, Any]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def write_model_folder(folder: str | os.PathLike, model: Any, preprocessing: Preprocessing, *,
                       card: CardInfo | None = None, dropout: float | None = None,
                       measure_latency: bool = True) -> Path:
    """Write ``model`` (a :class:`~e3d.model.VideoNet`: its ``spec`` is saved) as a model folder; returns it.

    The files are written beside their final names and renamed into place, ``config.json`` last, so a folder
    with a ``config.json`` is complete. ``dropout`` defaults to the network's classifier dropout.
    """
    from safetensors.torch import save_file

    from .cost import cost
    from .model_card import render_card

    spec = getattr(model, "spec", None)
    if spec is None:
        raise ModelFolderError("write_model_folder: the module has no .spec (build it with e3d.model.build_model)")
    card = card or CardInfo()
    if len(preprocessing.labels) != spec.num_classes:
        raise ModelFolderError(f"{len(preprocessing.labels)} label names for a network with {spec.num_classes} "
                               "outputs")
    if (preprocessing.frames, preprocessing.size) != (spec.frames, spec.size):
        spec = spec.with_input(preprocessing.frames, preprocessing.size)
    if dropout is None:
        drop = [m for m in model.modules() if type(m).__name__ == "Dropout"]
        dropout = float(drop[-1].p) if drop else 0.5
    latency = card.latency_ms
    if latency is None and measure_latency:
        from .latency import Measurer

        latency = Measurer(threads=1, warmup=2, runs=5).network_ms(spec, model.eval())
    c = cost(spec)
    config = {
        "library": LIBRARY, "format_version": FORMAT_VERSION, "architecture": type(model).__name__,
        "name": card.name or spec.name, "spec": spec.to_dict(), "dropout": dropout, "num_classes": spec.num_classes,
        "id2label": {str(i): n for i, n in enumerate(preprocessing.labels)},
        "label2id": {n: i for i, n in enumerate(preprocessing.labels)},
        "preprocessing": preprocessing.to_dict(),
        "cost": {"flops": c.flops, "params": c.params, "layers": c.layers,
                 "input": [3, spec.frames, spec.size, spec.size], "latency_ms": latency,
                 "latency_device": card.latency_device if latency is not None else None},
        "weights": card.weights, "provenance": card.provenance, "recipe": card.recipe, "results": card.results,
        "dataset": card.dataset,
    }
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights_tmp = folder / f".{WEIGHTS_FILE}.tmp"
    save_file(_state_tensors(model), str(weights_tmp), metadata={"format": "pt", "library": LIBRARY})
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(weights_tmp, 0o666 & ~mask)  # safetensors writes 0600: a model folder is meant to be shared
    weights_tmp.replace(folder / WEIGHTS_FILE)
    _write_text(folder / CARD_FILE, render_card(config))
    _write_text(folder / CONFIG_FILE, json.dumps(config, indent=2, default=_json_default) + "\n")
    return folder


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _json_default(x: Any) -> Any:
    if isinstance(x, (tuple, set)):
        return list(x)
    if hasattr(x, "item"):
        return x.item()
    return str(x)


def is_model_folder(path: str | os.PathLike) -> bool:
    return (Path(path) / CONFIG_FILE).is_file() and (Path(path) / WEIGHTS_FILE).is_file()


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """``config.json`` of a model folder, checked for the keys :func:`load` needs."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise ModelFolderError(f"{folder}: no {CONFIG_FILE} (not a model folder)")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFolderError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ModelFolderError(f"{path}: expected a JSON object")
    missing = [k for k in ("spec", "preprocessing") if k not in config]
    if missing:
        raise ModelFolderError(f"{path}: missing {', '.join(missing)}")
    if config.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
        raise ModelFolderError(f"{path}: format_version {config['format_version']} is newer than this e3d-ray "
                               f"reads ({FORMAT_VERSION})")
    return config


def preprocessing_of(config: dict[str, Any], where: str = CONFIG_FILE) -> Preprocessing:
    try:
        return Preprocessing.from_dict(dict(config["preprocessing"]))
    except (TypeError, ValueError) as exc:
        raise ModelFolderError(f"{where}: preprocessing: {exc}") from None


def load(folder: str | os.PathLike, *, device: str = "cpu") -> tuple[Any, Preprocessing]:
    """``(network in eval mode, its Preprocessing)`` from a model folder written by :func:`write_model_folder`.

    The network is rebuilt from the spec in ``config.json`` and its weights read from ``model.safetensors``
    (every key must match); its outputs equal the trained network's. ``model.spec`` is the spec,
    ``model.labels`` the class names (also ``preprocessing.labels``).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .model import build_model
    from .spec import ArchSpec, SpecError

    folder = Path(folder)
    config = read_config(folder)
    pre = preprocessing_of(config, str(folder / CONFIG_FILE))
    try:
        spec = ArchSpec.from_dict(config["spec"], where=f"{folder / CONFIG_FILE}:spec")
    except SpecError as exc:
        raise ModelFolderError(str(exc)) from None
    if len(pre.labels) != spec.num_classes:
        raise ModelFolderError(f"{folder / CONFIG_FILE}: {len(pre.labels)} labels for {spec.num_classes} outputs")
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelFolderError(f"{folder}: no {WEIGHTS_FILE}")
    try:
        state = load_file(str(weights), device=device)
    except (SafetensorError, OSError) as exc:
        raise ModelFolderError(f"{weights}: unreadable ({exc})") from None
    model = build_model(spec, dropout=float(config.get("dropout", 0.5)))
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a shape that differs from the spec's
        lines = [ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln]
        raise ModelFolderError(f"{weights}: weights do not fit the spec ({lines[0] if lines else exc})") from None
    if result.missing_keys or result.unexpected_keys:
        raise ModelFolderError(f"{weights}: weights do not fit the spec (missing {result.missing_keys[:3]}, "
                               f"unexpected {result.unexpected_keys[:3]})")
    model.labels = list(pre.labels)
    return model.to(device).eval(), pre


def labels_or_indices(labels: Sequence[str] | None, num_classes: int) -> tuple[str, ...]:
    """``labels`` when they name every output, else ``("0", "1", ...)``."""
    if labels and len(labels) == num_classes:
        return tuple(str(x) for x in labels)
    return tuple(str(i) for i in range(num_classes))


__all__ = ["Preprocessing", "CardInfo", "ModelFolderError", "write_model_folder", "load", "read_config",
           "is_model_folder", "preprocessing_of", "labels_or_indices", "CONFIG_FILE", "WEIGHTS_FILE", "CARD_FILE"]
