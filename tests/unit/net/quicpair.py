"""Two QuicConnections through their handshake in memory, on a virtual clock:
the set-up the sans-IO tests of aioquic's internals share."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from aioquic.buffer import Buffer
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import pull_quic_header
from cryptography import x509

from p2pcp.net._aioquic import tuning
from p2pcp.net.quic import configuration

Address = tuple[str, int]
HANDSHAKE_ROUNDS = 10
ROUND_S = 0.01
SEED_CLIENT = bytes(range(32))
SEED_SERVER = bytes(range(1, 33))
SERVER_ADDR = ("198.18.0.1", 4433)
CLIENT_ADDR = ("198.18.0.2", 5000)


# A certificate's serial number is random, and its DER length with it: one
# byte more or less in the handshake shifts the congestion window, and with
# it every later packet boundary. Runs compared packet by packet fix it.
FIXED_SERIAL = 1 << 150


def fix_certificate_serials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give the certificates made from now on one serial number."""
    monkeypatch.setattr(x509, "random_serial_number", lambda: FIXED_SERIAL)


def fire_due_timers(now: float, *connections: QuicConnection) -> None:
    """Run each connection's timer that is due (loss detection, the probe
    timeout, the idle timeout), as an event loop would."""
    for quic in connections:
        timer = quic.get_timer()
        if timer is not None and timer <= now:
            quic.handle_timer(now)


def deliver(sender: QuicConnection, receiver: QuicConnection, addr: Address, now: float) -> int:
    """Hand everything ``sender`` has to send to ``receiver``, as from ``addr``."""
    datagrams = sender.datagrams_to_send(now=now)
    for data, _addr in datagrams:
        receiver.receive_datagram(data, addr, now=now)
    return len(datagrams)


def connected_pair(
    client_config: QuicConfiguration,
    server_config: QuicConfiguration,
    *,
    server_addr: Address,
    client_addr: Address,
    prepare: Callable[[QuicConnection], None] | None = None,
) -> tuple[QuicConnection, QuicConnection, float]:
    """(client, server, now) once the handshake and its acks are through and
    both ends' events are drained; ``prepare`` sees the client before it
    connects."""
    client = QuicConnection(configuration=client_config)
    if prepare is not None:
        prepare(client)
    now = 0.0
    client.connect(server_addr, now=now)
    initial = client.datagrams_to_send(now=now)
    header = pull_quic_header(
        Buffer(data=initial[0][0]), host_cid_length=configuration.SERVER_CID_BYTES
    )
    server = QuicConnection(
        configuration=server_config, original_destination_connection_id=header.destination_cid
    )
    for data, _addr in initial:
        server.receive_datagram(data, client_addr, now=now)
    for _ in range(HANDSHAKE_ROUNDS):  # handshake round trips (and their acks)
        now += ROUND_S
        deliver(server, client, server_addr, now)
        deliver(client, server, client_addr, now)
    assert isinstance(client.next_event(), events.ProtocolNegotiated)
    while client.next_event() is not None:
        pass
    while server.next_event() is not None:
        pass
    return client, server, now


def p2pcp_pair(
    *,
    congestion: str,
    sole: bool = False,
    adjust_client: Callable[[QuicConfiguration], None] | None = None,
    adjust_server: Callable[[QuicConfiguration], None] | None = None,
) -> tuple[QuicConnection, QuicConnection, float]:
    """(client, server, now) with p2pcp's configurations, connected between
    CLIENT_ADDR and SERVER_ADDR; ``sole``: the client uses zero-length ids,
    as an endpoint's only client connection does (endpoint.py);
    ``adjust_client`` / ``adjust_server`` may change a configuration first."""
    client_config = configuration.client_configuration(SEED_CLIENT, congestion=congestion)
    if sole:
        client_config = configuration.sole_client_configuration(client_config)
    if adjust_client is not None:
        adjust_client(client_config)
    server_config = configuration.server_configuration(SEED_SERVER, congestion=congestion)
    if adjust_server is not None:
        adjust_server(server_config)

    def prepare(client: QuicConnection) -> None:
        if sole:
            tuning.forgo_connection_ids(client)
        tuning.set_initial_destination_cid(client, bytes(range(configuration.INITIAL_DCID_BYTES)))

    return connected_pair(
        client_config,
        server_config,
        server_addr=SERVER_ADDR,
        client_addr=CLIENT_ADDR,
        prepare=prepare,
    )
