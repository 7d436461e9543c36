"""The send fast path (fastsend.py) against aioquic's own datagrams_to_send.

Two QuicConnection pairs in memory on a virtual clock live through the same
traffic: three streams under tight flow control, loss and reordering both
ways, datagram-size changes, a key update, a ping, a stream reset and a
close; and with receive windows that follow the reader (credit.py) on
both ends, or aioquic's own. One server (the sender) builds its packets
through ``fastsend.datagrams_to_send``, the other through aioquic. Every packet's
plaintext (the keys differ between the pairs, the plaintext must not) and
everything the sender shows -- packet records, congestion and pacing state,
timers, stream state and service order -- must be the same after every
round, and the fast path must have built most packets.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from typing import Any

import pytest
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionState
from aioquic.quic.stream import QuicStream
from aioquic.tls import Epoch
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcp.net._aioquic import fastsend, tuning
from p2pcp.net._aioquic.sendbuffer import SendBuffer
from p2pcp.net.quic.credit import ReceiveCredit

from .quicpair import CLIENT_ADDR, SERVER_ADDR, fire_due_timers, fix_certificate_serials, p2pcp_pair

# stream id -> bytes the server answers with (stream 8 may be reset)
ANSWERS = {
    0: bytes(range(256)) * 3000,
    4: bytes(range(255, -1, -1)) * 2000,
    8: bytes(range(7, 256)) * 1000,
}
RESET_STREAM = 8
DELIVER, DROP, HOLD = range(3)


class Sender:
    """The server end, sending through the fast path or through aioquic, and
    recording the plaintext of every packet it encrypts."""

    def __init__(self, quic: QuicConnection, fast: bool, has_reader_credit: bool = False) -> None:
        self.quic = quic
        self.fast = fast
        self.has_reader_credit = has_reader_credit
        self.fast_packets = 0
        self.plaintexts: list[tuple[int, bytes, int, bytes, int]] = []
        crypto: Any = quic._cryptos[Epoch.ONE_RTT]
        encrypt = crypto.encrypt_packet

        def recording(header: bytes, payload: bytes, packet_number: int) -> bytes:
            # the peer's id differs between the pairs: all but it
            self.plaintexts.append((header[0], header[-2:], len(header), payload, packet_number))
            packet: bytes = encrypt(header, payload, packet_number)
            return packet

        crypto.encrypt_packet = recording

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        if not self.fast:
            return self.quic.datagrams_to_send(now=now)
        datagrams = fastsend._send_fast(self.quic, now, self.has_reader_credit)
        if datagrams is None:
            return self.quic.datagrams_to_send(now=now)
        self.fast_packets += len(datagrams)
        return datagrams


@pytest.fixture(autouse=True)
def _deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs of aioquic alike: its streams that shared a packet go back
    in its queue in a set's order, which follows their objects' addresses
    (hashed by id here; the fast path builds the same set, so it follows
    either way); and the certificates get one serial (quicpair.py)."""
    monkeypatch.setattr(QuicStream, "__hash__", lambda stream: stream.stream_id)
    fix_certificate_serials(monkeypatch)


def _pair(
    *, fast: bool, congestion: str, tight: bool = True, sole: bool = False, credit: bool = False
) -> tuple[QuicConnection, Sender, float]:
    """``sole``: the receiver uses zero-length ids, as an endpoint's only
    client connection does (endpoint.py), so the sender's packets carry none.
    ``credit``: both ends' windows follow their readers (credit.py), the
    server's so small that reading the requests raises them."""

    def adjust(config: QuicConfiguration) -> None:
        if tight:  # the sender gets blocked, and the receiver raises its windows
            config.max_data = 300_000
            config.max_stream_data = 60_000  # binds before max_data

    def adjust_server(config: QuicConfiguration) -> None:
        if credit:
            config.max_data = 16
            config.max_stream_data = 4

    client, server, now = p2pcp_pair(
        congestion=congestion, sole=sole, adjust_client=adjust, adjust_server=adjust_server
    )
    controller: Any = server._loss._cc
    if hasattr(controller, "_rng"):
        controller._rng = random.Random(5)  # BBR's cycle phase, alike in both runs
    tuning.install_burst_pacer(server)
    assert fastsend.is_supported(server)
    return client, Sender(server, fast, has_reader_credit=credit), now


