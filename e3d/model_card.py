"""The model card of a model folder (``README.md``): YAML front matter as model hubs read it, then the card in words.

``render_card(config)`` takes the ``config.json`` dictionary :func:`e3d.model_folder.write_model_folder` builds.
The front matter has ``library_name``, ``pipeline_tag``, ``tags``, ``datasets``, ``metrics`` and, when the network
was evaluated, a ``model-index`` with its multi-view top-1/top-5 (the fields ``huggingface_hub.ModelCard``
parses into ``card.data.eval_results``). The YAML is written here (block style, JSON-quoted strings), so no
YAML library is needed to write a card.
"""
from __future__ import annotations

import json
import math
from typing import Any

TAGS = ("video-classification", "action-recognition", "3d-cnn", "neural-architecture-search", "e3d", "pytorch",
        "safetensors")


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return json.dumps(v)
    return json.dumps(str(v))  # a JSON string is a YAML double-quoted string


def to_yaml(obj: Any, indent: int = 0) -> str:
    """Block-style YAML of nested dicts, lists and scalars (what the front matter needs)."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{k}:")
                lines.append(to_yaml(v, indent + 2))
            else:
                lines.append(f"{pad}{k}: {_scalar(v) if not isinstance(v, (dict, list)) else '[]'}")
    elif isinstance(obj, list):
        for v in obj:
            if isinstance(v, (dict, list)) and v:
                inner = to_yaml(v, indent + 2).lstrip()
                lines.append(f"{pad}- {inner}")
            else:
                lines.append(f"{pad}- {_scalar(v)}")
    else:
        lines.append(f"{pad}{_scalar(obj)}")
    return "\n".join(lines)


def _finite(x: Any) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _dataset_name(config: dict[str, Any]) -> str:
    return str((config.get("dataset") or {}).get("name") or "unknown")


def front_matter(config: dict[str, Any]) -> dict[str, Any]:
    """The card's metadata (what goes between the ``---`` lines)."""
    results = config.get("results") or {}
    pre = config["preprocessing"]
    meta: dict[str, Any] = {"library_name": "e3d-ray", "pipeline_tag": "video-classification",
                            "tags": list(TAGS) + [f"family-{config['spec'].get('family', 'e3d')}"],
                            "datasets": [_dataset_name(config)], "metrics": ["accuracy"]}
    metrics = []
    views = f"{pre['clips']} clips x {pre['crops']} crops"
    for key, k in (("mv_top1", 1), ("mv_top5", 5)):
        if _finite(results.get(key)):
            metrics.append({"type": "accuracy" if k == 1 else "top_5_accuracy", "value": round(float(results[key]), 2),
                            "name": f"top-{k} ({views}, %)"})
    if metrics:
        meta["model-index"] = [{"name": config.get("name") or config["spec"].get("name", "model"), "results": [{
            "task": {"type": "video-classification", "name": "Video Classification"},
            "dataset": {"name": _dataset_name(config), "type": _dataset_name(config), "split": "validation"},
            "metrics": metrics}]}]
    return meta


def _fmt(x: Any, spec: str = ".2f", unit: str = "") -> str:
    return f"{float(x):{spec}}{unit}" if _finite(x) else "not measured"


def _interval(top1: float, n: int) -> str:
    """A 95 % Wilson interval of a top-1 percentage over ``n`` videos."""
    if not n:
        return ""
    p, z = top1 / 100.0, 1.96
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return f" (95 % interval {100 * (centre - half):.1f}-{100 * (centre + half):.1f} over {n} videos)"


def _budget(budget: dict[str, Any]) -> str:
    """``{"flops": 3e7, "layers": 41, "params": None}`` -> ``0.03 GFLOPs, 41 layers``."""
    units = {"flops": (1e9, "GFLOPs"), "params": (1e6, "M params"), "layers": (1, "layers"), "latency_ms": (1, "ms")}
    parts = []
    for k, v in budget.items():
        if v is None:
            continue
        scale, unit = units.get(k, (1, k))
        parts.append(f"{float(v) / scale:g} {unit}" if isinstance(v, (int, float)) else f"{k} {v}")
    return ", ".join(parts) or "none"


