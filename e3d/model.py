"""PyTorch builder: spec -> the training network (DESIGN.md "Architecture spec", paper Appendix F).

:func:`build_model` asks the spec's family (:mod:`e3d.family`) to build it: most families fill the common
skeleton :class:`e3d.network.VideoNet` with their stem and stages, a family of another shape builds its own.
:func:`e3d.cost.cost` counts exactly what is built here.
"""
from __future__ import annotations

from torch import nn

from .blocks import Classifier, InvertedBottleneck, SqueezeExcite, conv_bn, create_shortcut, same_padding
from .family import get_family
from .network import VideoNet, init_weights
from .spec import ArchSpec

__all__ = ["VideoNet", "build_model", "init_weights", "Classifier", "InvertedBottleneck", "SqueezeExcite",
           "conv_bn", "create_shortcut", "same_padding"]


def build_model(spec: ArchSpec, *, num_classes: int | None = None, dropout: float = 0.5) -> nn.Module:
    """Build the training network of ``spec`` (optionally with another number of classes)."""
    if num_classes is not None and num_classes != spec.num_classes:
        spec = spec.with_num_classes(num_classes)
    return get_family(spec.family).build(spec, dropout=dropout)