def _plain(args: Any) -> tuple[Any, ...]:
    """Handler arguments comparable across runs (objects by their type)."""
    return tuple(
        arg if isinstance(arg, (int, float, bool, type(None))) else type(arg).__name__
        for arg in args
    )


def _observe(sender: Sender) -> tuple[Any, ...]:
    quic: Any = sender.quic
    loss = quic._loss
    space = quic._spaces[Epoch.ONE_RTT]
    pacer = loss._pacer
    packets = [
        (
            p.packet_number,
            p.sent_time,
            p.sent_bytes,
            p.in_flight,
            p.is_ack_eliciting,
            p.is_crypto_packet,
            [(handler.__name__, _plain(args)) for handler, args in p.delivery_handlers],
        )
        for p in space.sent_packets.values()
    ]
    streams = [
        (
            stream.stream_id,
            stream.sender.highest_offset,
            list(stream.sender._pending),
            stream.sender.buffer_is_empty,
            stream.is_blocked,
        )
        for stream in quic._streams.values()
    ]
    return (
        quic._state,
        quic._packet_number,
        packets,
        loss.bytes_in_flight,
        loss.congestion_window,
        # the controller's scalars (window, model, phase)
        {
            name: value
            for name, value in vars(loss._cc).items()
            if isinstance(value, (int, float, str, bool, type(None)))
        },
        (pacer.bucket_time, pacer.packet_time),
        quic._pacing_at,
        quic.get_timer(),
        quic._close_at,
        [stream.stream_id for stream in quic._streams_queue],
        quic._remote_max_data_used,
        streams,
        quic._network_paths[0].bytes_sent,
        quic._cryptos[Epoch.ONE_RTT].send.key_phase,
    )


def _events(quic: QuicConnection, credit: ReceiveCredit | None = None) -> list[tuple[Any, ...]]:
    """The events so far; with ``credit``, its reader takes each piece of data."""
    seen: list[tuple[Any, ...]] = []
    while (event := quic.next_event()) is not None:
        if isinstance(event, events.StreamDataReceived):
            seen.append(("data", event.stream_id, event.data, event.end_stream))
            if credit is not None:
                credit.queued(len(event.data))
                credit.consumed(event.stream_id, len(event.data), None)
        elif isinstance(event, events.StreamReset):
            seen.append(("reset", event.stream_id))
        else:
            seen.append((type(event).__name__,))
    return seen


def _route(
    datagrams: list[tuple[bytes, Any]], actions: Iterator[int], held: list[bytes]
) -> tuple[list[bytes], list[bytes]]:
    """(arriving now, held for the next round): what was held last round
    arrives first, then each datagram meets its fate from ``actions``."""
    arriving, holding = held, []
    for data, _addr in datagrams:
        action = next(actions, DELIVER)
        if action == HOLD:
            holding.append(data)
        elif action == DELIVER:
            arriving.append(data)
    return arriving, holding


