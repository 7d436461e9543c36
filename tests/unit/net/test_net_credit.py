"""Receive credit (credit.py): windows that follow the reader, in memory.

A p2pcp client and server in memory on a virtual clock. The server answers
on several streams as fast as its congestion window lets it; the client's
"reader" takes data out of its queues only when the test says so. The
client's queued bytes must never exceed the stream window per stream nor
the connection window in all, the server must stall while nobody reads,
and reading must release credit until every byte arrives.
"""

from __future__ import annotations

import itertools
from typing import Any

from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from p2pcp.net._aioquic import fastsend, tuning
from p2pcp.net.quic.credit import UPDATE_DIVISOR, ReceiveCredit, next_limit

from .quicpair import CLIENT_ADDR, SERVER_ADDR, fire_due_timers, p2pcp_pair

STREAM_WINDOW = 64 * 1024
CONNECTION_WINDOW = 160 * 1024
STREAMS = (0, 4, 8)
ANSWER_BYTES = 600 * 1024
ROUND_S = 0.002


def _answer(stream_id: int) -> bytes:
    return bytes((stream_id + i) % 251 for i in range(ANSWER_BYTES))


class Reader:
    """The client's side of the streams: a queue per stream, read on demand."""

    def __init__(self, quic: QuicConnection, *, has_credit: bool = True) -> None:
        self.quic = quic
        self.credit = ReceiveCredit(quic) if has_credit else None
        self.queues: dict[int, bytearray] = {stream_id: bytearray() for stream_id in STREAMS}
        self.read: dict[int, bytearray] = {stream_id: bytearray() for stream_id in STREAMS}
        self.ended: set[int] = set()

    def take_events(self) -> None:
        while (event := self.quic.next_event()) is not None:
            if isinstance(event, events.StreamDataReceived):
                self.queues[event.stream_id] += event.data
                if event.end_stream:
                    self.ended.add(event.stream_id)
                if self.credit is not None:
                    self.credit.queued(len(event.data))

    def read_some(self, stream_id: int, nbytes: int) -> None:
        queue = self.queues[stream_id]
        taken = bytes(queue[:nbytes])
        del queue[:nbytes]
        self.read[stream_id] += taken
        if self.credit is not None:
            is_over = stream_id in self.ended and not queue
            offset = None if is_over else len(self.read[stream_id])
            self.credit.consumed(stream_id, len(taken), offset)

    @property
    def queued_bytes(self) -> int:
        return sum(len(queue) for queue in self.queues.values())


def _pair() -> tuple[QuicConnection, QuicConnection, float]:
    def adjust(config: QuicConfiguration) -> None:
        config.max_stream_data = STREAM_WINDOW
        config.max_data = CONNECTION_WINDOW

    return p2pcp_pair(congestion="bbr", adjust_client=adjust)


def _start(client: QuicConnection, server: QuicConnection, now: float) -> None:
    """The client asks on each stream, the server answers in full."""
    for stream_id in STREAMS:
        client.send_stream_data(stream_id, b"GET", end_stream=True)
    for data, _addr in client.datagrams_to_send(now=now):
        server.receive_datagram(data, CLIENT_ADDR, now=now)
    while server.next_event() is not None:
        pass
    for stream_id in STREAMS:
        server.send_stream_data(stream_id, _answer(stream_id), end_stream=True)


def _round(client: QuicConnection, server: QuicConnection, reader: Reader, now: float) -> None:
    fire_due_timers(now, server, client)
    for data, _addr in fastsend.datagrams_to_send(server, now):
        client.receive_datagram(data, SERVER_ADDR, now=now)
    reader.take_events()
    for data, _addr in client.datagrams_to_send(now=now):
        server.receive_datagram(data, CLIENT_ADDR, now=now)
    while server.next_event() is not None:
        pass


def _server_unsent(server: Any) -> int:
    return sum(
        stream.sender._buffer_stop - stream.sender.highest_offset
        for stream in server._streams.values()
    )


def test_a_reader_that_does_not_read_stops_the_sender_at_the_window() -> None:
    client, server, now = _pair()
    reader = Reader(client)
    assert reader.credit is not None and reader.credit.is_active
    _start(client, server, now)
    for _ in range(400):
        now += ROUND_S
        _round(client, server, reader, now)
        for queue in reader.queues.values():
            assert len(queue) <= STREAM_WINDOW
        assert reader.queued_bytes <= CONNECTION_WINDOW
    # the sender stalled with most of its answers still to send, and the
    # window is full: nothing aioquic did on its own raised it
    assert _server_unsent(server) >= len(STREAMS) * ANSWER_BYTES - CONNECTION_WINDOW
    assert reader.queued_bytes > CONNECTION_WINDOW - len(STREAMS) * 16 * 1024
    assert tuning.connection_receive_limit(client) == CONNECTION_WINDOW
    for stream_id in STREAMS:
        assert tuning.stream_receive_limit(client, stream_id) == STREAM_WINDOW


