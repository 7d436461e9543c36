"""FragmentGuard on a simulated path: frames lost at random, datagrams of k frames."""

from __future__ import annotations

import math
import random

import pytest

from p2pcp.net.pmtu.fragment import (
    PROBATION_PACKETS,
    PROBATION_WINDOWS,
    RETRY_S,
    WHOLE_EVERY,
    FragmentGuard,
)

WHOLE = 1452
FRAGMENTED = 16000
FRAMES = math.ceil(FRAGMENTED / 1480)  # IPv4 fragments of a 16,000-byte datagram


def run(
    guard: FragmentGuard,
    *,
    frame_loss: float,
    seconds: float,
    start: float = 0.0,
    reassembly_fails_after: int | None = None,
    per_transmit: int = 10,
    transmits_per_s: int = 1000,
    seed: int = 1,
) -> list[tuple[float, int]]:
    """Drive the guard; returns (time, size) for each transmit.

    Each transmit sends ``per_transmit`` datagrams of the chosen size; a
    datagram is lost if any of its frames is. With ``reassembly_fails_after``
    the receiver's reassembly memory is exhausted once that many fragmented
    datagrams were lost, and every later fragmented datagram is lost.
    """
    rng = random.Random(seed)
    incomplete = 0
    sizes = []
    for step in range(int(seconds * transmits_per_s)):
        now = start + step / transmits_per_s
        size = guard.next_size(now)
        sizes.append((now, size))
        frames = FRAMES if size > WHOLE else 1
        for _ in range(per_transmit):
            lost = any(rng.random() < frame_loss for _ in range(frames))
            if size > WHOLE:
                exhausted = (
                    reassembly_fails_after is not None and incomplete >= reassembly_fails_after
                )
                lost = lost or exhausted
                incomplete += lost
            guard.packet_resolved(size, lost, now)
    return sizes


def proven_guard() -> FragmentGuard:
    """A guard past its probation: a window of whole datagrams, none lost."""
    guard = FragmentGuard(whole=WHOLE, fragmented=FRAGMENTED)
    assert guard.next_size(0.0) == WHOLE
    for _ in range(PROBATION_PACKETS):
        guard.packet_resolved(WHOLE, False, 0.0)
    assert guard.next_size(0.0) == FRAGMENTED
    assert guard.is_fragmenting
    return guard


def share_fragmented(sizes: list[tuple[float, int]], t0: float, t1: float) -> float:
    window = [size for t, size in sizes if t0 <= t < t1]
    return sum(size > WHOLE for size in window) / len(window)


def test_a_clean_path_fragments_after_probation_with_whole_samples_interleaved() -> None:
    guard = FragmentGuard(whole=WHOLE, fragmented=FRAGMENTED)
    sizes = run(guard, frame_loss=0.0, seconds=20)
    assert guard.is_fragmenting
    assert guard.fallbacks == 0
    # probation: PROBATION_PACKETS whole datagrams (10 a transmit) first
    probation_s = PROBATION_PACKETS / 10 / 1000
    assert share_fragmented(sizes, 0, probation_s) == 0
    assert share_fragmented(sizes, probation_s + 0.01, 20) == pytest.approx(
        1 - 1 / WHOLE_EVERY, abs=0.01
    )


@pytest.mark.parametrize("frame_loss", [0.005, 0.02])
def test_a_lossy_path_never_starts_fragmenting(frame_loss: float) -> None:
    guard = FragmentGuard(whole=WHOLE, fragmented=FRAGMENTED)
    sizes = run(guard, frame_loss=frame_loss, seconds=200, transmits_per_s=300)
    assert share_fragmented(sizes, 0, 200) == 0
    assert guard.fallbacks == 0
    # the first windows back to back, then one a RETRY_S
    assert PROBATION_WINDOWS <= guard.failed_windows <= PROBATION_WINDOWS + 200 / RETRY_S + 1


def test_a_start_up_overshoot_delays_fragmenting_by_one_window() -> None:
    guard = FragmentGuard(whole=WHOLE, fragmented=FRAGMENTED)
    # the first window loses 2% (a queue overflowing), then the path is clean
    rng = random.Random(7)
    for _ in range(PROBATION_PACKETS):
        guard.packet_resolved(guard.next_size(0.0), rng.random() < 0.02, 0.0)
    sizes = run(guard, frame_loss=0.0, seconds=2, start=0.1)
    assert guard.failed_windows == 1
    assert share_fragmented(sizes, 0.1, 0.35) == 0
    assert share_fragmented(sizes, 0.5, 2.1) > 0.8


def congested(guard: FragmentGuard, *, packets_per_s: int, seconds: float, loss: float) -> None:
    """Drops that hit whole and fragmented datagrams alike, per datagram
    (a queue overflowing now and then)."""
    rng = random.Random(3)
    for step in range(int(packets_per_s * seconds)):
        now = step / packets_per_s
        size = guard.next_size(now)
        guard.packet_resolved(size, rng.random() < loss, now)


