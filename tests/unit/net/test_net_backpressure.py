"""The send side's backpressure: the budget's bounds, and a Stream's side of the
contract with its connection (stream.StreamOwner): it waits while the rule
says so, registered with the connection, and reports its end once."""

from __future__ import annotations

import asyncio

from p2pcp.core.errors import ConnectionLostError
from p2pcp.net.quic.connection import (
    HIGH_WATER_BYTES,
    MAX_SEND_BUDGET_BYTES,
    SEND_BUDGET_WINDOWS,
    send_budget_bytes,
)
from p2pcp.net.quic.stream import Stream
from tests.support.aio import run_bounded


def test_the_budget_is_a_few_windows_between_one_stream_and_the_cap() -> None:
    assert send_budget_bytes(0) == HIGH_WATER_BYTES
    window = 3 * 1024 * 1024
    assert send_budget_bytes(window) == SEND_BUDGET_WINDOWS * window
    assert send_budget_bytes(1024 * 1024 * 1024) == MAX_SEND_BUDGET_BYTES


class Owner:
    """The connection side of a Stream, with a room switch instead of aioquic."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.is_closed = False
        self.has_room = True
        self.sent: list[tuple[bytes, bool]] = []
        self.blocked: set[Stream] = set()
        self.ended: list[Stream] = []

    def send_stream_data(self, stream_id: int, data: bytes, *, end_stream: bool) -> None:
        self.sent.append((data, end_stream))

    def reset_stream(self, stream_id: int, code: int) -> None:
        pass

    def receive_queued(self, nbytes: int) -> None:
        pass

    def receive_consumed(self, stream_id: int, nbytes: int, read_offset: int | None) -> None:
        pass

    def receive_dropped(self) -> None:
        pass

    def may_write(self, stream_id: int) -> bool:
        return self.has_room

    def writer_blocked(self, stream: Stream) -> None:
        self.blocked.add(stream)

    def writer_unblocked(self, stream: Stream) -> None:
        self.blocked.discard(stream)

    def stream_ended(self, stream: Stream) -> None:
        self.ended.append(stream)


def test_a_writer_waits_registered_until_woken_with_room() -> None:
    async def scenario() -> None:
        owner = Owner()
        stream = Stream(owner, 0)
        owner.has_room = False
        write = asyncio.ensure_future(stream.write(b"data"))
        await asyncio.sleep(0.01)
        assert not write.done()
        assert owner.blocked == {stream}
        stream.wake_writer()  # woken without room: it waits again
        await asyncio.sleep(0.01)
        assert not write.done() and owner.blocked == {stream}
        owner.has_room = True
        stream.wake_writer()
        await write
        assert owner.blocked == set()
        assert owner.sent == [(b"data", False)]

    run_bounded(scenario, timeout_s=10)


def test_a_stream_reports_its_end_once_both_directions_are_done() -> None:
    async def scenario() -> None:
        owner = Owner()
        stream = Stream(owner, 0)
        await stream.finish()
        assert owner.ended == []  # the peer may still send
        stream.receive_data(b"tail", True)
        assert owner.ended == [stream]
        assert await stream.read() == b"tail"
        assert await stream.read() == b""
        stream.receive_reset(1)  # late events: reported once all the same
        stream.fail(ConnectionLostError("gone"))
        assert owner.ended == [stream]

    run_bounded(scenario, timeout_s=10)
