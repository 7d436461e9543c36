"""Imports only point down the layers (ARCHITECTURE.md), and only cli/ talks to people."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "p2pcp"

# Which p2pcp layers each layer may import.
ALLOWED = {
    "core": {"core"},
    "blobs": {"core", "blobs"},
    "relay": {"core", "relay"},
    "net": {"core", "net", "relay"},
    "transfer": {"core", "blobs", "net", "transfer"},
    "cli": {"core", "blobs", "net", "relay", "transfer", "cli"},
}
# Only the command line may use these.
CLI_ONLY = {"typer", "rich", "click"}
# Sans-IO layers may not touch the event loop or sockets.
SANS_IO = {"blobs": {"asyncio", "socket", "selectors"}}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path) -> None:
    parts = path.relative_to(PACKAGE).parts
    if len(parts) == 1:
        return  # __init__.py / __main__.py
    layer = parts[0]
    for name in _imports(path):
        top = name.split(".")[0]
        if top == "p2pcp" and name != "p2pcp":
            target = name.split(".")[1]
            assert target in ALLOWED[layer], f"{path.name}: {layer}/ must not import {name}"
        if layer != "cli":
            assert top not in CLI_ONLY, f"{path.name}: only cli/ may import {top}"
        assert top not in SANS_IO.get(layer, set()), f"{path.name}: {layer}/ is sans-IO"


def test_no_print_below_cli() -> None:
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                pytest.fail(f"print() in {path.relative_to(PACKAGE)}:{node.lineno}")