def test_rare_drops_alike_for_both_kinds_keep_fragmenting() -> None:
    # 0.2% of 1,000 datagrams a second: ~60 incomplete datagrams per 30 s
    guard = proven_guard()
    congested(guard, packets_per_s=1000, seconds=120, loss=0.002)
    assert guard.is_fragmenting
    assert guard.fallbacks == 0


def test_a_burst_of_drops_hitting_both_kinds_keeps_fragmenting() -> None:
    # a start-up overshoot: 3% of both kinds lost for 0.2 s, then a clean path
    guard = proven_guard()
    congested(guard, packets_per_s=5000, seconds=0.2, loss=0.03)
    assert guard.is_fragmenting
    assert guard.fallbacks == 0


def test_the_same_drops_at_a_higher_rate_exhaust_reassembly_memory() -> None:
    # 0.2% of 10,000 a second: 20 incomplete datagrams a second, each
    # pinning ~24 KB at the receiver for 30 s, is past the budget in ~4 s
    guard = proven_guard()
    congested(guard, packets_per_s=10_000, seconds=10, loss=0.002)
    assert guard.fallbacks == 1


def test_loss_is_compared_per_fragment() -> None:
    # 0.05% frame loss at 300 datagrams a second: fragmented datagrams are
    # lost ~11x as often, as the path loses frames, not because of fragmenting
    guard = proven_guard()
    run(guard, frame_loss=0.0005, seconds=60, per_transmit=3, transmits_per_s=100)
    assert guard.fallbacks == 0
    # a per-datagram comparison would have fallen back
    assert guard.fragmented_loss > 2 * guard.whole_loss
    assert guard.fragment_loss < 2 * guard.whole_loss


def test_fragments_dropped_where_whole_datagrams_pass_fall_back() -> None:
    # a middlebox that drops one fragmented datagram in 20: 0.5% per fragment
    guard = FragmentGuard(whole=WHOLE, fragmented=FRAGMENTED)
    rng = random.Random(5)
    for step in range(20_000):
        now = step / 200
        size = guard.next_size(now)
        guard.packet_resolved(size, size > WHOLE and rng.random() < 0.05, now)
    assert guard.fallbacks >= 1


@pytest.mark.parametrize("frame_loss", [0.001, 0.005, 0.02])
def test_random_loss_falls_back_within_about_a_second(frame_loss: float) -> None:
    guard = proven_guard()  # the path turns lossy once fragmenting
    sizes = run(guard, frame_loss=frame_loss, seconds=10)
    assert guard.fallbacks == 1
    fell_back_at = next(t for t, _ in sizes if not share_fragmented(sizes, t, t + 1) > 0)
    assert fell_back_at < 1.5
    # and then stays whole until the retry
    assert share_fragmented(sizes, 2, 10) == 0


def test_reassembly_collapse_falls_back_even_if_whole_loss_is_unknown() -> None:
    guard = proven_guard()
    sizes = run(guard, frame_loss=0.0, seconds=3, reassembly_fails_after=0)
    assert not guard.is_fragmenting
    assert share_fragmented(sizes, 0.5, 3) == 0


def test_retries_after_a_backoff_that_doubles() -> None:
    guard = proven_guard()
    run(guard, frame_loss=0.01, seconds=1)
    assert guard.fallbacks == 1
    # the path got clean meanwhile (whole datagrams show it): fragmenting
    # again at the retry, and it sticks
    sizes = run(guard, frame_loss=0.0, seconds=RETRY_S - 2, start=1)
    assert share_fragmented(sizes, 1, RETRY_S - 1) == 0
    sizes = run(guard, frame_loss=0.0, seconds=5, start=RETRY_S + 1)
    assert guard.is_fragmenting
    assert share_fragmented(sizes, RETRY_S + 1, RETRY_S + 6) > 0.8
    # lossy again: falls back, next retry twice as far away
    run(guard, frame_loss=0.01, seconds=2, start=RETRY_S + 10)
    assert guard.fallbacks == 2
    assert guard.next_size(RETRY_S + 12 + 2 * RETRY_S - 5) == WHOLE


def test_a_lossy_path_puts_the_retries_off() -> None:
    # fragmenting on a clean path, then 2% frame loss for good: one fall-back,
    # then whole datagrams only (every retry's window fails)
    guard = proven_guard()
    sizes = run(guard, frame_loss=0.02, seconds=200, transmits_per_s=100)
    assert guard.fallbacks == 1
    assert share_fragmented(sizes, 5, 200) == 0
    assert guard.failed_windows >= 4
    assert guard.verdict is not None
    fragmented_loss, whole_loss = guard.verdict
    assert fragmented_loss > 0.1  # the collapse rule, long before whole loss is known
    assert 0 < whole_loss <= 1


def test_sizes_must_differ() -> None:
    with pytest.raises(ValueError):
        FragmentGuard(whole=1452, fragmented=1452)
