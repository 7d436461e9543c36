"""Pipes end to end: real ``tar``, real ``p2pcp`` processes, real pipes.

``tar c | p2pcp send -`` into ``p2pcp receive --out - | tar x`` gives the
same tree; a 200 MiB stream keeps both sides' memory bounded; a
single-file ticket with ``--out -`` gives the file's exact bytes; a stream
ticket received into a folder is a file of the stream's name; a folder
ticket with ``--out -``, and ``--json`` with ``--out -``, are usage errors.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import IO, Any

import blake3
import pytest

from p2pcp.core.errors import EXIT_USAGE, EXIT_WOULD_OVERWRITE
from p2pcp.core.ticket import Ticket, TicketKind, decode_ticket, encode_ticket
from tests.support.processes import p2pcp_command, stop

from .conftest import PROCESS_TIMEOUT_S, Node, assert_one_line_error, json_lines, tree_of
from .test_e2e_memory import Sampler

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
# Well under issue 17's ceiling for any transfer (150 MB): a side of a
# stream holds one piece of at most 1 MiB and the stream's windows, on top
# of what the process needs to start (~55 MB); 200 MiB peaked at ~68 MB.
STREAM_CEILING_BYTES = 100 * 1000 * 1000


def _start_stream_sender(node: Node, stdin: IO[bytes] | int, *extra: str) -> tuple[Any, str]:
    """``p2pcp send - --json`` reading ``stdin``; returns it and its ticket."""
    sender = subprocess.Popen(
        [*p2pcp_command(), "send", "-", "--json", *extra],
        env=node.env,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert sender.stdout is not None
    line = sender.stdout.readline()
    events = json_lines(line.decode())
    assert events and events[0]["event"] == "ticket", line
    assert events[0]["kind"] == "stream"
    return sender, events[0]["ticket"]


def _receive_command(ticket: str, *extra: str) -> list[str]:
    return [*p2pcp_command(), "receive", ticket, *extra]


def _make_tree(root: Path) -> None:
    (root / "docs" / "deep").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "docs" / "a.txt").write_text("hello\n")
    (root / "docs" / "deep" / "big.bin").write_bytes(os.urandom(3 * MIB + 17))
    (root / "zero").write_bytes(b"")
    tool = root / "run.sh"
    tool.write_text("#!/bin/sh\necho hi\n")
    tool.chmod(0o755)


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs tar")
def test_tar_through_a_pipe_gives_an_identical_tree(tmp_path: Path, make_node: Any) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    _make_tree(src)
    tar_c = subprocess.Popen(["tar", "c", "-C", str(src), "."], stdout=subprocess.PIPE)
    assert tar_c.stdout is not None
    sender, ticket = _start_stream_sender(make_node(), tar_c.stdout)
    tar_c.stdout.close()  # the sender holds the pipe now
    receiver = subprocess.Popen(
        _receive_command(ticket, "--out", "-"),
        env=make_node().env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert receiver.stdout is not None
    tar_x = subprocess.Popen(["tar", "x", "-C", str(dst)], stdin=receiver.stdout)
    receiver.stdout.close()
    try:
        assert tar_x.wait(timeout=PROCESS_TIMEOUT_S) == 0
        _, stderr = receiver.communicate(timeout=PROCESS_TIMEOUT_S)
        assert receiver.returncode == 0, stderr
        assert sender.wait(timeout=PROCESS_TIMEOUT_S) == 0
        assert tar_c.wait(timeout=PROCESS_TIMEOUT_S) == 0
    finally:
        for process in (tar_c, sender, receiver, tar_x):
            stop(process)
    assert tree_of(dst) == tree_of(src)
    assert os.stat(dst / "run.sh").st_mode & 0o100


@pytest.mark.slow
def test_a_200_mib_stream_keeps_both_sides_memory_bounded(tmp_path: Path, make_node: Any) -> None:
    size = 200 * MIB
    source = tmp_path / "input.bin"
    expected = blake3.blake3()
    with open(source, "wb") as handle:
        chunk = os.urandom(8 * MIB)
        for _ in range(size // len(chunk)):
            handle.write(chunk)
            expected.update(chunk)
    cat = subprocess.Popen(["cat", str(source)], stdout=subprocess.PIPE)
    assert cat.stdout is not None
    sender, ticket = _start_stream_sender(make_node(), cat.stdout)
    cat.stdout.close()
    sampler = Sampler()
    sampler.watch(sender.pid)
    receiver = subprocess.Popen(
        _receive_command(ticket, "--out", "-"),
        env=make_node().env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    sampler.watch(receiver.pid)
    received = blake3.blake3()
    count = 0
    try:
        assert receiver.stdout is not None
        while piece := receiver.stdout.read(MIB):
            received.update(piece)
            count += len(piece)
        assert receiver.wait(timeout=PROCESS_TIMEOUT_S) == 0
        assert sender.wait(timeout=PROCESS_TIMEOUT_S) == 0
    finally:
        sampler.stop()
        for process in (cat, sender, receiver):
            stop(process)
    assert count == size
    assert received.hexdigest() == expected.hexdigest()
    for pid in (sender.pid, receiver.pid):
        peak = sampler.peaks[pid]
        assert 0 < peak.highest <= STREAM_CEILING_BYTES, (pid, peak)


def test_a_single_file_ticket_to_stdout_gives_the_exact_bytes(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    data = os.urandom(5 * 256 * 1024 + 123)  # several leaves, the last one short
    src = tmp_path / "payload.bin"
    src.write_bytes(data)
    sender = start_sender(make_node(), src, extra=("--once",))
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run(
        _receive_command(sender.ticket, "--out", "-"),
        env=make_node().env,
        cwd=work,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=PROCESS_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == data
    assert list(work.iterdir()) == []  # nothing written to disk
    assert sender.wait() == 0


def test_a_stream_into_a_folder_is_a_file_of_its_name(tmp_path: Path, make_node: Any) -> None:
    data = os.urandom(MIB + 5)
    source = tmp_path / "input.bin"
    source.write_bytes(data)
    out = tmp_path / "out"
    with open(source, "rb") as stdin:
        sender, ticket = _start_stream_sender(make_node(), stdin, "--name", "backup.tar")
    assert decode_ticket(ticket).kind is TicketKind.STREAM
    try:
        receiver = make_node()
        first = receiver.run("receive", ticket, "--out", str(out))
        assert first.returncode == 0, first.stderr
        assert sender.wait(timeout=PROCESS_TIMEOUT_S) == 0
    finally:
        stop(sender)
    assert tree_of(out) == {"backup.tar": data}  # no partial folder left
    # The same name again: never replaced without --force (exit 5, before a byte).
    with open(source, "rb") as stdin:
        again, ticket = _start_stream_sender(make_node(), stdin, "--name", "backup.tar")
    try:
        second = make_node().run("receive", ticket, "--out", str(out))
    finally:
        stop(again)
    assert second.returncode == EXIT_WOULD_OVERWRITE, second.stderr
    assert_one_line_error(second.stderr)
    assert tree_of(out) == {"backup.tar": data}


def test_a_folder_ticket_with_out_dash_is_a_usage_error(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"a")
    (folder / "b.jpg").write_bytes(b"b")
    sender = start_sender(make_node(), folder)
    result = make_node().run("receive", sender.ticket, "--out", "-")
    assert result.returncode == EXIT_USAGE, result.stderr
    assert result.stdout == ""
    assert_one_line_error(result.stderr)
    assert "single file" in result.stderr


def test_json_with_out_dash_is_a_usage_error(tmp_path: Path, make_node: Any) -> None:
    ticket = encode_ticket(Ticket(bytes(32), None, (("127.0.0.1", 9),), bytes(32), 1))
    result = make_node().run("receive", ticket, "--out", "-", "--json")
    assert result.returncode == EXIT_USAGE
    assert_one_line_error(result.stderr)
    assert "--json" in result.stderr.splitlines()[-1]
