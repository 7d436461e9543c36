"""MagicSock: the layer between QUIC and the network (direct UDP and relays).

QUIC (aioquic) sees one stable, made-up address per remote peer
(``PeerPath.quic_address``) and never a real one; MagicSock decides where
that peer's datagrams really go, so moving between the relay and a direct
path is invisible to QUIC (no migration, no path validation).

Paths (``PeerPath``), each driven by a sans-IO ``PathState`` (pathstate.py):

- keyed by node id (``MagicSock.peers``): a client's path to the node it
  dials, and a server's path to a node whose packets came over a relay
  (relay frames carry the source node id). Connections to the same node
  share it. Disco (disco.py) ties direct addresses to the node.
- keyed by nothing: a server path created from a direct QUIC Initial of a
  peer that did not come over a relay (``direct-only`` peers, or relays
  down): exactly the pre-relay behaviour (MODE_PLAIN).

The socket carries four kinds of datagram, told apart by the first bytes:
QUIC (fixed bit 0x40 set), STUN (relay/stun.py: magic cookie), disco
(disco.py prefix) and probe packets (probe.py; answered here, statelessly).
Relay datagrams are QUIC or disco (the same bytes as over UDP).

Policies: ``auto`` (relay until a direct path is confirmed), ``relay-only``
(no direct traffic at all: every datagram received on the socket is
dropped but STUN answers), ``direct-only`` (no relays; PLAIN paths only).

A path with no way left to its peer tells its connections at once
(``PathUser.path_failed``), so they fail with the reason instead of
waiting for a timeout: every address it sends to refused (ICMP port
unreachable, udp/sockets.py) and no relay carries it; or it needs the relay
(``relay-only``, or no direct address at all) and the relay connection
ended and did not come back within ``RELAY_GONE_GRACE_S``.

Invariants: ``quic_address`` never changes for a path's life; a Ping over
UDP is answered only if its box opens; disco from a relay is accepted only
when its sender equals the relay frame's source; node paths without a
connection are forgotten after ``PEER_IDLE_S`` and at most ``MAX_PEERS``
exist, so traffic from many node ids cannot grow memory without bound.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from p2pcp.core.config import RelayUrl
from p2pcp.core.errors import RemoteProtocolError
from p2pcp.core.identity import NodeId, SecretKey
from p2pcp.net.kinds import PathKind, PathPolicy, Route, format_address
from p2pcp.net.paths.disco import CallMeMaybe, DiscoBox, Ping, Pong, is_disco_packet
from p2pcp.net.paths.pathstate import (
    KIND_DIRECT,
    KIND_RELAY,
    MODE_DISCO,
    MODE_PLAIN,
    MODE_RELAY,
    PathMode,
    PathState,
)
from p2pcp.net.pmtu.probe import (
    TYPE_PROBE,
    TYPE_PROBE_ACK,
    decode_control,
    encode_probe_ack,
)
from p2pcp.net.udp.sockets import UdpSocket
from p2pcp.net.udp.transport import Address, DatagramTransport, TransportFactory
from p2pcp.relay.client import RelayClient
from p2pcp.relay.stun import is_stun_packet

logger = logging.getLogger(__name__)


# A node path nobody uses is kept this long (a reconnect reuses its direct
# path), then forgotten. QUIC's idle timeout, so it outlives a lost connection.
PEER_IDLE_S = 30.0

# A path that needs the relay waits this long for the relay connection to
# come back before its connections are failed: the relay client's first
# reconnection (0.25-0.5 s after a drop) fits, a relay that is gone does not
# keep a transfer silent (the receiver reconnects and resumes).
RELAY_GONE_GRACE_S = 1.0

# Node paths at once. A sender serves a few receivers; relay logins make
# node ids cheap to mint, so this bounds what a crowd of them can cost.
MAX_PEERS = 1024

QuicAddress = tuple[str, int]
DirectBatchCallback = Callable[[list[tuple[bytes, Address]]], None]
RelayBatchCallback = Callable[["PeerPath", list[bytes]], None]
# (nonce, size, address the echo came from; None: over the relay)
ProbeAckCallback = Callable[[int, int, Address | None], None]
TooBigCallback = Callable[[bytes, Address], None]
StunCallback = Callable[[bytes, Address], None]

_path_numbers = itertools.count(1)


class PathUser(Protocol):
    """What a path tells its connections."""

    def path_changed(self, kind: PathKind, old_kind: PathKind) -> None: ...
    def path_failed(self, reason: str) -> None: ...


class PeerPath:
    """How one remote peer is reached. QUIC only ever sees ``quic_address``."""

    def __init__(
        self,
        magicsock: MagicSock,
        state: PathState,
        *,
        node_id: NodeId | None = None,
        relay: RelayClient | None = None,
        relay_url: RelayUrl | None = None,
    ) -> None:
        # A made-up address, unique per path, that aioquic uses as the peer's
        # address: it only compares it, never sends to it.
        self.quic_address: QuicAddress = (f"p2pcp-path-{next(_path_numbers)}", 0)
        self.state = state
        self.node_id = node_id
        self.relay = relay
        self.relay_url = relay_url
        self.users: set[PathUser] = set()
        self.idle_since: float | None = None
        self._magicsock = magicsock
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self.kind = self.reported_kind
        # Direct addresses that refused a datagram since the last connection
        # attached (module doc); an address we hear from leaves the set.
        self.refused: set[Address] = set()
        self._relay_gone_reason = ""
        self._relay_gone_timer: asyncio.TimerHandle | None = None

    @property
    def reported_kind(self) -> PathKind:
        """DIRECT (a direct address, or trying them all) or RELAY."""
        return KIND_RELAY if self.state.kind is KIND_RELAY else KIND_DIRECT

    @property
    def chosen(self) -> Address | None:
        return self.state.direct_address

    @property
    def candidates(self) -> tuple[Address, ...]:
        return self.state.candidates

    @property
    def route(self) -> Route:
        """Where the peer's datagrams go now, as values (kinds.py)."""
        state = self.state
        if state.direct_address is not None:
            return Route(KIND_DIRECT, address=state.direct_address)
        if state.kind is KIND_RELAY:
            return Route(KIND_RELAY, relay_url=self.relay_url if self.relay is not None else None)
        return Route(KIND_DIRECT, trying=len(state.spray_addresses))

    @property
    def description(self) -> str:
        """E.g. "direct 198.18.0.5:4433" or "relay http://198.18.0.1:3340"."""
        return str(self.route)

    def receive_direct(self, address: Address, now: float) -> None:
        """A QUIC datagram of this path's peer came over UDP from ``address``."""
        state = self.state
        if address == state.direct_address:
            return
        self.refused.discard(address)
        state.receive_direct_data(address, now)
        self.service(now)

    @property
    def is_relay_carrying(self) -> bool:
        """Whether a relay connection is up for this path to fall back on."""
        return self.relay is not None and self.relay.is_connected and self.state.mode != MODE_PLAIN

    def receive_refused(self, address: Address) -> None:
        """A datagram to ``address`` was refused (ICMP port unreachable)."""
        self.refused.add(address)
        self._fail_if_stranded()

    def relay_changed(self, is_up: bool) -> None:
        """The relay went up or down (after the state heard of it)."""
        if self._relay_gone_timer is not None:
            self._relay_gone_timer.cancel()
            self._relay_gone_timer = None
        self._relay_gone_reason = ""
        if is_up or self.relay is None:
            return
        error = self.relay.last_error
        self._relay_gone_reason = (
            str(error) if error is not None else f"the relay {self.relay.url} went away"
        )
        self._relay_gone_timer = asyncio.get_running_loop().call_later(
            RELAY_GONE_GRACE_S, self._relay_gone
        )

    def stranded_reason(self) -> str | None:
        """Why nothing can reach the peer now, or None while some way may."""
        if self.is_relay_carrying:
            return None
        state = self.state
        if state.kind == KIND_RELAY:
            if self.relay is None:
                return "no relay to reach the peer through"
            error = self._relay_gone_reason or str(self.relay.last_error or "")
            return error or f"the relay {self.relay.url} is not connected"
        targets = (
            (state.direct_address,) if state.direct_address is not None else state.spray_addresses
        )
        if not targets or not all(address in self.refused for address in targets):
            return None
        where = format_address(targets[0]) if len(targets) == 1 else "every address"
        reason = f"connection refused at {where} (nothing listens there: stopped?)"
        if self.relay is not None and self.relay.last_error is not None:
            reason += f"; {self.relay.last_error}"
        return reason

    def _relay_gone(self) -> None:
        self._relay_gone_timer = None
        self._fail_if_stranded()

    def _fail_if_stranded(self) -> None:
        reason = self.stranded_reason()
        if reason is None:
            return
        for user in list(self.users):
            user.path_failed(reason)

    def attach(self, user: PathUser, now: float, *, is_discovering: bool) -> None:
        """A connection uses this path from now on (and direct discovery starts)."""
        self.users.add(user)
        self.idle_since = None
        self.refused.clear()  # a new attempt: old refusals may be stale
        if is_discovering:
            self.start_discovery(now)

    def start_discovery(self, now: float) -> None:
        """Start pinging candidates and sending CallMeMaybe (if the mode has disco)."""
        self.state.start_discovery(now)
        self.service(now)

    def detach(self, user: PathUser, now: float) -> None:
        self.users.discard(user)
        if not self.users:
            self.idle_since = now
            self.service(now)

    def service(self, now: float) -> None:
        """Send what the state queued, report route changes, re-arm the timer."""
        magicsock = self._magicsock
        state = self.state
        for message, address in state.disco_to_send():
            magicsock.send_disco(self, message, address)
        changed = False
        while state.next_event() is not None:
            changed = True
        if changed:
            old_kind, self.kind = self.kind, self.reported_kind
            logger.info("path to %s: %s", self.name, self.description)
            for user in list(self.users):
                user.path_changed(self.kind, old_kind)
        self._arm_timer(now)

    @property
    def name(self) -> str:
        return self.node_id.short() if self.node_id is not None else self.quic_address[0]

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._relay_gone_timer is not None:
            self._relay_gone_timer.cancel()
            self._relay_gone_timer = None

    def _arm_timer(self, now: float) -> None:
        at = self.state.get_timer()
        if self.idle_since is not None and self.node_id is not None:
            forget_at = self.idle_since + PEER_IDLE_S
            at = forget_at if at is None else min(at, forget_at)
        if at is None:
            return
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()
        self._timer_at = at
        self._timer = asyncio.get_running_loop().call_at(max(at, now), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = asyncio.get_running_loop().time()
        if self.idle_since is not None and now >= self.idle_since + PEER_IDLE_S:
            self._magicsock.forget(self)
            return
        timer = self.state.get_timer()
        if timer is not None and now >= timer:
            self.state.handle_timer(now)
        self.service(now)


class MagicSock:
    """Owns the UDP socket and the relay clients; routes datagrams by PeerPath."""

    def __init__(
        self,
        secret_key: SecretKey,
        *,
        policy: PathPolicy,
        on_direct_batch: DirectBatchCallback,
        on_relay_batch: RelayBatchCallback,
        on_probe_ack: ProbeAckCallback,
        on_too_big: TooBigCallback,
        own_addresses: Callable[[], list[Address]],
        on_refused: Callable[[Address], None] | None = None,
    ) -> None:
        if not isinstance(policy, PathPolicy):
            raise PathPolicy.refusal(policy)
        self.policy = policy
        self.disco = DiscoBox(secret_key)
        self.secret_key = secret_key
        self._on_direct_batch = on_direct_batch
        self._on_relay_batch = on_relay_batch
        self._on_probe_ack = on_probe_ack
        self._on_too_big = on_too_big
        self._on_refused = on_refused
        self._own_addresses = own_addresses
        self._udp: DatagramTransport | None = None
        self.peers: dict[NodeId, PeerPath] = {}
        self.relays: dict[RelayUrl, RelayClient] = {}
        self.on_stun: StunCallback | None = None
        self._is_closed = False

    # -- socket ------------------------------------------------------------------

    def bind(self, port: int, transport: TransportFactory = UdpSocket.bind) -> None:
        """Bind the datagram transport: a real UDP socket unless a test
        passes another factory (udp/transport.py)."""
        self._udp = transport(port, self._receive_batch, self._on_too_big, self._on_refused)

    @property
    def udp(self) -> DatagramTransport:
        if self._udp is None:
            raise RuntimeError("MagicSock is not bound")
        return self._udp

    @property
    def local_port(self) -> int:
        return self.udp.local_port

    @property
    def is_dual_stack(self) -> bool:
        return self.udp.is_dual_stack

    async def close(self) -> None:
        self._is_closed = True
        for path in list(self.peers.values()):
            path.close()
        self.peers.clear()
        relays, self.relays = list(self.relays.values()), {}
        for relay in relays:
            await relay.close()
        if self._udp is not None:
            self._udp.close()

    # -- relays --------------------------------------------------------------------

    def relay_client(self, url: RelayUrl) -> tuple[RelayClient, bool]:
        """The client for ``url`` (created, not started, if new) and whether it is new."""
        existing = self.relays.get(url)
        if existing is not None:
            return existing, False
        relay = RelayClient(
            str(url),
            self.secret_key,
            on_packets=lambda source, datagrams: self._receive_relay(url, relay, source, datagrams),
            on_connected=lambda is_up: self._relay_connected(relay, is_up),
        )
        self.relays[url] = relay
        return relay, True

    def _relay_connected(self, relay: RelayClient, is_up: bool) -> None:
        logger.info("relay %s %s", relay.url, "connected" if is_up else "disconnected")
        now = asyncio.get_running_loop().time()
        for path in list(self.peers.values()):
            if path.relay is relay:
                path.state.set_relay_available(is_up, now)
                path.service(now)
                path.relay_changed(is_up)

    # -- paths ---------------------------------------------------------------------

    def client_path(
        self, node_id: NodeId, candidates: Sequence[Address], relay_url: RelayUrl | None
    ) -> PeerPath:
        """The path to a node we dial (shared with earlier connections when it
        fits), over ``relay_url``'s client (``relay_client``) if not None."""
        now = asyncio.get_running_loop().time()
        relay = self.relays.get(relay_url) if relay_url is not None else None
        if self.policy is PathPolicy.RELAY_ONLY:
            mode = MODE_RELAY
        elif relay is None:
            mode = MODE_PLAIN
        else:
            mode = MODE_DISCO
        path = self.peers.get(node_id)
        if path is None or path.state.mode != mode or path.relay is not relay:
            path = self._new_node_path(node_id, mode, relay_url, now)
            if path is None:
                raise RuntimeError("too many peers")  # not reached: room is made for dials
        if mode != MODE_RELAY:
            path.state.add_candidates(candidates, now)
        path.service(now)
        return path

    def server_path(self, address: Address) -> PeerPath:
        """A path for a peer that reached us directly without a relay."""
        state = PathState(MODE_PLAIN)
        state.add_candidates([address], 0.0)
        state.receive_direct_data(address, 0.0)
        state.next_event()
        path = PeerPath(self, state)
        return path

    def _new_node_path(
        self, node_id: NodeId, mode: PathMode, relay_url: RelayUrl | None, now: float
    ) -> PeerPath | None:
        old = self.peers.pop(node_id, None)
        if old is not None and not old.users:
            old.close()
        if len(self.peers) >= MAX_PEERS:
            idle = [p for p in self.peers.values() if not p.users]
            if not idle:
                return None
            victim = min(idle, key=lambda p: p.idle_since or 0.0)
            self.forget(victim)
        relay = self.relays.get(relay_url) if relay_url is not None else None
        state = PathState(mode, is_relay_available=relay is not None and relay.is_connected)
        if mode == MODE_DISCO:
            state.set_own_addresses(self._own_addresses())
        path = PeerPath(self, state, node_id=node_id, relay=relay, relay_url=relay_url)
        path.idle_since = now
        self.peers[node_id] = path
        return path

    def forget(self, path: PeerPath) -> None:
        path.close()
        if path.node_id is not None and self.peers.get(path.node_id) is path:
            del self.peers[path.node_id]

    # -- sending -------------------------------------------------------------------

    def send(
        self, path: PeerPath, datagrams: Sequence[bytes], *, may_fragment: bool = False
    ) -> PathKind | None:
        """Send a connection's datagrams by its path; returns the kind used (None: dropped).

        ``may_fragment``: on a direct path, the kernel may fragment them (udp/sockets.py).
        """
        state = path.state
        kind = state.kind
        if kind is KIND_DIRECT:
            self.udp.send(datagrams, state.direct_address, may_fragment=may_fragment)  # type: ignore[arg-type]
            return KIND_DIRECT
        if kind is KIND_RELAY:
            relay = path.relay
            if (
                relay is not None
                and path.node_id is not None
                and relay.send(path.node_id, datagrams)
            ):
                return KIND_RELAY
            return None
        udp = self.udp
        for candidate in state.spray_addresses:
            if self._is_sendable(candidate):
                udp.send(datagrams, candidate)
        return KIND_DIRECT

    def send_control(self, path: PeerPath, packet: bytes, *, may_fragment: bool = False) -> None:
        """Send a p2pcp control packet on the path in use: the direct address,
        else the relay (dropped if neither)."""
        address = path.state.direct_address
        if path.state.kind == KIND_RELAY:
            if path.relay is not None and path.node_id is not None:
                path.relay.send(path.node_id, [packet])
        elif address is not None:
            self.udp.send([packet], address, may_fragment=may_fragment)

    def send_disco(
        self, path: PeerPath, message: Ping | Pong | CallMeMaybe, address: Address | None
    ) -> None:
        if path.node_id is None or self._is_closed:
            return
        packet = self.disco.seal(path.node_id, message)
        if address is None:
            if path.relay is not None:
                path.relay.send(path.node_id, [packet])
        elif self._is_sendable(address):
            self.udp.send([packet], address)

    def send_stun(self, packet: bytes, address: Address) -> None:
        if self._is_sendable(address):
            self.udp.send([packet], address)

    def _is_sendable(self, address: Address) -> bool:
        # An IPv4-only socket cannot reach IPv6 candidates.
        return self.udp.is_dual_stack or ":" not in address[0]

    # -- receiving -----------------------------------------------------------------

    def _receive_batch(self, batch: list[tuple[bytes, Address]]) -> None:
        quic: list[tuple[bytes, Address]] = []
        is_relay_only = self.policy is PathPolicy.RELAY_ONLY
        for item in batch:
            data = item[0]
            if data and data[0] & 0x40:
                if not is_relay_only:
                    quic.append(item)
            elif is_stun_packet(data):
                if self.on_stun is not None:
                    self.on_stun(data, item[1])
            elif not is_relay_only:
                self._receive_control(data, item[1])
        if quic:
            self._on_direct_batch(quic)

    def _receive_control(self, data: bytes, address: Address) -> None:
        if is_disco_packet(data):
            self._receive_direct_disco(data, address)
            return
        try:
            packet = decode_control(data)
        except RemoteProtocolError:
            return  # not ours, or damaged: drop silently, as for bad QUIC packets
        if packet.kind == TYPE_PROBE:
            self.udp.send([encode_probe_ack(packet.nonce, packet.size)], address)
        elif packet.kind == TYPE_PROBE_ACK:
            self._on_probe_ack(packet.nonce, packet.size, address)

    def _receive_direct_disco(self, data: bytes, address: Address) -> None:
        try:
            sender, message = self.disco.open(data)
        except RemoteProtocolError:
            return
        path = self.peers.get(sender)
        now = asyncio.get_running_loop().time()
        if path is None:
            if isinstance(message, Ping):
                # No state for strangers: answer like a probe, statelessly.
                pong = self.disco.seal(sender, Pong(message.tx_id, address))
                self.udp.send([pong], address)
            return
        path.refused.discard(address)
        if isinstance(message, Ping):
            path.state.receive_ping(message.tx_id, address, now)
        elif isinstance(message, Pong):
            path.state.receive_pong(message.tx_id, message.observed, address, now)
        else:
            path.state.receive_call_me_maybe(message.addresses, now)
        path.service(now)

    def _receive_relay(
        self, relay_url: RelayUrl, relay: RelayClient, source: NodeId, datagrams: list[bytes]
    ) -> None:
        if self._is_closed or self.policy is PathPolicy.DIRECT_ONLY:
            return
        now = asyncio.get_running_loop().time()
        path = self.peers.get(source)
        if path is None or path.state.mode == MODE_PLAIN:
            mode = MODE_RELAY if self.policy is PathPolicy.RELAY_ONLY else MODE_DISCO
            new_path = self._new_node_path(source, mode, relay_url, now)
            if new_path is None:
                return
            path = new_path
            path.service(now)
        elif path.relay is not relay:
            # The peer reaches us over this relay now: answer the same way.
            path.relay, path.relay_url = relay, relay_url
            path.state.set_relay_available(relay.is_connected, now)
            path.service(now)
        quic = [d for d in datagrams if d and d[0] & 0x40]
        if len(quic) != len(datagrams):
            for data in datagrams:
                if not data or data[0] & 0x40:
                    continue
                if is_disco_packet(data):
                    self._receive_relayed_disco(path, source, data, now)
                else:
                    self._receive_relayed_control(relay, source, data)
        if quic:
            self._on_relay_batch(path, quic)

    def _receive_relayed_control(self, relay: RelayClient, source: NodeId, data: bytes) -> None:
        """Datagram-size probes over the relay: echoed the same way, as over UDP."""
        try:
            packet = decode_control(data)
        except RemoteProtocolError:
            return
        if packet.kind == TYPE_PROBE:
            relay.send(source, [encode_probe_ack(packet.nonce, packet.size)])
        elif packet.kind == TYPE_PROBE_ACK:
            self._on_probe_ack(packet.nonce, packet.size, None)

    def _receive_relayed_disco(
        self, path: PeerPath, source: NodeId, data: bytes, now: float
    ) -> None:
        try:
            sender, message = self.disco.open(data)
        except RemoteProtocolError:
            return
        if sender != source or not isinstance(message, CallMeMaybe):
            return  # pings and pongs only mean something over UDP
        path.state.receive_call_me_maybe(message.addresses, now)
        path.service(now)
