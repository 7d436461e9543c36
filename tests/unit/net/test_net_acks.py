"""Acknowledgement pacing through aioquic's private attributes (tuning.py), two
QuicConnections in memory on a virtual clock."""

from __future__ import annotations

from aioquic.quic.connection import QuicConnection

from p2pcp.net._aioquic import tuning
from p2pcp.net.quic import configuration

from .quicpair import SEED_CLIENT, SEED_SERVER, connected_pair, deliver

ADDR = ("198.18.0.1", 4433)


def _deliver(sender: QuicConnection, receiver: QuicConnection, now: float) -> int:
    return deliver(sender, receiver, ADDR, now)


def _pair() -> tuple[QuicConnection, QuicConnection, float]:
    client, server, now = connected_pair(
        configuration.client_configuration(SEED_CLIENT),
        configuration.server_configuration(SEED_SERVER),
        server_addr=ADDR,
        client_addr=ADDR,
    )
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
