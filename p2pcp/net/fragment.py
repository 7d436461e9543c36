"""When fragmented datagrams may carry data: a sans-IO guard.

Why: the per-packet cost of Python QUIC caps a 1500-byte path at ~60 MB/s
with whole datagrams, while 16 KB datagrams fragmented by the kernel fill a
1 Gbit/s link (FACTS.md). Under loss they collapse instead: one lost
fragment loses the whole datagram (11 fragments: ~11x the loss), and every
incomplete datagram pins the receiver's reassembly memory for 30 s, so after
a few hundred of them the receiver's kernel drops every fragment. So the
sender fragments only while fragmented datagrams are lost no more often
than whole ones, measured side by side on the same path at the same time.

How: while fragmenting, one transmit in ``WHOLE_EVERY`` builds whole
datagrams (``next_size``), so both kinds cross the path together. Every
packet the sender's loss detection resolves (acked or lost) is counted by
kind (``packet_resolved``). The guard falls back to whole datagrams when

- fragmented loss exceeds ``TOLERANCE`` x whole loss (both estimated with
  one pseudo-loss and two pseudo-packets added, so a handful of samples
  cannot decide) and at least ``MIN_LOSSES`` fragmented datagrams were lost;
  or
- fragmented loss passes ``COLLAPSE_LOSS`` (the receiver's reassembly is
  failing), whatever the whole loss.

After a fall-back it tries again after ``RETRY_S`` (doubling each time, up to
``MAX_RETRY_S``): by then the receiver's stale fragments have expired
(Linux ``ipfrag_time``: 30 s), and the path may have changed. Counts halve
once ``DECAY_PACKETS`` fragmented packets were seen, so old history fades.

Inputs: ``next_size(now)`` (once per transmit), ``packet_resolved(size,
is_lost, now)``. Outputs: ``next_size``'s answer, ``is_fragmenting``,
``fallbacks``. No I/O, no clock.
"""

from __future__ import annotations

# One transmit in this many builds whole datagrams while fragmenting: enough
# whole samples to compare within a second or two at any rate worth
# fragmenting for, at a cost of ~1/8 of transmits at the slower size.
WHOLE_EVERY = 8
# Fragmented loss may be this many times the whole loss (noise; the real
# damage of fragmenting a lossy path is ~number of fragments x).
TOLERANCE = 2.0
MIN_LOSSES = 4
# Reassembly collapse: a quarter of fragmented datagrams lost.
COLLAPSE_LOSS = 0.25
COLLAPSE_MIN_LOSSES = 8
RETRY_S = 30.0
MAX_RETRY_S = 480.0
DECAY_PACKETS = 20000


class FragmentGuard:
    """Chooses between a whole and a fragmented datagram size (see module doc)."""

    def __init__(self, *, whole: int, fragmented: int) -> None:
        if fragmented <= whole:
            raise ValueError("the fragmented size must exceed the whole size")
        self.whole = whole
        self.fragmented = fragmented
        self.is_fragmenting = True
        self.fallbacks = 0
        self._retry_at = 0.0
        self._transmits = 0
        self._reset_counts()

    def _reset_counts(self) -> None:
        self._frag_sent = 0.0
        self._frag_lost = 0.0
        self._whole_sent = 0.0
        self._whole_lost = 0.0

    def next_size(self, now: float) -> int:
        """The datagram size for the transmit about to happen."""
        if not self.is_fragmenting:
            if now < self._retry_at:
                return self.whole
            self.is_fragmenting = True
            self._reset_counts()
        self._transmits += 1
        if self._transmits % WHOLE_EVERY == 0:
            return self.whole
        return self.fragmented

    def packet_resolved(self, size: int, is_lost: bool, now: float) -> None:
        """Loss detection settled one ack-eliciting packet of ``size`` bytes."""
        if size > self.whole:
            self._frag_sent += 1
            self._frag_lost += is_lost
            if self.is_fragmenting and is_lost:
                self._judge(now)
            if self._frag_sent >= DECAY_PACKETS:
                self._frag_sent /= 2
                self._frag_lost /= 2
                self._whole_sent /= 2
                self._whole_lost /= 2
        else:
            self._whole_sent += 1
            self._whole_lost += is_lost

    @property
    def fragmented_loss(self) -> float:
        return (self._frag_lost + 1) / (self._frag_sent + 2)

    @property
    def whole_loss(self) -> float:
        return (self._whole_lost + 1) / (self._whole_sent + 2)

    def _judge(self, now: float) -> None:
        lost = self._frag_lost
        frag_loss = self.fragmented_loss
        collapsed = lost >= COLLAPSE_MIN_LOSSES and frag_loss > COLLAPSE_LOSS
        worse = lost >= MIN_LOSSES and frag_loss > TOLERANCE * self.whole_loss
        if collapsed or worse:
            self.is_fragmenting = False
            self._retry_at = now + min(RETRY_S * 2**self.fallbacks, MAX_RETRY_S)
            self.fallbacks += 1
