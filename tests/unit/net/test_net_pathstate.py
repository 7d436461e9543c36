"""PathState: two peers in memory on a virtual clock, with a relay and NATs.

Loss is a packet not delivered. A NAT here maps its inside address to one
public address for every destination (endpoint-independent, like Linux
masquerade keeping the port) and drops unsolicited inbound packets: a packet
from R reaches the inside host only after that host has sent to R (what home
routers do; tests/support/netlab/natlab.py models the same with a prerouting drop rule).
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from p2pcp.net.paths.disco import CallMeMaybe, DiscoMessage, Ping, Pong
from p2pcp.net.paths.pathstate import (
    DIRECT_QUIET_S,
    KIND_DIRECT,
    KIND_RELAY,
    KIND_SPRAY,
    MAX_CANDIDATES,
    MODE_DISCO,
    MODE_PLAIN,
    MODE_RELAY,
    REPROBE_INTERVAL_S,
    Address,
    PathChanged,
    PathState,
)

ONE_WAY_S = 0.010  # UDP latency between the two sides
RELAY_ONE_WAY_S = 0.030


@dataclass
class Side:
    name: str
    inside: Address
    public: Address | None  # None: no NAT
    state: PathState
    # Remote addresses this side's NAT lets in (it has sent to them).
    allowed: set[Address] = field(default_factory=set)
    events: list[PathChanged] = field(default_factory=list)
    data_received: list[str] = field(default_factory=list)

    @property
    def reachable_at(self) -> Address:
        return self.public if self.public is not None else self.inside


class Net:
    """Moves disco messages and data between two sides on a virtual clock."""

    def __init__(self, a: Side, b: Side) -> None:
        self.a, self.b = a, b
        self.now = 0.0
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self.is_udp_up = True
        self.is_relay_up = True
        self.udp_loss = 0.0
        self.rng = random.Random(7)
        self.latency_s: dict[Address, float] = {}  # extra one-way delay per destination

    def other(self, side: Side) -> Side:
        return self.b if side is self.a else self.a

    def at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (when, next(self._seq), action))

    def pump(self, side: Side) -> None:
        for message, address in side.state.disco_to_send():
            if address is None:
                self.relay_send(side, message)
            else:
                self.udp_send(side, address, message)
        while (event := side.state.next_event()) is not None:
            side.events.append(event)

    def relay_send(self, sender: Side, message: DiscoMessage | str) -> None:
        if not self.is_relay_up:
            return
        receiver = self.other(sender)

        def deliver() -> None:
            if isinstance(message, str):
                receiver.data_received.append(message)
            elif isinstance(message, CallMeMaybe):
                receiver.state.receive_call_me_maybe(message.addresses, self.now)
            self.pump(receiver)

        self.at(self.now + RELAY_ONE_WAY_S, deliver)

    def udp_send(self, sender: Side, destination: Address, message: DiscoMessage | str) -> None:
        if sender.public is not None:
            sender.allowed.add(destination)
        source = sender.reachable_at
        receiver = self.other(sender)
        if destination != receiver.reachable_at:
            return  # a candidate that leads nowhere (a LAN address of the other side)
        if not self.is_udp_up or self.rng.random() < self.udp_loss:
            return

        def deliver() -> None:
            if receiver.public is not None and source not in receiver.allowed:
                return  # unsolicited: the NAT drops it
            if isinstance(message, str):
                receiver.data_received.append(message)
                receiver.state.receive_direct_data(source, self.now)
            elif isinstance(message, Ping):
                receiver.state.receive_ping(message.tx_id, source, self.now)
            elif isinstance(message, Pong):
                receiver.state.receive_pong(message.tx_id, message.observed, source, self.now)
            self.pump(receiver)

        self.at(self.now + ONE_WAY_S + self.latency_s.get(destination, 0.0), deliver)

    def send_data(self, side: Side, payload: str) -> None:
        """Send one datagram of application data the way the state says."""
        state = side.state
        if state.kind == KIND_RELAY:
            self.relay_send(side, payload)
        elif state.kind == KIND_DIRECT:
            assert state.direct_address is not None
            self.udp_send(side, state.direct_address, payload)
        else:
            for address in state.spray_addresses:
                self.udp_send(side, address, payload)

    def run_until(self, end: float, *, data_every_s: float | None = None) -> None:
        next_data = self.now if data_every_s is not None else None
        while True:
            times = [t for t in (self.a.state.get_timer(), self.b.state.get_timer()) if t]
            if self._queue:
                times.append(self._queue[0][0])
            if next_data is not None:
                times.append(next_data)
            when = min(times) if times else end
            if when > end:
                self.now = end
                return
            self.now = max(self.now, when)
            if next_data is not None and self.now >= next_data:
                assert data_every_s is not None
                self.send_data(self.a, f"a@{self.now:.3f}")
                self.send_data(self.b, f"b@{self.now:.3f}")
                next_data = self.now + data_every_s
            while self._queue and self._queue[0][0] <= self.now:
                _, _, action = heapq.heappop(self._queue)
                action()
            for side in (self.a, self.b):
                timer = side.state.get_timer()
                if timer is not None and timer <= self.now:
                    side.state.handle_timer(self.now)
                self.pump(side)


def make_pair(*, a_nat: bool, b_nat: bool, b_ticket_public: bool = True) -> tuple[Net, Side, Side]:
    a = Side(
        "a",
        inside=("10.0.1.2", 5000),
        public=("198.18.1.1", 41000) if a_nat else None,
        state=PathState(MODE_DISCO, is_relay_available=True),
    )
    b = Side(
        "b",
        inside=("10.0.2.2", 6000),
        public=("198.18.2.1", 42000) if b_nat else None,
        state=PathState(MODE_DISCO, is_relay_available=True),
    )
    for side in (a, b):
        own = [side.inside] + ([side.public] if side.public else [])
        side.state.set_own_addresses(own)
    net = Net(a, b)
    # A dials B from B's ticket: B's local and (STUN-learned) public address.
    ticket = [b.inside] + ([b.public] if b.public and b_ticket_public else [])
    a.state.add_candidates(ticket, 0.0)
    a.state.start_discovery(0.0)
    net.pump(a)
    # B's connection appears when A's first packet arrives over the relay.
    net.at(RELAY_ONE_WAY_S, lambda: (b.state.start_discovery(net.now), net.pump(b)))
    return net, a, b


def kinds(side: Side) -> list[str]:
    return [event.kind for event in side.events]


def test_starts_on_relay_and_goes_direct_without_nat() -> None:
    net, a, b = make_pair(a_nat=False, b_nat=False)
    assert a.state.kind == KIND_RELAY
    net.run_until(0.5)
    assert a.state.route == (KIND_DIRECT, b.inside)
    assert b.state.route == (KIND_DIRECT, a.inside)
    assert kinds(a) == [KIND_DIRECT]
    assert a.state.observed_address == a.inside


def test_two_easy_nats_punch_through() -> None:
    net, a, b = make_pair(a_nat=True, b_nat=True)
    net.run_until(0.05)
    assert a.state.kind == KIND_RELAY  # A's first pings died at B's NAT
    net.run_until(3.0)
    assert a.state.route == (KIND_DIRECT, b.public)
    assert b.state.route == (KIND_DIRECT, a.public)
    assert a.state.observed_address == a.public


def test_nat_without_public_address_in_ticket_punches_via_call_me_maybe() -> None:
    """A knows only B's LAN address; B learns A's from CallMeMaybe, A learns B's from its ping."""
    net, a, b = make_pair(a_nat=True, b_nat=True, b_ticket_public=False)
    net.run_until(3.0)
    assert a.state.route == (KIND_DIRECT, b.public)
    assert b.state.route == (KIND_DIRECT, a.public)


