"""Path choice for one remote node, sans-IO: relay, direct candidates, disco timing.

One ``PathState`` per remote node decides where that node's datagrams go and
which disco messages to send. It has no I/O and no clock:

- inputs: ``set_relay_available(is_available, now)``, ``add_candidates(addresses,
  now)``, ``set_own_addresses(addresses)``, ``start_discovery(now)``,
  ``receive_ping(tx_id, source, now)``, ``receive_pong(tx_id, observed, source,
  now)``, ``receive_call_me_maybe(addresses, now)``, ``receive_direct_data(source,
  now)`` (a QUIC packet came from ``source`` over UDP), ``handle_timer(now)``;
- outputs: ``route`` / ``kind`` / ``direct_address`` / ``spray_addresses`` (where
  data goes now), ``disco_to_send()`` (``(message, address)`` pairs; address
  None = over the relay), ``next_event()`` (``PathChanged``), ``get_timer()``.

Modes (fixed at creation):

- ``MODE_PLAIN`` (no relay for this peer: ``direct-only``, a ticket without a
  relay, a peer that reached us directly without disco): what p2pcp did
  before relays. Datagrams go to every candidate until a QUIC packet comes
  back; its source becomes the path, and later QUIC packets from another
  address move it (NAT rebinding). No disco is sent.
- ``MODE_RELAY`` (``relay-only``): always the relay; direct input is ignored.
- ``MODE_DISCO`` (a relay and direct candidates):

  1. Data goes over the relay until a direct path is confirmed: a Pong that
     answers one of our Pings arrived over UDP from the address pinged.
  2. Then data goes there. It is pinged every ``HEARTBEAT_S``, and every
     ``HEARTBEAT_LATE_S`` once a Pong is late; if no Pong
     comes back from it for ``DIRECT_QUIET_S`` it is dropped and data goes
     back to the relay (QUIC packets from it do not keep it alive: they only
     prove the peer-to-us direction, and the path carries our data).
  3. Unconfirmed candidates are pinged at once and then with backoff
     (``PING_BACKOFF_S``), then every ``REPROBE_INTERVAL_S`` while we are on
     the relay (to come back), every ``UPGRADE_INTERVAL_S`` once direct (to
     find a faster one). A candidate that answers with a lower latency by
     ``SWITCH_MARGIN_S`` takes over.
  4. Hole punching: while not direct, a CallMeMaybe with our own addresses
     goes over the relay on the same backoff. A CallMeMaybe received adds its
     addresses and pings them all at once (that opens our NAT towards them);
     a Ping received adds its source and, if it is not our path, pings it back.
  5. If the relay is unavailable and nothing is confirmed, data goes to every
     candidate (as in MODE_PLAIN) so that a relay outage does not cut a
     reachable peer off.
  6. Nothing is pinged and no CallMeMaybe sent before ``start_discovery``
     (a client starts once its handshake is done, so it is reported as
     starting on the relay); until then Pings are only answered and learned
     addresses only recorded.

Invariants: ``route`` changes only inside an input call, and every change
queues exactly one ``PathChanged``; a direct route is always a confirmed
address (MODE_DISCO) or one a datagram of the peer came from (MODE_PLAIN);
candidates are bounded (``MAX_CANDIDATES``) and so are pending pings.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

from p2pcp.net.kinds import PathKind
from p2pcp.net.paths.disco import CallMeMaybe, DiscoMessage, Ping, Pong, new_tx_id

Address = tuple[str, int]


class PathMode(Enum):
    """How a peer is reached (module doc): chosen by MagicSock from the policy."""

    PLAIN = "plain"
    RELAY = "relay"
    DISCO = "disco"


class Spray(Enum):
    """The route that is neither of PathKind's: every candidate at once
    (reported as PathKind.DIRECT: no relay carries it)."""

    SPRAY = "spray"


MODE_PLAIN = PathMode.PLAIN
MODE_RELAY = PathMode.RELAY
MODE_DISCO = PathMode.DISCO

KIND_DIRECT = PathKind.DIRECT
KIND_RELAY = PathKind.RELAY
KIND_SPRAY = Spray.SPRAY
# Where a peer's data goes now: a confirmed direct address, the relay, or spraying.
RouteKind = PathKind | Spray

# Heartbeat on the direct path in use. Small packets (~100 bytes each way),
# so a short interval is cheap and lets a dead path be noticed fast.
HEARTBEAT_S = 0.5

# A direct path with no Pong for this long is dead: four heartbeats lost in a
# row, which random loss practically never does, while a transfer stalls for
# little more than this before it continues over the relay.
DIRECT_QUIET_S = 2.0

# Once a Pong is late (none for HEARTBEAT_LATE_AFTER_S, a heartbeat and a
# half), ping at HEARTBEAT_LATE_S until one comes. A transfer that fills the
# bottleneck queue loses packets in bursts (bunched where BBR probes; see
# docs/design-notes.md, "Paths"); four heartbeats in a row can fall into such
# bursts while the path works. At this gap about 13 Pings must all be lost
# before DIRECT_QUIET_S runs out; a dead path is still left at that time.
HEARTBEAT_LATE_AFTER_S = 0.75
HEARTBEAT_LATE_S = 0.1

# Pings to a new candidate: at once, then after these gaps. Covers the time
# the other side needs to start its own pings (hole punching needs both
# sides' packets to cross) within ~3 s, for five small packets.
PING_BACKOFF_S = (0.2, 0.4, 0.8, 1.6)

# Between ping rounds to candidates while the data goes over the relay, so a
# path that opens later (or comes back after a break) is found again.
REPROBE_INTERVAL_S = 3.0

# Between pings to other candidates while a direct path is in use, to find a
# faster one (a LAN address after a public one answered first).
UPGRADE_INTERVAL_S = 10.0

# A candidate must be this much faster than the path in use to replace it,
# so noise between two equally good paths never makes data flap.
SWITCH_MARGIN_S = 0.002

# A Ping received from an address we pinged less than this ago is not
# answered with a Ping of our own (its Pong answers it already).
PING_BACK_MIN_S = 0.2

# Candidates kept per peer (a ticket carries at most 16 addresses, a
# CallMeMaybe 16 more); older learned ones are forgotten first.
MAX_CANDIDATES = 48

# Pings waiting for a Pong. A Pong after this is too late to prove anything.
PING_TIMEOUT_S = 5.0
MAX_PENDING_PINGS = 256


@dataclass(frozen=True)
class PathChanged:
    """The route of this peer's data changed (``address`` None for the relay)."""

    kind: RouteKind
    address: Address | None


