"""When fragmented datagrams may carry data: a sans-IO guard.

Why: the per-packet cost of Python QUIC caps a 1500-byte path at ~60 MB/s
with whole datagrams, while 16 KB datagrams fragmented by the kernel fill a
1 Gbit/s link (measured over a 1500-MTU veth with a 1 Gbit/s rate cap:
42-57 MB/s whole at 1452 bytes, 110-115 MB/s fragmented). Under loss they collapse instead: one lost
fragment loses the whole datagram (11 fragments: ~11x the loss), and every
incomplete datagram pins the receiver's reassembly memory for 30 s, so after
a few hundred of them the receiver's kernel drops every fragment. So the
sender fragments only while fragmented datagrams are lost no more often
than whole ones, measured side by side on the same path at the same time.

Probation first: a new guard sends whole datagrams and starts fragmenting
only once a window of ``PROBATION_PACKETS`` of them lost at most
``PROBATION_MAX_LOSS``. A path that loses whole datagrams at random loses
fragmented ones ~k times as often, so trying fragments there costs a second
of heavy loss that the congestion controller reads as congestion. The first
windows may hold a start-up overshoot, so up to ``PROBATION_WINDOWS`` run
back to back; after that, and after any fall-back, a window that fails puts
the next attempt off by ``RETRY_S``. A fast path that loses a little
(1 Gbit/s, 0.1%) passes now and then and fragments until the reassembly
budget below ends it: those attempts gain more than they cost, so the
probation itself is not budgeted. Loss that comes in bursts can leave a
window clean by chance; the rules below then end the attempt.

How: while fragmenting, one transmit in ``WHOLE_EVERY`` builds whole
datagrams (``next_size``), so both kinds cross the path together. Every
packet the sender's loss detection resolves (acked or lost) is counted by
kind (``packet_resolved``). Loss is compared per IP fragment: a datagram of
k fragments crosses the path only if all k do, so where the path loses a
fraction p of frames it loses ~k x p of such datagrams, and that is the
path's loss, not fragmentation's. The guard falls back to whole datagrams
when

- the per-fragment loss of fragmented datagrams exceeds ``TOLERANCE`` x the
  loss of whole ones (both estimated with one pseudo-loss and two
  pseudo-packets added, so a handful of samples cannot decide) and at least
  ``MIN_LOSSES`` fragmented datagrams were lost: fragments are dropped
  somewhere whole datagrams are not (a middlebox, a failing reassembly);
- more fragmented datagrams were lost in the last ``REASSEMBLY_WINDOW_S``
  than ``REASSEMBLY_BUDGET_BYTES`` of the receiver's reassembly memory can
  hold: each such loss leaves the fragments that did arrive pinned there
  for 30 s (Linux ``ipfrag_time``), and past its limit (4 MiB by default)
  the receiver's kernel drops every fragment. This is what ends
  fragmentation on a path with random loss at any real rate;
- fragmented datagrams are lost more often than ``MAX_FRAGMENTED_LOSS`` and
  more than ``TOLERANCE`` x as often as whole ones (the congestion
  controller would read the path's random loss, multiplied by the fragment
  count, as congestion; a queue overflowing, as at the end of a start-up,
  loses both kinds alike and does not count);
- fragmented loss passes ``COLLAPSE_LOSS`` and whole loss (the receiver's
  reassembly is failing, or the path is far too lossy for fragments; a
  burst that loses as many whole datagrams is congestion, not that).

After a fall-back it tries again after ``RETRY_S`` (doubling each time, up to
``MAX_RETRY_S``): by then the receiver's stale fragments have expired
(Linux ``ipfrag_time``: 30 s), and the path may have changed -- but only if
the whole datagrams sent meanwhile pass the probation rule (at least
``PROBATION_PACKETS`` of them, lost at most ``PROBATION_MAX_LOSS``);
otherwise the attempt is put off by another ``RETRY_S``. Counts halve
once ``DECAY_PACKETS`` fragmented packets were seen, so old history fades.

Inputs: ``next_size(now)`` (once per transmit), ``packet_resolved(size,
is_lost, now)``. Outputs: ``next_size``'s answer, ``is_fragmenting``,
``fallbacks``, ``failed_windows`` (probation windows that failed). No I/O,
no clock.
"""

from __future__ import annotations

import math
from collections import deque