def test_no_direct_path_stays_on_relay_and_data_flows() -> None:
    net, a, b = make_pair(a_nat=True, b_nat=True)
    net.is_udp_up = False
    net.run_until(10.0, data_every_s=0.5)
    assert a.state.kind == KIND_RELAY and b.state.kind == KIND_RELAY
    assert a.events == [] and b.events == []
    assert len(b.data_received) >= 19 and len(a.data_received) >= 19


def test_setup_survives_heavy_ping_loss() -> None:
    net, a, b = make_pair(a_nat=True, b_nat=True)
    net.udp_loss = 0.5
    net.run_until(8.0)
    assert a.state.kind == KIND_DIRECT and b.state.kind == KIND_DIRECT


def test_direct_path_going_quiet_falls_back_and_comes_back() -> None:
    net, a, b = make_pair(a_nat=True, b_nat=True)
    net.run_until(3.0, data_every_s=0.1)
    assert a.state.kind == KIND_DIRECT
    net.is_udp_up = False
    broke_at = net.now
    net.run_until(broke_at + DIRECT_QUIET_S + 0.6, data_every_s=0.1)
    assert a.state.kind == KIND_RELAY and b.state.kind == KIND_RELAY
    assert kinds(a) == [KIND_DIRECT, KIND_RELAY]
    # Data kept flowing over the relay meanwhile.
    received = len(b.data_received)
    net.run_until(net.now + 1.0, data_every_s=0.1)
    assert len(b.data_received) >= received + 9
    net.is_udp_up = True
    healed_at = net.now
    net.run_until(healed_at + REPROBE_INTERVAL_S + 0.5, data_every_s=0.1)
    assert a.state.kind == KIND_DIRECT and b.state.kind == KIND_DIRECT
    assert kinds(a) == [KIND_DIRECT, KIND_RELAY, KIND_DIRECT]


