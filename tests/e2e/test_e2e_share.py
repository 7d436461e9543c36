"""``p2pcp share`` end to end: real processes on loopback.

A share serves what its folder holds when each receive asks, under a
ticket that stays (restarts with the same --port, or a relay ticket with
none); --rotate refuses the old ticket; --allow refuses other receivers;
a file rewritten during scans and fetches never arrives as a mix.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p2pcp.core.ticket import TicketKind, decode_ticket
from tests.support.ports import free_port
from tests.support.processes import p2pcp_command, stop

from .conftest import (
    PROCESS_TIMEOUT_S,
    Node,
    Sender,
    assert_one_line_error,
    json_lines,
    tree_of,
    watch_json,
)

pytestmark = pytest.mark.e2e

LEAF = 256 * 1024


@pytest.fixture
def start_share() -> Iterator[Any]:
    """Start ``p2pcp share --json ARGS`` on a node; returns it once its ticket is out."""
    started: list[Sender] = []

    def start(node: Node, *args: str | Path) -> Sender:
        process = subprocess.Popen(
            [*p2pcp_command(), "share", "--json", "--no-relay", *map(str, args)],
            env=node.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        share = watch_json(process)
        started.append(share)
        # The first snapshot is made (and reported) before the ticket.
        first = share.next_event("snapshot")
        event = share.next_event("ticket")
        share.ticket = event["ticket"]
        assert event["kind"] == "share"
        assert event["files"] == first["files"] and event["total_size"] == first["bytes"]
        share.first_root = first["root"]  # type: ignore[attr-defined]
        return share

    yield start
    for share in started:
        stop(share.process)


def _stop(share: Sender) -> list[dict[str, Any]]:
    """Stop a share (SIGTERM: exit 0) and return the events it printed since."""
    share.process.terminate()
    assert share.wait() == 0
    seen = []
    while True:
        event = share.lines.get(timeout=PROCESS_TIMEOUT_S)
        if event["event"] == "<eof>":
            return seen
        seen.append(event)


def _was_skipped(share: Sender, rel: str, skipped: list[str]) -> bool:
    """Whether a snapshot of ``share`` reported ``rel`` as skipped (its
    events so far, waiting a little for one still on its way)."""
    deadline = time.monotonic() + 10
    while not any(item.startswith(f"{rel} ") for item in skipped):
        try:
            event = share.lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return False
        if event["event"] == "snapshot":
            skipped.extend(event["skipped"])
    return True


def _folder(root: Path) -> Path:
    folder = root / "data"
    (folder / "sub").mkdir(parents=True)
    (folder / "big.bin").write_bytes(os.urandom(3 * LEAF + 17))
    (folder / "sub" / "small.txt").write_bytes(b"small\n")
    (folder / "gone.txt").write_bytes(b"to be deleted\n")
    return folder


def _receive(node: Node, ticket: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return node.run("receive", ticket, "--out", str(out), "--json", *extra)


def test_each_receive_gets_the_folder_as_it_is_then_under_the_same_ticket(
    tmp_path: Path, make_node: Any, start_share: Any
) -> None:
    folder = _folder(tmp_path)
    share = start_share(make_node(), folder)
    assert decode_ticket(share.ticket).kind is TicketKind.SHARE
    receiver = make_node()
    result = _receive(receiver, share.ticket, tmp_path / "out1")
    assert result.returncode == 0, result.stderr
    assert tree_of(tmp_path / "out1" / "data") == tree_of(folder)

    # Change the folder: rewrite, add, delete.
    (folder / "big.bin").write_bytes(os.urandom(3 * LEAF + 17))
    (folder / "sub" / "new.txt").write_bytes(b"new\n")
    (folder / "gone.txt").unlink()
    # The share hashes what changed as it settles, before anyone asks: the
    # rewritten and the added file, whole, and nothing else.
    seen, prehashed = _until_prehashed(share, files=2)
    assert sum(e["bytes_hashed"] for e in prehashed) == 3 * LEAF + 17 + len(b"new\n")
    result = _receive(receiver, share.ticket, tmp_path / "out2")
    assert result.returncode == 0, result.stderr
    assert tree_of(tmp_path / "out2" / "data") == tree_of(folder)
    # The first copy is untouched; no partial folder is left anywhere.
    assert (tmp_path / "out1" / "data" / "gone.txt").exists()
    for out in ("out1", "out2"):
        assert not [p for p in (tmp_path / out).iterdir() if p.name.startswith(".p2pcp")]

    snapshots = [e for e in seen + _stop(share) if e["event"] == "snapshot"]
    roots = [share.first_root] + [e["root"] for e in snapshots]
    # The first receive's rescan found the same tree (same root, nothing hashed).
    assert roots[1] == roots[0] and snapshots[0]["files_hashed"] == 0
    assert snapshots[0]["bytes_hashed"] == 0
    assert roots[2] != roots[0] and snapshots[1]["files"] == 3
    # The second rescan read nothing: the changes were hashed already.
    assert (snapshots[1]["files_hashed"], snapshots[1]["bytes_hashed"]) == (0, 0)


def _until_prehashed(
    share: Sender, files: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The share's events until its ``prehashed`` events count ``files``
    files hashed (failing after PROCESS_TIMEOUT_S): all of them, and those."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + PROCESS_TIMEOUT_S
    while True:
        prehashed = [e for e in seen if e["event"] == "prehashed"]
        if sum(e["files_hashed"] for e in prehashed) >= files:
            return seen, prehashed
        try:
            seen.append(share.lines.get(timeout=max(0.0, deadline - time.monotonic())))
        except queue.Empty:
            pytest.fail(f"no prehashed events for {files} files; saw {seen}")


def test_a_restart_with_the_same_port_prints_the_same_ticket_and_it_still_works(
    tmp_path: Path, make_node: Any, start_share: Any
) -> None:
    folder = _folder(tmp_path)
    node = make_node()
    port = str(free_port())
    share = start_share(node, folder, "--port", port)
    ticket = share.ticket
    _stop(share)
    again = start_share(node, folder, "--port", port)
    assert again.ticket == ticket
    result = _receive(make_node(), ticket, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert tree_of(tmp_path / "out" / "data") == tree_of(folder)
    # Another command line (an exclude) is another share: another secret.
    other = start_share(node, folder, "--port", str(free_port()), "--exclude", "*.txt")
    assert decode_ticket(other.ticket).root_hash != decode_ticket(ticket).root_hash


def test_a_relay_ticket_stays_without_a_port(
    tmp_path: Path, make_node: Any, relay_url: str
) -> None:
    folder = _folder(tmp_path)
    node = make_node()
    tickets = []
    ticket_file = tmp_path / "ticket"
    for _ in range(2):
        process = subprocess.Popen(
            [
                *p2pcp_command(),
                *("share", "--json", "--relay", relay_url, "--ticket-type", "relay", str(folder)),
                *("--ticket-file", str(ticket_file)),
            ],
            env=node.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert process.stdout is not None
            for line in process.stdout:
                event = json.loads(line)
                if event["event"] == "ticket":
                    tickets.append(event["ticket"])
                    break
        finally:
            stop(process)
    assert len(tickets) == 2 and tickets[0] == tickets[1]
    assert ticket_file.read_text() == tickets[0] + "\n"
    decoded = decode_ticket(tickets[0])
    assert decoded.addresses == () and decoded.relay_url == relay_url


def test_rotate_refuses_the_old_ticket_and_writes_nothing(
    tmp_path: Path, make_node: Any, start_share: Any
) -> None:
    folder = _folder(tmp_path)
    node = make_node()
    port = str(free_port())
    first = start_share(node, folder, "--port", port)
    old = first.ticket
    _stop(first)
    rotated = start_share(node, folder, "--port", port, "--rotate")
    assert rotated.ticket != old
    out = tmp_path / "out"
    result = _receive(make_node(), old, out)
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result.stderr)
    assert "ticket changed" in result.stderr and "--rotate" in result.stderr
    assert not out.exists()
    assert json_lines(result.stdout)[-1]["exit_code"] == 2
    refused = rotated.next_event("refused")
    assert refused["reason"] == "unknown_ticket"
    # The new ticket works, and a plain restart keeps it.
    result = _receive(make_node(), rotated.ticket, out)
    assert result.returncode == 0, result.stderr
    assert tree_of(out / "data") == tree_of(folder)


def test_allow_lets_the_listed_receiver_in_and_refuses_another(
    tmp_path: Path, make_node: Any, start_share: Any
) -> None:
    folder = _folder(tmp_path)
    friend, stranger = make_node(), make_node()
    friend_id = friend.run("id").stdout.strip()
    stranger_id = stranger.run("id").stdout.strip()
    share = start_share(make_node(), folder, "--allow", friend_id)

    denied = tmp_path / "denied"
    result = _receive(stranger, share.ticket, denied)
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result.stderr)
    assert stranger_id in result.stderr and f"--allow {stranger_id}" in result.stderr
    assert not denied.exists()
    refused = share.next_event("refused")
    assert refused["node_id"] == stranger_id and refused["reason"] == "not_allowed"

    result = _receive(friend, share.ticket, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert tree_of(tmp_path / "out" / "data") == tree_of(folder)
    assert share.process.poll() is None  # a refusal is not the share's failure


@pytest.mark.parametrize("value", ["not-a-node-id", "aaaa", ""])
def test_a_malformed_allow_is_a_usage_error(tmp_path: Path, make_node: Any, value: str) -> None:
    folder = _folder(tmp_path)
    node = make_node()
    result = node.run("share", "--no-relay", "--allow", value, str(folder))
    assert result.returncode == 2
    assert_one_line_error(result.stderr)
    assert "--allow" in result.stderr
    assert not (node.home / "shares").exists()


def test_a_file_rewritten_during_scans_and_fetches_never_arrives_mixed(
    tmp_path: Path, make_node: Any, start_share: Any
) -> None:
    """A writer flips two files between two versions of the same size, in
    place and by rename, as fast as it can, while receives run at once:
    every copy that arrives is exactly one version (or, when the file kept
    changing through the scan's reads, the snapshot left it out and the
    share said so), and a receive that gives up (the files kept changing)
    leaves nothing under a final name."""
    folder = tmp_path / "live"
    folder.mkdir()
    versions = {
        "inplace.bin": [os.urandom(2 * LEAF + 100), os.urandom(2 * LEAF + 100)],
        "small.log": [b"A" * 5000, b"B" * 5000],
        "renamed.bin": [os.urandom(LEAF + 1), os.urandom(LEAF + 1)],
    }
    for name, (first, _second) in versions.items():
        (folder / name).write_bytes(first)
    (folder / "steady.txt").write_bytes(b"steady\n")
    share = start_share(make_node(), folder, "--exclude", ".renamed.tmp")
    stop_writing = threading.Event()

    def writer() -> None:
        flip = 0
        while not stop_writing.is_set():
            flip ^= 1
            for name in ("inplace.bin", "small.log"):
                fd = os.open(folder / name, os.O_WRONLY)
                try:
                    os.pwrite(fd, versions[name][flip], 0)
                finally:
                    os.close(fd)
            tmp = folder / ".renamed.tmp"
            tmp.write_bytes(versions["renamed.bin"][flip])
            os.replace(tmp, folder / "renamed.bin")
            time.sleep(0.005)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    outcomes: list[int] = []
    skipped: list[str] = []
    try:
        for round_number in range(3):
            processes = []
            for number in range(3):
                out = tmp_path / f"out{round_number}-{number}"
                processes.append(
                    (
                        out,
                        subprocess.Popen(
                            [
                                *p2pcp_command(),
                                *("receive", share.ticket, "--json", "--out", str(out)),
                            ],
                            env=make_node().env,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL,
                            text=True,
                        ),
                    )
                )
            for out, process in processes:
                _stdout, stderr = process.communicate(timeout=PROCESS_TIMEOUT_S)
                outcomes.append(process.returncode)
                assert process.returncode in (0, 4), stderr
                if process.returncode:
                    assert_one_line_error(stderr)
                    assert "kept changing" in stderr
                received = out / "live"
                for name, both in versions.items():
                    path = received / name
                    if path.exists():
                        assert path.read_bytes() in both, name
                    elif process.returncode == 0:
                        # Changing through two reads of the scan: left out, and said so.
                        assert _was_skipped(share, f"live/{name}", skipped), name
                if process.returncode == 0:
                    assert (received / "steady.txt").read_bytes() == b"steady\n"
    finally:
        stop_writing.set()
        thread.join(timeout=10)
    assert len(outcomes) == 9, outcomes
    assert share.process.poll() is None