def _run(
    fast: bool,
    plan: list[int],
    *,
    congestion: str = "bbr",
    key_update_at: int = -1,
    ping_at: int = -1,
    reset_at: int = -1,
    big_at: int = -1,
    close: bool = False,
    tight: bool = True,
    sole: bool = False,
    credit: bool = False,
    send_buffer: bool = False,
) -> tuple[Sender, list[Any], dict[int, bytes]]:
    """Serve ANSWERS under ``plan`` (the fate of each datagram, both ways);
    return the sender, the history of rounds and what the client received.
    ``credit``: the client reads what arrived one round later.
    ``send_buffer``: the server's streams hold their data in a SendBuffer."""
    client, sender, now = _pair(
        fast=fast, congestion=congestion, tight=tight, sole=sole, credit=credit
    )
    server: Any = sender.quic
    client_credit = ReceiveCredit(client) if credit else None
    server_credit = ReceiveCredit(server) if credit else None
    unread: list[tuple[int, int]] = []  # (stream id, bytes) the client reads next round
    for stream_id in ANSWERS:
        client.send_stream_data(stream_id, b"GET", end_stream=True)
    for data, _addr in client.datagrams_to_send(now=now):
        server.receive_datagram(data, CLIENT_ADDR, now=now)
    history: list[Any] = [_events(server, server_credit)]
    for stream_id, answer in ANSWERS.items():
        # In uneven writes, so that frames and retransmissions span them.
        cuts = [0, 1000, 70_001, 70_002, len(answer)]
        for start, stop in itertools.pairwise(cuts):
            server.send_stream_data(stream_id, answer[start:stop], end_stream=stop == len(answer))
            if send_buffer:
                tuning.use_send_buffer(server, stream_id)
    received: dict[int, bytes] = {stream_id: b"" for stream_id in ANSWERS}
    held_down: list[bytes] = []
    held_up: list[bytes] = []
    actions = iter(plan)
    for round_number in range(3000):
        now += 0.002
        fire_due_timers(now, server, client)
        if round_number == key_update_at:
            server.request_key_update()
        if round_number == ping_at:
            server.send_ping(7)
        if round_number == reset_at:
            server.reset_stream(RESET_STREAM, 3)
        if big_at >= 0:
            if round_number == big_at:
                tuning.set_datagram_size(server, 9000)  # what a size probe settles on
            if round_number == big_at + 5:
                tuning.set_packet_size(server, 1200)  # a few packets of another size
            if round_number == big_at + 7:
                tuning.set_packet_size(server, 9000)
        # server -> client
        incoming, held_down = _route(sender.datagrams_to_send(now), actions, held_down)
        for data in incoming:
            client.receive_datagram(data, SERVER_ADDR, now)
        if client_credit is not None:
            for stream_id, nbytes in unread:
                client_credit.consumed(stream_id, nbytes, len(received[stream_id]))
            unread = []
        client_events = _events(client)
        for event in client_events:
            if event[0] == "data":
                received[event[1]] += event[2]
                if client_credit is not None:
                    client_credit.queued(len(event[2]))
                    unread.append((event[1], len(event[2])))
        # client -> server
        incoming, held_up = _route(client.datagrams_to_send(now=now), actions, held_up)
        for data in incoming:
            server.receive_datagram(data, CLIENT_ADDR, now=now)
        history.append((client_events, _events(server, server_credit), _observe(sender)))
        if not server._streams and not held_down and not held_up:
            break
    if close:
        server.close(error_code=0, reason_phrase="done")
        for data, _addr in sender.datagrams_to_send(now):
            client.receive_datagram(data, SERVER_ADDR, now)
        history.append((_events(client), _observe(sender)))
    history.append(sender.plaintexts)
    return sender, history, received


def _check_delivered(received: dict[int, bytes], reset: bool) -> None:
    for stream_id, answer in ANSWERS.items():
        if reset and stream_id == RESET_STREAM:
            assert answer.startswith(received[stream_id])
        else:
            assert received[stream_id] == answer


