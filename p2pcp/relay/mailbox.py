"""The relay's mailbox for short codes, sans-IO: nameplates and their state.

A short code (``7-crossbow-puzzle``) starts with a *nameplate*, a small
number this mailbox hands out; the two sides of a code meet at it and pass
each other a few opaque messages (SPAKE2 messages, then payloads sealed
under the PAKE key). The relay never sees the code's words, only the
nameplate and bytes it cannot read. docs/PROTOCOL.md, "Mailbox", has the
rules; the server (``server.py``) feeds this class the frames its clients
send, with the time, and delivers the frames it returns.

Sides are opaque integers (the server's connection tokens), so a client is
one connection: its nameplates end when it disconnects.

Rules:

- ALLOCATE gives the smallest free nameplate from 1; the allocator is its
  first side. A number is free when it is not open and has not ended within
  ``ENDED_MEMORY_S`` (an ended nameplate is remembered, at most
  ``max_nameplates`` of them, so that a late claim learns "already used" or
  "expired" instead of landing on someone else's new code). An ALLOCATE that
  names a nameplate (a code the user chose) gets that one if it is free and
  within the bounds below, else CLOSED(0, ``CLOSED_USED``) or the bound's
  reason.
- CLAIM makes a client the second side; every later claim is refused
  (``CLOSED_USED``), and so is a claim of one's own nameplate. The messages
  the first side added meanwhile follow the CLAIMED frame, in order.
- ADD passes a body to the other side, or queues it while no one has claimed
  (at most ``MAILBOX_QUEUE_MESSAGES`` / ``MAILBOX_QUEUE_BYTES``); a nameplate
  carries at most ``MAILBOX_MESSAGES_PER_NAMEPLATE`` messages in all. Over a
  bound, the nameplate ends (``CLOSED_OVER_LIMIT``) for both sides.
- RELEASE by either side, a side's disconnection, or ``code_expiry_s``
  without ALLOCATE, CLAIM or ADD ends the nameplate; the other side (if any)
  gets CLOSED with the reason.
- A client holds at most ``nameplates_per_client`` nameplates, the relay at
  most ``max_nameplates``; over either, ALLOCATE (answered with nameplate 0)
  or CLAIM is refused.

Invariant: every open nameplate is in ``_nameplates`` and in the side sets of
its one or two sides; nothing here holds a body longer than it waits.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from p2pcp.relay import frames, limits
from p2pcp.relay.limits import RelayLimits
from p2pcp.relay.metrics import RelayMetrics

# CLOSED reasons as metric labels.
REASON_NAMES = {
    frames.CLOSED_RELEASED: "released",
    frames.CLOSED_DISCONNECTED: "disconnected",
    frames.CLOSED_EXPIRED: "expired",
    frames.CLOSED_UNKNOWN: "unknown",
    frames.CLOSED_USED: "used",
    frames.CLOSED_TOO_MANY: "too_many",
    frames.CLOSED_FULL: "full",
    frames.CLOSED_OVER_LIMIT: "over_limit",
}


@dataclass(frozen=True)
class Outgoing:
    """A frame for the server to send to one side."""

    side: int
    frame: frames.Frame


@dataclass
class _Nameplate:
    number: int
    allocator: int
    expires_at: float
    claimer: int | None = None
    waiting: deque[bytes] = field(default_factory=deque)
    waiting_bytes: int = 0
    messages: int = 0

    def other(self, side: int) -> int | None:
        return self.claimer if side == self.allocator else self.allocator


class Mailbox:
    """Every open nameplate of one relay. Each method takes the time (seconds,
    any monotonic clock) and returns the frames to send, in order."""

    def __init__(self, relay_limits: RelayLimits, metrics: RelayMetrics | None = None) -> None:
        self.limits = relay_limits
        self.metrics = metrics or RelayMetrics()
        self._nameplates: dict[int, _Nameplate] = {}
        self._by_side: dict[int, set[int]] = {}
        # Ended nameplate -> (when, CLOSED reason a late claim gets), oldest first.
        self._ended: OrderedDict[int, tuple[float, int]] = OrderedDict()
        # Numbers below _next that are neither open nor remembered.
        self._free: list[int] = []
        self._next = 1

    @property
    def open_count(self) -> int:
        return len(self._nameplates)

    def nameplates_of(self, side: int) -> frozenset[int]:
        return frozenset(self._by_side.get(side, ()))

    # -- requests ------------------------------------------------------------------

    def allocate(self, side: int, now: float, requested: int | None = None) -> list[Outgoing]:
        """ALLOCATE: ALLOCATED(n), or CLOSED(0, reason) when over a bound, or
        when ``requested`` (a nameplate the client asks for) is not free."""
        self._forget_ended(now)
        refusal = self._over_bounds(side)
        if refusal is None and requested is not None and not self._is_free(requested):
            refusal = frames.CLOSED_USED
        if refusal is not None:
            return [self._refuse(side, 0, refusal)]
        number = requested if requested is not None else self._take_free()
        self._nameplates[number] = _Nameplate(number, side, now + self.limits.code_expiry_s)
        self._by_side.setdefault(side, set()).add(number)
        self.metrics.nameplates_allocated_total += 1
        self._gauge()
        return [Outgoing(side, frames.Allocated(number))]

    def claim(self, side: int, number: int, now: float) -> list[Outgoing]:
        """CLAIM: CLAIMED(n) then the waiting messages, or CLOSED(n, reason)."""
        out = self.expire(now)
        nameplate = self._nameplates.get(number)
        if nameplate is None:
            ended = self._ended.get(number)
            reason = frames.CLOSED_UNKNOWN if ended is None else ended[1]
            return [*out, self._refuse(side, number, reason)]
        if nameplate.claimer is not None or nameplate.allocator == side:
            return [*out, self._refuse(side, number, frames.CLOSED_USED)]
        refusal = self._over_bounds(side, counts_total=False)
        if refusal is not None:
            return [*out, self._refuse(side, number, refusal)]
        nameplate.claimer = side
        nameplate.expires_at = now + self.limits.code_expiry_s
        self._by_side.setdefault(side, set()).add(number)
        self.metrics.nameplates_claimed_total += 1
        out.append(Outgoing(side, frames.Claimed(number)))
        out.extend(Outgoing(side, frames.Message(number, body)) for body in nameplate.waiting)
        nameplate.waiting.clear()
        nameplate.waiting_bytes = 0
        return out

    def add(self, side: int, number: int, body: bytes, now: float) -> list[Outgoing]:
        """ADD: MESSAGE to the other side, or queued; CLOSED when refused."""
        out = self.expire(now)
        nameplate = self._nameplates.get(number)
        if nameplate is None or side not in (nameplate.allocator, nameplate.claimer):
            return [*out, self._refuse(side, number, frames.CLOSED_UNKNOWN)]
        nameplate.messages += 1
        if nameplate.messages > limits.MAILBOX_MESSAGES_PER_NAMEPLATE:
            return [*out, *self._over_limit(nameplate, now)]
        nameplate.expires_at = now + self.limits.code_expiry_s
        other = nameplate.other(side)
        if other is not None:
            self.metrics.mailbox_messages_total += 1
            return [*out, Outgoing(other, frames.Message(number, body))]
        if (
            len(nameplate.waiting) >= limits.MAILBOX_QUEUE_MESSAGES
            or nameplate.waiting_bytes + len(body) > limits.MAILBOX_QUEUE_BYTES
        ):
            return [*out, *self._over_limit(nameplate, now)]
        self.metrics.mailbox_messages_total += 1
        nameplate.waiting.append(body)
        nameplate.waiting_bytes += len(body)
        return out

    def release(self, side: int, number: int, now: float) -> list[Outgoing]:
        """RELEASE: the nameplate ends; the other side gets CLOSED(released).

        Releasing a nameplate that is not (or no longer) one's own does nothing:
        the two sides may release at the same time."""
        nameplate = self._nameplates.get(number)
        if nameplate is None or side not in (nameplate.allocator, nameplate.claimer):
            return []
        return self._end(nameplate, frames.CLOSED_RELEASED, now, tell=(nameplate.other(side),))

    def disconnect(self, side: int, now: float) -> list[Outgoing]:
        """A side's connection ended: its nameplates end; their other sides are told."""
        out: list[Outgoing] = []
        for number in sorted(self._by_side.get(side, ())):
            nameplate = self._nameplates[number]
            tell = (nameplate.other(side),)
            out.extend(self._end(nameplate, frames.CLOSED_DISCONNECTED, now, tell=tell))
        self._by_side.pop(side, None)
        return out

    def fail(self, number: int, now: float) -> list[Outgoing]:
        """The server could not deliver a message for ``number``: end it for both sides."""
        nameplate = self._nameplates.get(number)
        return [] if nameplate is None else self._over_limit(nameplate, now)

    def expire(self, now: float) -> list[Outgoing]:
        """End the nameplates unclaimed or idle for ``code_expiry_s``; tell their sides."""
        out: list[Outgoing] = []
        for nameplate in [n for n in self._nameplates.values() if n.expires_at <= now]:
            self.metrics.nameplates_expired_total += 1
            sides = (nameplate.allocator, nameplate.claimer)
            out.extend(self._end(nameplate, frames.CLOSED_EXPIRED, now, tell=sides))
        self._forget_ended(now)
        return out

    # -- inside ----------------------------------------------------------------------

    def _is_free(self, number: int) -> bool:
        """Neither open nor ended within ENDED_MEMORY_S (still remembered)."""
        return number not in self._nameplates and number not in self._ended

    def _take_free(self) -> int:
        """The smallest free number. A requested nameplate may sit in ``_free``
        or at or past ``_next``: such entries are skipped here."""
        while self._free:
            number = heapq.heappop(self._free)
            if self._is_free(number):
                return number
        while not self._is_free(self._next):
            self._next += 1
        number = self._next
        self._next += 1
        return number

    def _forgotten(self, number: int) -> None:
        # A number at or past _next is reached by _next itself.
        if number < self._next:
            heapq.heappush(self._free, number)

    def _over_bounds(self, side: int, *, counts_total: bool = True) -> int | None:
        if len(self._by_side.get(side, ())) >= self.limits.nameplates_per_client:
            return frames.CLOSED_TOO_MANY
        if counts_total and len(self._nameplates) >= self.limits.max_nameplates:
            return frames.CLOSED_FULL
        return None

    def _refuse(self, side: int, number: int, reason: int) -> Outgoing:
        self.metrics.nameplates_refused_total[REASON_NAMES[reason]] += 1
        return Outgoing(side, frames.Closed(number, reason))

    def _over_limit(self, nameplate: _Nameplate, now: float) -> list[Outgoing]:
        self.metrics.nameplates_refused_total[REASON_NAMES[frames.CLOSED_OVER_LIMIT]] += 1
        sides = (nameplate.allocator, nameplate.claimer)
        return self._end(nameplate, frames.CLOSED_OVER_LIMIT, now, tell=sides)

    def _end(
        self, nameplate: _Nameplate, reason: int, now: float, *, tell: tuple[int | None, ...]
    ) -> list[Outgoing]:
        number = nameplate.number
        del self._nameplates[number]
        for side in (nameplate.allocator, nameplate.claimer):
            if side is not None:
                numbers = self._by_side.get(side)
                if numbers is not None:
                    numbers.discard(number)
                    if not numbers:
                        del self._by_side[side]
        # A late claim of a code that was used, or expired, hears so.
        remembered = frames.CLOSED_USED if nameplate.claimer is not None else reason
        if remembered not in (frames.CLOSED_USED, frames.CLOSED_EXPIRED):
            remembered = frames.CLOSED_UNKNOWN
        self._ended[number] = (now, remembered)
        if len(self._ended) > self.limits.max_nameplates:
            forgotten, _ = self._ended.popitem(last=False)
            self._forgotten(forgotten)
        self._gauge()
        return [Outgoing(side, frames.Closed(number, reason)) for side in tell if side is not None]

    def _forget_ended(self, now: float) -> None:
        while self._ended:
            number, (ended_at, _) = next(iter(self._ended.items()))
            if now - ended_at < limits.ENDED_MEMORY_S:
                return
            del self._ended[number]
            self._forgotten(number)

    def _gauge(self) -> None:
        self.metrics.nameplates_open = len(self._nameplates)
