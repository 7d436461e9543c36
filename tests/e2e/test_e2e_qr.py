"""send --qr: the QR code goes to stderr, and stdout still carries only the
ticket (or only the --json lines)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from p2pcp.cli.qr import QR_CHARACTERS, qr_drawing
from tests.support.processes import p2pcp_command, relay_process, stop

pytestmark = pytest.mark.e2e


def _send_until_ready(node: Any, *args: str) -> tuple[str, str]:
    """Run `p2pcp send ARGS` (stdout a pipe, not a terminal) until its first
    stdout line, then stop it (SIGTERM: exit 0); its stdout and stderr."""
    process = subprocess.Popen(
        [*p2pcp_command(), "send", *args],
        env=node.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first, "the sender printed nothing on stdout"
        process.terminate()
        rest, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr
    finally:
        stop(process)
    return first + rest, stderr


def test_qr_goes_to_stderr_and_stdout_keeps_only_the_ticket(tmp_path: Path, make_node: Any) -> None:
    src = tmp_path / "f.txt"
    src.write_text("hello\n")
    stdout, stderr = _send_until_ready(make_node(), "--qr", "--no-relay", str(src))
    lines = stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("p2pcp"), stdout
    ticket = lines[0]
    assert qr_drawing(ticket) in stderr
    drawn = [line for line in stderr.splitlines() if line and set(line) <= QR_CHARACTERS]
    assert len(drawn) >= 20
    assert "QR code of the ticket" in stderr


def test_qr_shows_the_code_and_json_keeps_stdout(tmp_path: Path, make_node: Any) -> None:
    """With a relay the sender has a short code: the QR holds it (or the
    ticket, if the code came after the ticket), and stdout only JSON."""
    src = tmp_path / "f.txt"
    src.write_text("hello\n")
    with relay_process(home=tmp_path / "relay-home") as relay:
        stdout, stderr = _send_until_ready(
            make_node(), "--qr", "--json", "--relay", relay.url, str(src)
        )
    events = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    ticket = next(e for e in events if e["event"] == "ticket")
    if ticket.get("code"):
        assert qr_drawing(ticket["code"]) in stderr and "QR code of the code" in stderr
    else:
        assert qr_drawing(ticket["ticket"]) in stderr
    assert not any(char in stdout for char in "\u2580\u2584\u2588")
