"""A sender that stalls, trickles, resets, or is not who the ticket names:
the receiver must end, in bounded time, with the right error.

The QUIC idle timeout (``p2pcp.net.quic.configuration.IDLE_TIMEOUT_S``, 30 s) is the only
time limit on a silent peer today; the tests shorten it (a public module
constant read at bind) rather than wait 30 s.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from p2pcp.blobs.tree import LEAF_SIZE
from p2pcp.core.errors import (
    EXIT_INTEGRITY,
    EXIT_UNREACHABLE,
    ConnectError,
    ConnectionLostError,
    PeerIdentityError,
)
from p2pcp.transfer import wire
from tests.support.peers import (
    IMPOSTOR_KEY,
    SENDER_KEY,
    fetch,
    hostile_sender,
    reset_answer,
    single_file,
    stall_answer,
    trickle_answer,
)

from .harness import final_files

CONTENT = random.Random(5).randbytes(2 * LEAF_SIZE + 7)
SHORT_IDLE_S = 1.5


@pytest.fixture
def short_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("p2pcp.net.quic.configuration.IDLE_TIMEOUT_S", SHORT_IDLE_S)


async def _stalled(tmp_path: Path, prefix_bytes: int, **options: object) -> None:
    async with hostile_sender() as sender:
        manifest, file_blob = single_file(sender, "victim.bin", CONTENT)
        prefix = (bytes([wire.STATUS_OK]) + file_blob.body())[:prefix_bytes]
        sender.answers[file_blob.root] = stall_answer(prefix)
        await fetch(sender.ticket(manifest.root, len(CONTENT)), tmp_path / "out", **options)


@pytest.mark.usefixtures("short_idle")
@pytest.mark.parametrize("prefix_bytes", [0, 1, 41, 1 + 40 + 64 + LEAF_SIZE // 2])
def test_silent_stall_ends_with_the_idle_timeout(tmp_path: Path, prefix_bytes: int) -> None:
    """Nothing more after 0 bytes, the status, the header, or half a leaf."""
    with pytest.raises(ConnectionLostError) as caught:
        asyncio.run(_stalled(tmp_path, prefix_bytes, timeout_s=10))
    assert caught.value.exit_code == EXIT_UNREACHABLE
    assert "lost" in str(caught.value)
    assert final_files(tmp_path / "out") == {}


@pytest.mark.usefixtures("short_idle")
def test_silent_stall_with_retries_still_ends(tmp_path: Path) -> None:
    with pytest.raises(ConnectError) as caught:
        asyncio.run(_stalled(tmp_path, 41, retry_for_s=1.0, timeout_s=7))
    assert caught.value.exit_code == EXIT_UNREACHABLE


async def _reset_every_time(tmp_path: Path, code: int, **options: object) -> None:
    async with hostile_sender() as sender:
        manifest, file_blob = single_file(sender, "victim.bin", CONTENT)
        sender.answers[file_blob.root] = reset_answer(code)
        await fetch(sender.ticket(manifest.root, len(CONTENT)), tmp_path / "out", **options)


def test_reset_stream_without_retries_is_exit_3(tmp_path: Path) -> None:
    with pytest.raises(ConnectionLostError, match="reset") as caught:
        asyncio.run(_reset_every_time(tmp_path, wire.ERROR_BAD_REQUEST))
    assert caught.value.exit_code == EXIT_UNREACHABLE
    assert final_files(tmp_path / "out") == {}


def test_reset_every_request_with_retries_still_ends(tmp_path: Path) -> None:
    with pytest.raises(ConnectError) as caught:
        asyncio.run(_reset_every_time(tmp_path, 0x99, retry_for_s=1.0, timeout_s=5))
    assert caught.value.exit_code == EXIT_UNREACHABLE
    assert final_files(tmp_path / "out") == {}


async def _trickled(tmp_path: Path, **options: object) -> None:
    async with hostile_sender() as sender:
        manifest, file_blob = single_file(sender, "victim.bin", CONTENT)
        # One byte every 0.2 s keeps the connection far from idle, and would
        # take 30 hours to deliver the first leaf.
        sender.answers[file_blob.root] = trickle_answer(file_blob.body(), 0.2)
        await fetch(sender.ticket(manifest.root, len(CONTENT)), tmp_path / "out", **options)


@pytest.mark.usefixtures("short_idle")
def test_trickling_sender_is_abandoned(tmp_path: Path) -> None:
    with pytest.raises(ConnectionLostError) as caught:
        asyncio.run(_trickled(tmp_path, progress_timeout_s=2.0, timeout_s=10))
    assert caught.value.exit_code == EXIT_UNREACHABLE
    assert final_files(tmp_path / "out") == {}


async def _impostor(tmp_path: Path) -> None:
    """The ticket names SENDER_KEY; the node at its address holds another key
    and would serve the content honestly."""
    async with hostile_sender(IMPOSTOR_KEY) as sender:
        manifest, _ = single_file(sender, "victim.bin", CONTENT)
        ticket = sender.ticket(manifest.root, len(CONTENT), node_key=SENDER_KEY)
        await fetch(ticket, tmp_path / "out", retry_for_s=5.0)


def test_peer_with_another_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PeerIdentityError, match="the peer is not") as caught:
        asyncio.run(_impostor(tmp_path))
    assert caught.value.exit_code == EXIT_INTEGRITY
    assert "Traceback" not in str(caught.value)
    assert final_files(tmp_path / "out") == {}
    assert not (tmp_path / "out").exists()


async def _slow_goodbye(tmp_path: Path, delay_s: float) -> tuple[float, float]:
    async with hostile_sender() as sender:
        sender.done_delay_s = delay_s
        manifest, _ = single_file(sender, "victim.bin", CONTENT)
        started = time.monotonic()
        finished = await fetch(sender.ticket(manifest.root, len(CONTENT)), tmp_path / "out")
        return finished.seconds, time.monotonic() - started


def test_the_transfer_time_ends_when_the_files_are_in_place(tmp_path: Path) -> None:
    """A sender slow to answer DONE (a lost packet, a busy machine) still gets
    its notice, but the wait is no part of the transfer's reported time."""
    delay_s = 3.0
    seconds, wall_s = asyncio.run(_slow_goodbye(tmp_path, delay_s))
    assert final_files(tmp_path / "out") == {"victim.bin": CONTENT}
    assert wall_s >= delay_s  # the receiver did wait for the goodbye
    assert seconds <= wall_s - delay_s


async def _early_request_stalled(tmp_path: Path) -> None:
    """GET_ITEM (the first file, asked for beside the manifest) is accepted
    and then never answered, not even with a status."""
    async with hostile_sender() as sender:
        manifest, file_blob = single_file(sender, "victim.bin", CONTENT)
        sender.answers[file_blob.root] = stall_answer()
        sender.items = {0: file_blob.root}
        await fetch(
            sender.ticket(manifest.root, len(CONTENT)), tmp_path / "out", progress_timeout_s=2.0
        )


def test_stalled_early_request_is_abandoned_like_a_get(tmp_path: Path) -> None:
    with pytest.raises(ConnectionLostError, match=r"no verified data for victim\.bin") as caught:
        asyncio.run(_early_request_stalled(tmp_path))
    assert caught.value.exit_code == EXIT_UNREACHABLE
    assert final_files(tmp_path / "out") == {}
