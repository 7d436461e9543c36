"""Interrupted receives keep what verified and resume; lost connections are
retried in the same run; a restarted sender gives an equivalent ticket."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from p2pcp.core.defaults import PARTIAL_DIR_PREFIX
from tests.support.disks import big_file, small_tmpfs
from tests.support.processes import stop

from .conftest import SLOW_LINK, assert_one_line_error, json_lines, start_receive, wait_for_bytes

pytestmark = pytest.mark.e2e

SIZE = 160 * 1024 * 1024
PART_SIZE = 64 * 1024 * 1024
# Small datagrams keep loopback slow enough (~30-60 MB/s) to act mid-transfer.


def _partial_files(out: Path) -> list[Path]:
    return [p for p in out.glob(f"{PARTIAL_DIR_PREFIX}*/*") if p.is_file()]


@pytest.mark.parametrize("how", ["ctrl-c", "kill-9"])
def test_interrupted_receive_resumes_without_starting_over(
    how: str, tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    src = big_file(tmp_path / "big.bin", SIZE)
    sender = start_sender(make_node(), src, env=SLOW_LINK)
    receiver = make_node()
    out = tmp_path / "out"
    process = start_receive(receiver, sender.ticket, out)
    try:
        # Past one checkpoint (64 MiB), so even kill -9 leaves a record.
        wait_for_bytes(process, 80 * 1024 * 1024)
        if how == "ctrl-c":
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=30) == 130
            assert process.stderr is not None
            assert_one_line_error(process.stderr.read())
        else:
            process.kill()
            process.wait(timeout=30)
    finally:
        stop(process)
    # Nothing under the final name; the verified part is kept, hidden.
    assert not (out / "big.bin").exists()
    assert _partial_files(out), "the verified data should be kept for resuming"
    result = receiver.run("receive", sender.ticket, "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    done = json_lines(result.stdout)[-1]
    assert done["event"] == "done"
    # A checkpoint comes every 64 MiB or 2 s, so past 80 MiB at least one
    # happened: some verified data survived even kill -9.
    assert done["bytes_present"] > 0
    assert done["bytes_received"] + done["bytes_present"] == SIZE
    assert (out / "big.bin").read_bytes() == src.read_bytes()
    assert [p.name for p in out.iterdir()] == ["big.bin"]  # partial folder gone


def test_sender_restarted_mid_transfer_is_retried_in_the_same_run(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    """Several files in flight when the connection drops: each keeps its
    verified leaves, and no byte is fetched twice."""
    src = tmp_path / "folder"
    src.mkdir()
    for name in ("a.bin", "b.bin", "c.bin"):
        big_file(src / name, PART_SIZE)
    sender_node = make_node()
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    first = start_sender(sender_node, src, extra=("--port", port, "--no-relay"), env=SLOW_LINK)
    out = tmp_path / "out"
    process = start_receive(make_node(), first.ticket, out, "--retry-for", "60")
    try:
        wait_for_bytes(process, 40 * 1024 * 1024)
        stop(first.process)
        second = start_sender(sender_node, src, extra=("--port", port, "--no-relay"), env=SLOW_LINK)
        # Same content, same identity, same port: the very same ticket.
        assert second.ticket == first.ticket
        assert process.wait(timeout=120) == 0
        assert process.stdout is not None
        events = json_lines(process.stdout.read())
    finally:
        stop(process)
    assert any(e["event"] == "retry" for e in events)
    done = events[-1]
    assert done["event"] == "done"
    assert done["bytes_received"] + done["bytes_present"] == 3 * PART_SIZE
    for name in ("a.bin", "b.bin", "c.bin"):
        assert (out / "folder" / name).read_bytes() == (src / name).read_bytes()


def test_retry_for_zero_gives_up_at_once_and_keeps_the_data(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    src = big_file(tmp_path / "big.bin", SIZE)
    sender = start_sender(make_node(), src, env=SLOW_LINK)
    out = tmp_path / "out"
    process = start_receive(make_node(), sender.ticket, out, "--retry-for", "0")
    try:
        wait_for_bytes(process, 20 * 1024 * 1024)
        stop(sender.process)
        assert process.wait(timeout=60) == 3
        assert process.stderr is not None
        assert_one_line_error(process.stderr.read())
    finally:
        stop(process)
    assert not (out / "big.bin").exists()
    assert _partial_files(out)


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """A 96 MiB tmpfs: a real file system that really fills up (root only)."""
    with small_tmpfs(tmp_path, 96) as mount:
        yield mount


def test_disk_full_mid_transfer_is_exit_1_and_resumable(
    small_disk: Path, tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(60 * 1024 * 1024))
    sender = start_sender(make_node(), src, env=SLOW_LINK)
    receiver = make_node()
    out = small_disk / "out"
    process = start_receive(receiver, sender.ticket, out)
    filler = small_disk / "filler"
    try:
        # The free-space check passed (60 MiB + headroom < 96 MiB); now
        # someone else fills the disk while we write.
        wait_for_bytes(process, 8 * 1024 * 1024)
        with open(filler, "wb") as handle:
            chunk = b"\0" * (1024 * 1024)
            try:
                for _ in range(96):
                    handle.write(chunk)
                    handle.flush()
            except OSError:
                pass  # the disk is full: what we wanted
        assert process.wait(timeout=60) == 1
        assert process.stderr is not None
        message = process.stderr.read()
        assert_one_line_error(message)
        assert "full" in message and "resume" in message
    finally:
        stop(process)
    assert not (out / "data.bin").exists()
    # Space comes back; the same command finishes the job.
    filler.unlink()
    result = receiver.run("receive", sender.ticket, "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    assert (out / "data.bin").read_bytes() == src.read_bytes()


@pytest.mark.slow
def test_sender_killed_hard_then_a_rerun_resumes(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    """kill -9 of the sender: the receiver notices when QUIC idles out
    (about 30 s), stops with exit 3 keeping its data, and the same command
    against the restarted sender fetches only the rest."""
    import socket

    src = big_file(tmp_path / "big.bin", SIZE)
    sender_node = make_node()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    first = start_sender(sender_node, src, extra=("--port", port, "--no-relay"), env=SLOW_LINK)
    receiver = make_node()
    out = tmp_path / "out"
    process = start_receive(receiver, first.ticket, out, "--retry-for", "0")
    try:
        # Early (a quarter), so a busy machine cannot finish the file first;
        # the receiver checkpoints what it has when it gives up.
        wait_for_bytes(process, 40 * 1024 * 1024)
        first.process.kill()
        assert process.wait(timeout=90) == 3
        assert process.stderr is not None
        assert_one_line_error(process.stderr.read())
    finally:
        stop(process)
    assert not (out / "big.bin").exists()
    second = start_sender(sender_node, src, extra=("--port", port, "--no-relay"))
    assert second.ticket == first.ticket
    result = receiver.run("receive", second.ticket, "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    done = json_lines(result.stdout)[-1]
    assert done["bytes_present"] > 0
    assert done["bytes_received"] + done["bytes_present"] == SIZE
    assert (out / "big.bin").read_bytes() == src.read_bytes()
