"""The package's shape, as issue 14 measures it: no import circle, small modules and classes.

Only imports run when a module is imported count (not those under ``if TYPE_CHECKING:`` or
inside functions, which are how a lower layer names a higher one without importing it).
"""

from __future__ import annotations

import ast
from pathlib import Path

import asyncflow_hpc

PACKAGE = Path(asyncflow_hpc.__file__).parent
MAX_MODULE_LINES = 600  # the engine's module excepted
MAX_CLASS_LINES = 420


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _import_time_imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Package modules that importing ``name`` imports directly."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
                continue
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names if a.name in known)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")
                    up = up[: len(up) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    out.add(sub if sub in known else base)
    visit(ast.parse(path.read_text()).body)
    return {m for m in out if m in known and m != name}


def find_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import circles in ``{module: modules it imports}``. A module naming its own package
    is not one: Python imports the package before any of its modules."""
    circles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(m for m in graph.get(node, ()) if not node.startswith(m + ".")):
            if state.get(nxt) == 1:
                circles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name)
    return circles


def test_the_circle_finder_finds_circles() -> None:
    graph = {"p": {"p.a"}, "p.a": {"p.b"}, "p.b": {"p.c", "p"}, "p.c": {"p.a"}}
    assert find_circles(graph) == [["p.a", "p.b", "p.c", "p.a"]]


def test_no_import_circle() -> None:
    mods = _modules()
    graph = {name: _import_time_imports(path, name, set(mods)) for name, path in mods.items()}
    assert "asyncflow_hpc._submission" in graph["asyncflow_hpc.engine"]  # the parser sees imports
    circles = find_circles(graph)
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_modules_and_classes_stay_small() -> None:
    too_big = []
    for name, path in _modules().items():
        source = path.read_text()
        lines = source.count("\n")
        if lines > MAX_MODULE_LINES and name != "asyncflow_hpc.engine":
            too_big.append(f"{name}: {lines} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef):
                size = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if size > MAX_CLASS_LINES:
                    too_big.append(f"{name}.{node.name}: {size} lines")
    assert not too_big, "too big: " + ", ".join(too_big)