@settings(max_examples=25, deadline=None)
@given(
    plan=st.lists(st.sampled_from([DELIVER] * 8 + [DROP, HOLD]), max_size=400),
    congestion=st.sampled_from(["bbr", "reno", "cubic"]),
    key_update_at=st.integers(min_value=-1, max_value=30),
    ping_at=st.integers(min_value=-1, max_value=30),
    reset_at=st.integers(min_value=-1, max_value=40),
    big_at=st.integers(min_value=-1, max_value=20),
    close=st.booleans(),
    sole=st.booleans(),
    credit=st.booleans(),
)
def test_the_fast_path_sends_as_aioquic_does(
    plan: list[int],
    congestion: str,
    key_update_at: int,
    ping_at: int,
    reset_at: int,
    big_at: int,
    close: bool,
    sole: bool,
    credit: bool,
) -> None:
    options = dict(
        credit=credit,
        congestion=congestion,
        key_update_at=key_update_at,
        ping_at=ping_at,
        reset_at=reset_at,
        big_at=big_at,
        close=close,
        sole=sole,
    )
    slow, slow_history, slow_received = _run(False, plan, **options)  # type: ignore[arg-type]
    fast, fast_history, fast_received = _run(True, plan, **options)  # type: ignore[arg-type]
    assert fast_history == slow_history
    _check_delivered(fast_received, reset=reset_at >= 0)
    assert fast_received == slow_received
    # A good share of packets took the fast path. Under these tight windows
    # the receiver raises a limit every few rounds, and a call with an ACK
    # due is aioquic's; test_a_long_seeded_plan has p2pcp's windows. With
    # reader credit the receiver raises a limit every round its reader
    # reads (1/8 of a 60 KB window, each an ack-eliciting packet the server
    # must acknowledge): most calls then have an ACK due, and with a reset
    # and a size change in the first round possibly all of them (hypothesis
    # found one: reno, reset and 9000-byte datagrams at round 0, 0 of 163);
    # test_a_long_seeded_plan_with_reader_credit shows the fast path works
    # under reader credit.
    if not credit:
        assert fast.fast_packets > 0.2 * len(slow.plaintexts)
    if close:
        assert fast.quic._state == QuicConnectionState.CLOSING


def test_the_runs_are_deterministic() -> None:
    """The differential test means something only if two slow runs agree."""
    plan = [DELIVER, DROP, DELIVER, HOLD, DELIVER] * 40
    options: dict[str, Any] = dict(key_update_at=4, ping_at=6, reset_at=9, big_at=3, close=True)
    first, first_history, first_received = _run(False, plan, **options)
    _second, second_history, _ = _run(False, plan, **options)
    assert first_history == second_history
    _check_delivered(first_received, reset=True)
    assert len(first.plaintexts) > 100


def test_a_long_seeded_plan() -> None:
    """p2pcp's own windows, loss and reordering both ways."""
    rng = random.Random(11)
    plan = [rng.choice([DELIVER] * 12 + [DROP, HOLD]) for _ in range(3000)]
    options: dict[str, Any] = dict(key_update_at=12, ping_at=20, tight=False)
    slow, slow_history, _ = _run(False, plan, **options)
    fast, fast_history, fast_received = _run(True, plan, **options)
    assert fast_history == slow_history
    _check_delivered(fast_received, reset=False)
    # (in a real transfer, over 99% do: the closing note of this change)
    assert fast.fast_packets > 0.6 * len(slow.plaintexts)


def test_other_calls_go_to_aioquic() -> None:
    """Each thing only aioquic writes makes the fast path decline, unchanged."""
    _client, sender, now = _pair(fast=True, congestion="bbr")
    server: Any = sender.quic
    server.send_stream_data(1, b"data")  # a server-initiated stream
    before = _observe(sender)

    server.send_ping(1)
    assert fastsend._send_fast(server, now) is None
    server._ping_pending.clear()

    server._spaces[Epoch.ONE_RTT].ack_at = now  # an ACK due now
    assert fastsend._send_fast(server, now) is None
    server._spaces[Epoch.ONE_RTT].ack_at = None

    server._local_max_data.used = server._local_max_data.value  # MAX_DATA to raise
    assert fastsend._send_fast(server, now) is None
    server._local_max_data.used = 0

    server.reset_stream(1, 0)
    assert fastsend._send_fast(server, now) is None
    server._streams[1].sender.reset_pending = False  # and undo the rest of reset_stream
    server._streams[1].sender._reset_error_code = None
    server._streams[1].sender.buffer_is_empty = False

    server.request_key_update()  # no reason to decline: only the key phase moves
    server._close_pending = True
    assert fastsend._send_fast(server, now) is None
    server._close_pending = False
    assert _observe(sender) == before  # declining changed nothing
    assert sender.plaintexts == []


