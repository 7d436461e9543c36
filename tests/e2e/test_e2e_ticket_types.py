"""Private tickets (--ticket-type) end to end, through a real relay process:
a relay-type ticket holds no address and still ends on a direct path found
through the relay; an addresses-type ticket names no relay and goes direct;
`p2pcp ticket` says which type a ticket is."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from p2pcp.core.ticket import decode_ticket
from tests.support.processes import p2pcp_command, stop

from .conftest import assert_one_line_error, json_lines

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024


def _shown_type(node: Any, ticket: str) -> tuple[str, str]:
    """What `p2pcp ticket` says the type is, as text and in --json."""
    text = node.run("ticket", ticket)
    assert text.returncode == 0, text.stderr
    line = next(line for line in text.stdout.splitlines() if line.startswith("type:"))
    as_json = node.run("ticket", "--json", ticket)
    assert as_json.returncode == 0, as_json.stderr
    return line.split(":", 1)[1].strip(), json.loads(as_json.stdout)["ticket_type"]


def test_relay_ticket_has_no_address_and_goes_direct_through_the_relay(
    tmp_path: Path, relay_url: str, make_node: Any, start_sender: Any
) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(48 * MIB))
    node = make_node()
    sender = start_sender(
        node, src, extra=("--relay", relay_url, "--ticket-type", "relay", "--once")
    )
    decoded = decode_ticket(sender.ticket)
    assert decoded.addresses == () and decoded.relay_url == relay_url
    assert _shown_type(node, sender.ticket) == ("relay", "relay")
    out = tmp_path / "out"
    result = make_node().run("receive", sender.ticket, "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    events = json_lines(result.stdout)
    connecting = next(e for e in events if e["event"] == "connecting")
    assert connecting["address_count"] == 0 and connecting["relay_url"] == relay_url
    assert next(e for e in events if e["event"] == "connected")["path"] == "relay"
    # The direct path was found through the relay (disco's call-me-maybe).
    assert "direct" in [e["kind"] for e in events if e["event"] == "path"]
    done = events[-1]
    assert done["event"] == "done" and done["paths"].get("direct", 0) > 0, done["paths"]
    assert (out / "big.bin").read_bytes() == src.read_bytes()
    assert sender.wait() == 0


def test_addresses_ticket_names_no_relay_and_goes_direct(
    tmp_path: Path, relay_url: str, make_node: Any, start_sender: Any
) -> None:
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(3 * MIB + 7))
    node = make_node()
    sender = start_sender(
        node, src, extra=("--relay", relay_url, "--ticket-type", "addresses", "--once")
    )
    decoded = decode_ticket(sender.ticket)
    assert decoded.relay_url is None and decoded.addresses
    assert relay_url not in sender.ticket
    assert _shown_type(node, sender.ticket) == ("addresses", "addresses")
    out = tmp_path / "out"
    result = make_node().run("receive", sender.ticket, "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    events = json_lines(result.stdout)
    connecting = next(e for e in events if e["event"] == "connecting")
    assert connecting["relay_url"] is None and connecting["address_count"] > 0
    done = events[-1]
    assert done["main_path"] == "direct" and done["paths"].get("relay", 0) == 0
    assert (out / "f.bin").read_bytes() == src.read_bytes()
    assert sender.wait() == 0


def test_full_is_the_default_and_names_both(
    tmp_path: Path, relay_url: str, make_node: Any, start_sender: Any
) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"x")
    node = make_node()
    sender = start_sender(node, src, extra=("--relay", relay_url))
    decoded = decode_ticket(sender.ticket)
    assert decoded.relay_url == relay_url and decoded.addresses
    assert _shown_type(node, sender.ticket) == ("full", "full")


def test_relay_ticket_without_a_relay_is_a_usage_error(tmp_path: Path, make_node: Any) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"x")
    node = make_node()
    env = {k: v for k, v in node.env.items() if k != "P2PCP_RELAY"}
    for args in (
        ("--ticket-type", "relay"),
        ("--ticket-type", "relay", "--no-relay"),
        ("--ticket-type", "private"),
    ):
        result = subprocess.run(
            [*p2pcp_command(), "send", *args, str(src)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        assert result.returncode == 2, (args, result.stderr)
        assert_one_line_error(result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "--ticket-type" in result.stderr
        assert result.stdout == ""


def test_a_stream_ticket_of_relay_type_has_no_address(
    tmp_path: Path, relay_url: str, make_node: Any
) -> None:
    source = tmp_path / "input.bin"
    source.write_bytes(os.urandom(MIB + 3))
    args = ("send", "-", "--json", "--relay", relay_url, "--ticket-type", "relay")
    with open(source, "rb") as stdin:
        sender = subprocess.Popen(
            [*p2pcp_command(), *args],
            env=make_node().env,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
    try:
        assert sender.stdout is not None
        ready = json_lines(sender.stdout.readline())[0]
        decoded = decode_ticket(ready["ticket"])
        assert decoded.addresses == () and ready["addresses"] == []
        out = tmp_path / "out"
        result = make_node().run("receive", ready["ticket"], "--out", str(out))
        assert result.returncode == 0, result.stderr
        assert sender.wait(timeout=60) == 0
    finally:
        stop(sender)
    assert (out / "stdin").read_bytes() == source.read_bytes()
