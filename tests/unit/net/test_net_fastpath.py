"""The receive fast path (fastpath.py) against aioquic's own receive_datagram.

Two QuicConnection pairs in memory on a virtual clock live through the same
traffic -- loss, duplicates, reordering, a key update, a close -- one
receiving through ``fastpath.receive``, the other through aioquic. Whatever
the receiver shows (events, acknowledgement state, timers, spin bit, state)
must be the same, and the fast path must have taken most packets.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from aioquic.quic import events
from aioquic.quic.connection import QuicConnection, QuicConnectionState
from aioquic.tls import Epoch
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcp.net._aioquic import fastpath

from .quicpair import CLIENT_ADDR, SERVER_ADDR, fire_due_timers, fix_certificate_serials, p2pcp_pair

OTHER_ADDR = ("198.18.0.9", 6000)
STREAM = 0
CHUNK = bytes(range(256)) * 64  # 16 KiB
DELIVER, DROP, DUPLICATE, HOLD, CORRUPT = range(5)


@pytest.fixture(autouse=True)
def _deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    fix_certificate_serials(monkeypatch)


class Receiver:
    """The client end, receiving through the fast path or through aioquic."""

    def __init__(self, quic: QuicConnection, fast: bool) -> None:
        self.quic = quic
        self.fast = fast
        self.fast_packets = 0

    def receive(self, data: bytes, addr: Any, now: float) -> None:
        if self.fast:
            self.fast_packets += fastpath.receive(self.quic, data, addr, now)
        else:
            self.quic.receive_datagram(data, addr, now)


def _pair(*, fast: bool, sole: bool = False) -> tuple[Receiver, QuicConnection, float]:
    """A connected pair (quicpair.p2pcp_pair); Reno, as BBR draws its probing
    phase at random, which would part the runs."""
    client, server, now = p2pcp_pair(congestion="reno", sole=sole)
    assert fastpath.is_supported(client)
    return Receiver(client, fast), server, now


def _observe(receiver: Receiver) -> tuple[Any, ...]:
    quic: Any = receiver.quic
    space = quic._spaces[Epoch.ONE_RTT]
    return (
        quic._state,
        space.expected_packet_number,
        space.largest_received_packet,
        space.largest_received_time,
        list(space.ack_queue),
        space.ack_at,
        quic._close_at,
        quic._spin_bit,
        quic._spin_highest_pn,
        quic._cryptos[Epoch.ONE_RTT].recv.key_phase,
        # which of our ids is current (the ids themselves are random)
        [c.sequence_number for c in quic._host_cids if c.cid == quic.host_cid],
        [path.addr for path in quic._network_paths],
    )


def _events(quic: QuicConnection) -> list[tuple[Any, ...]]:
    seen: list[tuple[Any, ...]] = []
    while (event := quic.next_event()) is not None:
        if isinstance(event, events.StreamDataReceived):
            seen.append(("data", event.stream_id, event.data, event.end_stream))
        else:
            seen.append((type(event).__name__,))
    return seen


def _run(
    fast: bool, plan: list[int], *, key_update_at: int, close: bool, sole: bool = False
) -> Receiver:
    """Serve 1 MiB to the receiver under ``plan``; return the receiver, with
    its history of observations and events in ``history``."""
    receiver, server, now = _pair(fast=fast, sole=sole)
    client = receiver.quic
    client.send_stream_data(STREAM, b"GET")
    for data, _addr in client.datagrams_to_send(now=now):
        server.receive_datagram(data, CLIENT_ADDR, now=now)
    history: list[Any] = [_events(server)]
    for _ in range(64):
        server.send_stream_data(STREAM, CHUNK)
    server.send_stream_data(STREAM, b"", end_stream=True)
    held: list[bytes] = []
    actions = iter(plan)
    for round_number in range(2000):
        now += 0.002
        fire_due_timers(now, server, client)
        if round_number == key_update_at:
            server.request_key_update()
        incoming = held
        held = []
        for sent, _addr in server.datagrams_to_send(now=now):
            action = next(actions, DELIVER)
            if action == DROP:
                continue
            if action == HOLD:
                held.append(sent)  # arrives after the next round's
                continue
            data = sent[:-1] + bytes([sent[-1] ^ 1]) if action == CORRUPT else sent
            if action == DUPLICATE:
                held.append(data)  # a copy arrives again after the next round's
            incoming.append(data)
        for data in incoming:
            receiver.receive(data, SERVER_ADDR, now)
        history.append((_observe(receiver), _events(client)))
        for data, _addr in client.datagrams_to_send(now=now):
            server.receive_datagram(data, CLIENT_ADDR, now=now)
        history.append(_events(server))
        if server._streams.get(STREAM) is None or server._streams[STREAM].sender.is_finished:
            break
    if close:
        server.close(error_code=0, reason_phrase="done")
        for data, _addr in server.datagrams_to_send(now=now):
            receiver.receive(data, SERVER_ADDR, now)
        history.append((_observe(receiver), _events(client)))
    receiver.history = history  # type: ignore[attr-defined]
    return receiver


def _delivered(receiver: Receiver) -> bytes:
    parts = []
    for entry in receiver.history:  # type: ignore[attr-defined]
        if isinstance(entry, tuple):
            for event in entry[1]:
                if event[0] == "data":
                    parts.append(event[2])
    return b"".join(parts)


@settings(max_examples=12, deadline=None)
@given(
    plan=st.lists(st.sampled_from([DELIVER] * 6 + [DROP, DUPLICATE, HOLD, CORRUPT]), max_size=300),
    key_update_at=st.integers(min_value=-1, max_value=20),
    close=st.booleans(),
    sole=st.booleans(),
)
def test_the_fast_path_receives_as_aioquic_does(
    plan: list[int], key_update_at: int, close: bool, sole: bool
) -> None:
    slow = _run(False, plan, key_update_at=key_update_at, close=close, sole=sole)
    fast = _run(True, plan, key_update_at=key_update_at, close=close, sole=sole)
    assert fast.history == slow.history  # type: ignore[attr-defined]
    assert _delivered(fast) == CHUNK * 64
    # most packets took the fast path (the handshake's and damaged ones did not)
    assert fast.fast_packets > 0.8 * (64 * len(CHUNK) // 1300)
    if close:
        assert fast.quic._state == QuicConnectionState.DRAINING


def test_the_runs_are_deterministic() -> None:
    """The differential test above means something only if two slow runs agree."""
    plan = [DELIVER, DROP, DUPLICATE, HOLD, CORRUPT] * 20
    first = _run(False, plan, key_update_at=5, close=True)
    second = _run(False, plan, key_update_at=5, close=True)
    assert first.history == second.history  # type: ignore[attr-defined]
    assert _delivered(first) == CHUNK * 64


def test_other_datagrams_go_to_aioquic() -> None:
    receiver, server, now = _pair(fast=True)
    client: Any = receiver.quic
    server.send_stream_data(1, b"ping")  # a server-initiated bidirectional stream
    datagrams = [data for data, _addr in server.datagrams_to_send(now=now + 0.001)]
    assert len(datagrams) == 1
    # from an address that is not the connection's path: aioquic's rules (a
    # client drops packets from unknown server addresses)
    assert not fastpath.receive(client, datagrams[0], OTHER_ADDR, now + 0.001)
    assert _events(client) == []
    # to an id that is not ours: dropped by aioquic
    data = datagrams[0]
    cid_length = len(client.host_cid)
    if cid_length:
        bad = data[:1] + bytes(b ^ 0xFF for b in data[1 : 1 + cid_length]) + data[1 + cid_length :]
        assert not fastpath.receive(client, bad, SERVER_ADDR, now + 0.001)
        assert _events(client) == []
    # a long-header datagram: aioquic's
    assert not fastpath.receive(client, b"\xc0" + bytes(40), SERVER_ADDR, now + 0.001)
    # damaged: no decryption, nothing changed, dropped
    before = _observe(receiver)
    damaged = data[:-1] + bytes([data[-1] ^ 1])
    assert not fastpath.receive(client, damaged, SERVER_ADDR, now + 0.001)
    assert _observe(receiver) == before
    # the real one: fast, and delivered
    assert fastpath.receive(client, data, SERVER_ADDR, now + 0.001)
    assert _events(client) == [("data", 1, b"ping", False)]
    # again: a duplicate, taken and dropped
    assert fastpath.receive(client, data, SERVER_ADDR, now + 0.002)
    assert _events(client) == []


def test_a_closing_connection_is_left_to_aioquic() -> None:
    receiver, server, now = _pair(fast=True)
    client: Any = receiver.quic
    server.send_stream_data(1, b"late")
    server.send_stream_data(5, b"later")
    datagrams = [data for data, _addr in server.datagrams_to_send(now=now + 0.001)]
    assert len(datagrams) == 1
    client.close(error_code=0)
    # a close is pending: aioquic's path, which still delivers
    assert not fastpath.receive(client, datagrams[0], SERVER_ADDR, now + 0.001)
    client.datagrams_to_send(now=now + 0.001)  # the close goes out
    assert client._state == QuicConnectionState.CLOSING
    server.send_stream_data(9, b"latest")
    datagrams = [data for data, _addr in server.datagrams_to_send(now=now + 0.002)]
    assert not fastpath.receive(client, datagrams[0], SERVER_ADDR, now + 0.002)
    delivered = [e for e in _events(client) if e[0] == "data"]
    assert delivered == [("data", 1, b"late", False), ("data", 5, b"later", False)]


def test_without_aioquic_internals_there_is_no_fast_path() -> None:
    assert not fastpath.is_supported(object())  # type: ignore[arg-type]
    receiver, _server, _now = _pair(fast=True)
    quic: Any = receiver.quic
    # another aioquic's receive_datagram may take other steps
    assert fastpath.is_supported(quic, version="1.7.9")
    assert not fastpath.is_supported(quic, version="1.2.0")
    assert not fastpath.is_supported(quic, version="1.8.0")
    del quic._spin_bit
    assert not fastpath.is_supported(quic)


def test_a_random_plan_is_exercised() -> None:
    """One long seeded plan with every kind of damage (beyond hypothesis' few)."""
    rng = random.Random(7)
    plan = [rng.choice([DELIVER] * 12 + [DROP, DUPLICATE, HOLD, CORRUPT]) for _ in range(900)]
    slow = _run(False, plan, key_update_at=3, close=True, sole=True)
    fast = _run(True, plan, key_update_at=3, close=True, sole=True)
    assert fast.history == slow.history  # type: ignore[attr-defined]
    assert _delivered(fast) == CHUNK * 64


@settings(max_examples=40, deadline=None)
@given(
    first=st.integers(min_value=0, max_value=255), tail=st.binary(max_size=80), sole=st.booleans()
)
def test_garbage_changes_nothing_either_way(first: int, tail: bytes, sole: bool) -> None:
    """A datagram of junk addressed to the connection's id: the fast path and
    aioquic leave the receiver alike, and neither raises; a short header's
    junk (the fast path's kind) changes nothing at all."""
    slow, _server, now = _pair(fast=False, sole=sole)
    fast, _server, _now = _pair(fast=True, sole=sole)
    before = _observe(slow)
    for receiver in (slow, fast):
        receiver.receive(bytes([first]) + receiver.quic.host_cid + tail, SERVER_ADDR, now)
    assert _observe(fast) == _observe(slow)
    if not first & 0x80:
        assert _observe(fast) == before
    assert _events(fast.quic) == _events(slow.quic) == []
