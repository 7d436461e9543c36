"""Text messages end to end: ``p2pcp send --text`` to ``p2pcp receive``,
which prints the message on stdout and writes nothing to disk (plain and
``--json``, and ``--text -`` from standard input); the ticket says it is a
text ticket; a text over 1 MiB is a usage error before anything starts.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from p2pcp.core.errors import EXIT_USAGE
from tests.support.processes import p2pcp_command, stop

from .conftest import PROCESS_TIMEOUT_S, Node, assert_one_line_error, json_lines

pytestmark = pytest.mark.e2e

MESSAGE = "Grüße from p2pcp: the key is under the mat 🗝"


def _receive(node: Node, ticket: str, work: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    work.mkdir(exist_ok=True)
    return node.run("receive", ticket, *extra, cwd=work)


def test_a_text_is_printed_and_nothing_is_written(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    sender = start_sender(make_node(), extra=("--text", MESSAGE, "--once"))
    work = tmp_path / "work"
    result = _receive(make_node(), sender.ticket, work)
    assert result.returncode == 0, result.stderr
    assert result.stdout == MESSAGE + "\n"  # a line end added, as the text had none
    assert list(work.iterdir()) == []
    assert sender.wait() == 0
    shown = make_node().run("ticket", sender.ticket)
    assert "text message" in shown.stdout


def test_a_text_with_json_is_a_text_event(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    sender = start_sender(make_node(), extra=("--text", MESSAGE, "--once"))
    work = tmp_path / "work"
    result = _receive(make_node(), sender.ticket, work, "--json")
    assert result.returncode == 0, result.stderr
    events = json_lines(result.stdout)
    texts = [event for event in events if event["event"] == "text"]
    assert texts == [{"event": "text", "text": MESSAGE}]
    assert events[-1]["event"] == "done"
    assert list(work.iterdir()) == []
    assert sender.wait() == 0


def test_a_text_from_standard_input(tmp_path: Path, make_node: Any) -> None:
    message = "line one\nline two\n"
    node = make_node()
    sender = subprocess.Popen(
        [*p2pcp_command(), "send", "--text", "-", "--once", "--json"],
        env=node.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert sender.stdin is not None and sender.stdout is not None
        sender.stdin.write(message)
        sender.stdin.close()
        ticket_event = json_lines(sender.stdout.readline())[0]
        assert ticket_event["kind"] == "text"
        result = _receive(make_node(), ticket_event["ticket"], tmp_path / "work")
        assert result.returncode == 0, result.stderr
        assert result.stdout == message  # exactly: it ends with its own line end
        assert sender.wait(timeout=PROCESS_TIMEOUT_S) == 0
    finally:
        stop(sender)


def test_a_text_over_1_mib_is_a_usage_error(make_node: Any) -> None:
    node = make_node()
    result = subprocess.run(
        [*p2pcp_command(), "send", "--text", "-"],
        env=node.env,
        input="x" * (1024 * 1024 + 1),
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == EXIT_USAGE
    assert result.stdout == ""
    assert_one_line_error(result.stderr)
    assert "1 MiB" in result.stderr
