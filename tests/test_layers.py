"""The layers: ``e3d`` (the science) imports neither Ray, MLflow nor ``pipeline``, no module of ``e3d`` or
``pipeline`` imports itself back through others, and none imports another's private names.

The import graph is read from the source with :mod:`ast`: every ``import`` and ``from ... import``, at module
level or inside a function (a lazy import still runs), except those under ``if TYPE_CHECKING:`` (never run).
``importlib.import_module`` calls (the registries' discovery of their entries) are not imports of the graph.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("e3d", "pipeline")

_IMPORT_ALL = r"""
import importlib, importlib.abc, json, pkgutil, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("ray", "mlflow", "pipeline"):
            raise ImportError(f"e3d must not import {name}")
        return None

sys.meta_path.insert(0, Refuse())
import e3d

failed = {}
for info in pkgutil.walk_packages(e3d.__path__, "e3d.", onerror=lambda name: failed.setdefault(name, "walk")):
    try:
        importlib.import_module(info.name)
    except Exception as exc:
        failed[info.name] = repr(exc)
print(json.dumps({"failed": failed, "loaded": sorted(m for m in sys.modules if m.startswith("e3d"))}))
"""


def test_every_e3d_module_imports_without_ray_mlflow_or_pipeline():
    proc = subprocess.run([sys.executable, "-c", _IMPORT_ALL], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["failed"] == {}
    assert len(result["loaded"]) == len(list((ROOT / "e3d").rglob("*.py")))  # every module was imported


# -- the import graph ---------------------------------------------------------------------------------------------
def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Module name -> file, for every module of :data:`PACKAGES` under ``root``."""
    out = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _runtime_imports(tree: ast.AST):
    """The Import/ImportFrom nodes of ``tree`` outside ``if TYPE_CHECKING:`` blocks."""
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        todo.extend(ast.iter_child_nodes(node))


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the modules of :data:`PACKAGES` it imports (``from a import b`` is ``a.b`` when that is a module)."""
    files = module_files(root)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in _runtime_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base for alias in node.names]
            for target in targets:
                while target and target not in files:  # `import a.b.c` of a name inside a module: that module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted; sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_no_module_of_e3d_imports_ray_mlflow_or_pipeline():
    offenders = {}
    for name, path in module_files().items():
        if name.startswith("e3d"):
            for node in _runtime_imports(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.level:  # relative: inside e3d
                    continue
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                bad = [n for n in names if n.split(".")[0] in ("ray", "mlflow", "pipeline")]
                if bad:
                    offenders.setdefault(name, []).extend(bad)
    assert offenders == {}


def test_no_import_cycles():
    found = cycles(import_graph())
    assert found == [], "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_graph_sees_lazy_and_relative_imports(tmp_path):
    (tmp_path / "e3d" / "sub").mkdir(parents=True)
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "e3d" / "__init__.py").write_text("")
    (tmp_path / "e3d" / "sub" / "__init__.py").write_text("from . import a\n")
    (tmp_path / "e3d" / "sub" / "a.py").write_text("def f():\n    from ..b import g\n")
    (tmp_path / "e3d" / "b.py").write_text("from typing import TYPE_CHECKING\n"
                                           "if TYPE_CHECKING:\n    import pipeline.c\nimport e3d.sub.a\n")
    (tmp_path / "pipeline" / "__init__.py").write_text("")
    (tmp_path / "pipeline" / "c.py").write_text("from e3d.sub import a\nfrom e3d import b as bee\n")
    graph = import_graph(tmp_path)
    assert graph["e3d.sub"] == {"e3d.sub.a"} and graph["e3d.sub.a"] == {"e3d.b"}
    assert graph["e3d.b"] == {"e3d.sub.a"} and graph["pipeline.c"] == {"e3d.sub.a", "e3d.b"}
    assert cycles(graph) == [["e3d.b", "e3d.sub.a"]]


def test_no_module_imports_another_modules_private_names():
    """A name with a leading underscore is its module's own; a helper that modules share is named as shared."""
    files = module_files()
    offenders = []
    for name, path in files.items():
        for node in _runtime_imports(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ImportFrom) or not (node.level or node.module.split(".")[0] in PACKAGES):
                continue
            private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
            if private:
                offenders.append(f"{name}:{node.lineno} imports {', '.join(private)} from {node.module or '.'}")
    assert offenders == []
