"""The block families, one module each: importing this package registers them all in
:data:`e3d.family.FAMILIES` (``import e3d`` does).

Adding a family is one new module here (subclass :class:`e3d.family.Family`, register an instance with
:func:`e3d.family.register_family`) plus its tests; ``tests/test_cost.py`` checks every registered family's
cost against ``torch.utils.flop_counter`` on random specs.
"""
from __future__ import annotations

import importlib
import pkgutil

from ..family import FAMILIES, Family, family_names, get_family, register_family

__all__ = ["FAMILIES", "Family", "family_names", "get_family", "register_family"]

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
