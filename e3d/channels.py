"""Channel widths rounded to a multiple of a divisor: the one rounding every width of the project goes through.

Two tie rules (``x`` exactly halfway between two multiples) are in use, and each caller names its own, because
each reproduces its source and changing either would change specs:

- ``ties="even"`` (Python's ``round``): the E3D search space (:meth:`e3d.space.SearchSpace.round_width`; Table 9's
  bottlenecks need it: 1.5 x 24 -> 32, 1.5 x 120 -> 176, 2.5 x 184 -> 464) and the fusion backbone's width scaling
  (:func:`e3d.fusion.backbone.scale_widths`: 0.5 x 24 -> 8, not 16);
- ``ties="up"``: X3D's ``round_width`` (the SE width, :func:`e3d.cost.se_width`, which adds X3D's 10 % guard), the
  DNAS space's width multiplier (:func:`e3d.dnas.space.table1_space`) and the PARSEC space
  (:class:`e3d.parsec.space.TwoStreamSpace`), as their searches were measured with.
"""
from __future__ import annotations

import math
from typing import Literal


def round_channels(x: float, divisor: int = 8, *, ties: Literal["up", "even"], low: int | None = None,
                   high: int | None = None) -> int:
    """``x`` to the nearest multiple of ``divisor`` (a tie up or to the even multiple), at least ``low`` (default
    ``divisor``) and at most ``high`` (default: no limit)."""
    n = round(x / divisor) if ties == "even" else math.floor(x / divisor + 0.5)
    width = max(divisor if low is None else low, n * divisor)
    return width if high is None else min(high, width)
