"""``--limit-rate``: a token bucket (sans-IO), its asyncio pacer, and the
flag's parser.

One rate covers everything one side moves: the sender paces what it writes
to all its streams, for all receivers together (a home uplink is shared);
the receiver paces what it reads, and since its reads drive QUIC's receive
credit (net/quic/credit.py), a sender that is not limited itself is slowed
too, once the receive windows are full. Counted are the transfer's bytes
(file data and its proof nodes), not QUIC's or UDP's headers.

``TokenBucket`` (inputs: ``take(nbytes, now)``; output: the seconds to wait)
holds at most ``capacity`` tokens, one per byte, refilled at ``rate_bps``.
A take succeeds only when the bucket holds all it asks for, so tokens never
go below zero, and over any interval of T seconds at most
``capacity + rate_bps * T`` bytes are granted. With the capacity set to
``BURST_S`` of the rate, that is at most 2% above the rate over any 5 s
window (and 5% over any 2 s one). A take larger than the capacity could
never succeed: ``Pacer`` splits what it paces into pieces of at most the
capacity, and ``write_paced`` writes each piece only once it is granted, so
the bound holds for what leaves too, not just for what was granted.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable

from p2pcp.core.errors import UsageError

# The bucket holds this much time's worth of the rate: small enough that a
# burst after a pause stays within 2% of the rate over 5 s, large enough
# that a piece is 10 ms of writes or more at any allowed rate (15 KB at the
# lowest).
BURST_S = 0.1
# The lowest rate: a receiver gives up on a stream that brought no verified
# 256 KiB leaf in PROGRESS_TIMEOUT_S, and its FETCH_CONCURRENCY streams share
# the rate, so each must still get a leaf in half that time (139,810 bytes/s,
# rounded up). A sender's limit is shared by all its receivers: several
# receivers at once at this rate wait longer than that and reconnect.
MIN_RATE_BPS = 150_000
# The shortest wait asked for: a wait of exactly the shortfall may leave the
# clock's rounding a hair short of it; waiting at least this long always
# refills more than rounding can miss (0.1 ms, below any sleep's resolution).
MIN_WAIT_S = 1e-4
# No link comes near this (8 Tbit/s); it keeps the numbers sane.
MAX_RATE_BPS = 10**12

# K, M and G are powers of 1000, as the progress lines' KB and MB are;
# Ki, Mi and Gi are powers of 1024.
_UNITS = {
    "": 1,
    "k": 1000,
    "m": 1000**2,
    "g": 1000**3,
    "ki": 1024,
    "mi": 1024**2,
    "gi": 1024**3,
}
_RATE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([kmg]i?)?(?:b(?:/s)?)?", re.IGNORECASE)


def parse_rate(text: str, flag: str = "--limit-rate") -> int:
    """``10M``, ``500K``, ``1.5M``, ``2Mi``, ``150000`` as bytes per second;
    a one-line UsageError (exit 2) for anything else or a rate out of range."""
    match = _RATE.fullmatch(text.strip())
    if match is None:
        raise UsageError(
            f"{flag} {text!r}: not a rate (bytes per second: a number with K, M or G "
            "for 1000, 1000^2, 1000^3, or Ki, Mi, Gi for powers of 1024; e.g. 10M, 500K)"
        )
    number, unit = match.groups()
    rate = round(float(number) * _UNITS[(unit or "").lower()])
    if rate < MIN_RATE_BPS:
        raise UsageError(
            f"{flag} {text}: the lowest rate is 150K (150,000 bytes per second): slower, "
            "a receiver's parallel requests would each wait too long for their data"
        )
    if rate > MAX_RATE_BPS:
        raise UsageError(f"{flag} {text}: the highest rate is 1000G")
    return rate


class TokenBucket:
    """Bytes allowed at ``rate_bps`` with bursts of at most ``capacity``
    (default: ``BURST_S`` of the rate). Sans-IO: the caller passes ``now``,
    any monotonic clock in seconds. Starts full."""

    def __init__(self, rate_bps: float, capacity: float | None = None, *, now: float) -> None:
        if rate_bps <= 0:
            raise ValueError("a rate must be positive")
        self.rate_bps = float(rate_bps)
        self.capacity = float(capacity if capacity is not None else rate_bps * BURST_S)
        if self.capacity < 1:
            raise ValueError("a bucket must hold at least one byte")
        self.tokens = self.capacity
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate_bps)
            self.updated = now

    def take(self, nbytes: int, now: float) -> float:
        """0.0 after taking ``nbytes`` tokens, or the seconds until the bucket
        will hold them (nothing is taken then: ask again after waiting).
        ``nbytes`` must not exceed the capacity."""
        if nbytes > self.capacity:
            raise ValueError(f"a take of {nbytes} bytes exceeds the capacity {self.capacity:.0f}")
        self._refill(now)
        if self.tokens >= nbytes:
            self.tokens -= nbytes
            return 0.0
        return max((nbytes - self.tokens) / self.rate_bps, MIN_WAIT_S)


class Pacer:
    """The asyncio driver of one ``TokenBucket``, shared by every stream of
    one side: ``await pace(n)`` returns once n bytes are allowed. Waiters
    are served in turn, a piece (at most the capacity) at a time, so a
    large request is not starved by small ones. ``clock`` and ``sleep`` are
    injected for tests."""

    def __init__(
        self,
        rate_bps: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.clock = clock
        self.sleep = sleep
        self.bucket = TokenBucket(rate_bps, now=clock())
        self.piece_bytes = max(1, int(self.bucket.capacity))
        self._turn = asyncio.Lock()

    async def pace(self, nbytes: int) -> None:
        """Wait until ``nbytes`` more bytes are allowed."""
        while nbytes > 0:
            piece = min(nbytes, self.piece_bytes)
            await self._take(piece)
            nbytes -= piece

    async def _take(self, piece: int) -> None:
        async with self._turn:
            while (wait_s := self.bucket.take(piece, self.clock())) > 0:
                await self.sleep(wait_s)


async def write_paced(
    pacer: Pacer | None,
    write: Callable[[bytes | memoryview], Awaitable[None]],
    data: bytes,
) -> None:
    """``write(data)``, or, with a pacer, each piece of it once it is allowed
    (so what was written never runs ahead of the bucket by more than a piece)."""
    if pacer is None:
        await write(data)
        return
    view = memoryview(data)
    step = pacer.piece_bytes
    for start in range(0, len(view), step):
        piece = view[start : start + step]
        await pacer.pace(len(piece))
        await write(piece)
