"""The built-in search strategies; each module registers one (:mod:`e3d.strategy`)."""
from . import evolution, random  # noqa: F401