@pytest.mark.parametrize("seed", range(5))
def test_heavy_random_loss_keeps_a_working_direct_path(seed: int) -> None:
    """30% loss each way for 30 s (a full queue under a transfer loses
    heartbeats too): a Ping round trip fails about half the time, so four
    heartbeats in a row fail every few seconds (this flapped 4-18 times per
    run before Pings sped up once a Pong was late); now the path stays."""
    net, a, b = make_pair(a_nat=True, b_nat=True)
    net.rng = random.Random(seed)
    net.run_until(3.0, data_every_s=0.1)
    assert a.state.kind == KIND_DIRECT and b.state.kind == KIND_DIRECT
    events = (list(a.events), list(b.events))
    net.udp_loss = 0.3
    net.run_until(33.0, data_every_s=0.1)
    assert (a.events, b.events) == events  # no fallback, no switch
    assert a.state.kind == KIND_DIRECT and b.state.kind == KIND_DIRECT


def test_fallback_time_is_bounded_by_quiet_timeout() -> None:
    net, a, _b = make_pair(a_nat=False, b_nat=False)
    net.run_until(1.0)
    net.is_udp_up = False
    broke_at = net.now
    while a.state.kind == KIND_DIRECT:
        net.run_until(net.now + 0.01)
    assert net.now - broke_at <= DIRECT_QUIET_S + 0.5 + 0.02  # last pong up to a heartbeat before


def test_lower_latency_candidate_takes_over() -> None:
    net, a, b = make_pair(a_nat=False, b_nat=False)
    slow = ("198.18.9.9", 7000)
    # B is reachable only at `slow` first, 80 ms away (say, a hairpin path).
    b.inside, b.public = b.inside, slow
    net.latency_s[slow] = 0.080
    net.run_until(2.0)
    assert a.state.route == (KIND_DIRECT, slow)
    # Now a LAN path appears: B moves onto it and tells A with CallMeMaybe.
    b.public = None
    lan = b.inside
    a.state.receive_call_me_maybe([lan], net.now)
    net.pump(a)
    net.run_until(net.now + 0.5)
    assert a.state.route == (KIND_DIRECT, lan)


def test_similar_latencies_do_not_flap() -> None:
    net, a, b = make_pair(a_nat=False, b_nat=False)
    net.run_until(30.0)
    assert kinds(a) == [KIND_DIRECT]
    assert kinds(b) == [KIND_DIRECT]


def test_pong_from_another_address_confirms_nothing() -> None:
    state = PathState(MODE_DISCO, is_relay_available=True)
    state.add_candidates([("10.0.0.1", 1)], 0.0)
    state.start_discovery(0.0)
    [(ping, address)] = [m for m in state.disco_to_send() if isinstance(m[0], Ping)]
    assert isinstance(ping, Ping) and address == ("10.0.0.1", 1)
    state.receive_pong(ping.tx_id, ("1.2.3.4", 5), ("10.0.0.66", 1), 0.01)
    assert state.kind == KIND_RELAY
    state.receive_pong(b"\x00" * 12, ("1.2.3.4", 5), ("10.0.0.1", 1), 0.01)  # unknown tx
    assert state.kind == KIND_RELAY
    state.receive_pong(ping.tx_id, ("1.2.3.4", 5), ("10.0.0.1", 1), 0.02)
    assert state.route == (KIND_DIRECT, ("10.0.0.1", 1))
    assert state.next_event() == PathChanged(KIND_DIRECT, ("10.0.0.1", 1))


def test_call_me_maybe_is_sent_over_the_relay_until_direct() -> None:
    state = PathState(MODE_DISCO, is_relay_available=True)
    state.set_own_addresses([("10.0.0.2", 9), ("198.18.0.2", 9)])
    state.start_discovery(0.0)
    sent = state.disco_to_send()
    assert (CallMeMaybe((("10.0.0.2", 9), ("198.18.0.2", 9))), None) in sent