def test_without_aioquic_internals_there_is_no_fast_path() -> None:
    class Stranger:
        pass

    assert not fastsend.is_supported(Stranger())  # type: ignore[arg-type]
    _client, sender, _now = _pair(fast=True, congestion="bbr")
    assert not fastsend.is_supported(sender.quic, version="1.8.0")


def test_a_long_seeded_plan_with_reader_credit() -> None:
    """Windows that follow a lagging reader on both ends: every limit frame
    credit.py makes due goes out where aioquic would send it, and the fast
    path still builds packets (aioquic doubles no window, so it does not
    decline for one; it declines when an ACK of the receiver's limit
    frames is due, which these tight windows make frequent)."""
    rng = random.Random(12)
    plan = [rng.choice([DELIVER] * 12 + [DROP, HOLD]) for _ in range(3000)]
    options: dict[str, Any] = dict(key_update_at=12, ping_at=20, credit=True)
    _slow, slow_history, _ = _run(False, plan, **options)
    fast, fast_history, fast_received = _run(True, plan, **options)
    assert fast_history == slow_history
    _check_delivered(fast_received, reset=False)
    assert fast.fast_packets > 0


def test_a_send_buffer_sends_what_a_bytearray_sends() -> None:
    """aioquic's streams with a SendBuffer in place of their bytearray: the
    same packets, round by round, under loss and reordering both ways (so
    retransmissions slice old data, across the writes' boundaries), on both
    send paths; the buffers are emptied as the data is acknowledged."""
    rng = random.Random(13)
    plan = [rng.choice([DELIVER] * 10 + [DROP, HOLD]) for _ in range(3000)]
    options: dict[str, Any] = dict(key_update_at=12, ping_at=20, reset_at=30, tight=False)
    for fast in (False, True):
        _plain_sender, plain_history, _ = _run(fast, plan, **options)
        sender, history, received = _run(fast, plan, send_buffer=True, **options)
        assert history == plain_history
        _check_delivered(received, reset=True)
    server: Any = sender.quic
    server.send_stream_data(1, b"x" * 5000)  # a new stream of the server's
    tuning.use_send_buffer(server, 1)
    assert type(server._streams[1].sender._buffer) is SendBuffer
    assert len(server._streams[1].sender._buffer) == 5000


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["add", "del", "get"]), st.integers(0, 3000), st.integers(0, 3000)
        ),
        max_size=60,
    )
)
def test_send_buffer_behaves_as_a_bytearray(steps: list[tuple[str, int, int]]) -> None:
    buffer = SendBuffer()
    model = bytearray()
    counter = 0
    for action, a, b in steps:
        if action == "add":
            data = bytes((counter + i) % 251 for i in range(a))
            counter += a
            buffer += data
            model += data
        elif action == "del":
            del buffer[:a]
            del model[:a]
        else:
            assert buffer[a : a + b] == bytes(model[a : a + b])
        assert len(buffer) == len(model)
        assert bool(buffer) == bool(model)
        assert buffer[0 : len(model)] == bytes(model)


def test_send_buffer_lets_go_of_what_was_deleted() -> None:
    """Deleted chunks are released (a long transfer must not keep them)."""
    buffer = SendBuffer()
    for _ in range(1000):
        buffer += bytes(1000)
        del buffer[:1000]
    assert len(buffer) == 0
    assert len(buffer._chunks) < 2 * 64  # compacted
    assert all(not chunk for chunk in buffer._chunks)
