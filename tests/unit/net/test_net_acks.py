"""Acknowledgement pacing through aioquic's private attributes (tuning.py), two
QuicConnections in memory on a virtual clock."""

from __future__ import annotations

from aioquic.buffer import Buffer
from aioquic.quic import events
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import pull_quic_header

from p2pcp.net import tls, tuning

SEED_CLIENT = bytes(range(32))
SEED_SERVER = bytes(range(1, 33))
ADDR = ("198.18.0.1", 4433)


def _deliver(sender: QuicConnection, receiver: QuicConnection, now: float) -> int:
    datagrams = sender.datagrams_to_send(now=now)
    for data, _addr in datagrams:
        receiver.receive_datagram(data, ADDR, now=now)
    return len(datagrams)


def _pair() -> tuple[QuicConnection, QuicConnection, float]:
    client_config = tls.client_configuration(SEED_CLIENT)
    client = QuicConnection(configuration=client_config)
    now = 0.0
    client.connect(ADDR, now=now)
    initial = client.datagrams_to_send(now=now)
    header = pull_quic_header(
        Buffer(data=initial[0][0]), host_cid_length=client_config.connection_id_length
    )
    server = QuicConnection(
        configuration=tls.server_configuration(SEED_SERVER),
        original_destination_connection_id=header.destination_cid,
    )
    for data, _addr in initial:
        server.receive_datagram(data, ADDR, now=now)
    for _ in range(10):  # handshake round trips (and their acks)
        now += 0.01
        _deliver(server, client, now)
        _deliver(client, server, now)
    assert isinstance(client.next_event(), events.ProtocolNegotiated)
    while client.next_event() is not None:
        pass
    while server.next_event() is not None:
        pass
    now += 0.1  # every pending ack went out above
    return client, server, now


def _stream_packet(client: QuicConnection, server: QuicConnection, now: float) -> None:
    client.send_stream_data(0, b"x" * 100)
    assert _deliver(client, server, now) == 1


def test_an_ack_waits_for_the_delay_set() -> None:
    client, server, now = _pair()
    tuning.set_ack_delay(server, 0.003)
    _stream_packet(client, server, now)
    assert tuning.is_ack_pending(server)
    # nothing is due before the delay: no datagram at all
    assert server.datagrams_to_send(now=now + 0.002) == []
    assert tuning.is_ack_pending(server)
    assert len(server.datagrams_to_send(now=now + 0.003)) == 1
    assert not tuning.is_ack_pending(server)


def test_ack_soon_makes_a_pending_ack_due_now() -> None:
    client, server, now = _pair()
    tuning.set_ack_delay(server, 0.003)
    assert not tuning.is_ack_pending(server)
    tuning.ack_soon(server, now)  # nothing pending: nothing to send
    assert server.datagrams_to_send(now=now) == []
    _stream_packet(client, server, now)
    tuning.ack_soon(server, now)
    assert len(server.datagrams_to_send(now=now)) == 1
    assert not tuning.is_ack_pending(server)
