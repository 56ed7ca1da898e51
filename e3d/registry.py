"""A small timm-style registry: named entries, registered by decorator, listed and looked up by name.

    STRATEGIES = Registry("strategy")

    @STRATEGIES.register("random", "uniform samples under the budget, ranked by a score")
    class RandomSearch: ...

    STRATEGIES.get("random"); STRATEGIES.names(); STRATEGIES.describe("random")

Unknown names raise :class:`KeyError` with the known ones (and a case-insensitive "did you mean").
An entry that needs a heavy import (torch) can name its code as ``"module:attr"`` and :func:`resolve` it when it
is used, so listing and looking up names stays cheap (``e3d --help`` never imports torch).
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> (entry, one-line description), in registration order."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, tuple[T, str]] = {}

    def add(self, name: str, entry: T, description: str) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._entries[name] = (entry, description)
        return entry

    def register(self, name: str, description: str) -> Callable[[T], T]:
        def deco(entry: T) -> T:
            return self.add(name, entry, description)
        return deco

    def get(self, name: str) -> T:
        try:
            return self._entries[name][0]
        except KeyError:
            close = [n for n in self._entries if n.lower() == str(name).lower()]
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(self._entries)}"
            raise KeyError(f"no {self.kind} named {name!r}{hint}") from None

    def describe(self, name: str) -> str:
        self.get(name)
        return self._entries[name][1]

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def listing(self) -> str:
        """One line per entry: ``name  description`` (what ``e3d strategies`` / ``e3d scores`` print)."""
        width = max((len(n) for n in self._entries), default=0)
        return "\n".join(f"{n:{width}s}  {d}" for n, (_, d) in self._entries.items())


def resolve(target: str) -> Any:
    """The object a ``"package.module:attr"`` path names, importing the module (once; Python caches it)."""
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"expected 'module:attr', got {target!r}")
    return getattr(importlib.import_module(module), attr)