class _Candidate:
    __slots__ = ("address", "backoff", "is_sticky", "last_pong_at", "latency_s", "next_ping_at")

    def __init__(self, address: Address, *, is_sticky: bool) -> None:
        self.address = address
        self.is_sticky = is_sticky  # from the ticket: never forgotten
        self.next_ping_at: float | None = None
        self.backoff = 0  # index into PING_BACKOFF_S
        self.last_pong_at: float | None = None
        self.latency_s: float | None = None


class PathState:
    """Where one peer's datagrams go (see the module doc for the rules)."""

    def __init__(self, mode: PathMode, *, is_relay_available: bool = False) -> None:
        if not isinstance(mode, PathMode):
            raise ValueError(f"unknown path mode {mode!r}")
        self.mode = mode
        self.is_relay_available = is_relay_available
        self._candidates: OrderedDict[Address, _Candidate] = OrderedDict()
        self._own_addresses: tuple[Address, ...] = ()
        self._pending: OrderedDict[bytes, tuple[Address, float]] = OrderedDict()
        self._outbox: list[tuple[DiscoMessage, Address | None]] = []
        self._events: deque[PathChanged] = deque()
        self._is_discovering = False
        self._cmm_at: float | None = None
        self._cmm_backoff = 0
        self._heartbeat_at: float | None = None
        # The confirmed direct address in use (MODE_DISCO) or chosen (MODE_PLAIN).
        self.direct_address: Address | None = None
        self.kind: RouteKind = KIND_RELAY if mode is MODE_RELAY else KIND_SPRAY
        self.spray_addresses: tuple[Address, ...] = ()
        self.observed_address: Address | None = None  # ours, as the peer saw it
        self._update_route()
        self._events.clear()  # the starting route is not a change

    # -- outputs ---------------------------------------------------------------

    @property
    def route(self) -> tuple[RouteKind, Address | None]:
        return self.kind, self.direct_address

    @property
    def candidates(self) -> tuple[Address, ...]:
        return tuple(self._candidates)

    def disco_to_send(self) -> list[tuple[DiscoMessage, Address | None]]:
        """Disco messages to send now: ``(message, address)``; None = via the relay."""
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> PathChanged | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        if self.mode != MODE_DISCO:
            return None
        times = [c.next_ping_at for c in self._candidates.values() if c.next_ping_at is not None]
        for at in (self._cmm_at, self._heartbeat_at):
            if at is not None:
                times.append(at)
        if self.direct_address is not None:
            current = self._candidates.get(self.direct_address)
            if current is not None and current.last_pong_at is not None:
                times.append(current.last_pong_at + DIRECT_QUIET_S)
        return min(times) if times else None

    # -- inputs ----------------------------------------------------------------

    def set_own_addresses(self, addresses: Sequence[Address]) -> None:
        """Our candidate addresses, sent in CallMeMaybe."""
        self._own_addresses = tuple(dict.fromkeys(addresses))

    def set_relay_available(self, is_available: bool, now: float) -> None:
        self.is_relay_available = is_available
        self._update_route()

    def add_candidates(self, addresses: Iterable[Address], now: float) -> None:
        """Addresses from the ticket: kept for the state's whole life."""
        for address in addresses:
            self._add_candidate(address, now, is_sticky=True)
        self._update_route()

    def start_discovery(self, now: float) -> None:
        """Begin pinging candidates and sending CallMeMaybe (idempotent)."""
        if self.mode != MODE_DISCO or self._is_discovering:
            return
        self._is_discovering = True
        for candidate in self._candidates.values():
            if candidate.next_ping_at is None:
                candidate.next_ping_at = now
        self._cmm_at = now
        self.handle_timer(now)

    def receive_ping(self, tx_id: bytes, source: Address, now: float) -> None:
        """A Ping arrived over UDP from ``source``: Pong it, and punch back."""
        if self.mode == MODE_RELAY:
            return
        self._outbox.append((Pong(tx_id, source), source))
        if self.mode != MODE_DISCO:
            return
        candidate = self._add_candidate(source, now, is_sticky=False)
        if (
            self._is_discovering
            and source != self.direct_address
            and self._may_ping_back(candidate, now)
        ):
            candidate.next_ping_at = now
            self.handle_timer(now)

    def receive_pong(self, tx_id: bytes, observed: Address, source: Address, now: float) -> None:
        """A Pong arrived over UDP from ``source``: it confirms that address."""
        pending = self._pending.get(tx_id)
        if pending is None or self.mode != MODE_DISCO:
            return
        address, sent_at = pending
        if address != source:
            return  # answered from elsewhere: proves nothing about ``address``
        del self._pending[tx_id]
        if now - sent_at > PING_TIMEOUT_S:
            return
        self.observed_address = observed
        candidate = self._candidates.get(address)
        if candidate is None:
            return
        rtt = max(now - sent_at, 0.0)
        candidate.latency_s = (
            rtt if candidate.latency_s is None else (candidate.latency_s + rtt) / 2
        )
        candidate.last_pong_at = now
        current = (
            self._candidates.get(self.direct_address) if self.direct_address is not None else None
        )
        if current is None or (
            address != current.address
            and candidate.latency_s + SWITCH_MARGIN_S < (current.latency_s or 0.0)
        ):
            self._confirm(candidate, now)

    def receive_call_me_maybe(self, addresses: Sequence[Address], now: float) -> None:
        """The peer asks us to ping these addresses: do so at once."""
        if self.mode != MODE_DISCO:
            return
        for address in addresses:
            candidate = self._add_candidate(address, now, is_sticky=False)
            if self._is_discovering and address != self.direct_address:
                candidate.next_ping_at = now
                candidate.backoff = 0
        self._update_route()
        self.handle_timer(now)

    def receive_direct_data(self, source: Address, now: float) -> None:
        """A QUIC datagram of this peer came over UDP from ``source``."""
        if self.mode == MODE_PLAIN:
            if source != self.direct_address:
                self.direct_address = source
                self._update_route()
        elif self.mode == MODE_DISCO and source not in self._candidates:
            self._add_candidate(source, now, is_sticky=False)  # pinged if discovering
            self.handle_timer(now)

    def handle_timer(self, now: float) -> None:
        if self.mode != MODE_DISCO:
            return
        current = (
            self._candidates.get(self.direct_address) if self.direct_address is not None else None
        )
        if (
            current is not None
            and current.last_pong_at is not None
            and now >= current.last_pong_at + DIRECT_QUIET_S
        ):
            self._lose_direct(current, now)
            current = None
        if current is not None and self._heartbeat_at is not None and now >= self._heartbeat_at:
            self._send_ping(current, now)
            is_late = (
                current.last_pong_at is not None
                and now - current.last_pong_at >= HEARTBEAT_LATE_AFTER_S
            )
            self._heartbeat_at = now + (HEARTBEAT_LATE_S if is_late else HEARTBEAT_S)
        for candidate in self._candidates.values():
            if candidate is current or candidate.next_ping_at is None:
                continue
            if now >= candidate.next_ping_at:
                self._send_ping(candidate, now)
                candidate.next_ping_at = now + self._next_gap(candidate)
        if self._cmm_at is not None and now >= self._cmm_at:
            if current is None and self.is_relay_available and self._own_addresses:
                self._outbox.append((CallMeMaybe(self._own_addresses), None))
            self._cmm_at = now + self._cmm_gap()

    # -- internals -------------------------------------------------------------

    def _add_candidate(self, address: Address, now: float, *, is_sticky: bool) -> _Candidate:
        candidate = self._candidates.get(address)
        if candidate is not None:
            candidate.is_sticky = candidate.is_sticky or is_sticky
            return candidate
        candidate = _Candidate(address, is_sticky=is_sticky)
        if self._is_discovering:
            candidate.next_ping_at = now
        self._candidates[address] = candidate
        if len(self._candidates) > MAX_CANDIDATES:
            for old in self._candidates.values():
                if (
                    not old.is_sticky
                    and old.address != self.direct_address
                    and old is not candidate
                ):
                    del self._candidates[old.address]
                    break
        return candidate

    def _may_ping_back(self, candidate: _Candidate, now: float) -> bool:
        for address, sent_at in reversed(self._pending.values()):
            if now - sent_at >= PING_BACK_MIN_S:
                break
            if address == candidate.address:
                return False
        return True

    def _next_gap(self, candidate: _Candidate) -> float:
        if candidate.backoff < len(PING_BACKOFF_S):
            gap = PING_BACKOFF_S[candidate.backoff]
            candidate.backoff += 1
            return gap
        return UPGRADE_INTERVAL_S if self.direct_address is not None else REPROBE_INTERVAL_S

    def _cmm_gap(self) -> float:
        if self._cmm_backoff < len(PING_BACKOFF_S):
            gap = PING_BACKOFF_S[self._cmm_backoff]
            self._cmm_backoff += 1
            return gap
        return REPROBE_INTERVAL_S

    def _send_ping(self, candidate: _Candidate, now: float) -> None:
        tx_id = new_tx_id()
        self._pending[tx_id] = (candidate.address, now)
        while self._pending:
            oldest_tx, (_address, sent_at) = next(iter(self._pending.items()))
            if len(self._pending) <= MAX_PENDING_PINGS and now - sent_at <= PING_TIMEOUT_S:
                break
            del self._pending[oldest_tx]
        self._outbox.append((Ping(tx_id), candidate.address))

    def _confirm(self, candidate: _Candidate, now: float) -> None:
        previous = (
            self._candidates.get(self.direct_address) if self.direct_address is not None else None
        )
        if previous is not None:
            previous.next_ping_at = now + UPGRADE_INTERVAL_S
        self.direct_address = candidate.address
        self._cmm_at = None
        candidate.next_ping_at = None  # heartbeats take over
        self._heartbeat_at = now + HEARTBEAT_S
        self._update_route()

    def _lose_direct(self, candidate: _Candidate, now: float) -> None:
        candidate.last_pong_at = None
        candidate.latency_s = None
        self.direct_address = None
        self._heartbeat_at = None
        # Try every candidate again from the start of the backoff, and ask the
        # peer to punch again: a short outage heals within a few seconds.
        for other in self._candidates.values():
            other.backoff = 0
            other.next_ping_at = now
        self._cmm_backoff = 0
        self._cmm_at = now if self._is_discovering else None
        self._update_route()

    def _update_route(self) -> None:
        old = (self.kind, self.direct_address, self.spray_addresses)
        kind: RouteKind
        if self.mode == MODE_RELAY:
            kind = KIND_RELAY
            spray: tuple[Address, ...] = ()
        elif self.direct_address is not None:
            kind = KIND_DIRECT
            spray = ()
        elif self.mode == MODE_DISCO and (self.is_relay_available or not self._candidates):
            kind = KIND_RELAY
            spray = ()
        else:
            kind = KIND_SPRAY
            spray = tuple(self._candidates)
        self.kind = kind
        self.spray_addresses = spray
        if old[:2] != (kind, self.direct_address):
            self._events.append(PathChanged(kind, self.direct_address))
