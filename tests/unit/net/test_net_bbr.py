"""BBR-style congestion control on a simulated path, on a virtual clock.

The simulator: each flow's sender paces packets at the controller's rate and
within its window; packets cross one bottleneck (a FIFO of limited bytes
served at a fixed rate; random loss, from a seeded RNG, strikes before the
queue), then the base RTT; each packet is acked on its own. A drop is
reported to the sender one base RTT after it happened (about when the
following packets' acks reveal the gap). The controllers are driven through
aioquic's interface (``on_packet_sent`` ...), so the adapter is tested too,
and aioquic's own Reno runs on the same path for comparison.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Any

import pytest
from aioquic.quic.congestion.base import QuicCongestionControl
from aioquic.quic.congestion.reno import RenoCongestionControl
from aioquic.quic.packet import QuicPacketType
from aioquic.quic.packet_builder import QuicSentPacket
from aioquic.tls import Epoch

import p2pcp.net.congestion.bbr as bbr_module
from p2pcp.net.congestion.bbr import DRAIN, PROBE_BW, PROBE_RTT, STARTUP, BbrCongestionControl

MSS = 1452
MBIT = 1_000_000 / 8  # bytes/s


@dataclass
class Flow:
    cc: QuicCongestionControl
    start: float = 0.0
    next_pn: int = 0
    next_send: float = 0.0
    wake_pending: bool = False
    srtt: float | None = None
    acked_log: list[tuple[float, int]] = field(default_factory=list)

    def pacing_rate(self) -> float:
        if isinstance(self.cc, BbrCongestionControl):
            return self.cc.pacing_rate
        rtt = self.srtt or 0.1
        return 2.0 * self.cc.congestion_window / rtt  # aioquic-like: cwnd / rtt, some slack

    def send(self, now: float, size: int) -> QuicSentPacket:
        """The next packet, told to the controller as sent."""
        pkt = QuicSentPacket(
            epoch=Epoch.ONE_RTT,
            in_flight=True,
            is_ack_eliciting=True,
            is_crypto_packet=False,
            packet_number=self.next_pn,
            packet_type=QuicPacketType.ONE_RTT,
            sent_time=now,
            sent_bytes=size,
        )
        self.next_pn += 1
        self.cc.on_packet_sent(packet=pkt)
        return pkt

    def acked_between(self, t0: float, t1: float) -> int:
        return sum(n for t, n in self.acked_log if t0 <= t < t1)


@dataclass
class Path:
    rate: float  # bytes/s
    rtt: float  # base RTT, seconds
    queue_limit: int  # bytes
    loss: float = 0.0
    seed: int = 1
    rate_changes: list[tuple[float, float]] = field(default_factory=list)
    # > 0: the receiver acks in bursts, everything that arrived in each
    # interval at its end (a batching peer, Wi-Fi aggregation)
    ack_batch_s: float = 0.0
    # > 0: each ack comes up to this much later, in order (a jittery link)
    ack_jitter_s: float = 0.0


class Sim:
    def __init__(self, path: Path, flows: list[Flow]) -> None:
        self.path = path
        self.flows = flows
        self.rng = random.Random(path.seed)
        self.events: list[tuple[float, int, str, Any]] = []
        self.seq = 0
        self.queue_bytes = 0
        self.queue: list[tuple[int, QuicSentPacket]] = []
        self.qhead = 0
        self.link_busy = False
        self.rate = path.rate
        self.queue_samples: list[tuple[float, int]] = []
        self.last_ack_due = 0.0
        for i, f in enumerate(self.flows):
            self.at(f.start, "wake", i)
        for t, r in self.path.rate_changes:
            self.at(t, "rate", r)
        self.at(0.0, "sample", None)

    def at(self, t: float, kind: str, data: Any) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, kind, data))

    def run(self, until: float) -> None:
        while self.events and self.events[0][0] <= until:
            now, _, kind, data = heapq.heappop(self.events)
            getattr(self, "_" + kind)(now, data)

    def _rate(self, now: float, rate: float) -> None:
        self.rate = rate

    def _sample(self, now: float, _: Any) -> None:
        self.queue_samples.append((now, self.queue_bytes))
        self.at(now + 0.01, "sample", None)

    def _wake(self, now: float, i: int) -> None:
        f = self.flows[i]
        f.wake_pending = False
        cc = f.cc
        while cc.bytes_in_flight + MSS <= cc.congestion_window:
            if f.next_send > now:
                f.wake_pending = True
                self.at(f.next_send, "wake", i)
                return
            pkt = f.send(now, MSS)
            f.next_send = max(f.next_send, now - 0.001) + MSS / f.pacing_rate()
            if self.rng.random() < self.path.loss or self.queue_bytes + MSS > self.path.queue_limit:
                self.at(now + self.path.rtt, "lost", (i, pkt))
                continue
            self.queue.append((i, pkt))
            self.queue_bytes += MSS
            if not self.link_busy:
                self.link_busy = True
                self.at(now + MSS / self.rate, "depart", None)

    def _depart(self, now: float, _: Any) -> None:
        i, pkt = self.queue[self.qhead]
        self.qhead += 1
        if self.qhead > 4096:
            del self.queue[: self.qhead]
            self.qhead = 0
        self.queue_bytes -= MSS
        due = now + self.path.rtt
        if self.path.ack_jitter_s > 0.0:
            due = max(due + self.rng.uniform(0.0, self.path.ack_jitter_s), self.last_ack_due)
            self.last_ack_due = due
        batch = self.path.ack_batch_s
        if batch > 0.0:
            due = (int(due / batch) + 1) * batch
        self.at(due, "ack", (i, pkt))
        if self.qhead < len(self.queue):
            self.at(now + MSS / self.rate, "depart", None)
        else:
            self.link_busy = False

    def _kick(self, now: float, i: int) -> None:
        if not self.flows[i].wake_pending:
            self._wake(now, i)

    def _ack(self, now: float, data: tuple[int, QuicSentPacket]) -> None:
        i, pkt = data
        f = self.flows[i]
        rtt = now - (pkt.sent_time or 0.0)
        f.srtt = rtt if f.srtt is None else 0.875 * f.srtt + 0.125 * rtt
        f.cc.on_packet_acked(now=now, packet=pkt)
        f.cc.on_rtt_measurement(now=now, rtt=rtt)
        f.acked_log.append((now, pkt.sent_bytes))
        self._kick(now, i)

    def _lost(self, now: float, data: tuple[int, QuicSentPacket]) -> None:
        i, pkt = data
        self.flows[i].cc.on_packets_lost(now=now, packets=[pkt])
        self._kick(now, i)

    def mean_queue(self, t0: float, t1: float) -> float:
        qs = [q for t, q in self.queue_samples if t0 <= t < t1]
        return sum(qs) / len(qs)


def bbr(seed: int = 0) -> Flow:
    return Flow(cc=BbrCongestionControl(max_datagram_size=MSS, seed=seed))


def goodput(flow: Flow, rate: float, t0: float, t1: float) -> float:
    return flow.acked_between(t0, t1) / (rate * (t1 - t0))


def wan(loss: float = 0.0, seed: int = 1) -> Path:
    rate, rtt = 100 * MBIT, 0.040
    return Path(rate=rate, rtt=rtt, queue_limit=int(rate * rtt), loss=loss, seed=seed)


def test_fills_a_clean_path_and_drains_the_queue() -> None:
    path = wan()
    flow = bbr()
    sim = Sim(path, [flow])
    sim.run(4.0)
    assert goodput(flow, path.rate, 1.0, 4.0) >= 0.90
    bdp = path.rate * path.rtt
    assert sim.mean_queue(1.0, 4.0) < bdp
    assert isinstance(flow.cc, BbrCongestionControl)
    assert flow.cc.state not in (STARTUP, DRAIN)
    assert abs(flow.cc.bottleneck_bw - path.rate) / path.rate < 0.2


def test_startup_reaches_the_bottleneck_rate_within_seven_round_trips() -> None:
    # 32 packets to start with: 100 Mbit/s and 40 ms hold ~344 of them, and
    # startup doubles each round trip (10 packets needed 8-9 round trips).
    path = wan()
    flow = bbr()
    assert isinstance(flow.cc, BbrCongestionControl)
    assert flow.cc.congestion_window == 32 * MSS
    sim = Sim(path, [flow])
    sim.run(7 * path.rtt)
    assert flow.cc.bottleneck_bw >= 0.95 * path.rate


def test_random_loss_does_not_collapse_it() -> None:
    for loss in (0.005, 0.02):
        path = wan(loss=loss, seed=7)
        flow = bbr()
        Sim(path, [flow]).run(4.0)
        assert goodput(flow, path.rate, 1.0, 4.0) >= 0.80, loss


def test_reno_collapses_where_bbr_does_not() -> None:
    path = wan(loss=0.005, seed=7)
    reno = Flow(cc=RenoCongestionControl(max_datagram_size=MSS))
    Sim(path, [reno]).run(4.0)
    assert goodput(reno, path.rate, 1.0, 4.0) < 0.5


def test_backs_off_when_the_bottleneck_halves() -> None:
    path = wan()
    path.rate_changes = [(2.0, path.rate / 2)]  # before Sim() schedules it
    flow = bbr()
    sim = Sim(path, [flow])
    sim.run(5.0)
    half = path.rate / 2
    assert goodput(flow, half, 3.0, 5.0) >= 0.85
    assert isinstance(flow.cc, BbrCongestionControl)
    assert flow.cc.bottleneck_bw < 1.3 * half
    # the queue does not stay pinned at its limit
    assert sim.mean_queue(3.5, 5.0) < half * path.rtt


def test_two_flows_share_fairly() -> None:
    path = wan()
    a, b = bbr(seed=1), bbr(seed=2)
    b.start = 1.0
    sim = Sim(path, [a, b])
    sim.run(6.0)
    ga = goodput(a, path.rate, 3.0, 6.0)
    gb = goodput(b, path.rate, 3.0, 6.0)
    assert ga + gb >= 0.85
    # measured 0.66 / 0.34 here (seeds 3-6: up to 0.73 / 0.27): BBR v1
    # converges slowly, as both flows are window-limited by estimates that
    # include each other's probes; the late flow's share keeps rising
    assert max(ga, gb) / min(ga, gb) <= 3.0


def test_bursty_acks_do_not_starve_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    # 100 Mbit/s, 2 ms RTT, acks released every 8 ms: four times the RTT, as on a
    # busy host. The ack-aggregation allowance keeps sending between bursts.
    def run() -> float:
        rate = 100 * MBIT
        path = Path(rate=rate, rtt=0.002, queue_limit=int(rate * 0.01), ack_batch_s=0.008)
        flow = bbr()
        Sim(path, [flow]).run(3.0)
        return goodput(flow, rate, 1.0, 3.0)

    assert run() >= 0.90
    # the same path without the allowance: the test can tell the difference
    monkeypatch.setattr(bbr_module, "EXTRA_ACKED_MAX_S", 0.0)
    assert run() < 0.80


def watch_states(sim: Sim, cc: BbrCongestionControl, until: float) -> list[tuple[float, str, int]]:
    """(time, state, window) every 10 ms of virtual time."""
    seen = []
    t = 0.0
    while t < until:
        t += 0.01
        sim.run(t)
        seen.append((t, cc.state, cc.congestion_window))
    return seen


def test_a_path_with_jitter_keeps_its_rtprop_without_probing_it() -> None:
    # No standing queue, but acks up to 4 ms late: the exact minimum RTT was
    # one lucky packet. v1 refreshed RTprop only at or below it, so it
    # emptied the pipe every 10 s; a sample near it confirms it instead.
    rate = 10 * MBIT
    path = Path(rate=rate, rtt=0.02, queue_limit=int(rate * 0.02), ack_jitter_s=0.004)
    flow = bbr()
    assert isinstance(flow.cc, BbrCongestionControl)
    sim = Sim(path, [flow])
    states = {state for _, state, _ in watch_states(sim, flow.cc, 25.0)}
    assert PROBE_BW in states
    assert PROBE_RTT not in states
    # 20 ms + 1.16 ms to serialize a packet at 10 Mbit/s, + under 1 ms of jitter
    assert flow.cc.min_rtt is not None and flow.cc.min_rtt < 0.022
    assert goodput(flow, rate, 2.0, 25.0) >= 0.95


def test_a_longer_route_is_learnt_through_probe_rtt_at_three_quarters_of_a_bdp() -> None:
    # The route grows from 20 to 30 ms: no sample comes near the old RTprop,
    # so after its 10 s window the flow probes, holding 3/4 of a BDP in
    # flight (the link stays busy; v1 held 4 packets), and learns the new
    # RTprop: the queue emptied.
    rate = 10 * MBIT
    path = Path(rate=rate, rtt=0.02, queue_limit=int(rate * 0.03))
    flow = bbr()
    cc = flow.cc
    assert isinstance(cc, BbrCongestionControl)
    sim = Sim(path, [flow])
    assert [s for _, s, _ in watch_states(sim, cc, 3.0)][-1] == PROBE_BW
    path.rtt = 0.03
    later = watch_states(sim, cc, 16.0)
    probing = [(t, window) for t, state, window in later if state == PROBE_RTT]
    assert probing, "no PROBE_RTT after the route changed"
    assert probing[0][0] < 3.0 + 12.0
    old_bdp = rate * 0.02
    assert 0.6 * old_bdp <= min(w for _, w in probing) <= 0.8 * old_bdp
    assert cc.state == PROBE_BW
    assert cc.min_rtt is not None and 0.029 < cc.min_rtt < 0.032
    assert goodput(flow, rate, 4.0, 16.0) >= 0.90


def test_a_small_exchange_first_does_not_slow_startup() -> None:
    """A connection's first packets (the handshake, a request, a small answer)
    are few and app-limited: their delivery rate is tiny. Startup's pacing
    must not fall to STARTUP_GAIN x that (it would crawl for round trips
    before the estimate caught up): before the pipe is full, it never
    drops below the initial window per round trip."""
    path = wan()
    flow = bbr()
    cc = flow.cc
    assert isinstance(cc, BbrCongestionControl)
    t = 0.0
    for _ in range(3):  # three small round trips, 300 bytes each
        pkt = flow.send(t, 300)
        t += path.rtt
        cc.on_packet_acked(now=t, packet=pkt)
        cc.on_rtt_measurement(now=t, rtt=path.rtt)
    assert 0.0 < cc.bottleneck_bw < 10_000  # the tiny sample is in the model
    initial_rate = bbr_module.STARTUP_GAIN * 32 * MSS / path.rtt
    assert cc.pacing_rate >= initial_rate
    flow.start = flow.next_send = t
    sim = Sim(path, [flow])
    sim.run(t + 7 * path.rtt)
    assert cc.bottleneck_bw >= 0.95 * path.rate
