"""The command line's contract with people and scripts, through the real CLI:
what -q keeps, what counts as a usage error, one line per error (and one
JSON ``error`` event under --json), help without library internals, the
sender's reports, stopping a sender, and resumes that say what they kept.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from p2pcp.blobs.tree import LEAF_SIZE
from p2pcp.core.ticket import Ticket, decode_ticket, encode_ticket
from tests.support.processes import p2pcp_command, stop

from .conftest import (
    PROCESS_TIMEOUT_S,
    SLOW_LINK,
    assert_one_line_error,
    json_lines,
    wait_for_bytes,
)

pytestmark = pytest.mark.e2e

# Small datagrams keep loopback slow enough (~30-60 MB/s) to act mid-transfer.
BIG_SIZE = 160 * 1024 * 1024


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def _assert_only_one_line_error(stderr: str) -> str:
    lines = _error_lines(stderr)
    assert len(lines) == 1, stderr
    assert lines[0].startswith("p2pcp: error: "), stderr
    return lines[0]


def _one_json_error(stdout: str, exit_code: int) -> dict[str, Any]:
    events = json_lines(stdout)
    errors = [event for event in events if event["event"] == "error"]
    assert len(errors) == 1, stdout
    assert errors[0]["exit_code"] == exit_code
    assert errors[0]["message"]
    return errors[0]


def _dead_ticket() -> str:
    """A ticket whose sender does not listen (nobody holds the port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return encode_ticket(Ticket(bytes(32), None, (("127.0.0.1", port),), bytes(32), 1))


def _read_pty_line(master: int, deadline: float) -> str:
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        assert left > 0, f"nothing but {data!r} on the terminal in time"
        ready, _, _ = select.select([master], [], [], left)
        if ready:
            chunk = os.read(master, 4096)
            assert chunk, f"the terminal closed after {data!r}"
            data += chunk
    return data.decode().replace("\r\n", "\n").split("\n", 1)[0]


def test_quiet_send_on_a_terminal_still_prints_the_ticket(tmp_path: Path, make_node: Any) -> None:
    """Defect 1: -q hides messages, never the ticket (stdout on a terminal)."""
    src = tmp_path / "f.txt"
    src.write_bytes(b"hello")
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [*p2pcp_command(), "send", "-q", "--no-relay", str(src)],
        env=make_node().env,
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(slave)
    try:
        line = _read_pty_line(master, time.monotonic() + 30)
        assert decode_ticket(line.strip()).total_size == 5, line
        process.terminate()
        assert process.wait(timeout=PROCESS_TIMEOUT_S) == 0
        assert process.stderr is not None and process.stderr.read() == ""
    finally:
        stop(process)
        os.close(master)


@pytest.mark.parametrize(
    "args",
    [("send", ""), ("send", "--no-relay", "x", ""), ("receive", "TICKET", "--out", "")],
    ids=["send-empty", "send-one-empty", "receive-out-empty"],
)
def test_an_empty_path_is_a_usage_error(args: tuple[str, ...], make_node: Any) -> None:
    """Defect 2: "" (an unset variable) is not the current folder."""
    args = tuple(_dead_ticket() if arg == "TICKET" else arg for arg in args)
    result = make_node().run(*args)
    assert result.returncode == 2, result.stderr
    assert "empty" in _assert_only_one_line_error(result.stderr)
    assert result.stdout == ""


def test_out_naming_a_file_fails_at_once_before_connecting(tmp_path: Path, make_node: Any) -> None:
    """Defect 11b: exit 2 at once, not exit 5 after connecting (or 3 after 15 s)."""
    target = tmp_path / "a-file"
    target.write_bytes(b"x")
    started = time.monotonic()
    result = make_node().run("receive", _dead_ticket(), "--out", str(target), "--json")
    assert result.returncode == 2, result.stderr
    line = _assert_only_one_line_error(result.stderr)
    assert "not a folder" in line and str(target) in line
    assert _one_json_error(result.stdout, 2)["message"] in line
    assert time.monotonic() - started < 10  # the connect timeout alone is 15 s
    assert target.read_bytes() == b"x"


PARSER_ERRORS = {
    "unknown-option": ("send", "--frob", "x"),
    "missing-argument": ("receive",),
    "missing-value": ("receive", "TICKET", "--out"),
    "bad-number": ("send", "--port", "70000", "x"),
    "bad-choice": ("send", "--congestion", "vegas", "x"),
    "unknown-command": ("sned", "x"),
}


@pytest.mark.parametrize("case", list(PARSER_ERRORS))
@pytest.mark.parametrize("as_json", [False, True], ids=["plain", "json"])
def test_parser_errors_are_one_line_and_one_json_event(
    case: str, as_json: bool, make_node: Any
) -> None:
    """Defect 13: option-parser errors are one line, exit 2, and a JSON event."""
    args = PARSER_ERRORS[case]
    if as_json:
        args = (args[0], "--json", *args[1:])
    result = make_node().run(*args)
    assert result.returncode == 2, result.stderr
    _assert_only_one_line_error(result.stderr)
    if as_json:
        _one_json_error(result.stdout, 2)
    else:
        assert result.stdout == ""


# A bad value for a setting that reaches net/: (flag or None, variable, config key, value).
BAD_SETTINGS = {
    "congestion": ("--congestion", "P2PCP_CONGESTION", 'congestion = "vegas"', "vegas"),
    "datagram-size": (None, "P2PCP_MAX_DATAGRAM_SIZE", "max_datagram_size = 99999", "99999"),
    "relay": ("--relay", "P2PCP_RELAY", 'relay = "gopher://x"', "gopher://x"),
}


@pytest.mark.parametrize("case", list(BAD_SETTINGS))
def test_a_bad_setting_is_the_same_error_from_flag_variable_and_config_file(
    case: str, tmp_path: Path, make_node: Any
) -> None:
    """One check (EndpointConfig, RelayUrl) whatever the source: exit 2 and
    one line, "SOURCE: MESSAGE", with the same MESSAGE from each source."""
    flag, variable, line, value = BAD_SETTINGS[case]
    path = tmp_path / "file.txt"
    path.write_bytes(b"x")
    node = make_node()
    results: dict[str, subprocess.CompletedProcess[str]] = {}
    if flag is not None:
        results[flag] = node.run("send", flag, value, str(path))
    results[variable] = subprocess.run(
        [*p2pcp_command(), "send", str(path)],
        env={**node.env, variable: value},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    node.home.mkdir(parents=True, exist_ok=True)
    config_file = node.home / "config.toml"
    config_file.write_text(line + "\n")
    results[str(config_file)] = node.run("send", str(path))
    messages = set()
    for source, result in results.items():
        assert result.returncode == 2, (source, result.stderr)
        error = _assert_only_one_line_error(result.stderr)
        prefix = f"p2pcp: error: {source}: "
        assert error.startswith(prefix), (source, error)
        messages.add(error[len(prefix) :])
    assert len(messages) == 1, messages
    assert value in messages.pop()


def test_every_error_under_json_is_one_error_event(tmp_path: Path, make_node: Any) -> None:
    """A bad ticket (ticket and receive) and an unreachable sender: exactly
    one ``error`` event with its exit code, and the one stderr line."""
    node = make_node()
    bad = node.run("ticket", "--json", "p2pcpnotaticket")
    assert bad.returncode == 2
    _one_json_error(bad.stdout, 2)
    _assert_only_one_line_error(bad.stderr)
    unreachable = node.run(
        "receive", _dead_ticket(), "--json", "--out", str(tmp_path / "o"), timeout=60
    )
    assert unreachable.returncode == 3
    _one_json_error(unreachable.stdout, 3)
    assert_one_line_error(unreachable.stderr)


INTERNALS = re.compile(r"\{[A-Z]|<list\[|<int range>|<float range>|<str>|<path>|<int>|<float>")


@pytest.mark.parametrize("command", ["", "send", "receive", "relay", "ticket", "id"])
def test_help_shows_no_library_internals(command: str, make_node: Any) -> None:
    node = make_node()
    env = {**node.env, "COLUMNS": "100"}
    args = [*p2pcp_command(), *([command] if command else []), "--help"]
    result = subprocess.run(
        args, env=env, capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "Usage: p2pcp" in result.stdout
    assert not INTERNALS.search(result.stdout), result.stdout
    if command == "send":
        assert "PATH..." in result.stdout
        assert "Ctrl-C" in result.stdout and "130" in result.stdout
    if command in ("send", "receive"):
        flat = " ".join(result.stdout.split())
        assert "sender" in flat and "receiver" in flat and "acks" in flat, flat


def _popen_sender(node: Any, *args: str, env: dict[str, str] | None = None) -> Any:
    return subprocess.Popen(
        [*p2pcp_command(), "send", "--no-relay", *args],
        env={**node.env, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_single_file_receive_and_its_sender_speak_plainly(tmp_path: Path, make_node: Any) -> None:
    """Defect 13 and the sender's reports: "1 file" (never "1 files"), no
    unrounded floats, the sender's ``connected`` event names the path kind
    with a description and address, and its ``done`` says how fast."""
    src = tmp_path / "one.bin"
    src.write_bytes(os.urandom(3 * LEAF_SIZE + 7))
    sender = _popen_sender(make_node(), "--json", "--once", str(src))
    try:
        assert sender.stdout is not None
        ticket = json.loads(sender.stdout.readline())["ticket"]
        receiver = make_node()
        receiver_id = receiver.run("id").stdout.strip()
        result = receiver.run("receive", ticket, "--out", str(tmp_path / "out"))
        assert result.returncode == 0, result.stderr
        assert sender.wait(timeout=PROCESS_TIMEOUT_S) == 0
        sent = json_lines(sender.stdout.read())
    finally:
        stop(sender)
    assert "1 file" in result.stderr and "1 files" not in result.stderr, result.stderr
    assert not re.search(r"\d\.\d{2,} ?s\b", result.stderr), result.stderr
    connected = next(event for event in sent if event["event"] == "connected")
    assert connected["path"] in ("direct", "relay"), connected
    assert connected["description"].startswith(connected["path"])
    assert "address" in connected or "url" in connected
    # The key the receiver proved, shortened.
    assert 8 <= len(connected["node_id"]) < len(receiver_id)
    assert receiver_id.startswith(connected["node_id"])
    done = next(event for event in sent if event["event"] == "done")
    assert done["receiver"] == connected["receiver"]
    assert done["bytes_sent"] == src.stat().st_size
    assert done["bytes_per_second"] > 0
    assert not [event for event in sent if event["event"] == "error"]


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stopping_a_sender_is_not_an_error(how: int, tmp_path: Path, make_node: Any) -> None:
    """Ctrl-C or SIGTERM on a serving `send`: a summary and exit 0."""
    src = tmp_path / "f.txt"
    src.write_bytes(b"hello")
    sender = _popen_sender(make_node(), str(src))
    try:
        assert sender.stdout is not None and sender.stderr is not None
        ticket = sender.stdout.readline().strip()
        received = make_node().run("receive", ticket, "--out", str(tmp_path / "out"), "-q")
        assert received.returncode == 0, received.stderr
        sender.send_signal(how)
        assert sender.wait(timeout=PROCESS_TIMEOUT_S) == 0
        stderr = sender.stderr.read()
    finally:
        stop(sender)
    assert "error" not in stderr, stderr
    last = _error_lines(stderr)[-1]
    assert last.startswith("stopped:") and "1 receiver served" in last and "5 B sent" in last


def test_interrupted_transfer_says_how_to_resume_and_the_rerun_says_what_was_kept(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    """`send --once` interrupted mid-transfer exits 130 (the documented
    exception); Ctrl-C on `receive` says to run the same command again (one
    JSON ``error`` event, 130); the rerun says "resuming: ... already here"
    and its done line counts what was kept."""
    src = tmp_path / "big.bin"
    chunk = os.urandom(1024 * 1024)
    with open(src, "wb") as handle:
        for _ in range(BIG_SIZE // len(chunk)):
            handle.write(chunk)
    sender_node, receiver = make_node(), make_node()
    first = _popen_sender(sender_node, "--once", "--json", str(src), env=SLOW_LINK)
    out = tmp_path / "out"
    assert first.stdout is not None and first.stderr is not None
    ticket = json.loads(first.stdout.readline())["ticket"]
    process = subprocess.Popen(
        [*p2pcp_command(), "receive", ticket, "--out", str(out), "--json"],
        env={**receiver.env, **SLOW_LINK},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Past one checkpoint (64 MiB, or 2 s).
        wait_for_bytes(process, 80 * 1024 * 1024)
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=PROCESS_TIMEOUT_S) == 130
        sender_stderr = first.stderr.read()
        assert "interrupted" in _error_lines(sender_stderr)[-1], sender_stderr
        _one_json_error(first.stdout.read(), 130)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=PROCESS_TIMEOUT_S) == 130
        assert process.stderr is not None and process.stdout is not None
        line = _error_lines(process.stderr.read())[-1]
        assert line == "p2pcp: error: interrupted: run the same command again to resume", line
        _one_json_error(process.stdout.read(), 130)
    finally:
        stop(first)
        stop(process)
    second = start_sender(sender_node, src)
    rerun = receiver.run("receive", second.ticket, "--out", str(out))
    assert rerun.returncode == 0, rerun.stderr
    assert re.search(r"^resuming: [\d.]+ [KMG]?B already here$", rerun.stderr, re.M), rerun.stderr
    done = _error_lines(rerun.stderr)[-1]
    assert re.search(r"[\d.]+ [KMG]?B received, [\d.]+ [KMG]?B already here", done), done
    assert (out / "big.bin").read_bytes() == src.read_bytes()


@pytest.mark.slow
def test_a_sender_gone_for_good_is_reported_without_unrounded_floats(
    tmp_path: Path, make_node: Any
) -> None:
    """Defect 13: the retries' and the final error's seconds are rounded
    (a reconnection's time left gave "no answer within 7.46194 s")."""
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(64 * 1024 * 1024))
    sender = _popen_sender(make_node(), "--json", str(src), env=SLOW_LINK)
    out = tmp_path / "out"
    process = None
    try:
        assert sender.stdout is not None
        ticket = json.loads(sender.stdout.readline())["ticket"]
        process = subprocess.Popen(
            [*p2pcp_command(), "receive", ticket, "--retry-for", "3.3", "--out", str(out)],
            env={**make_node().env, **SLOW_LINK},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + PROCESS_TIMEOUT_S
        while not any(p.stat().st_size for p in out.glob(".p2pcp-partial-*/*.part")):
            assert time.monotonic() < deadline and process.poll() is None, "no data arrived"
            time.sleep(0.05)
        sender.kill()
        assert process.wait(timeout=PROCESS_TIMEOUT_S) == 3
        assert process.stderr is not None
        stderr = process.stderr.read()
    finally:
        stop(sender)
        if process is not None:
            stop(process)
    assert_one_line_error(stderr)
    assert "retrying" in stderr, stderr
    assert not re.search(r"\d\.\d{2,}", stderr), stderr