def render_card(config: dict[str, Any]) -> str:
    """The whole ``README.md``: front matter and the card in words."""
    spec, pre, c = config["spec"], config["preprocessing"], config.get("cost") or {}
    prov, recipe, results = config.get("provenance") or {}, config.get("recipe") or {}, config.get("results") or {}
    name = config.get("name") or spec.get("name", "model")
    labels = pre["labels"]
    stages = spec.get("stages", [])
    kernels = " ".join("x".join(str(k) for k in s.get("kernel", [])) for s in stages)
    depths = ", ".join(str(s.get("layers")) for s in stages)
    widths = ", ".join(str(s.get("out")) for s in stages)
    out = ["---", to_yaml(front_matter(config)), "---", "", f"# {name}", ""]
    out.append(f"A 3D video CNN of the `{spec.get('family', 'e3d')}` family for {len(labels)}-class video "
               f"classification, found by training-free architecture search with "
               f"e3d-ray and "
               + ("trained on " + _dataset_name(config) + "." if config.get("weights") == "trained" else
                  f"**not trained** (weights: {config.get('weights')})."))
    out += ["", "## Use", "", "```python", "import e3d", "", 'model, pre = e3d.load("path/to/this/folder")',
            "# pre.frames, pre.size, pre.sampling_rate, pre.mean, pre.std, pre.clips, pre.crops, pre.labels", "```",
            "", "```sh", "e3d predict THIS_FOLDER video.mp4            # top-5 labels of one video",
            "python jobs/predict.py --model THIS_FOLDER --data VIDEOS --out PRED   # batch inference on Ray Data",
            "```", ""]
    out += ["## Network", "", "| | |", "|---|---|",
            f"| input | 3 x {pre['frames']} x {pre['size']} x {pre['size']} (RGB, frames x height x width) |",
            f"| FLOPs at this clip | {c.get('flops', 0) / 1e9:.3f} G multiply-accumulates |",
            f"| parameters | {c.get('params', 0) / 1e6:.3f} M |",
            f"| latency at this clip | {_fmt(c.get('latency_ms'), '.1f', ' ms')}"
            + (f" ({c.get('latency_device')})" if _finite(c.get('latency_ms')) else "") + " |",
            f"| stages (kernels) | {kernels} |", f"| depths | {depths} |", f"| widths | {widths} |",
            f"| head, classifier | {spec.get('head', {}).get('out')} channels, hidden "
            f"{spec.get('classifier', {}).get('hidden')}, dropout {config.get('dropout')} |",
            f"| classes | {', '.join(labels[:20])}{' ...' if len(labels) > 20 else ''} |", ""]
    out += ["## Preprocessing", "",
            f"{pre['clips']} clip(s) of {pre['frames']} frames, one every {pre['sampling_rate']} decoded frames, at "
            f"the centres of equal segments of the video; the short side resized to {pre.get('resize') or pre['size']} "
            f"pixels; {'3 crops along the long side' if pre['crops'] == 3 else 'the centre crop'} of "
            f"{pre['size']} x {pre['size']}; values `(x / 255 - mean) / std` with mean {pre['mean']} and std "
            f"{pre['std']}. The prediction is the softmax averaged over the {pre['clips'] * pre['crops']} views.", ""]
    out += ["## How it was found", ""]
    if prov:
        for key, label in (("strategy", "search strategy"), ("score", "ranking score"), ("budget", "budget"),
                           ("seed", "seed"), ("candidate", "candidate"), ("search_score", "its score")):
            if prov.get(key) is not None:
                out.append(f"- {label}: {_budget(prov[key]) if isinstance(prov[key], dict) else prov[key]}")
    else:
        out.append("- not recorded (exported from a spec or a candidate folder without its search)")
    out += ["", "## Training recipe", ""]
    if recipe:
        shown = {k: v for k, v in recipe.items() if v is not None}
        out.append(", ".join(f"{k} {v}" for k, v in shown.items()))
    else:
        out.append("Not trained here." if config.get("weights") != "trained" else "Not recorded.")
    out += ["", "## Validation results", ""]
    if _finite(results.get("mv_top1")):
        n = int(results.get("mv_videos") or 0)
        out.append(f"- multi-view top-1 {results['mv_top1']:.2f} %{_interval(float(results['mv_top1']), n)}, "
                   f"top-5 {_fmt(results.get('mv_top5'))} % ({pre['clips']} clips x {pre['crops']} crops per video)")
        if _finite(results.get("val_top1")):
            out.append(f"- last epoch's single-view (centre clip) validation top-1 {results['val_top1']:.2f} %")
        if results.get("epochs"):
            out.append(f"- after {results['epochs']} epochs")
    else:
        out.append("No validation results.")
    out += ["", "## Limits", "",
            f"- It only knows these {len(labels)} classes; any video gets one of them, with no 'none of these'.",
            "- The probabilities are averaged softmax outputs, not calibrated confidences.",
            "- Accuracy measured on a small validation set has a wide interval (above); it says little about "
            "videos unlike the training data (other cameras, lengths, frame rates, content).",
            f"- It was trained and evaluated at {pre['frames']} x {pre['size']}^2 clips; other clip sizes change "
            "its accuracy and cost.", ""]
    return "\n".join(out)