def test_relay_down_sprays_candidates_then_returns_to_relay() -> None:
    state = PathState(MODE_DISCO, is_relay_available=False)
    state.add_candidates([("10.0.0.1", 1), ("198.18.0.1", 1)], 0.0)
    assert state.kind == KIND_SPRAY
    assert state.spray_addresses == (("10.0.0.1", 1), ("198.18.0.1", 1))
    assert state.next_event() == PathChanged(KIND_SPRAY, None)
    state.set_relay_available(True, 1.0)
    assert state.kind == KIND_RELAY
    assert state.next_event() == PathChanged(KIND_RELAY, None)


def test_plain_mode_follows_quic_packets_like_before_relays() -> None:
    state = PathState(MODE_PLAIN)
    state.add_candidates([("10.0.0.1", 1), ("127.0.0.1", 1)], 0.0)
    assert state.kind == KIND_SPRAY and len(state.spray_addresses) == 2
    state.receive_direct_data(("127.0.0.1", 1), 0.1)
    assert state.route == (KIND_DIRECT, ("127.0.0.1", 1))
    state.receive_direct_data(("127.0.0.1", 2), 0.2)  # NAT rebinding
    assert state.route == (KIND_DIRECT, ("127.0.0.1", 2))
    assert state.get_timer() is None
    state.receive_ping(b"\x01" * 12, ("127.0.0.1", 2), 0.3)
    assert state.disco_to_send() == [(Pong(b"\x01" * 12, ("127.0.0.1", 2)), ("127.0.0.1", 2))]


def test_relay_mode_never_goes_direct() -> None:
    state = PathState(MODE_RELAY, is_relay_available=True)
    state.add_candidates([("10.0.0.1", 1)], 0.0)
    state.start_discovery(0.0)
    state.receive_ping(b"\x01" * 12, ("10.0.0.1", 1), 0.1)
    state.receive_call_me_maybe([("10.0.0.3", 1)], 0.1)
    state.receive_direct_data(("10.0.0.1", 1), 0.1)
    assert state.kind == KIND_RELAY
    assert state.disco_to_send() == []
    assert state.get_timer() is None


def test_candidates_are_bounded_and_ticket_addresses_kept() -> None:
    state = PathState(MODE_DISCO, is_relay_available=True)
    state.add_candidates([("10.0.0.1", 1)], 0.0)
    for port in range(1, 200):
        state.receive_ping(port.to_bytes(12, "big"), ("198.18.0.1", port), 0.0)
    assert len(state.candidates) == MAX_CANDIDATES
    assert ("10.0.0.1", 1) in state.candidates


@pytest.mark.parametrize("seed", range(5))
def test_random_loss_never_breaks_the_rules(seed: int) -> None:
    """Under 20% loss the route is always the relay or a confirmed address."""
    net, a, b = make_pair(a_nat=True, b_nat=True)
    net.udp_loss = 0.2
    net.rng = random.Random(seed)
    net.run_until(20.0, data_every_s=0.2)
    for side in (a, b):
        other = net.other(side)
        for event in side.events:
            assert event.kind in (KIND_DIRECT, KIND_RELAY)
            if event.kind == KIND_DIRECT:
                assert event.address == other.reachable_at


def test_nothing_is_pinged_before_discovery_starts() -> None:
    """A client starts discovery after its handshake: until then it only answers."""
    state = PathState(MODE_DISCO, is_relay_available=True)
    state.set_own_addresses([("10.0.0.2", 9)])
    state.add_candidates([("10.0.0.1", 1)], 0.0)
    state.receive_call_me_maybe([("198.18.0.1", 1)], 0.1)
    state.receive_ping(b"\x01" * 12, ("198.18.0.2", 1), 0.2)
    state.receive_direct_data(("198.18.0.3", 1), 0.3)
    assert state.disco_to_send() == [(Pong(b"\x01" * 12, ("198.18.0.2", 1)), ("198.18.0.2", 1))]
    assert state.get_timer() is None
    assert state.kind == KIND_RELAY
    state.start_discovery(1.0)
    sent = state.disco_to_send()
    pinged = {address for message, address in sent if isinstance(message, Ping)}
    assert pinged == {("10.0.0.1", 1), ("198.18.0.1", 1), ("198.18.0.2", 1), ("198.18.0.3", 1)}
    assert (CallMeMaybe((("10.0.0.2", 9),)), None) in sent
