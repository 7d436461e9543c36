"""``p2pcp receive --ticket-file FILE`` end to end: real processes on loopback.

The ticket comes from a file (as ``send``/``share --ticket-file`` write it)
or from standard input, so it is never on a command line. A file that is
missing, unreadable, a folder, empty, of several lines, too large or not a
ticket is one line on stderr with its exit code, nothing written, and the
ticket never shown; a file open to other users works, with a warning.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from p2pcp.core.ticket import Ticket, encode_ticket
from tests.support.ports import free_port
from tests.support.processes import p2pcp_command, stop, unprivileged_prefix

from .conftest import (
    PROCESS_TIMEOUT_S,
    Node,
    assert_one_line_error,
    json_lines,
    tree_of,
    watch_json,
)

pytestmark = pytest.mark.e2e

# A well-formed ticket naming no running sender: every error below is found
# before any network activity.
TICKET = encode_ticket(
    Ticket(
        node_id=bytes(range(32)),
        relay_url=None,
        addresses=(("127.0.0.1", 9),),
        root_hash=bytes(range(32, 64)),
        total_size=5,
    )
)
SECOND_TICKET = encode_ticket(
    Ticket(
        node_id=bytes(range(1, 33)),
        relay_url=None,
        addresses=(("127.0.0.1", 9),),
        root_hash=bytes(range(32, 64)),
        total_size=5,
    )
)


def _receive(
    node: Node, *args: str, stdin: str | None = None, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """``p2pcp receive ARGS``, standard input ``stdin`` (else none)."""
    return subprocess.run(
        [*prefix, *p2pcp_command(), "receive", *args],
        env=node.env,
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
        check=False,
    )


def _assert_ticket_not_shown(result: subprocess.CompletedProcess[str], *tickets: str) -> None:
    """No part of a ticket (its body past the prefix, in any case) in the output."""
    shown = (result.stderr + result.stdout).lower()
    for ticket in tickets:
        body = ticket.lower().removeprefix("p2pcp")
        assert all(body[i : i + 12] not in shown for i in range(0, len(body) - 12)), shown


def _src(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(os.urandom(300_000))
    (src / "sub" / "b.txt").write_bytes(b"b\n")
    return src


def test_receive_reads_the_ticket_file_send_wrote(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    src = _src(tmp_path)
    ticket_file = tmp_path / "ticket"
    sender = start_sender(make_node(), src, extra=("--ticket-file", str(ticket_file)))
    # send writes it for its user alone: receive then has nothing to warn about.
    assert ticket_file.stat().st_mode & 0o777 == 0o600
    out = tmp_path / "out"
    result = _receive(make_node(), "--ticket-file", str(ticket_file), "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    assert tree_of(out / "src") == tree_of(src)
    assert json_lines(result.stdout)[-1]["event"] == "done"
    assert result.stderr == ""
    assert sender.process.poll() is None  # still serving


def test_ticket_from_standard_input_and_a_warning_for_an_open_file(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    src = _src(tmp_path)
    sender = start_sender(make_node(), src)
    receiver = make_node()

    # Standard input, as `cat FILE | p2pcp receive --ticket-file -` gives it.
    result = _receive(
        receiver, "--ticket-file", "-", "--out", str(tmp_path / "out1"), stdin=sender.ticket + "\n"
    )
    assert result.returncode == 0, result.stderr
    assert tree_of(tmp_path / "out1" / "src") == tree_of(src)

    # A file other users may read still works, with one warning line (not
    # with -q); neither shows the ticket.
    open_file = tmp_path / "open-ticket"
    open_file.write_text(f"\n  {sender.ticket}\r\n\n")
    open_file.chmod(0o644)
    result = _receive(receiver, "--ticket-file", str(open_file), "--out", str(tmp_path / "out2"))
    assert result.returncode == 0, result.stderr
    assert tree_of(tmp_path / "out2" / "src") == tree_of(src)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: --ticket-file {open_file} is open to other users (mode 0644); "
        "a ticket is a key: chmod 600 it"
    ]
    _assert_ticket_not_shown(result, sender.ticket)
    out3 = tmp_path / "out3"
    result = _receive(receiver, "--ticket-file", str(open_file), "--out", str(out3), "-q")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert tree_of(out3 / "src") == tree_of(src)


def test_a_share_ticket_file_drives_nightly_pulls(tmp_path: Path, make_node: Any) -> None:
    """The backup recipe: share writes its ticket file; receive reads it as
    is, pull after pull, with --update --delete."""
    folder = _src(tmp_path)
    ticket_file = tmp_path / "share.ticket"
    share = subprocess.Popen(
        [
            *p2pcp_command(),
            *("share", "--json", "--no-relay", "--port", str(free_port())),
            *("--ticket-file", str(ticket_file), str(folder)),
        ],
        env=make_node().env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        waiter = watch_json(share)
        ticket = waiter.next_event("ticket")["ticket"]
        assert ticket_file.read_text() == ticket + "\n"
        receiver = make_node()
        backup = tmp_path / "backup"
        pull = ("--ticket-file", str(ticket_file), "--out", str(backup), "--update", "--delete")
        result = _receive(receiver, *pull, "--json")
        assert result.returncode == 0, result.stderr
        assert tree_of(backup / "src") == tree_of(folder)

        (folder / "a.bin").write_bytes(os.urandom(300_000))
        (folder / "sub" / "b.txt").unlink()
        result = _receive(receiver, *pull, "--json")
        assert result.returncode == 0, result.stderr
        assert tree_of(backup / "src") == tree_of(folder)
        assert {"event": "deleted", "path": "src/sub/b.txt", "kind": "file"} in [
            {key: event.get(key) for key in ("event", "path", "kind")}
            for event in json_lines(result.stdout)
        ]
        _assert_ticket_not_shown(result, ticket)
    finally:
        stop(share)


def test_a_short_code_from_standard_input(tmp_path: Path, make_node: Any, relay_url: str) -> None:
    """The file may hold whatever TICKET takes: here a code, through a live relay."""
    src = _src(tmp_path)
    process = subprocess.Popen(
        [*p2pcp_command(), "send", "--json", "--relay", relay_url, "--once", str(src)],
        env=make_node().env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        sender = watch_json(process)
        code = sender.next_event("ticket")["code"]
        out = tmp_path / "out"
        result = _receive(
            make_node(),
            *("--ticket-file", "-", "--relay", relay_url, "--out", str(out), "--json"),
            stdin=f"{code}\n",
        )
        assert result.returncode == 0, result.stderr
        assert json_lines(result.stdout)[0]["event"] == "code_opened"
        assert tree_of(out / "src") == tree_of(src)
        assert sender.wait() == 0
    finally:
        stop(process)


def _bad_file(tmp_path: Path, case: str) -> Path:
    """A --ticket-file that must be refused; each holds a ticket where it can."""
    path = tmp_path / f"ticket-{case}"
    if case == "missing":
        return path
    if case == "folder":
        path.mkdir()
        (path / "ticket").write_text(TICKET + "\n")
    elif case == "empty":
        path.write_text(" \n\t\n")
    elif case == "two-lines":
        path.write_text(f"{TICKET}\n{SECOND_TICKET}\n")
    elif case == "too-large":
        path.write_text(TICKET + "\n" * (64 * 1024))
    elif case == "not-a-ticket":
        # One character changed: the checksum no longer matches.
        middle = len(TICKET) // 2
        flipped = "a" if TICKET[middle] != "a" else "b"
        path.write_text(TICKET[:middle] + flipped + TICKET[middle + 1 :] + "\n")
    elif case == "env-file":
        path.write_text(f"TICKET={TICKET}\n")
    elif case == "not-text":
        path.write_bytes(TICKET.encode() + b"\n\xff\xfe\x00")
    path.chmod(0o600)
    return path


BAD_FILES = {
    "missing": "no such file",
    "folder": "is a folder",
    "empty": "is empty",
    "two-lines": "holds 2 lines",
    "too-large": "larger than 64 KiB",
    "not-a-ticket": "ticket checksum does not match",
    "env-file": "that is not a p2pcp ticket",
    "not-text": "not text",
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_ticket_file_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, make_node: Any, case: str
) -> None:
    path = _bad_file(tmp_path, case)
    out = tmp_path / "out"
    node = make_node()
    result = _receive(node, "--ticket-file", str(path), "--out", str(out), "--json")
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(f"p2pcp: error: --ticket-file {path}: {BAD_FILES[case]}")
    # --json: the one error event, and nothing else on stdout.
    assert [event["event"] for event in json_lines(result.stdout)] == ["error"]
    _assert_ticket_not_shown(result, TICKET, SECOND_TICKET)
    assert not out.exists()
    assert not node.home.exists() or not any(node.home.rglob(".p2pcp-partial-*"))


def test_bad_standard_input_is_one_line_exit_2(tmp_path: Path, make_node: Any) -> None:
    out = tmp_path / "out"
    for given, expected in (
        ("", "is empty"),
        (f"{TICKET}\n{SECOND_TICKET}\n", "holds 2 lines"),
        ("7-notaword-either\n", "word 1 is not one of p2pcp's code words"),
    ):
        result = _receive(make_node(), "--ticket-file", "-", "--out", str(out), stdin=given)
        assert result.returncode == 2, result.stderr
        assert_one_line_error(result.stderr)
        assert result.stderr.startswith("p2pcp: error: --ticket-file - (standard input): ")
        assert expected in result.stderr
        _assert_ticket_not_shown(result, TICKET, SECOND_TICKET)
        assert "notaword" not in result.stderr
        assert not out.exists()


def test_an_unreadable_ticket_file_is_an_io_error(tmp_path: Path, make_node: Any) -> None:
    path = tmp_path / "ticket"
    path.write_text(TICKET + "\n")
    path.chmod(0)
    out = tmp_path / "out"
    result = _receive(
        make_node(),
        *("--ticket-file", str(path), "--out", str(out)),
        prefix=tuple(unprivileged_prefix()),
    )
    assert result.returncode == 1, result.stderr
    assert_one_line_error(result.stderr)
    assert f"--ticket-file {path}: cannot read it: permission denied" in result.stderr
    _assert_ticket_not_shown(result, TICKET)
    assert not out.exists()


def test_exactly_one_of_ticket_and_ticket_file(tmp_path: Path, make_node: Any) -> None:
    path = tmp_path / "ticket"
    path.write_text(TICKET + "\n")
    path.chmod(0o600)
    out = tmp_path / "out"
    node = make_node()
    for args, expected in (
        ((TICKET, "--ticket-file", str(path)), "not both"),
        ((), "missing TICKET|CODE (or --ticket-file FILE)"),
        (("--ticket-file", ""), "--ticket-file is empty"),
    ):
        result = _receive(node, *args, "--out", str(out))
        assert result.returncode == 2, result.stderr
        assert_one_line_error(result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
        assert expected in result.stderr
        _assert_ticket_not_shown(result, TICKET)
        assert not out.exists()
