"""What runs log as params and small JSON artifacts: a spec's summary, an island search's settings, a trained
candidate's recipe and resources."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from e3d.spec import ArchSpec


def spec_params(spec: ArchSpec) -> dict[str, Any]:
    """The spec summary logged as run params, so MLflow's comparison view lines candidates up
    (``stentr`` is ``inf`` where the score is infinite at the spec's input)."""
    from e3d.summary import summarize

    s = summarize(spec, strict=False)
    return {
        "arch": s["name"], "flops": s["flops"], "gflops": s["gflops"], "params": s["params"],
        "mparams": s["mparams"], "layers": s["layers"], "stentr": round(s["stentr"], 4),
        "homoentr": round(s["homoentr"], 4), "kernels": s["kernels"],
        "depths": "-".join(map(str, s["depths"])), "widths": "-".join(map(str, s["widths"])),
        "bottlenecks": "-".join(map(str, s["bottlenecks"])), "input": f"{spec.frames}x{spec.size}x{spec.size}",
        "stem": s["stem"], "head": s["head"], "family": spec.family,
    } | ({"family_fields": json.dumps({"arch": {k: v for k, v in spec.to_dict().items() if k in dict(spec.extra)},
                                       "stages": [{k: st.get(k) for k, _ in st.extra} for st in spec.stages]})[:6000]}
         if spec.extra or any(st.extra for st in spec.stages) else {})


def log_spec(mlflow: Any, spec: ArchSpec, artifact_path: str = "spec") -> None:
    """Log the spec JSON as an artifact (``<artifact_path>/<name>.json``)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{spec.name}.json"
        path.write_text(spec.to_json() + "\n")
        mlflow.log_artifact(str(path), artifact_path=artifact_path)


def log_dict_json(mlflow: Any, data: Any, name: str, artifact_path: str | None = None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(json.dumps(data, indent=2, default=str) + "\n")
        mlflow.log_artifact(str(path), artifact_path=artifact_path)


# -- the island search ------------------------------------------------------------------------------------
def search_params(config: Any, settings: Any, rounds: int) -> dict[str, Any]:
    """Run params of an island search: every ``SearchConfig`` field, ``islands.<setting>``, ``islands.rounds``."""
    out: dict[str, Any] = {}
    for k, v in config.to_dict().items():
        out[k] = json.dumps(v) if isinstance(v, (list, tuple)) else v
    for k, v in settings.to_dict().items():
        out[f"islands.{k}"] = json.dumps(v) if isinstance(v, (dict, list)) else v
    out["islands.rounds"] = rounds
    return out


# -- trained candidates -----------------------------------------------------------------------------------
def candidate_params(spec: ArchSpec, trained: ArchSpec, recipe: Any, plan: Any, source: Any,
                     eval_views: tuple[int, int], run_name: str) -> dict[str, Any]:
    """Run params of a trained candidate: the spec as searched (:func:`spec_params`), the network actually
    trained (input, GFLOPs, params, classes), the evaluation views, ``recipe.*``, ``resources.*``, ``data.*``."""
    from e3d.cost import cost

    p = spec_params(spec)
    t = cost(trained)
    p |= {"train_input": f"{trained.frames}x{trained.size}x{trained.size}", "train_gflops": round(t.gflops, 4),
          "train_mparams": round(t.mparams, 4), "num_classes": trained.num_classes,
          "sampling_rate": trained.sampling_rate, "eval_clips": eval_views[0], "eval_crops": eval_views[1],
          "train_run": run_name}
    p |= recipe.params(plan.num_workers) | plan.params() | source.params()
    return {k: v for k, v in p.items() if v is not None}
