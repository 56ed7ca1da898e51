"""The comparison summary of a spec: its costs, scores and shape, as the CLI prints it and MLflow logs it."""
from __future__ import annotations

from typing import Any

from .cost import cost
from .scores import InfiniteScoreError, homoentr, stentr
from .spec import ArchSpec


def summarize(spec: ArchSpec, *, strict: bool = True) -> dict[str, Any]:
    """Costs, scores and shape of ``spec`` at its own input size.

    ``strict``: refuse a spec whose STEntr is infinite (``InfiniteScoreError``, a ``SpecError``); otherwise
    report it as ``inf`` (a spec trained at an input the score cannot handle still has costs and a shape).
    """
    c = cost(spec)
    try:
        st = stentr(spec)
    except InfiniteScoreError:
        if strict:
            raise
        st = float("inf")
    return {
        "name": spec.name, "family": spec.family, "flops": c.flops, "gflops": round(c.gflops, 4),
        "params": c.params, "mparams": round(c.mparams, 4), "layers": c.layers, "stentr": st,
        "homoentr": homoentr(spec), "frames": spec.frames, "size": spec.size, "kernels": spec.kernel_pattern,
        "depths": list(spec.depths), "widths": list(spec.widths),
        "bottlenecks": [s.bottleneck for s in spec.stages], "stem": spec.stem.out, "head": spec.head.out,
    }
