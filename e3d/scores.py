"""Analytic entropy scores of a spec: HomoEntr-Score and STEntr-Score (E3D paper, Eq. 6 and 8).

Every conv layer ``l`` of the plain backbone (stem, the three convs of each block, head; no BN, SE or
residuals, Appendix C) adds ``1/2 * ln(C * kt * k * k * D)``, with ``C`` its input channels per group (1
for depthwise) and ``D`` the spatio-temporal refinement factor; the score adds ``ln(C_head)``. This
follows the paper's official code; ``docs/scores.md`` records the choices and the reproduced numbers.
"""
from __future__ import annotations

import math

from .spec import X3D_STEM_TEMPORAL_KERNEL, ArchSpec, SpecError


class InfiniteScoreError(SpecError):
    """The feature-map size vector is parallel to a kernel: the refinement factor is infinite."""


def refinement(frames: int, size: int, kernel: tuple[int, int, int]) -> float:
    """``D = -ln(1 - cos(S, K))`` with ``S = [T, r, r]``; 1 for kernels whose spatial extent is 1."""
    kt, k, _ = kernel
    if k == 1:
        return 1.0
    if frames * k == kt * size:  # S parallel to K (exact in integers): cosine distance 0
        raise InfiniteScoreError(
            f"feature map {frames}x{size}x{size} is parallel to kernel {kt}x{k}x{k}: the STEntr refinement "
            f"factor -ln(1 - cos) is infinite; change the kernel or the input size")
    dot = frames * kt + 2 * size * k
    cos = dot / math.sqrt((frames * frames + 2 * size * size) * (kt * kt + 2 * k * k))
    return -math.log(1.0 - cos)


def _score(spec: ArchSpec, refine: bool) -> float:
    t = spec.frames

    def log_kernel(kernel: tuple[int, int, int], r: int) -> float:
        volume = kernel[0] * kernel[1] * kernel[2]
        return math.log(volume * refinement(t, r, kernel)) if refine else math.log(volume)

    r = spec.size // spec.stem.stride[1]
    total = math.log(3) + log_kernel(spec.stem.kernel, r)  # half of it is applied at the end
    if spec.family == "x3d":
        total += math.log(X3D_STEM_TEMPORAL_KERNEL)  # depthwise 5x1x1: C = 1, D = 1
    cin = spec.stem.out
    for stage in spec.stages:
        r //= stage.stride[1]
        n, b, out = stage.layers, stage.bottleneck, stage.out
        # per block: 1x1 (C = block input) + depthwise (C = 1) + 1x1 (C = bottleneck)
        total += math.log(cin) + (n - 1) * math.log(out) + n * (log_kernel(stage.kernel, r) + math.log(b))
        cin = out
    total += math.log(cin)  # head: 1x1x1 conv from the last stage
    return 0.5 * total + math.log(spec.head.out)


def homoentr(spec: ArchSpec) -> float:
    """HomoEntr-Score: refinement factor 1 everywhere (Eq. 6 with unit weight variance)."""
    return _score(spec, refine=False)


def stentr(spec: ArchSpec) -> float:
    """STEntr-Score (Eq. 8); raises :class:`InfiniteScoreError` when a factor would be infinite."""
    return _score(spec, refine=True)


SCORES = {"stentr": stentr, "homoentr": homoentr}


def get_score(name: str):
    try:
        return SCORES[name]
    except KeyError:
        raise ValueError(f"unknown score {name!r}; choose one of {', '.join(SCORES)}") from None
