"""Endpoint: a node's QUIC presence on one UDP socket.

What it owns: the MagicSock (and through it the socket and the relay
clients), the table that routes every received QUIC datagram to its
connection by destination connection id, the creation of server-side
connections from a client's Initial (over UDP or over a relay), the node's
own addresses (interfaces plus the one STUN observed), and ``connect`` /
``accept``.

Configuration: one ``EndpointConfig`` (net/config.py), checked before
anything binds; the endpoint reads its fields and takes no loose options.

Relays: with ``config.relay_url`` the endpoint logs in to that home relay at
bind and, at the same time, asks the relay's STUN port, from the endpoint's
own UDP socket, which public address that socket has. Bind waits for that at
most ``config.relay_timeout_s`` (``RELAY_JOIN_WAIT_S``, net/config.py: a
relay that answers is logged in and its STUN answer is in the ticket within
a few round trips),
and not at all once the relay refused: a relay that is down or never
answers costs bind at most that short wait, never the connect timeout, and
the client keeps joining in the background. ``connect(..., relay_url=...)``
joins another relay if the peer's home relay is not ours (started in the
background; the path uses it once it is up).

Receive path (the hot loop; its cost is per-packet Python, so it is shaped
to pay the event-loop glue once per batch, not once per datagram): the
socket is drained until EAGAIN; every QUIC datagram of the batch is fed to
its connection; then each touched connection processes its events and calls
``datagrams_to_send`` once. Server-side demux needs the Initial's original
destination connection id, which is registered alongside the connection's
own ids (and every id it issues later).

Invariants:

- Every live connection is in ``_connections`` and every id in its ``cids``
  routes to it; both go when it terminates.
- A datagram whose destination id is unknown creates a connection only if it
  is a long-header Initial of at least 1200 bytes (RFC 9000 section 14.1).
  At most MAX_PENDING_CONNECTIONS server handshakes are under way (a new
  one evicts the oldest) and none lives longer than HANDSHAKE_TIMEOUT_S.
- ``connect`` raises ConnectError (exit 3) or PeerIdentityError (exit 4),
  never a bare OSError or TimeoutError.
- The path policy is fixed at bind: RELAY_ONLY sends and accepts nothing
  direct (and advertises no address); DIRECT_ONLY starts no relay client.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
from collections import deque
from collections.abc import Iterable
from typing import Any

from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicPacketType

from p2pcp.core.config import RelayUrl
from p2pcp.core.errors import (
    ConnectError,
    ConnectionLostError,
    LocalProtocolError,
    PeerIdentityError,
    UsageError,
)
from p2pcp.core.identity import NodeId, SecretKey
from p2pcp.net._aioquic import tuning
from p2pcp.net.config import EndpointConfig
from p2pcp.net.kinds import PathKind, PathPolicy, format_address
from p2pcp.net.paths.magicsock import MagicSock, PeerPath
from p2pcp.net.paths.stun import StunClient
from p2pcp.net.pmtu.probe import FLOOR_BYTES
from p2pcp.net.quic import configuration
from p2pcp.net.quic.connection import Connection
from p2pcp.net.quic.stream import Stream
from p2pcp.net.udp.interfaces import interface_addresses
from p2pcp.net.udp.sockets import UdpSocket
from p2pcp.net.udp.transport import Address, TransportFactory
from p2pcp.relay.client import RelayClient

# The public API of the net layer: the transfer layer imports these from here.
__all__ = ["Connection", "Endpoint", "Stream"]

logger = logging.getLogger(__name__)

# Server-side handshakes under way at once. A p2pcp sender serves one or a
# few receivers; this bounds what a flood of forged Initials can cost. When
# it is full the oldest handshake gives way, so a flood cannot lock out an
# honest receiver (who completes in a few round trips).
MAX_PENDING_CONNECTIONS = 64
# A server-side handshake not complete after this long is dropped: far more
# than a handshake needs across the world with losses, far less than the
# idle timeout a half-open flood would otherwise hold slots for.
HANDSHAKE_TIMEOUT_S = 10.0

# Short-header packets carry no connection id length, so the demux must know
# it: servers' ids are 8 bytes, clients' 4, and one client connection per
# endpoint has none (configuration.py says why). A short-header datagram goes to the
# first of them that names a connection (a wrong guess fails to decrypt).
SERVER_CID_BYTES = configuration.SERVER_CID_BYTES
CLIENT_CID_BYTES = configuration.CLIENT_CID_BYTES
NO_CID = b""

# A relay named by host name gives its STUN address only with a login: how
# long one wait for that lasts before the next (the relay client itself
# keeps reconnecting with backoff meanwhile).
STUN_LATE_WAIT_S = 30.0

# A client looks for a direct path once its handshake is done (so connect()
# returns on the path it started on, and every later move is reported), or
# after this long without one: the relay may not lead to the peer at all
# (the peer's relay connection is down) while a direct address would.
DIRECT_DISCOVERY_GRACE_S = 1.0


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

    def __init__(self, secret_key: SecretKey, config: EndpointConfig) -> None:
        self.node_id: NodeId = secret_key.public
        self.config = config
        self._seed = secret_key.seed_bytes()
        self._datagram_size_cap = config.max_datagram_size
        self._client_config = configuration.client_configuration(self._seed, config.congestion)
        self._sole_client_config = configuration.sole_client_configuration(self._client_config)
        self._server_config = configuration.server_configuration(self._seed, config.congestion)
        self.path_policy = config.path_policy
        self.magicsock = MagicSock(
            secret_key,
            policy=config.path_policy,
            on_direct_batch=self._receive_quic_batch,
            on_relay_batch=self._receive_relay_batch,
            on_probe_ack=self._receive_probe_ack,
            on_too_big=self._too_big,
            own_addresses=self.direct_addresses,
            on_refused=self._receive_refused,
        )
        self._stun = StunClient(self.magicsock.send_stun, format_address)
        self.magicsock.on_stun = self._stun.receive
        self._home_relay: RelayClient | None = None
        self._home_relay_url: RelayUrl | None = None
        self.observed_address: Address | None = None
        self._connections: set[Connection] = set()
        self._by_cid: dict[bytes, Connection] = {}
        self._probes: dict[int, Connection] = {}
        # Insertion-ordered: the first is the oldest handshake.
        self._pending_server: dict[Connection, None] = {}
        self._accepted: deque[Connection] = deque()
        self._accept_waiters: list[asyncio.Future[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._is_closed = False

    @classmethod
    async def bind(
        cls,
        secret_key: SecretKey,
        config: EndpointConfig | None = None,
        *,
        transport: TransportFactory = UdpSocket.bind,
    ) -> Endpoint:
        """Bind one dual-stack UDP socket (IPv4 if IPv6 is unavailable) as
        ``config`` says (default: any port, no relay, AUTO, BBR), and join
        its home relay (module doc). ``transport`` binds the datagram
        transport: real UDP unless a test passes another (udp/transport.py).
        """
        config = EndpointConfig() if config is None else config
        endpoint = cls(secret_key, config)
        try:
            endpoint.magicsock.bind(config.port, transport)
        except OSError as exc:
            raise UsageError(f"cannot bind UDP port {config.port}: {exc.strerror or exc}") from exc
        if config.uses_relay and config.relay_url is not None:
            try:
                await endpoint._start_home_relay(config.relay_url, config.relay_timeout_s)
            except BaseException:
                await endpoint.close()
                raise
        return endpoint

    async def _start_home_relay(self, url: RelayUrl, timeout_s: float) -> None:
        """Join the home relay and learn our public address from its STUN
        port, both at once; wait for that at most ``timeout_s``, and not at
        all once the relay refused (module doc). The address is kept when it
        comes later: CallMeMaybe hands our addresses to peers as they are
        when it is sent, so hole punching still finds it."""
        relay, _is_new = self.magicsock.relay_client(url)
        self._home_relay = relay
        self._home_relay_url = url
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        learning: asyncio.Task[None] | None = None
        if self.path_policy is not PathPolicy.RELAY_ONLY:
            learning = loop.create_task(self._learn_public_address(relay))
            self._background.add(learning)
            learning.add_done_callback(self._background.discard)
        if not await relay.start(timeout_s=timeout_s):
            reason = f": {relay.last_error}" if relay.last_error is not None else ""
            logger.info("relay %s not joined yet%s; still trying", relay.url, reason)
            return
        if learning is not None:
            await asyncio.wait({learning}, timeout=max(0.0, deadline - loop.time()))

    async def _learn_public_address(self, relay: RelayClient) -> None:
        """Ask the relay's STUN port which public address our socket has: at
        once for a relay URL with an IP address, else once a login told us
        the relay's address. Runs until it has an answer or STUN gave up."""
        while relay.stun_address is None:
            # Returns when logged in (the address is then known) or after the wait.
            try:
                await relay.start(timeout_s=STUN_LATE_WAIT_S)
            except LocalProtocolError:
                return  # the relay client was closed
        address = await self._stun.query(relay.stun_address)
        if address is not None:
            self.observed_address = address

    @property
    def local_port(self) -> int:
        return self.magicsock.local_port

    @property
    def relay_url(self) -> RelayUrl | None:
        """The home relay's URL, or None (none named, or DIRECT_ONLY)."""
        return self._home_relay_url

    @property
    def is_relay_connected(self) -> bool:
        return self._home_relay is not None and self._home_relay.is_connected

    def direct_addresses(self) -> list[Address]:
        """Our candidate addresses: the STUN-observed one first, then every
        usable local address with our port, loopback last (or alone).
        Empty under RELAY_ONLY."""
        if self.path_policy is PathPolicy.RELAY_ONLY:
            return []
        port = self.local_port
        found = [a for a in interface_addresses() if self.magicsock.is_dual_stack or not a.is_ipv6]
        ordered = [a for a in found if not a.is_loopback] + [a for a in found if a.is_loopback]
        addresses = [(a.host, port) for a in ordered]
        if self.observed_address is not None and self.observed_address not in addresses:
            addresses.insert(0, self.observed_address)
        return addresses

    async def connect(
        self,
        node_id: NodeId,
        addresses: Iterable[tuple[str, int]],
        *,
        timeout_s: float,
        relay_url: RelayUrl | None = None,
    ) -> Connection:
        """Connect to ``node_id`` over its relay and/or ``addresses`` (all at once).

        ``relay_url`` is the peer's home relay (from its ticket). AUTO: over
        the relay until a direct address answers disco; without a relay, or
        under DIRECT_ONLY, straight to the addresses. RELAY_ONLY: over the
        relay alone. Raises ConnectError when nothing answers a
        handshake within ``timeout_s``, PeerIdentityError when the peer
        holds another key.

        A direct address whose answer holds another key is dropped and the
        others are dialled again (within ``timeout_s``): a ticket's loopback
        and LAN addresses may reach an unrelated node on the receiver's
        machine or network (another p2pcp on the same port). Only when no
        address and no relay is left does the wrong key end the dial.
        """
        started = asyncio.get_running_loop().time()
        policy = self.path_policy
        candidates = [] if policy is PathPolicy.RELAY_ONLY else [_normalize(a) for a in addresses]
        if policy is PathPolicy.DIRECT_ONLY:
            relay_url = None
        shown = ", ".join(format_address(a) for a in candidates)
        if relay_url is not None:
            shown = f"{shown}, relay {relay_url}" if shown else f"relay {relay_url}"
        where = f"could not reach {node_id.short()} at {shown or 'no address'}"
        if self._is_closed:
            raise ConnectError(f"{where}: endpoint closed")
        if policy is PathPolicy.RELAY_ONLY and relay_url is None:
            raise ConnectError(f"{where}: relay-only, and the ticket names no relay")
        if not candidates and relay_url is None:
            raise ConnectError(f"{where}: the ticket lists no address")
        relay: RelayClient | None = None
        if relay_url is not None:
            relay, is_new = self.magicsock.relay_client(relay_url)
            if not candidates and not relay.is_connected:
                # The relay is the only way: learn now whether it is there,
                # rather than wait out the timeout for a refusal.
                attempt = relay.start if is_new else relay.try_now
                if not await attempt(timeout_s=timeout_s):
                    reason = relay.last_error or f"the relay {relay.url} did not answer"
                    raise ConnectError(f"{where}: {reason}")
            elif is_new:
                # The peer's home relay is not ours: join it. The path uses it
                # as soon as it is up; meanwhile the addresses are tried.
                task = asyncio.get_running_loop().create_task(relay.start(timeout_s=timeout_s))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        path = self.magicsock.client_path(node_id, candidates, relay_url)
        is_sole = NO_CID not in self._by_cid and tuning.can_forgo_connection_ids()
        quic = QuicConnection(
            configuration=self._sole_client_config if is_sole else self._client_config
        )
        if is_sole:
            tuning.forgo_connection_ids(quic)
        tuning.set_initial_destination_cid(quic, os.urandom(configuration.INITIAL_DCID_BYTES))
        connection = Connection(
            self,
            quic,
            path,
            expected_node_id=bytes(node_id),
            peer_name=node_id.short(),
            datagram_size_cap=self._datagram_size_cap,
        )
        self._connections.add(connection)
        loop = asyncio.get_running_loop()
        connection.start_client(loop.time())
        handshake = loop.create_task(connection.wait_handshake())
        try:
            grace_s = min(DIRECT_DISCOVERY_GRACE_S, timeout_s)
            try:
                await asyncio.wait_for(asyncio.shield(handshake), grace_s)
            except asyncio.TimeoutError:
                path.start_discovery(loop.time())
                await asyncio.wait_for(handshake, timeout_s - grace_s)
        except asyncio.TimeoutError:
            error = ConnectError(f"{where}: no answer within {timeout_s:.1f} s")
            connection.abort(error)
            raise error from None
        except ConnectError as exc:
            if type(exc) is ConnectError:
                raise ConnectError(f"{where}: {exc}") from None
            raise
        except PeerIdentityError:
            others = self._other_candidates(connection, candidates)
            remaining = timeout_s - (loop.time() - started)
            if others is None or (not others and relay_url is None) or remaining <= 0:
                raise
            wrong = format_address(connection.peer_address)
            logger.info("%s at %s holds another key; dialling its other addresses", node_id, wrong)
            if not path.users:
                self.magicsock.forget(path)
        except asyncio.CancelledError:
            connection.abort(ConnectError(f"{where}: cancelled"))
            raise
        else:
            path.start_discovery(loop.time())
            return connection
        finally:
            handshake.cancel()
        return await self.connect(node_id, others, timeout_s=remaining, relay_url=relay_url)

    @staticmethod
    def _other_candidates(
        connection: Connection, candidates: list[Address]
    ) -> list[Address] | None:
        """The candidates but the direct address that answered ``connection``'s
        handshake (None: the answer did not come from one of them)."""
        route = connection.route
        if route.kind is not PathKind.DIRECT or route.address not in candidates:
            return None
        return [c for c in candidates if c != route.address]

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
        for task in list(self._background):
            task.cancel()
        await self.magicsock.close()
        self._wake_accept()

    # -- ConnectionOwner -------------------------------------------------------

    def register_cid(self, cid: bytes, connection: Connection) -> None:
        self._by_cid[cid] = connection

    def unregister_cid(self, cid: bytes) -> None:
        self._by_cid.pop(cid, None)

    def register_probe(self, nonce: int, connection: Connection) -> None:
        self._probes[nonce] = connection

    def connection_ready(self, connection: Connection) -> None:
        self._pending_server.pop(connection, None)
        if self._is_closed:
            return
        self._accepted.append(connection)
        self._wake_accept()

    def connection_terminated(self, connection: Connection) -> None:
        self._connections.discard(connection)
        self._pending_server.pop(connection, None)
        for cid in connection.cids:
            if self._by_cid.get(cid) is connection:
                del self._by_cid[cid]
        stale = [nonce for nonce, owner in self._probes.items() if owner is connection]
        for nonce in stale:
            del self._probes[nonce]

    # -- MagicSock callbacks ---------------------------------------------------

    def _receive_quic_batch(self, batch: list[tuple[bytes, Address]]) -> None:
        """QUIC datagrams that came over direct UDP."""
        self._receive_quic(batch, None)

    def _receive_relay_batch(self, path: PeerPath, datagrams: list[bytes]) -> None:
        """QUIC datagrams of ``path``'s node that came over a relay."""
        self._receive_quic([(data, None) for data in datagrams], path)

    def _receive_quic(
        self, batch: list[tuple[bytes, Address]] | list[tuple[bytes, None]], path: PeerPath | None
    ) -> None:
        """Feed each datagram to its connection (routed by connection id), then
        let every touched connection transmit once: one send pass per batch."""
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
                cid = data[1 : 1 + SERVER_CID_BYTES]
            connection = by_cid.get(cid)
            if connection is None and not data[0] & 0x80:
                connection = by_cid.get(data[1 : 1 + CLIENT_CID_BYTES]) or by_cid.get(NO_CID)
            if connection is None:
                connection = self._maybe_accept(data, address, path)
                if connection is None:
                    continue
            connection.receive_datagram(data, address, now)
            touched[connection] = None
        if touched:
            now = loop.time()
            for connection in touched:
                connection.after_receive(now)

    def _maybe_accept(
        self, data: bytes, address: Address | None, path: PeerPath | None
    ) -> Connection | None:
        """A server connection for a client's Initial: from ``address`` over
        UDP, or over a relay from ``path``'s node."""
        if self._is_closed or len(data) < FLOOR_BYTES or not data[0] & 0x80:
            return None
        try:
            header = tuning.parse_header(data, SERVER_CID_BYTES)
        except ValueError:
            return None
        if (
            header.packet_type != QuicPacketType.INITIAL
            or header.version not in self._server_config.supported_versions
            # RFC 9000 7.2: a client's first Destination id has >= 8 bytes
            or len(header.destination_cid) < configuration.INITIAL_DCID_BYTES
        ):
            return None
        quic = QuicConnection(
            configuration=self._server_config,
            original_destination_connection_id=header.destination_cid,
        )
        # Mutual TLS: the receiver proves its node key (Connection.peer_node_id).
        tuning.request_client_certificate(quic)
        if path is None:
            if address is None:
                return None
            path = self.magicsock.server_path(address)
            peer_name = format_address(address)
        else:
            peer_name = path.name
        connection = Connection(
            self,
            quic,
            path,
            expected_node_id=None,
            peer_name=peer_name,
            datagram_size_cap=self._datagram_size_cap,
        )
        if len(self._pending_server) >= MAX_PENDING_CONNECTIONS:
            oldest = next(iter(self._pending_server))
            oldest.abort(ConnectError("handshake dropped to make room for a newer one"))
            self._pending_server.pop(oldest, None)
        connection.cids.add(header.destination_cid)
        self.register_cid(header.destination_cid, connection)
        self._connections.add(connection)
        self._pending_server[connection] = None
        asyncio.get_running_loop().call_later(
            HANDSHAKE_TIMEOUT_S, self._expire_handshake, connection
        )
        return connection

    def _expire_handshake(self, connection: Connection) -> None:
        if connection in self._pending_server:
            connection.abort(ConnectError("handshake did not complete in time"))
            self._pending_server.pop(connection, None)

    def _receive_refused(self, address: Address) -> None:
        """A datagram to ``address`` was refused: tell each path that sends there."""
        paths = {id(c.peer_path): c.peer_path for c in self._connections}
        for path in paths.values():
            if address == path.chosen or address in path.candidates:
                path.receive_refused(address)

    def _receive_probe_ack(self, nonce: int, size: int, address: Address | None) -> None:
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
