"""A sans-IO, model-based congestion controller in the spirit of BBR v1.

``register()`` adds it to aioquic's congestion-control registry as
``REGISTRY_NAME``; ``quic/configuration.py`` calls it before it builds a configuration and
maps ``--congestion bbr`` to that name. (Importing this module changes
nothing global.)

Inputs (plain methods, explicit ``now`` in seconds, no clock, no I/O):

- ``sent(now, key, size)``: a packet left (``key`` is unique per packet).
- ``acked(now, key)``: a packet was acknowledged (the model applies a
  batch of these at the next other input: aioquic gives an RTT sample
  after every ack frame).
- ``lost(now, key)``: a packet was declared lost.
- ``discarded(key)``: a packet stops counting (key discarded); no signal.
- ``rtt_sample(now, rtt)``: an RTT measurement (the ack path feeds these too).

Outputs: ``congestion_window`` (bytes), ``pacing_rate`` (bytes/s),
``bytes_in_flight``, ``state``, ``bottleneck_bw`` (bytes/s) and ``min_rtt``.

``BbrCongestionControl`` subclasses aioquic's ``QuicCongestionControl``; its
``on_packet_*`` methods only translate to the plain methods above (packets
are keyed by packet number and epoch, since aioquic numbers each packet
space from zero).

The model: the path is a pipe of bottleneck bandwidth ``BtlBw`` and
round-trip propagation delay ``RTprop``. ``BtlBw`` is the maximum of the
delivery-rate samples over the last ``BW_WINDOW_ROUNDS`` round trips;
``RTprop`` is the minimum RTT over the last ``MIN_RTT_WINDOW_S``. A delivery
rate sample is (bytes delivered between a packet's send and its ack) /
max(send interval, ack interval), from the (delivered, delivered time, first
sent time) snapshot taken when the packet was sent
(draft-cheng-iccrg-delivery-rate-estimation). The sender paces at
``pacing_gain x BtlBw`` and caps inflight at ``cwnd_gain x BtlBw x RTprop``.

States:

- STARTUP: gains ``STARTUP_GAIN`` until ``BtlBw`` has not grown by
  ``FULL_BW_GROWTH`` for ``FULL_BW_ROUNDS`` rounds (the pipe is full).
- DRAIN: pacing gain ``1 / STARTUP_GAIN`` until inflight <= one BDP, to
  empty the queue STARTUP built.
- PROBE_BW: pacing gain cycles through ``PROBE_BW_GAINS``, one phase per
  ``RTprop``: probe for more (1.25), drain what the probe queued (0.75), then
  cruise (1.0 x 6). The cycle starts at a random cruise phase so that flows
  sharing a path do not probe in lockstep.
- PROBE_RTT: when ``RTprop`` was not refreshed for ``MIN_RTT_WINDOW_S``, the
  window drops to ``PROBE_RTT_CWND_GAIN`` x BDP (at least
  ``MIN_CWND_PACKETS``) for ``PROBE_RTT_DURATION_S`` (and at least one round)
  so the queue empties and the true RTprop is seen. Three quarters of a
  BDP empty the queue as well as v1's 4 packets (or v2's half a BDP) did
  while the link stays 75% busy instead of idle: on a 40 ms path v1's
  probe cost ~250 ms of link time every 10 s (~2%), v2's ~100 ms. The
  margin covers a bandwidth estimate up to a third too high, several times
  what jitter and bunched acks add to it. And it is skipped
  when the window already saw the queue empty: a sample within
  ``RTPROP_NEAR_FRACTION`` (or ``RTPROP_NEAR_S``) of ``RTprop`` confirms it
  for another window. The PROBE_BW drain phase empties the queue every
  cycle, but v1 asks for a sample at or below a minimum that was often one
  lucky packet, so it probed every 10 s even on a path with jitter and no
  standing queue.

Loss: random loss does not cut the window (unlike Reno/Cubic, whose rate
falls as 1/sqrt(loss)). Only a round whose loss rate exceeds
``LOSS_THRESHOLD`` is read as congestion, and then only the bandwidth
model reacts: the max filter forgets older rounds and restarts from the
highest delivery rate measured in that lossy round (stale high estimates,
e.g. from before the bottleneck shrank or a flow joined, would otherwise
keep overfilling the queue for ``BW_WINDOW_ROUNDS`` rounds). Rounds paced
below 1.0 are exempt: their samples are low on purpose. Lost bytes leave
inflight; the window itself is never cut on loss.

Ack aggregation: acks often arrive in bursts (a receiver that reads a batch
of datagrams and acks them at once, Wi-Fi frame aggregation, a busy Python
peer). Between bursts the sender must keep sending, so the window gets an
allowance: per "ack epoch" (time since acks last fell behind the estimated
bandwidth), the bytes acked beyond ``BtlBw x epoch duration``; the window
adds the largest such excess of the last ``EXTRA_ACKED_ROUNDS`` rounds,
capped at ``EXTRA_ACKED_MAX_S`` of bandwidth (as Linux BBR does). Without it,
a path whose acks come in 1 ms bursts while RTprop is 0.3 ms would be held
to a window of a few packets.

Simplifications (documented, deliberate): no app-limited marking (a sender
that runs dry lowers the estimate for up to ``BW_WINDOW_ROUNDS`` rounds),
and every acked packet yields a rate sample.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable
from typing import Any

from aioquic.quic.congestion.base import QuicCongestionControl, register_congestion_control
from aioquic.quic.packet_builder import QuicSentPacket
from aioquic.tls import Epoch

# 2/ln(2): the smallest gain that doubles the sending rate every round, like
# slow start, while the window keeps up (BBR paper).
STARTUP_GAIN = 2.885
# The inverse: drains in about one round the queue STARTUP built.
DRAIN_GAIN = 1 / STARTUP_GAIN
# Inflight cap in BDPs outside STARTUP: room for delayed and stretched acks
# without becoming window-limited (BBR v1).
CWND_GAIN = 2.0
# PROBE_BW pacing gains, one phase per RTprop: probe, drain the probe, cruise.
PROBE_BW_GAINS = (1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
# The drain phase lasts until inflight is down to one BDP, for at most this
# many RTprops. v1 left after one RTprop, so a queue built by an estimate a
# few % high (jitter or bunched acks inflate delivery-rate samples, and the
# max filter keeps the highest) was never drained: the flow sat at its
# window with a standing queue of a BDP or more, and overflowed shallow
# buffers. Four RTprops at 0.75 drain a whole BDP of queue.
PROBE_BW_DRAIN_MAX_RTPROPS = 4
# The pipe is full once BtlBw grew less than 25% in 3 consecutive rounds:
# a doubling rate would have grown >= 25% each round unless the path is full.
FULL_BW_GROWTH = 1.25
FULL_BW_ROUNDS = 3
# Max-filter window: 10 rounds covers one whole PROBE_BW cycle (8 phases) and
# some slack, so a probe's sample outlives the drain and cruise phases.
BW_WINDOW_ROUNDS = 10
# Min-RTT window: 10 s (BBR v1); routes and queues change slower than that.
MIN_RTT_WINDOW_S = 10.0
# PROBE_RTT: 3/4 of a BDP in flight empties the queue (module doc); 200 ms is
# long enough to see an empty queue, and at 3/4 of the rate it costs ~0.5%
# of 10 s.
PROBE_RTT_DURATION_S = 0.2
PROBE_RTT_CWND_GAIN = 0.75
# A sample this close to RTprop shows the queue was empty (jitter and a
# host's scheduling make the exact minimum a lucky packet): 5% or 0.5 ms,
# a standing queue of at most 1/20 BDP or 62 KB at 1 Gbit/s.
RTPROP_NEAR_FRACTION = 0.05
RTPROP_NEAR_S = 0.0005
# Floor of the window: 4 packets keep acks flowing (BBR v1's PROBE_RTT).
MIN_CWND_PACKETS = 4
# Extra packets on top of cwnd_gain x BDP, for ack aggregation and pacing
# quantization (BBR v1 adds 3 x the send quantum).
CWND_EXTRA_PACKETS = 3
# Ack-aggregation allowance: the max excess over the last 10 rounds, at
# most 100 ms worth of bandwidth (Linux BBR's bounds).
EXTRA_ACKED_ROUNDS = 10
EXTRA_ACKED_MAX_S = 0.1
# Initial window: 32 packets, as Google's QUIC (Chromium) has sent with
# BBR, where RFC 9002 suggests 10 for unpaced senders. The window is paced
# at STARTUP_GAIN x window / handshake RTT, so it leaves as a stream over a
# third of a round trip, not as a burst. Startup doubles the window each
# round trip: 32 packets reach a 100 Mbit/s, 40 ms path's BDP (~340
# packets) in 3-4 round trips instead of 5, and save ~60 ms of link time
# per connection there (simulated; the whole transfer of a few MB takes
# only a few round trips, so small files gain the most).
INITIAL_CWND_PACKETS = 32
# A round losing more than 2% of its packets is read as congestion: random
# loss on a bad link reaches ~2%, and a queue overflow caused
# by a 1.25 probe or a stale estimate loses far more than that (BBR v2 uses
# the same 2%).
LOSS_THRESHOLD = 0.02
# Do not judge a round's loss rate on fewer packets than this (one loss in a
# 20-packet round is 5% and says nothing).
LOSS_MIN_PACKETS = 50

STARTUP = "startup"
DRAIN = "drain"
PROBE_BW = "probe_bw"
PROBE_RTT = "probe_rtt"


class _RoundMax:
    """The max of per-round samples over the last ``rounds`` rounds, kept current.

    Read on every ack, so the max is cached and recomputed only when a
    round leaves the window (once per round, over at most ``rounds`` values).
    """

    __slots__ = ("_rounds", "_window", "value")

    def __init__(self, rounds: int) -> None:
        self._rounds = rounds
        self._window: deque[tuple[int, float]] = deque()
        self.value = 0.0

    def update(self, round_: int, sample: float) -> None:
        window = self._window
        if window and window[-1][0] == round_:
            if sample > window[-1][1]:
                window[-1] = (round_, sample)
                self.value = max(self.value, sample)
            return
        window.append((round_, sample))
        if round_ - window[0][0] >= self._rounds:
            while round_ - window[0][0] >= self._rounds:
                window.popleft()
            self.value = max(v for _, v in window)
        elif sample > self.value:
            self.value = sample

    def reset(self, round_: int, sample: float) -> None:
        self._window.clear()
        self._window.append((round_, sample))
        self.value = sample

    def clear(self) -> None:
        self._window.clear()
        self.value = 0.0


class BbrCongestionControl(QuicCongestionControl):
    """BBR-style controller; aioquic-shaped entry points delegate to plain ones."""

    def __init__(self, *, max_datagram_size: int, seed: int | None = None) -> None:
        super().__init__(max_datagram_size=max_datagram_size)
        self._mds = max_datagram_size
        self._rng = random.Random(seed)  # picks a cycle phase; not security
        self.congestion_window = INITIAL_CWND_PACKETS * max_datagram_size
        self.bytes_in_flight = 0
        self.state = STARTUP
        self.pacing_gain = STARTUP_GAIN
        self.cwnd_gain = STARTUP_GAIN
        # delivery-rate estimation
        # key -> (size, sent time, delivered, delivered time, first sent time,
        # pacing gain): a tuple, as this is written and read once per packet
        self._sent: dict[int, tuple[int, float, int, float, float, float]] = {}
        self._delivered = 0
        self._delivered_time = 0.0
        self._first_sent_time = 0.0
        # rounds
        self._round = 0
        self._next_round_delivered = 0
        # filters
        self._bw = _RoundMax(BW_WINDOW_ROUNDS)
        self.min_rtt: float | None = None
        self._min_rtt_stamp = 0.0
        # startup exit
        self._full_bw = 0.0
        self._full_bw_count = 0
        self._filled_pipe = False
        # probe_bw
        self._cycle_index = 0
        self._cycle_stamp = 0.0
        # probe_rtt
        self._probe_rtt_done: float | None = None
        self._probe_rtt_round_done = False
        self._probe_rtt_round = 0
        self._probe_rtt_window = MIN_CWND_PACKETS * max_datagram_size
        self._prior_cwnd = 0
        # the ack batch not yet applied to the model (see acked)
        self._batch_newest: tuple[int, float, int, float, float, float] | None = None
        self._batch_acked = 0
        self._batch_now = 0.0
        # ack aggregation
        self._ack_epoch_start = 0.0
        self._ack_epoch_acked = 0
        self._extra_acked = _RoundMax(EXTRA_ACKED_ROUNDS)
        # loss accounting of the current round
        self._round_lost = 0
        self._round_acked = 0
        self._round_min_gain = STARTUP_GAIN
        self._round_max_sample = 0.0

    # -- outputs --------------------------------------------------------------

    @property
    def bottleneck_bw(self) -> float:
        """Max delivery rate over the last BW_WINDOW_ROUNDS rounds (bytes/s)."""
        return self._bw.value

    @property
    def pacing_rate(self) -> float:
        """Bytes/s the pacer should release.

        Until the pipe is full, at least STARTUP_GAIN x the initial window
        per round trip: a connection's first samples (handshake, request,
        a small answer) are app-limited and tiny, and pacing at a gain over
        them crawled for a few round trips (BBR's draft likewise never
        lowers the pacing rate before the pipe is full).
        """
        rate = self.pacing_gain * self._bw.value
        if not self._filled_pipe:
            rtt = self.min_rtt if self.min_rtt else 0.1  # 100 ms: a guess until sampled
            rate = max(rate, STARTUP_GAIN * INITIAL_CWND_PACKETS * self._mds / rtt)
        return rate

    def _bdp(self, gain: float) -> int:
        bw = self._bw.value
        if self.min_rtt is None or bw <= 0.0:
            return INITIAL_CWND_PACKETS * self._mds
        return int(gain * bw * self.min_rtt)

    def set_datagram_size(self, size: int) -> None:
        """The connection's datagram size changed (path MTU probing).

        The model is in bytes, so only the packet-counted floors move; a
        window still at its initial packet count keeps that count.
        """
        if self.congestion_window == INITIAL_CWND_PACKETS * self._mds:
            self.congestion_window = INITIAL_CWND_PACKETS * size
        self._mds = size

    # -- plain inputs ---------------------------------------------------------

    def sent(self, now: float, key: int, size: int) -> None:
        if self._batch_newest is not None:
            self._flush_acks()
        if self.bytes_in_flight == 0:
            self._first_sent_time = now
            self._delivered_time = now
        self._sent[key] = (
            size,
            now,
            self._delivered,
            self._delivered_time,
            self._first_sent_time,
            self.pacing_gain,
        )
        self.bytes_in_flight += size

    def discarded(self, key: int) -> None:
        p = self._sent.pop(key, None)
        if p is not None:
            self.bytes_in_flight -= p[0]

    def lost(self, now: float, key: int) -> None:
        if self._batch_newest is not None:
            self._flush_acks()
        p = self._sent.pop(key, None)
        if p is None:
            return
        self.bytes_in_flight -= p[0]
        self._round_lost += p[0]
        self._round_min_gain = min(self._round_min_gain, p[5])

    def rtt_sample(self, now: float, rtt: float) -> None:
        self._flush_acks()
        self._update_min_rtt(now, rtt)

    def acked(self, now: float, key: int) -> None:
        # Only bookkeeping per packet: the model moves once per ack batch
        # (``_flush_acks``: at the RTT sample that follows every ack frame
        # in aioquic, or at the next input), from the batch's newest packet,
        # which carries the best rate and RTT samples anyway.
        p = self._sent.pop(key, None)
        if p is None:
            return
        if self._batch_newest is not None and now != self._batch_now:
            self._flush_acks()
        size = p[0]
        self.bytes_in_flight -= size
        self._delivered += size
        self._delivered_time = now
        self._round_acked += size
        self._round_min_gain = min(self._round_min_gain, p[5])
        self._batch_acked += size
        self._batch_now = now
        newest = self._batch_newest
        if newest is None or p[1] >= newest[1]:
            self._batch_newest = p

    def _flush_acks(self) -> None:
        p = self._batch_newest
        if p is None:
            return
        self._batch_newest = None
        acked, now = self._batch_acked, self._batch_now
        self._batch_acked = 0
        _, sent_time, p_delivered, p_delivered_time, p_first_sent_time, _ = p
        self._update_min_rtt(now, now - sent_time)

        # round trip counting: a round ends when a packet sent after the
        # previous round's end is acknowledged
        round_start = False
        if p_delivered >= self._next_round_delivered:
            self._next_round_delivered = self._delivered
            self._round += 1
            round_start = True
            self._end_loss_round()

        # delivery-rate sample
        self._first_sent_time = max(self._first_sent_time, sent_time)
        interval = max(sent_time - p_first_sent_time, now - p_delivered_time)
        if interval > 0.0:
            sample = (self._delivered - p_delivered) / interval
            self._round_max_sample = max(self._round_max_sample, sample)
            self._bw.update(self._round, sample)

        self._update_ack_aggregation(now, acked)
        if round_start and self.state == STARTUP:
            self._check_full_pipe()
        self._update_state(now)
        self._update_cwnd(acked)

    def _update_min_rtt(self, now: float, rtt: float) -> None:
        min_rtt = self.min_rtt
        if min_rtt is None or rtt <= min_rtt:
            self.min_rtt = rtt
            self._min_rtt_stamp = now
        elif rtt <= min_rtt * (1.0 + RTPROP_NEAR_FRACTION) + RTPROP_NEAR_S:
            # the queue was empty: RTprop still holds
            self._min_rtt_stamp = now
        elif now - self._min_rtt_stamp > MIN_RTT_WINDOW_S and self.state != PROBE_RTT:
            # stale: empty the queue (to half the BDP the old RTprop gives:
            # the current sample may include a queue), then take the lowest
            # sample seen meanwhile
            self._probe_rtt_window = max(
                self._bdp(PROBE_RTT_CWND_GAIN), MIN_CWND_PACKETS * self._mds
            )
            self.min_rtt = rtt
            self._enter_probe_rtt(now)

    # -- model ----------------------------------------------------------------

    @property
    def extra_acked(self) -> int:
        """The window's ack-aggregation allowance (bytes; see the module doc)."""
        return int(min(self._extra_acked.value, self._bw.value * EXTRA_ACKED_MAX_S))

    def _update_ack_aggregation(self, now: float, acked: int) -> None:
        expected = self._bw.value * (now - self._ack_epoch_start)
        if self._ack_epoch_acked <= expected:
            # acks kept pace with the model: a new epoch starts here
            self._ack_epoch_start = now
            self._ack_epoch_acked = 0
            expected = 0.0
        self._ack_epoch_acked += acked
        excess = min(self._ack_epoch_acked - expected, float(self.congestion_window))
        self._extra_acked.update(self._round, excess)

    def _end_loss_round(self) -> None:
        lost, acked = self._round_lost, self._round_acked
        packets = (lost + acked) // self._mds
        if (
            packets >= LOSS_MIN_PACKETS
            and lost > LOSS_THRESHOLD * (lost + acked)
            and self._round_min_gain >= 1.0
            and self._round_max_sample > 0.0
        ):
            # congestion: forget older (higher) estimates
            self._bw.reset(self._round, self._round_max_sample)
            self._full_bw_count = FULL_BW_ROUNDS  # leave STARTUP if still in it
        self._round_lost = 0
        self._round_acked = 0
        self._round_min_gain = self.pacing_gain
        self._round_max_sample = 0.0

    def _check_full_pipe(self) -> None:
        bw = self.bottleneck_bw
        if bw >= self._full_bw * FULL_BW_GROWTH:
            self._full_bw = bw
            self._full_bw_count = 0
            return
        self._full_bw_count += 1
        if self._full_bw_count >= FULL_BW_ROUNDS:
            self._filled_pipe = True

    def _update_state(self, now: float) -> None:
        if self.state == STARTUP and (self._filled_pipe or self._full_bw_count >= FULL_BW_ROUNDS):
            self._filled_pipe = True
            self.state = DRAIN
            self.pacing_gain = DRAIN_GAIN
            self.cwnd_gain = STARTUP_GAIN
        if self.state == DRAIN and self.bytes_in_flight <= self._bdp(1.0):
            self._enter_probe_bw(now)
        if self.state == PROBE_BW:
            self._advance_cycle(now)
        if self.state == PROBE_RTT:
            self._handle_probe_rtt(now)

    def _enter_probe_bw(self, now: float) -> None:
        self.state = PROBE_BW
        self.cwnd_gain = CWND_GAIN
        # any phase but the drain one (index 1)
        self._cycle_index = self._rng.choice([0, 2, 3, 4, 5, 6, 7])
        self._cycle_stamp = now
        self.pacing_gain = PROBE_BW_GAINS[self._cycle_index]

    def _advance_cycle(self, now: float) -> None:
        rtprop = self.min_rtt or 0.0
        elapsed = now - self._cycle_stamp > rtprop
        gain = self.pacing_gain
        if gain > 1.0:
            # stay until the probe has actually put 1.25 BDP in flight
            advance = elapsed and self.bytes_in_flight >= self._bdp(gain)
        elif gain < 1.0:
            # stay until the queue is gone (BBR v2), but not so long that
            # the estimate decays (a longer route: inflight never gets there)
            advance = (
                self.bytes_in_flight <= self._bdp(1.0)
                or now - self._cycle_stamp > PROBE_BW_DRAIN_MAX_RTPROPS * rtprop
            )
        else:
            advance = elapsed
        if advance:
            self._cycle_index = (self._cycle_index + 1) % len(PROBE_BW_GAINS)
            self._cycle_stamp = now
            self.pacing_gain = PROBE_BW_GAINS[self._cycle_index]

    def _enter_probe_rtt(self, now: float) -> None:
        self.state = PROBE_RTT
        self.pacing_gain = 1.0
        self._prior_cwnd = self.congestion_window
        self._probe_rtt_done = None
        self._probe_rtt_round_done = False

    def _handle_probe_rtt(self, now: float) -> None:
        if self._probe_rtt_done is None:
            if self.bytes_in_flight <= self._probe_rtt_window:
                self._probe_rtt_done = now + PROBE_RTT_DURATION_S
                self._probe_rtt_round = self._round
            return
        if self._round > self._probe_rtt_round:
            self._probe_rtt_round_done = True
        if self._probe_rtt_round_done and now >= self._probe_rtt_done:
            self._min_rtt_stamp = now
            self.congestion_window = max(self.congestion_window, self._prior_cwnd)
            if self._filled_pipe:
                self._enter_probe_bw(now)
            else:
                self.state = STARTUP
                self.pacing_gain = STARTUP_GAIN
                self.cwnd_gain = STARTUP_GAIN

    def _update_cwnd(self, acked_bytes: int) -> None:
        floor = MIN_CWND_PACKETS * self._mds
        if self.state == PROBE_RTT:
            self.congestion_window = self._probe_rtt_window
            return
        target = self._bdp(self.cwnd_gain) + CWND_EXTRA_PACKETS * self._mds
        if self._filled_pipe:
            target += self.extra_acked
        if self._filled_pipe:
            self.congestion_window = min(self.congestion_window + acked_bytes, target)
        elif self.congestion_window < target:
            self.congestion_window += acked_bytes
        self.congestion_window = max(self.congestion_window, floor)

    # -- aioquic's interface --------------------------------------------------

    @staticmethod
    def _key(packet: QuicSentPacket) -> int:
        # aioquic numbers each packet space from zero; 1-RTT packets (nearly
        # all of them) keep their number, the few others get negative keys
        if packet.epoch is Epoch.ONE_RTT:
            return packet.packet_number
        return -1 - (packet.packet_number * 4 + int(packet.epoch.value))

    def on_packet_sent(self, *, packet: QuicSentPacket) -> None:
        self.sent(packet.sent_time or 0.0, self._key(packet), packet.sent_bytes)

    def on_packet_acked(self, *, now: float, packet: QuicSentPacket) -> None:
        self.acked(now, self._key(packet))

    def on_packets_expired(self, *, packets: Iterable[QuicSentPacket]) -> None:
        for packet in packets:
            self.discarded(self._key(packet))

    def on_packets_lost(self, *, now: float, packets: Iterable[QuicSentPacket]) -> None:
        for packet in packets:
            self.lost(now, self._key(packet))

    def on_persistent_congestion(self) -> None:
        # the path may be dead or rerouted: relearn it from scratch
        self._bw.clear()
        self.min_rtt = None
        self.congestion_window = MIN_CWND_PACKETS * self._mds

    def on_rtt_measurement(self, *, now: float, rtt: float) -> None:
        self.rtt_sample(now, rtt)

    def get_log_data(self) -> dict[str, Any]:
        data = super().get_log_data()
        data["bbr_state"] = self.state
        data["bbr_bw"] = int(self.bottleneck_bw)
        data["bbr_pacing_rate"] = int(self.pacing_rate)
        return data


# aioquic's registry is global; a name of our own cannot shadow a future
# aioquic "bbr".
REGISTRY_NAME = "p2pcp-bbr"


def register() -> None:
    """Make ``REGISTRY_NAME`` known to aioquic (idempotent)."""
    register_congestion_control(REGISTRY_NAME, BbrCongestionControl)
