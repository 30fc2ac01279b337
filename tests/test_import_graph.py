"""The package's imports form no circle, between modules or between packages, and the layers point one way.

Read from the source with ``ast``, without importing anything. Every import counts: those that run when a
module is loaded and those inside functions, which run when they are called (a circle through a call-time
import is still a circle of the design, only one that fails later). Imports under ``if TYPE_CHECKING:`` never
run and do not count; ``importlib.import_module("a.b")`` with a literal name does. Importing ``a.b.c`` also
loads the packages ``a.b`` and ``a``, so an edge to a module is an edge to those packages too, except to the
importer's own packages, which Python has loaded before the importer.

The layers (docs/scaling.md): environments know nothing of models; the algorithms (``reflect``) import
environments and models; the scale-out layer (``distributed``) imports the algorithms; the CLI imports
everything; ``frugalft.parallel`` (the learner's collectives) is a leaf every layer may import.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "frugalft"
# package -> the packages it must never import (directly or through another module)
LAYERS = {
    "frugalft.envs": ("frugalft.models", "frugalft.reflect", "frugalft.distributed", "frugalft.cli"),
    "frugalft.models": ("frugalft.reflect", "frugalft.distributed", "frugalft.cli"),
    "frugalft.reflect": ("frugalft.distributed", "frugalft.cli"),
    "frugalft.distributed": ("frugalft.cli",),
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / ROOT).rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Modules ``module`` imports, at load time or when its functions run (not under ``if TYPE_CHECKING:``)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known)  # submodules
        elif (isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))
              and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.add(node.args[0].value)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        own = set(_ancestors(name))  # loaded before this module: importing them adds nothing
        targets = set()
        for imp in _imports(tree, name, path.name == "__init__.py", known):
            targets.update(t for t in [*_ancestors(imp), imp] if t not in own)
        graph[name] = {t for t in targets if t in known and t != name}
    return graph


def _package(module: str) -> str:
    """The top-level package (or module) of frugalft that ``module`` belongs to: frugalft.reflect, ..."""
    return ".".join(module.split(".")[:2])


def _package_graph(graph: dict[str, set[str]]) -> dict[str, dict[str, list[str]]]:
    """package -> {imported package: the module edges that make the arrow}."""
    out: dict[str, dict[str, list[str]]] = {}
    for src, targets in graph.items():
        for dst in targets:
            a, b = _package(src), _package(dst)
            if a != b:
                out.setdefault(a, {}).setdefault(b, []).append(f"{src} -> {dst}")
    return out


def _circles(graph: dict[str, set[str]] | dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:  # recursion depth: at most the number of modules (~100)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def _reaches(graph: dict[str, dict[str, list[str]]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), {}):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_no_import_circle_between_modules():
    graph = _graph()
    # Not vacuous: call-time imports are read (the Ray actors build the players; the CLI builds the pool).
    assert "frugalft.reflect.train" in graph["frugalft.distributed.ray_rollout"]
    assert "frugalft.distributed.ray_rollout" in graph["frugalft.cli.rl"]
    assert "frugalft.parallel" in graph["frugalft.reflect.reinforce"]
    circles = _circles(graph)
    assert not circles, "import circles between modules:\n" + "\n".join(
        " <-> ".join(c) + "\n    " + "; ".join(f"{a} -> {b}" for a in c for b in sorted(graph[a]) if b in c)
        for c in circles)


def test_no_import_circle_between_packages():
    packages = _package_graph(_graph())
    assert "frugalft.reflect" in packages["frugalft.distributed"]  # not vacuous
    circles = _circles(packages)
    assert not circles, "import circles between packages:\n" + "\n".join(
        " <-> ".join(c) + "\n    " + "; ".join(e for a in c for b in c for e in packages.get(a, {}).get(b, [])[:3])
        for c in circles)


def test_the_layers_point_one_way():
    graph = _graph()
    packages = _package_graph(graph)
    for pkg, forbidden in LAYERS.items():
        bad = sorted(set(forbidden) & _reaches(packages, pkg))  # directly or through another package
        assert not bad, f"{pkg} reaches {bad}; its imports: {packages.get(pkg, {})}"
    # The learner's collectives are a leaf: every layer may import them.
    assert not any(t.startswith(ROOT) for t in graph["frugalft.parallel"])


def test_the_parser_reads_function_imports_and_skips_type_checking():
    src = ("from typing import TYPE_CHECKING\nimport a.b\nif TYPE_CHECKING:\n    import c\nelse:\n    import g\n"
           "def f():\n    import d\n    importlib.import_module('h.i')\nclass K:\n    def m(self):\n"
           "        from .. import x\ntry:\n    from . import e\nexcept ImportError:\n    pass\n")
    found = _imports(ast.parse(src), "pkg.sub.mod", False, {"pkg.sub.e", "pkg.x"})
    assert found == {"typing", "a.b", "g", "d", "h.i", "pkg", "pkg.x", "pkg.sub", "pkg.sub.e"}


def test_the_circle_finder():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []
