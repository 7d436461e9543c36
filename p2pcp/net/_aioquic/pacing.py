"""The sender's pacer: aioquic's token bucket with a larger burst, the rate
of a controller that models one (congestion/bbr.py), and, for fragmented
datagrams, the rate kept exactly. ``tuning.install_burst_pacer`` puts it in
place of aioquic's on a connection. It lives among the adapters because it
subclasses aioquic's ``QuicPacketPacer`` and reads its ``_max_datagram_size``.
"""

from __future__ import annotations

from typing import Any

from aioquic.quic.recovery import K_MICRO_SECOND, K_SECOND, QuicPacketPacer

# Packets the pacer may release at once. aioquic allows 16; more packets per
# wake-up of the driver cut its per-packet cost, while bursts of ~1000
# overflow receive buffers (docs/design-notes.md, "Pacing").
PACER_BURST_PACKETS = 64
# With a modelled pacing rate (bbr.py), the bucket holds this long at that
# rate, but at most BURST_MAX_BYTES. It must outlast the gap between two
# wake-ups of the driver, or the time beyond it is lost to the rate: asyncio
# sleeps in whole milliseconds (epoll), so a timer for the next packet fires
# 1-1.5 ms later, and a 1 ms bucket loses a share of the rate. A burst of
# 128 KiB queues ~1 ms at 1 Gbit/s, under a small switch's 256 KiB queue.
BURST_TIME_S = 0.003
BURST_MAX_BYTES = 128 * 1024


class BurstPacer(QuicPacketPacer):
    """aioquic's token-bucket pacer with a burst of PACER_BURST_PACKETS.

    With a controller that has a ``pacing_rate`` (bytes/s: bbr.py), that
    rate is used; otherwise (Reno, Cubic) aioquic's cwnd / smoothed RTT.

    aioquic lets a packet go whenever the bucket holds any credit at all
    and forgets what the packet cost beyond it: every wake-up of the driver
    sends up to one packet for free, above the rate. With a modelled rate
    and fragmented datagrams (``is_exact``) the rate is kept exactly
    instead: the bucket may go into debt by one packet's cost, and what
    packets smaller than the datagram size (acks, whole datagrams among
    fragmented ones) did not use is refunded (``refund``), because a free
    16,000-byte datagram per wake-up overflows a switch queue and loses
    fragmented datagrams. With whole datagrams the surplus stays: a Python
    sender misses its pacing times now and then (its CPU is shared), and
    the standing queue the surplus builds keeps the link busy meanwhile.
    docs/design-notes.md ("Pacing") has the measurements behind both rules.
    """

    def __init__(self, *, max_datagram_size: int, controller: Any = None) -> None:
        super().__init__(max_datagram_size=max_datagram_size)
        self.controller = controller
        self.is_modelled = False
        # set by the connection while it sends fragmented datagrams
        self.is_fragmenting = False

    @property
    def is_exact(self) -> bool:
        return self.is_modelled and self.is_fragmenting

    # aioquic annotates float but returns None when a packet may go now
    def next_send_time(self, now: float) -> float | None:  # type: ignore[override]
        if not self.is_exact or self.packet_time is None:
            return super().next_send_time(now)
        self.update_bucket(now=now)
        if self.bucket_time > 0.0:
            return None
        return now + max(-self.bucket_time, K_MICRO_SECOND)

    def update_after_send(self, now: float) -> None:
        if not self.is_exact or self.packet_time is None:
            super().update_after_send(now)
            return
        self.update_bucket(now=now)
        # at most one packet of debt: aioquic also sends (and charges) when
        # an ack is due, paced or not
        self.bucket_time = max(self.bucket_time - self.packet_time, -self.packet_time)

    def refund(self, unused_bytes: int) -> None:
        """Packets sent were ``unused_bytes`` smaller than they were charged for."""
        if self.is_exact and self.packet_time is not None and unused_bytes > 0:
            credit = unused_bytes * self.packet_time / self._max_datagram_size
            self.bucket_time = min(self.bucket_time + credit, self.bucket_max)

    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None:
        # The bucket is counted in packets, not in time at the pacing rate:
        # aioquic clamps packet_time to >= 1 us, so on a fast path (rate of
        # GB/s) a time-based bucket shrinks to a handful of packets and the
        # driver sleeps (>= 1 ms in epoll) after every few.
        modelled = getattr(self.controller, "pacing_rate", None)
        if isinstance(modelled, float) and modelled > 0.0:
            # A modelled rate is the path's: bursts of BURST_TIME_S at it
            # leave a queue no longer than that, whatever the window.
            pacing_rate = modelled
            burst_bytes = min(int(pacing_rate * BURST_TIME_S), BURST_MAX_BYTES)
            self.is_modelled = True
        else:
            pacing_rate = congestion_window / max(smoothed_rtt, K_MICRO_SECOND)
            burst_bytes = congestion_window // 4
            self.is_modelled = False
        self.packet_time = max(K_MICRO_SECOND, min(self._max_datagram_size / pacing_rate, K_SECOND))
        burst_packets = max(2, min(burst_bytes // self._max_datagram_size, PACER_BURST_PACKETS))
        self.bucket_max = burst_packets * self.packet_time
        self.bucket_time = min(self.bucket_time, self.bucket_max)
