"""Endpoint: a node's QUIC presence on one UDP socket.

What it owns: the MagicSock (and through it the socket), the table that
routes every received QUIC datagram to its connection by destination
connection id, the creation of server-side connections from a client's
Initial, and ``connect`` / ``accept``.

Receive path (the hot loop; FACTS.md explains why it is shaped so): the
socket is drained until EAGAIN; every QUIC datagram of the batch is fed to
its connection; then each touched connection processes its events and calls
``datagrams_to_send`` once. Server-side demux needs the Initial's original
destination connection id, which is registered alongside the connection's
own ids (and every id it issues later).

Invariants:

- Every live connection is in ``_connections`` and every id in its ``cids``
  routes to it; both go when it terminates.
- A datagram whose destination id is unknown creates a connection only if it
  is a long-header Initial of at least 1200 bytes (RFC 9000 section 14.1)
  and fewer than MAX_PENDING_CONNECTIONS handshakes are under way.
- ``connect`` raises ConnectError (exit 3) or PeerIdentityError (exit 4),
  never a bare OSError or TimeoutError.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections import deque
from collections.abc import Iterable

from aioquic._buffer import Buffer
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicPacketType, pull_quic_header

from p2pcp.core.errors import ConnectError, ConnectionLostError, UsageError
from p2pcp.core.identity import NodeId, SecretKey
from p2pcp.net import tls
from p2pcp.net.connection import Connection
from p2pcp.net.interfaces import interface_addresses
from p2pcp.net.magicsock import MagicSock, PeerPath, format_address
from p2pcp.net.probe import FLOOR_BYTES, MAX_DATAGRAM_BYTES
from p2pcp.net.stream import Stream
from p2pcp.net.udp import Address

# The public API of the net layer: the transfer layer imports these from here.
__all__ = ["Connection", "Endpoint", "Stream"]

logger = logging.getLogger(__name__)

# Server-side handshakes under way at once. A p2pcp sender serves one or a
# few receivers; this bounds what a flood of forged Initials can cost.
MAX_PENDING_CONNECTIONS = 64

# Connection ids are aioquic's default length; short-header packets carry
# no length, so the demux must know it.
CID_BYTES = 8


def _normalize(address: tuple[str, int]) -> Address:
    host, port = address
    host = host.strip("[]")
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError as exc:
        raise UsageError(f"not an IP address: {host!r}") from exc
    return host, int(port)


class Endpoint:
    """A bound node: connect to peers by node id, accept their connections."""

    def __init__(self, secret_key: SecretKey, max_datagram_size: int | None) -> None:
        self.node_id: NodeId = secret_key.public
        self._seed = secret_key.seed_bytes()
        self._datagram_size_cap = max_datagram_size
        self._client_config = tls.client_configuration(self._seed)
        self._server_config = tls.server_configuration(self._seed)
        self.magicsock = MagicSock(self._receive_quic_batch, self._receive_probe_ack, self._too_big)
        self._connections: set[Connection] = set()
        self._by_cid: dict[bytes, Connection] = {}
        self._probes: dict[int, Connection] = {}
        self._pending_server: set[Connection] = set()
        self._accepted: deque[Connection] = deque()
        self._accept_waiters: list[asyncio.Future[None]] = []
        self._is_closed = False

    @classmethod
    async def bind(
        cls, secret_key: SecretKey, *, port: int = 0, max_datagram_size: int | None = None
    ) -> Endpoint:
        """Bind one dual-stack UDP socket (IPv4 if IPv6 is unavailable).

        ``max_datagram_size`` caps the probed datagram size (1200..16000;
        None: probe up to the maximum).
        """
        if max_datagram_size is not None and not (
            FLOOR_BYTES <= max_datagram_size <= MAX_DATAGRAM_BYTES
        ):
            raise UsageError(
                f"max_datagram_size must be {FLOOR_BYTES}..{MAX_DATAGRAM_BYTES}, "
                f"got {max_datagram_size}"
            )
        endpoint = cls(secret_key, max_datagram_size)
        try:
            endpoint.magicsock.bind(port)
        except OSError as exc:
            raise UsageError(f"cannot bind UDP port {port}: {exc.strerror or exc}") from exc
        return endpoint

    @property
    def local_port(self) -> int:
        return self.magicsock.local_port

    def direct_addresses(self) -> list[Address]:
        """Every usable local address with our port; loopback last (or alone)."""
        port = self.local_port
        found = [a for a in interface_addresses() if self.magicsock.is_dual_stack or not a.is_ipv6]
        ordered = [a for a in found if not a.is_loopback] + [a for a in found if a.is_loopback]
        return [(a.host, port) for a in ordered]

    async def connect(
        self, node_id: NodeId, addresses: Iterable[tuple[str, int]], *, timeout_s: float
    ) -> Connection:
        """Connect to ``node_id``, trying all ``addresses`` at once.

        Raises ConnectError when nothing answers a handshake within
        ``timeout_s``, PeerIdentityError when the peer holds another key.
        """
        candidates = [_normalize(a) for a in addresses]
        shown = ", ".join(format_address(a) for a in candidates) or "no address"
        where = f"could not reach {node_id.short()} at {shown}"
        if self._is_closed:
            raise ConnectError(f"{where}: endpoint closed")
        if not candidates:
            raise ConnectError(f"{where}: the ticket lists no address")
        path = PeerPath(candidates)
        quic = QuicConnection(configuration=self._client_config)
        connection = Connection(
            self,
            quic,
            path,
            expected_node_id=bytes(node_id),
            peer_name=node_id.short(),
            datagram_size_cap=self._datagram_size_cap,
        )
        self._connections.add(connection)
        connection.start_client(asyncio.get_running_loop().time())
        try:
            await asyncio.wait_for(connection.wait_handshake(), timeout_s)
        except asyncio.TimeoutError:
            error = ConnectError(f"{where}: no answer within {timeout_s:g} s")
            connection.abort(error)
            raise error from None
        except ConnectError as exc:
            if type(exc) is ConnectError:
                raise ConnectError(f"{where}: {exc}") from None
            raise
        except asyncio.CancelledError:
            connection.abort(ConnectError(f"{where}: cancelled"))
            raise
        return connection

    async def accept(self) -> Connection:
        """The next incoming connection whose handshake completed."""
        while not self._accepted:
            if self._is_closed:
                raise ConnectionLostError("endpoint closed")
            waiter = asyncio.get_running_loop().create_future()
            self._accept_waiters.append(waiter)
            try:
                await waiter
            finally:
                self._accept_waiters.remove(waiter)
        return self._accepted.popleft()

    async def close(self) -> None:
        """Close every connection (sending CONNECTION_CLOSE) and the socket."""
        if self._is_closed:
            return
        self._is_closed = True
        for connection in list(self._connections):
            connection.abort(ConnectionLostError("endpoint closed"))
        self.magicsock.close()
        self._wake_accept()

    # -- ConnectionOwner -------------------------------------------------------

    def register_cid(self, cid: bytes, connection: Connection) -> None:
        self._by_cid[cid] = connection

    def unregister_cid(self, cid: bytes) -> None:
        self._by_cid.pop(cid, None)

    def register_probe(self, nonce: int, connection: Connection) -> None:
        self._probes[nonce] = connection

    def connection_ready(self, connection: Connection) -> None:
        self._pending_server.discard(connection)
        if self._is_closed:
            return
        self._accepted.append(connection)
        self._wake_accept()

    def connection_terminated(self, connection: Connection) -> None:
        self._connections.discard(connection)
        self._pending_server.discard(connection)
        for cid in connection.cids:
            if self._by_cid.get(cid) is connection:
                del self._by_cid[cid]
        stale = [nonce for nonce, owner in self._probes.items() if owner is connection]
        for nonce in stale:
            del self._probes[nonce]

    # -- MagicSock callbacks ---------------------------------------------------

    def _receive_quic_batch(self, batch: list[tuple[bytes, Address]]) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        by_cid = self._by_cid
        touched: dict[Connection, None] = {}
        for data, address in batch:
            if data[0] & 0x80:
                if len(data) < 6:
                    continue
                cid = data[6 : 6 + data[5]]
            else:
                cid = data[1 : 1 + CID_BYTES]
            connection = by_cid.get(cid)
            if connection is None:
                connection = self._maybe_accept(data, address, now)
                if connection is None:
                    continue
            connection.receive_datagram(data, address, now)
            touched[connection] = None
        if touched:
            now = loop.time()
            for connection in touched:
                connection.after_receive(now)

    def _maybe_accept(self, data: bytes, address: Address, now: float) -> Connection | None:
        if self._is_closed or len(data) < FLOOR_BYTES or not data[0] & 0x80:
            return None
        if len(self._pending_server) >= MAX_PENDING_CONNECTIONS:
            return None
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=CID_BYTES)
        except ValueError:
            return None
        if (
            header.packet_type != QuicPacketType.INITIAL
            or header.version not in self._server_config.supported_versions
        ):
            return None
        quic = QuicConnection(
            configuration=self._server_config,
            original_destination_connection_id=header.destination_cid,
        )
        connection = Connection(
            self,
            quic,
            PeerPath((address,), chosen=address),
            expected_node_id=None,
            peer_name=format_address(address),
            datagram_size_cap=self._datagram_size_cap,
        )
        connection.cids.add(header.destination_cid)
        self.register_cid(header.destination_cid, connection)
        self._connections.add(connection)
        self._pending_server.add(connection)
        return connection

    def _receive_probe_ack(self, nonce: int, size: int, address: Address) -> None:
        connection = self._probes.pop(nonce, None)
        if connection is not None:
            connection.receive_probe_ack(nonce, size)

    def _too_big(self, datagram: bytes, address: Address) -> None:
        if datagram and not datagram[0] & 0x40:
            connection = self._probes.get(int.from_bytes(datagram[7:15], "big"))
            if connection is not None:
                connection.datagram_too_big(datagram)
            return
        for connection in list(self._connections):
            if connection.peer_address == address:
                connection.datagram_too_big(datagram)

    def _wake_accept(self) -> None:
        for waiter in self._accept_waiters:
            if not waiter.done():
                waiter.set_result(None)
