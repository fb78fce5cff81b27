"""The package's imports flow one way (lowest first): validation, crash-safe files, the weighting protocol and
plotting; data, modules and callbacks (independent of each other); the builder; the search; the command line.
No import cycle at all.

Scanned statically (``ast``), function-level imports included, so a lazy import cannot hide a wrong direction.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import a2ls_lightning

PACKAGE = Path(a2ls_lightning.__file__).parent

#: What each part may import from the package (besides itself). The package root only re-exports.
ALLOWED = {
    "validation": set(),
    "weighting": set(),
    "stats": set(),
    "plotting": {"stats"},
    "files": set(),
    "quiet": set(),
    "lightning_private": set(),
    "data": {"validation", "files"},
    "modules": {"validation", "lightning_private", "weighting", "files"},
    "callbacks": {"validation", "lightning_private", "weighting", "files"},
    "builder": {"validation", "lightning_private", "weighting", "files", "data", "modules", "callbacks"},
    "search": {"validation", "lightning_private", "weighting", "files", "data", "modules", "callbacks", "builder"},
    "runs": {"validation", "lightning_private", "weighting", "files", "plotting", "stats", "data", "modules",
             "callbacks", "builder"},
    "cli": {"validation", "lightning_private", "weighting", "files", "plotting", "stats", "data", "modules",
            "callbacks", "builder", "search", "runs"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, type_only: bool = False) -> set[str]:
    """Package modules that ``path`` imports (absolute and relative imports, at any depth of the file); with
    ``type_only``, those under ``if TYPE_CHECKING:`` too."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    tree = ast.parse(path.read_text())
    for node in (ast.walk(tree) if type_only else _runtime_nodes(tree)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parents = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parents + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    return {m for m in found if m in modules and m != name}


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except what sits under ``if TYPE_CHECKING:`` (annotations only, never imported)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _graph(type_only: bool = False) -> dict[str, set[str]]:
    return {_module_name(p): _imports(p, type_only) for p in PACKAGE.rglob("*.py")}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_part_of_the_package_is_placed_in_a_layer():
    parts = {_part(m) for m in _graph()} - {""}
    assert parts <= set(ALLOWED), f"unplaced parts: {parts - set(ALLOWED)}"


def test_imports_only_point_down_the_layers():
    wrong = []
    for module, imported in _graph().items():
        part = _part(module)
        for target in imported:
            other = _part(target)
            if part and other != part and other not in ALLOWED[part]:
                wrong.append(f"{module} -> {target}")
            if target == "a2ls_lightning" and module != "a2ls_lightning":
                wrong.append(f"{module} -> the package root")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


@pytest.mark.parametrize("type_only", [False, True], ids=["runtime", "with-type-only-imports"])
def test_no_import_cycles(type_only):
    # Type-only imports count too: a circle of annotations is still a circle to every reader and tool.
    graph = _graph(type_only)
    # Depth-first search for a back edge; report the first cycle found.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            raise AssertionError("import cycle: " + " -> ".join(cycle))


def test_the_scan_sees_imports_in_functions_and_relative_ones(tmp_path):
    # The scanner itself: a wrong direction hidden in a function body is found.
    bad = PACKAGE / "data" / "_layer_probe.py"
    bad.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from a2ls_lightning.modules import agent\n"
                   "def f():\n    from a2ls_lightning.callbacks import OLAux\n    from ..cli import main\n")
    try:
        imported, with_types = _imports(bad), _imports(bad, type_only=True)
    finally:
        bad.unlink()
    assert "a2ls_lightning.callbacks" in imported and "a2ls_lightning.cli" in imported
    assert "a2ls_lightning.modules" not in imported  # annotations only
    assert "a2ls_lightning.modules" in with_types  # ... which the cycle check with type-only imports sees
