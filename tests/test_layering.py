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
    # Short codes: a layer beside transfer/ that meets the other side through
    # the relay's mailbox (relay/client.py) or the LAN, never through net/.
    "rendezvous": {"core", "relay", "rendezvous"},
    "cli": {"core", "blobs", "net", "relay", "transfer", "rendezvous", "cli"},
}
# Only the command line may use these.
CLI_ONLY = {"typer", "rich", "click"}
# Sans-IO layers may not touch the event loop or sockets.
SANS_IO = {"blobs": {"asyncio", "socket", "selectors"}}
# Nor may these modules of net/ (they decide; their drivers do the I/O).
NET_SANS_IO = (
    "net/kinds.py",
    "net/config.py",
    "net/quic/configuration.py",
    "net/quic/identity.py",
    "net/udp/transport.py",
    "net/quic/credit.py",
    "net/paths/pathstate.py",
    "net/paths/disco.py",
    "net/pmtu/probe.py",
    "net/pmtu/fragment.py",
    "net/pmtu/sizer.py",
    "net/congestion/bbr.py",
    "net/_aioquic/sendbuffer.py",
)
# The rendezvous' codec and PAKE machine are sans-IO too.
RENDEZVOUS_SANS_IO = (
    "rendezvous/words.py",
    "rendezvous/codes.py",
    "rendezvous/exchange.py",
    "rendezvous/channel.py",
)
IO_MODULES = {"asyncio", "socket", "selectors"}
# The one folder that may touch aioquic's private names (its private
# modules, and the underscored attributes of a QuicConnection, which the
# code always names ``quic`` or ``_quic``), behind one version check.
AIOQUIC_ADAPTERS = "net/_aioquic/"


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
            if target == "net" and layer != "net":
                # net/__init__.py is the public API; the folders under it are its inside.
                assert name == "p2pcp.net", f"{path.name}: import {name} through p2pcp.net"
        if layer != "cli":
            assert top not in CLI_ONLY, f"{path.name}: only cli/ may import {top}"
        assert top not in SANS_IO.get(layer, set()), f"{path.name}: {layer}/ is sans-IO"


def test_no_print_below_cli() -> None:
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                pytest.fail(f"print() in {path.relative_to(PACKAGE)}:{node.lineno}")


@pytest.mark.parametrize("name", NET_SANS_IO + RENDEZVOUS_SANS_IO)
def test_net_sans_io_modules_do_no_io(name: str) -> None:
    path = PACKAGE / name
    assert path.exists(), name
    for imported in _imports(path):
        assert imported.split(".")[0] not in IO_MODULES, f"{name} is sans-IO: imports {imported}"


def _private_aioquic_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
            )
            for module in modules:
                parts = module.split(".")
                if parts[0] == "aioquic" and any(part.startswith("_") for part in parts[1:]):
                    uses.append(f"line {node.lineno}: imports {module}")
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            if node.attr.startswith("__"):
                continue
            owner = node.value
            owner_name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
            if owner_name in ("quic", "_quic"):
                uses.append(f"line {node.lineno}: {owner_name}.{node.attr}")
    return uses


def test_only_the_adapters_touch_aioquic_private_names() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): uses
        for path in _modules()
        if not str(path.relative_to(PACKAGE)).startswith(AIOQUIC_ADAPTERS)
        and (uses := _private_aioquic_uses(path))
    }
    assert not offenders, offenders
    # The rule sees what it looks for: the adapters themselves are full of it.
    adapters = [p for p in _modules() if str(p.relative_to(PACKAGE)).startswith(AIOQUIC_ADAPTERS)]
    assert sum(len(_private_aioquic_uses(p)) for p in adapters) > 20


def test_only_core_config_reads_the_environment() -> None:
    """Environment variables are read in one place (core/config.py)."""
    readers = []
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            is_environ = isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv")
            if is_environ and getattr(node.value, "id", None) == "os":
                readers.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert readers and all(r.startswith("core/config.py:") for r in readers), readers
