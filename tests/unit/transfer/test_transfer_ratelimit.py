"""--limit-rate: the flag's parser, the token bucket's bound over any 5 s
window (on an injected clock), and the pacer that drives it."""

from __future__ import annotations

import asyncio
import bisect
import random

import pytest

from p2pcp.blobs.tree import LEAF_SIZE
from p2pcp.core.defaults import FETCH_CONCURRENCY, PROGRESS_TIMEOUT_S
from p2pcp.core.errors import UsageError
from p2pcp.transfer.ratelimit import (
    MIN_RATE_BPS,
    MIN_WAIT_S,
    Pacer,
    TokenBucket,
    parse_rate,
    write_paced,
)

WINDOW_S = 5.0
# The promise: within 5% of the rate over any 5 s window.
TOLERANCE = 1.05


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10M", 10_000_000),
        ("500K", 500_000),
        ("500k", 500_000),
        ("1.5M", 1_500_000),
        (" 2G ", 2_000_000_000),
        ("2Mi", 2 * 1024 * 1024),
        ("256KiB", 256 * 1024),
        ("10MB/s", 10_000_000),
        ("150000", 150_000),
        (".5M", 500_000),
    ],
)
def test_parse_rate_reads_units_of_1000_and_1024(text: str, expected: int) -> None:
    assert parse_rate(text) == expected


@pytest.mark.parametrize("text", ["", "fast", "10X", "-5M", "1e6", "10 M M", "M", "1,5M", "10Mbit"])
def test_parse_rate_refuses_what_is_not_a_rate_in_one_line(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_rate(text)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("--limit-rate")
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("text", ["0", "149K", "100000", "2000G"])
def test_parse_rate_refuses_rates_out_of_range(text: str) -> None:
    with pytest.raises(UsageError, match="rate is"):
        parse_rate(text)


def test_lowest_rate_gives_each_parallel_request_a_leaf_in_half_the_timeout() -> None:
    per_stream_bps = MIN_RATE_BPS / FETCH_CONCURRENCY
    assert LEAF_SIZE / per_stream_bps <= PROGRESS_TIMEOUT_S / 2


def _max_in_window(grants: list[tuple[float, int]], window_s: float) -> int:
    """The most bytes granted in any closed window of ``window_s`` seconds
    (a window starting at a grant is the worst case)."""
    times = [at for at, _n in grants]
    sums = [0]
    for _at, count in grants:
        sums.append(sums[-1] + count)
    best = 0
    for index, start in enumerate(times):
        end = bisect.bisect_right(times, start + window_s)
        best = max(best, sums[end] - sums[index])
    return best


@pytest.mark.parametrize("rate_bps", [MIN_RATE_BPS, 2_000_000, 123_456_789])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bucket_stays_within_5_percent_over_any_5_s_window(rate_bps: int, seed: int) -> None:
    """A greedy taker with random sizes, and pauses now and then (the
    bucket refills to its burst): no 5 s window gets more than 1.05x the
    rate, and over the whole run the taker still gets nearly the rate."""
    rng = random.Random(seed)
    now = 1000.0
    bucket = TokenBucket(rate_bps, now=now)
    grants: list[tuple[float, int]] = []
    idle_s = 0.0
    while now < 1060.0:
        if rng.random() < 0.02:
            pause_s = rng.uniform(0.0, 2.0)  # idle: the bucket fills up
            now += pause_s
            idle_s += pause_s
        nbytes = rng.randint(1, int(bucket.capacity))
        wait_s = bucket.take(nbytes, now)
        if wait_s > 0:
            assert wait_s <= max(nbytes / rate_bps, MIN_WAIT_S)
            now += wait_s * rng.uniform(1.0, 1.2)  # a sleep may overshoot
            continue
        grants.append((now, nbytes))
    assert _max_in_window(grants, WINDOW_S) <= TOLERANCE * rate_bps * WINDOW_S
    # The bucket does not starve the taker: while busy (sleeps overshoot
    # by up to 20%), it gets most of the rate.
    assert sum(n for _at, n in grants) >= 0.8 * rate_bps * (now - 1000.0 - idle_s)


def test_bucket_never_grants_more_than_it_holds() -> None:
    bucket = TokenBucket(1000, now=0.0)
    assert bucket.capacity == 100
    assert bucket.take(100, 0.0) == 0.0
    assert bucket.take(1, 0.0) == pytest.approx(0.001)
    assert bucket.take(50, 0.05) == 0.0  # refilled 50
    assert bucket.take(1, 0.05) > 0
    assert bucket.take(100, 100.0) == 0.0  # a long pause refills to the capacity only
    assert bucket.take(1, 100.0) > 0
    with pytest.raises(ValueError):
        bucket.take(101, 200.0)
    with pytest.raises(ValueError):
        TokenBucket(0, now=0.0)


class _VirtualTime:
    """An injected clock and a sleep that advances it (and yields once)."""

    def __init__(self) -> None:
        self.now = 50.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def test_pacer_shares_the_rate_between_tasks_and_keeps_the_bound() -> None:
    """Eight tasks pace leaf-sized requests at once (as the receiver's
    parallel streams do): every task finishes (none starves), the total
    respects the bound over every 5 s window, and the whole takes about
    what the rate says."""
    rate_bps = 2_000_000
    time = _VirtualTime()
    grants: list[tuple[float, int]] = []

    async def main() -> None:
        pacer = Pacer(rate_bps, clock=time.clock, sleep=time.sleep)

        async def worker(count: int) -> None:
            for _ in range(count):
                await pacer.pace(LEAF_SIZE)
                grants.append((time.now, LEAF_SIZE))

        await asyncio.wait_for(asyncio.gather(*(worker(8) for _ in range(8))), timeout=30)

    start = time.now
    asyncio.run(main())
    total = 64 * LEAF_SIZE
    assert len(grants) == 64
    assert _max_in_window(grants, WINDOW_S) <= TOLERANCE * rate_bps * WINDOW_S
    took = time.now - start
    assert (total - rate_bps * 0.1) / rate_bps <= took <= 1.01 * total / rate_bps


def test_write_paced_writes_every_byte_in_order_in_allowed_pieces() -> None:
    time = _VirtualTime()
    written: list[tuple[float, bytes]] = []
    data = bytes(random.Random(7).randbytes(1_000_000))

    async def write(piece: bytes | memoryview) -> None:
        written.append((time.now, bytes(piece)))

    async def main() -> Pacer:
        pacer = Pacer(MIN_RATE_BPS, clock=time.clock, sleep=time.sleep)
        await write_paced(pacer, write, data)
        return pacer

    pacer = asyncio.run(main())
    assert b"".join(piece for _at, piece in written) == data
    assert all(len(piece) <= pacer.piece_bytes for _at, piece in written)
    sizes = [(at, len(piece)) for at, piece in written]
    assert _max_in_window(sizes, WINDOW_S) <= TOLERANCE * MIN_RATE_BPS * WINDOW_S
    # Without a pacer: one write, the same object.
    written.clear()
    asyncio.run(write_paced(None, write, data))
    assert [piece for _at, piece in written] == [data]