def test_one_stream_stops_at_the_stream_window() -> None:
    """With two streams read and one not, the unread one holds at most its
    window, and the others go on to the end."""
    client, server, now = _pair()
    reader = Reader(client)
    _start(client, server, now)
    for _ in range(3000):
        now += ROUND_S
        _round(client, server, reader, now)
        assert len(reader.queues[8]) <= STREAM_WINDOW
        assert reader.queued_bytes <= CONNECTION_WINDOW
        for stream_id in (0, 4):
            reader.read_some(stream_id, 8 * 1024)
        if all(len(reader.read[s]) == ANSWER_BYTES for s in (0, 4)):
            break
    for stream_id in (0, 4):
        assert reader.read[stream_id] == _answer(stream_id)
    assert len(reader.queues[8]) == STREAM_WINDOW
    assert not reader.read[8]


def test_reading_releases_credit_and_the_transfer_completes() -> None:
    client, server, now = _pair()
    reader = Reader(client)
    _start(client, server, now)
    for _ in range(50):  # nobody reads for a while: the window fills
        now += ROUND_S
        _round(client, server, reader, now)
    limits: list[int] = []
    for _ in range(5000):
        now += ROUND_S
        _round(client, server, reader, now)
        for queue in reader.queues.values():
            assert len(queue) <= STREAM_WINDOW
        assert reader.queued_bytes <= CONNECTION_WINDOW
        # a slow reader: 6 KiB per stream per round
        for stream_id in STREAMS:
            reader.read_some(stream_id, 6 * 1024)
        limits.append(tuning.connection_receive_limit(client))
        if all(len(reader.read[s]) == ANSWER_BYTES for s in STREAMS):
            break
    for stream_id in STREAMS:
        assert reader.read[stream_id] == _answer(stream_id)
    assert limits == sorted(limits)  # never lowered
    # updates came in steps of at least 1/UPDATE_DIVISOR of the window, not per packet
    steps = {b - a for a, b in itertools.pairwise(limits) if b != a}
    assert min(steps) >= CONNECTION_WINDOW // UPDATE_DIVISOR


def test_without_credit_aioquic_lets_unread_data_pile_up() -> None:
    """What the credit prevents: aioquic's own windows grow as data arrives,
    so a reader that does not read holds far more than the window."""
    client, server, now = _pair()
    reader = Reader(client, has_credit=False)
    _start(client, server, now)
    for _ in range(400):
        now += ROUND_S
        _round(client, server, reader, now)
    assert reader.queued_bytes > 2 * CONNECTION_WINDOW


def test_a_reset_stream_gives_its_credit_back() -> None:
    """A stream the peer resets never delivers the rest of what it counted:
    the connection window must not lose those bytes for good."""
    client, server, now = _pair()
    reader = Reader(client)
    _start(client, server, now)
    for _ in range(100):
        now += ROUND_S
        _round(client, server, reader, now)
    # the server abandons two of its answers; the client drops their queues
    for stream_id in (4, 8):
        server.reset_stream(stream_id, 1)
    for _ in range(20):
        now += ROUND_S
        _round(client, server, reader, now)
    for stream_id in (4, 8):
        dropped = len(reader.queues[stream_id])
        reader.queues[stream_id].clear()
        assert reader.credit is not None
        reader.credit.consumed(stream_id, dropped, None)
    for _ in range(3000):
        now += ROUND_S
        _round(client, server, reader, now)
        reader.read_some(0, 16 * 1024)
        if len(reader.read[0]) == ANSWER_BYTES:
            break
    assert reader.read[0] == _answer(0)


def test_next_limit_waits_for_a_good_fraction_and_never_lowers() -> None:
    window = 8 * 1024
    step = window // UPDATE_DIVISOR
    assert next_limit(0, window, window) is None
    assert next_limit(step - 1, window, window) is None
    assert next_limit(step, window, window) == window + step
    assert next_limit(0, window, window + step) is None  # never lower


def test_limits_are_only_raised() -> None:
    client, _server, _now = _pair()
    client.send_stream_data(0, b"x")
    tuning.raise_stream_receive_limit(client, 0, STREAM_WINDOW // 2)
    assert tuning.stream_receive_limit(client, 0) == STREAM_WINDOW
    tuning.raise_connection_receive_limit(client, 1)
    assert tuning.connection_receive_limit(client) == CONNECTION_WINDOW
    assert tuning.stream_receive_limit(client, 404) is None
