"""--limit-rate end to end on loopback: the receiver's average rate stays
within 5% of the limit (an upper bound; loopback alone is ~100x faster),
whichever side sets it, and every byte is verified."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from p2pcp.core.ticket import Ticket, encode_ticket
from tests.support.processes import p2pcp_command, stop

from .conftest import assert_one_line_error, json_lines

pytestmark = pytest.mark.e2e

LIMIT = "2M"
LIMIT_BPS = 2_000_000
SIZE = 8_000_000


@pytest.mark.parametrize("side", ["both", "sender", "receiver"])
def test_transfer_stays_within_the_rate(
    tmp_path: Path, make_node: Any, start_sender: Any, side: str
) -> None:
    src = tmp_path / "eight.bin"
    src.write_bytes(os.urandom(SIZE))
    limit = ("--limit-rate", LIMIT)
    sender_args = ("--once", "--no-relay", *(limit if side != "receiver" else ()))
    sender = start_sender(make_node(), src, extra=sender_args)
    out = tmp_path / "out"
    receiver_args = limit if side != "sender" else ()
    result = make_node().run(
        "receive", sender.ticket, "--out", str(out), "--json", *receiver_args, timeout=90
    )
    assert result.returncode == 0, result.stderr
    done = json_lines(result.stdout)[-1]
    assert done["event"] == "done" and done["bytes_received"] == SIZE
    rate = done["bytes_received"] / done["seconds"]
    assert rate <= 1.05 * LIMIT_BPS, (rate, done["seconds"])
    assert rate >= 0.25 * LIMIT_BPS, (rate, done["seconds"])  # limited, not starved
    assert (out / "eight.bin").read_bytes() == src.read_bytes()
    assert sender.wait() == 0


@pytest.mark.parametrize("value", ["fast", "10X", "-1M", "10K"])
@pytest.mark.parametrize("command", ["send", "receive"])
def test_a_bad_rate_is_one_line_and_exit_2(
    tmp_path: Path, make_node: Any, command: str, value: str
) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"x")
    ticket = Ticket(bytes(32), None, (("127.0.0.1", 9),), bytes(32), 1)
    target = str(src) if command == "send" else encode_ticket(ticket)
    result = make_node().run(command, "--limit-rate", value, target)
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result.stderr)
    assert "--limit-rate" in result.stderr
    assert result.stdout == ""


def test_a_stream_stays_within_the_rate(tmp_path: Path, make_node: Any) -> None:
    """`send -` paces the stream it writes, and the receiver its reads."""
    source = tmp_path / "input.bin"
    source.write_bytes(os.urandom(SIZE))
    with open(source, "rb") as stdin:
        sender = subprocess.Popen(
            [*p2pcp_command(), "send", "-", "--json", "--limit-rate", LIMIT],
            env=make_node().env,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
    try:
        assert sender.stdout is not None
        ticket = json_lines(sender.stdout.readline())[0]["ticket"]
        out = tmp_path / "out"
        result = make_node().run(
            "receive", ticket, "--out", str(out), "--json", "--limit-rate", LIMIT, timeout=90
        )
        assert result.returncode == 0, result.stderr
        assert sender.wait(timeout=60) == 0
    finally:
        stop(sender)
    done = json_lines(result.stdout)[-1]
    rate = done["bytes_received"] / done["seconds"]
    assert 0.25 * LIMIT_BPS <= rate <= 1.05 * LIMIT_BPS, (rate, done["seconds"])
    assert (out / "stdin").read_bytes() == source.read_bytes()
