"""Two Endpoints in one event loop, and a connection between them.

``endpoint_pair`` binds a server and a client (each with its own
``EndpointConfig``) on real UDP, or on a ``MemoryNetwork`` (memnet.py: no
socket at all), and closes both at the end. ``connected`` dials the server
from the client and returns both ends of the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable

from p2pcp.core.config import RelayUrl
from p2pcp.core.identity import SecretKey
from p2pcp.net import Connection, Endpoint, EndpointConfig
from tests.support.memnet import MemoryNetwork, MemoryTransport

# Seeded keys (one per role) so that runs are repeatable.
SERVER_KEY = SecretKey(bytes(range(32)))
CLIENT_KEY = SecretKey(bytes(range(1, 33)))
OTHER_KEY = SecretKey(bytes(range(2, 34)))

# Where the pair lives on a MemoryNetwork.
SERVER_HOST = "10.0.0.1"
CLIENT_HOST = "10.0.0.2"

# How long a connect and an accept may take here.
CONNECT_TIMEOUT_S = 5.0


async def bind(
    key: SecretKey,
    config: EndpointConfig | None = None,
    *,
    network: MemoryNetwork | None = None,
    host: str = CLIENT_HOST,
) -> Endpoint:
    """One endpoint on real UDP, or on ``host`` of ``network``."""
    if network is None:
        return await Endpoint.bind(key, config)
    return await Endpoint.bind(key, config, transport=network.transport(host))


@contextlib.asynccontextmanager
async def endpoint_pair(
    server: EndpointConfig | None = None,
    client: EndpointConfig | None = None,
    *,
    network: MemoryNetwork | None = None,
) -> AsyncIterator[tuple[Endpoint, Endpoint]]:
    """(server, client), bound as configured; both closed at the end."""
    server_endpoint = await bind(SERVER_KEY, server, network=network, host=SERVER_HOST)
    try:
        client_endpoint = await bind(CLIENT_KEY, client, network=network, host=CLIENT_HOST)
    except BaseException:
        await server_endpoint.close()
        raise
    try:
        yield server_endpoint, client_endpoint
    finally:
        await client_endpoint.close()
        await server_endpoint.close()


def address_of(endpoint: Endpoint) -> tuple[str, int]:
    """Where ``endpoint`` is reached directly: its memnet address, else loopback."""
    transport = endpoint.magicsock.udp
    if isinstance(transport, MemoryTransport):
        return transport.address
    return ("127.0.0.1", endpoint.local_port)


async def connected(
    server: Endpoint,
    client: Endpoint,
    addresses: Iterable[tuple[str, int]] | None = None,
    *,
    relay_url: RelayUrl | None = None,
    timeout_s: float = CONNECT_TIMEOUT_S,
) -> tuple[Connection, Connection]:
    """(the client's connection, the server's accepted one): ``client`` dials
    ``server`` at ``addresses`` (default: ``address_of(server)``)."""
    accepted = asyncio.ensure_future(server.accept())
    try:
        connection = await client.connect(
            server.node_id,
            [address_of(server)] if addresses is None else list(addresses),
            timeout_s=timeout_s,
            relay_url=relay_url,
        )
        incoming = await asyncio.wait_for(accepted, timeout_s)
    finally:
        if not accepted.done():
            accepted.cancel()
    return connection, incoming