# One transmit in this many builds whole datagrams while fragmenting: enough
# whole samples to compare within a second or two at any rate worth
# fragmenting for, at a cost of ~1/8 of transmits at the slower size.
WHOLE_EVERY = 8
# Fragmented loss may be this many times the whole loss (noise; the real
# damage of fragmenting a lossy path is ~number of fragments x).
TOLERANCE = 2.0
MIN_LOSSES = 4
# Beyond this loss per fragmented datagram, fragmenting makes the path look
# congested to the controller (bbr.py reads a round losing 2% as congestion).
MAX_FRAGMENTED_LOSS = 0.02
# A tenth of fragmented datagrams lost: the receiver's reassembly is failing,
# or the path is far too lossy for fragments (2% frame loss loses 20% of
# 11-fragment datagrams), if whole datagrams lose less.
COLLAPSE_LOSS = 0.10
COLLAPSE_MIN_LOSSES = 8
# Lost fragmented datagrams may pin at most this much of the receiver's
# reassembly memory (half of Linux's default 4 MiB ipfrag_high_thresh),
# over Linux's 30 s ipfrag_time. A lost datagram pins what of it arrived:
# ~0.9x its size with 1.5x kernel overhead after one random frame loss,
# ~0.55x measured after queue overflows (which drop runs of frames); the
# estimate takes 1x, and a collapse is still caught by COLLAPSE_LOSS.
REASSEMBLY_BUDGET_BYTES = 2 * 1024 * 1024
REASSEMBLY_WINDOW_S = 30.0
REASSEMBLY_OVERHEAD = 1.0
RETRY_S = 30.0
MAX_RETRY_S = 480.0
# Probation: fragmenting starts (or restarts) only after this many whole
# datagrams lost at most this share of them. 3,000 packets take 0.05-0.5 s
# at the rates worth fragmenting for; 0.1% lets a clean path through (at most
# 3 losses: a queue overflow at the end of a start-up can cost that many)
# while a path losing 0.5% at random passes a window once in ~5,000 tries.
PROBATION_PACKETS = 3000
PROBATION_MAX_LOSS = 0.001
# Failed windows run back to back at first (the first ones may hold the
# start-up overshoot), then one attempt per RETRY_S.
PROBATION_WINDOWS = 4
DECAY_PACKETS = 20000


class FragmentGuard:
    """Chooses between a whole and a fragmented datagram size (see module doc)."""

    def __init__(self, *, whole: int, fragmented: int) -> None:
        if fragmented <= whole:
            raise ValueError("the fragmented size must exceed the whole size")
        self.whole = whole
        self.fragmented = fragmented
        # IP fragments per fragmented datagram (each carries about a whole
        # datagram's bytes)
        self.fragments = math.ceil(fragmented / whole)
        self._max_recent_losses = max(
            1, int(REASSEMBLY_BUDGET_BYTES / (REASSEMBLY_OVERHEAD * fragmented))
        )
        self._recent_losses: deque[float] = deque()
        # (fragmented loss, whole loss) at the last fall-back
        self.verdict: tuple[float, float] | None = None
        self.is_fragmenting = False  # on probation (module doc)
        self.fallbacks = 0
        self.failed_windows = 0
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
            if now < self._retry_at or self._whole_sent < PROBATION_PACKETS:
                return self.whole
            if self._whole_lost > PROBATION_MAX_LOSS * self._whole_sent:
                # whole datagrams alone lose this much: fragments would lose
                # ~their count times more; look again (later, unless early on)
                self.failed_windows += 1
                if self.fallbacks or self.failed_windows >= PROBATION_WINDOWS:
                    self._retry_at = now + RETRY_S
                self._reset_counts()
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
                self._recent_losses.append(now)
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
        """Loss per fragmented datagram."""
        return (self._frag_lost + 1) / (self._frag_sent + 2)

    @property
    def fragment_loss(self) -> float:
        """Loss per IP fragment of fragmented datagrams (see the module doc)."""
        return 1.0 - float((1.0 - self.fragmented_loss) ** (1.0 / self.fragments))

    @property
    def whole_loss(self) -> float:
        return (self._whole_lost + 1) / (self._whole_sent + 2)

    def _judge(self, now: float) -> None:
        recent = self._recent_losses
        while recent and recent[0] < now - REASSEMBLY_WINDOW_S:
            recent.popleft()
        lost = self._frag_lost
        collapsed = (
            lost >= COLLAPSE_MIN_LOSSES
            and self.fragmented_loss > COLLAPSE_LOSS
            and self.fragmented_loss > self.whole_loss
        )
        worse = lost >= MIN_LOSSES and self.fragment_loss > TOLERANCE * self.whole_loss
        over_budget = len(recent) > self._max_recent_losses
        too_lossy = (
            lost >= MIN_LOSSES
            and self.fragmented_loss > MAX_FRAGMENTED_LOSS
            and self.fragmented_loss > TOLERANCE * self.whole_loss
        )
        if collapsed or worse or over_budget or too_lossy:
            # what the decision saw, for the log (the counts restart now)
            self.verdict = (self.fragmented_loss, self.whole_loss)
            recent.clear()
            self._reset_counts()
            self.is_fragmenting = False
            self._retry_at = now + min(RETRY_S * 2**self.fallbacks, MAX_RETRY_S)
            self.fallbacks += 1
