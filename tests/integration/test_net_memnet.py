"""Two Endpoints over the in-memory network (tests/support/memnet.py): the
whole QUIC stack, MagicSock and the datagram-size prober, with no socket.

Each test runs with the ``no_sockets`` fixture (tests/conftest.py): creating
any IPv4 or IPv6 socket would fail it, so passing proves the endpoints used
only memnet.
"""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from p2pcp.core.errors import ConnectionLostError, PeerIdentityError
from p2pcp.net import EndpointConfig
from tests.support.aio import run_bounded
from tests.support.memnet import LinkShape, MemoryNetwork, MemoryTransport
from tests.support.pairs import (
    CLIENT_HOST,
    CONNECT_TIMEOUT_S,
    OTHER_KEY,
    SERVER_HOST,
    address_of,
    bind,
    connected,
    endpoint_pair,
)

TEST_TIMEOUT_S = 60.0
MIB = 1024 * 1024


def test_a_few_mib_cross_a_lossy_reordering_network_byte_exact(no_sockets: None) -> None:
    """2% loss, 5-8 ms one way (jitter reorders), a 20 MB/s bottleneck and a
    1500-byte path MTU: every byte arrives, in order, verified."""
    data = os.urandom(4 * MIB)
    shape = LinkShape(
        loss=0.02,
        delay_s=0.005,
        jitter_s=0.003,
        rate_bytes_per_s=20e6,
        queue_bytes=256 * 1024,
        max_datagram_bytes=1500,
    )
    network = MemoryNetwork(seed=18, shape=shape)

    async def body() -> None:
        async with endpoint_pair(network=network) as (server, client):
            connection, incoming = await connected(server, client)

            async def serve() -> None:
                stream = await incoming.accept_stream()
                await stream.read_exactly(1)
                for start in range(0, len(data), MIB):
                    await stream.write(data[start : start + MIB])
                await stream.finish()

            serving = asyncio.ensure_future(serve())
            stream = await connection.open_stream()
            await stream.write(b"?")
            digest = hashlib.sha256()
            while chunk := await stream.read():
                digest.update(chunk)
            await serving
            assert digest.digest() == hashlib.sha256(data).digest()
            assert connection.path_description == f"direct {SERVER_HOST}:{server.local_port}"
            await connection.close()
        assert network.counts["lost"] > 0 and network.counts["too_big"] > 0
        assert len(network.transports) == 2
        assert all(isinstance(t, MemoryTransport) for t in network.transports)

    run_bounded(body, TEST_TIMEOUT_S)


def test_the_address_that_answers_is_chosen_among_dead_ones(no_sockets: None) -> None:
    """Dialled at an unroutable address, a refusing one and the right one at
    once, the client settles on the one that answered."""
    network = MemoryNetwork(shape=LinkShape(delay_s=0.002))

    async def body() -> None:
        config = EndpointConfig(max_datagram_size=1200)
        async with endpoint_pair(config, config, network=network) as (server, client):
            dead = [("10.9.9.9", 4000), (SERVER_HOST, server.local_port + 1)]
            connection, _incoming = await connected(server, client, [*dead, address_of(server)])
            assert connection.path_description == f"direct {SERVER_HOST}:{server.local_port}"
            assert network.counts["refused"] > 0 and network.counts["unroutable"] > 0
            await connection.close()

    run_bounded(body, TEST_TIMEOUT_S)


def test_a_crashed_peer_is_noticed_by_its_refusals_at_once(no_sockets: None) -> None:
    """The server's socket vanishes without a word (a kill -9): the client's
    next datagrams are refused and the connection fails naming that, long
    before QUIC's idle timeout."""
    network = MemoryNetwork(shape=LinkShape(delay_s=0.002))

    async def body() -> None:
        async with endpoint_pair(network=network) as (server, client):
            connection, _incoming = await connected(server, client)
            stream = await connection.open_stream()
            network.crash(address_of(server))
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(ConnectionLostError, match="refused"):
                await stream.write(b"anyone there?")
                await stream.read()
            assert loop.time() - started < 5.0

    run_bounded(body, TEST_TIMEOUT_S)


def test_an_address_that_answers_with_another_key_is_dropped(no_sockets: None) -> None:
    """A ticket's address may reach another node (its loopback address on
    the receiver's machine, where another p2pcp holds the same port): that
    node answers first, with the wrong key; the client drops the address and
    reaches the right node at the other one, instead of failing (exit 4)."""
    network = MemoryNetwork(shape=LinkShape(delay_s=0.001))
    impostor_host = network.add_host("10.0.0.3")
    slow = LinkShape(delay_s=0.05)
    network.set_shape(CLIENT_HOST, SERVER_HOST, slow)
    network.set_shape(SERVER_HOST, CLIENT_HOST, slow)

    async def body() -> None:
        impostor = await bind(OTHER_KEY, network=network, host=impostor_host)
        try:
            async with endpoint_pair(network=network) as (server, client):
                addresses = [address_of(impostor), address_of(server)]
                connection, _incoming = await connected(server, client, addresses)
                assert connection.peer_node_id == server.node_id
                assert connection.path_description == f"direct {SERVER_HOST}:{server.local_port}"
                await connection.close()
        finally:
            await impostor.close()

    run_bounded(body, TEST_TIMEOUT_S)


def test_a_sole_address_with_another_key_is_refused(no_sockets: None) -> None:
    """With no other address and no relay, the wrong key ends the dial (exit 4)."""
    network = MemoryNetwork(shape=LinkShape(delay_s=0.001))
    impostor_host = network.add_host("10.0.0.3")

    async def body() -> None:
        impostor = await bind(OTHER_KEY, network=network, host=impostor_host)
        try:
            async with endpoint_pair(network=network) as (server, client):
                with pytest.raises(PeerIdentityError):
                    await client.connect(
                        server.node_id, [address_of(impostor)], timeout_s=CONNECT_TIMEOUT_S
                    )
        finally:
            await impostor.close()

    run_bounded(body, TEST_TIMEOUT_S)
