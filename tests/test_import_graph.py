"""The algorithm (``frugalft.reflect``) and the scale-out layer (``frugalft.distributed``) form no import circle.

Read from the source with ``ast``, without importing anything: the imports that run when a module is loaded
(top-level statements, including those under a top-level ``if``/``try``, but not ``if TYPE_CHECKING:`` blocks
and not imports inside functions, which run only when called). Importing ``a.b.c`` also loads the packages
``a.b`` and ``a``, so an edge to a module counts as an edge to its package too.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGES = ("frugalft.reflect", "frugalft.distributed")


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "frugalft").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _load_time_imports(tree: ast.Module, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Modules imported while ``module`` loads."""
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
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
            elif isinstance(node, ast.If):
                if not _is_type_checking(node.test):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                for part in (node.body, *(h.body for h in node.handlers), node.orelse, node.finalbody):
                    visit(part)
            elif isinstance(node, (ast.With, ast.For, ast.While)):
                visit(node.body)
            # function and class bodies: imports there run later (a class body runs at load, but holds none here)

    visit(tree.body)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        targets = set()
        for imp in _load_time_imports(tree, name, path.name == "__init__.py", known):
            parts = imp.split(".")
            targets.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))  # the packages load too
        graph[name] = {t for t in targets if t in known and t != name}
    return graph


def _package(module: str) -> str | None:
    return next((p for p in PACKAGES if module == p or module.startswith(p + ".")), None)


def test_reflect_and_distributed_form_no_import_circle():
    graph = _graph()
    arrows: dict[tuple[str, str], list[str]] = {}
    for src, targets in graph.items():
        for dst in targets:
            a, b = _package(src), _package(dst)
            if a and b and a != b:
                arrows.setdefault((a, b), []).append(f"{src} -> {dst}")
    # Not vacuous: the update functions use the learner's collectives at load time.
    assert "frugalft.distributed.data_parallel" in graph["frugalft.reflect.reinforce"]
    one_way = [k for k in arrows if (k[1], k[0]) in arrows]
    assert not one_way, f"import circle between the packages: {arrows}"
    # The scale-out layer reaches into reflect only at call time (its Ray actors build the players).
    assert not any(_package(t) == "frugalft.reflect" for t in graph["frugalft.distributed.ray_rollout"])
    # And the loop knows no Ray pool: reflect.train loads nothing of distributed but the collectives.
    assert {t for t in graph["frugalft.reflect.train"] if _package(t) == "frugalft.distributed"} <= {
        "frugalft.distributed", "frugalft.distributed.data_parallel"}


def test_the_parser_skips_type_checking_and_function_imports():
    src = ("from typing import TYPE_CHECKING\nimport a.b\nif TYPE_CHECKING:\n    import c\n"
           "def f():\n    import d\ntry:\n    from . import e\nexcept ImportError:\n    pass\n")
    found = _load_time_imports(ast.parse(src), "pkg.mod", False, {"pkg.e"})
    assert found == {"typing", "a.b", "pkg", "pkg.e"}
