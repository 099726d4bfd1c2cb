"""The README's architecture map is the code's: every module is listed, and every import of a
certpull module points to the same layer or one below it (imports inside functions and under
TYPE_CHECKING count too). No cycles between modules."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, Set

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "agent" / "certpull"
LAYERS = ["errors", "core", "adapters", "pass", "daemon", "wiring", "cli"]
ROTATION = "rotation"


def readme_map() -> Dict[str, str]:
    """module name -> layer, from the README's table."""
    text = (REPO / "README.md").read_text()
    section = text.split("### Architecture map", 1)[1].split("\n## ", 1)[0]
    layers: Dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        for name in re.findall(r"`([\w/]+)(?:\.py)?`", cells[0]):
            layers[name.rstrip("/")] = cells[1]
    return layers


def modules() -> Dict[str, Path]:
    found = {p.stem: p for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    found[ROTATION] = PACKAGE / ROTATION
    return found


def imports_of(path: Path) -> Set[str]:
    """certpull modules imported anywhere in a module (or a subpackage), as top-level names."""
    names: Set[str] = set()
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
    for file in files:
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                parts = node.module.split(".")
                if parts[0] == "certpull" and len(parts) > 1:
                    names.add(parts[1])
                elif parts == ["certpull"]:
                    names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    if parts[0] == "certpull" and len(parts) > 1:
                        names.add(parts[1])
    return names - {"__version__"}


def test_every_module_is_on_the_map_and_the_map_has_no_ghosts() -> None:
    assert set(readme_map()) == set(modules())


def test_imports_point_down_the_layers() -> None:
    layer_of = readme_map()
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    wrong = []
    for name, path in modules().items():
        for imported in imports_of(path) - {name}:
            own, their = layer_of[name], layer_of[imported]
            if own == ROTATION:
                ok = their in ("errors", "core")
            else:
                ok = their != ROTATION and rank[their] <= rank[own]
            if not ok:
                wrong.append(f"{name} ({own}) imports {imported} ({their})")
    assert wrong == []


def test_no_import_cycles() -> None:
    graph = {name: imports_of(path) - {name} for name, path in modules().items()}
    cycles = []

    def visit(node: str, stack: list) -> None:  # type: ignore[type-arg]
        if node in stack:
            cycles.append(" -> ".join([*stack[stack.index(node) :], node]))
            return
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, [*stack, node])

    for start in sorted(graph):
        visit(start, [])
    assert cycles == []
