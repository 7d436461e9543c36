"""The relay's sans-IO mailbox: allocation order, two sides, queue bounds, expiry on
an injected clock, per-client and total bounds, release and disconnect."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcp.relay import frames, limits
from p2pcp.relay.limits import RelayLimits
from p2pcp.relay.mailbox import Mailbox, Outgoing

A, B, C = 1, 2, 3  # sides: the server's connection tokens


def mailbox(**overrides: float) -> Mailbox:
    return Mailbox(RelayLimits(**overrides))  # type: ignore[arg-type]


def allocated(box: Mailbox, side: int, now: float = 0.0) -> int:
    [out] = box.allocate(side, now)
    assert out.side == side and isinstance(out.frame, frames.Allocated)
    return out.frame.nameplate


def closed(side: int, nameplate: int, reason: int) -> Outgoing:
    return Outgoing(side, frames.Closed(nameplate, reason))


def test_nameplates_come_smallest_free_first_from_one() -> None:
    box = mailbox()
    assert [allocated(box, side) for side in (A, B, A, C)] == [1, 2, 3, 4]
    box.release(A, 3, now=1.0)
    box.release(B, 2, now=2.0)
    # Just ended: remembered, not handed out again yet.
    assert allocated(box, C, now=3.0) == 5
    # Once forgotten, the smallest free number comes back first.
    later = 3.0 + limits.ENDED_MEMORY_S
    assert allocated(box, C, now=later) == 2
    assert allocated(box, C, now=later) == 3
    assert allocated(box, C, now=later) == 6
    assert box.open_count == 6 and box.metrics.nameplates_open == 6


def test_two_sides_at_most_and_waiting_messages_follow_the_claim() -> None:
    box = mailbox()
    nameplate = allocated(box, A)
    assert box.add(A, nameplate, b"one", 1.0) == []
    assert box.add(A, nameplate, b"two", 1.0) == []
    assert box.claim(B, nameplate, 2.0) == [
        Outgoing(B, frames.Claimed(nameplate)),
        Outgoing(B, frames.Message(nameplate, b"one")),
        Outgoing(B, frames.Message(nameplate, b"two")),
    ]
    assert box.claim(C, nameplate, 3.0) == [closed(C, nameplate, frames.CLOSED_USED)]
    assert box.claim(A, nameplate, 3.0) == [closed(A, nameplate, frames.CLOSED_USED)]
    assert box.claim(B, nameplate, 3.0) == [closed(B, nameplate, frames.CLOSED_USED)]
    # Straight through once both are there; a third client cannot add.
    assert box.add(B, nameplate, b"back", 4.0) == [Outgoing(A, frames.Message(nameplate, b"back"))]
    assert box.add(A, nameplate, b"fwd", 4.0) == [Outgoing(B, frames.Message(nameplate, b"fwd"))]
    assert box.add(C, nameplate, b"evil", 4.0) == [closed(C, nameplate, frames.CLOSED_UNKNOWN)]
    assert box.metrics.nameplates_claimed_total == 1
    assert box.metrics.nameplates_refused_total["used"] == 3
    assert box.metrics.mailbox_messages_total == 4


def test_release_tells_the_other_side_and_a_late_claim_hears_used() -> None:
    box = mailbox()
    nameplate = allocated(box, A)
    box.claim(B, nameplate, 0.0)
    assert box.release(B, nameplate, 1.0) == [closed(A, nameplate, frames.CLOSED_RELEASED)]
    assert box.release(A, nameplate, 1.0) == []  # both release: the second does nothing
    assert box.open_count == 0 and box.nameplates_of(A) == frozenset()
    assert box.claim(C, nameplate, 2.0) == [closed(C, nameplate, frames.CLOSED_USED)]
    # An unclaimed nameplate released by its allocator: simply unknown afterwards.
    lonely = allocated(box, A, 3.0)
    assert box.release(A, lonely, 4.0) == []
    assert box.claim(C, lonely, 5.0) == [closed(C, lonely, frames.CLOSED_UNKNOWN)]
    assert box.claim(C, 77, 5.0) == [closed(C, 77, frames.CLOSED_UNKNOWN)]
    # Someone else's nameplate cannot be released.
    other = allocated(box, A, 6.0)
    assert box.release(C, other, 6.0) == [] and box.open_count == 1


def test_disconnect_ends_every_nameplate_of_a_side() -> None:
    box = mailbox()
    first, second, mine = allocated(box, A), allocated(box, A), allocated(box, B)
    box.claim(B, first, 0.0)
    box.claim(C, second, 0.0)
    out = box.disconnect(A, 1.0)
    assert sorted(out, key=lambda o: o.side) == [
        closed(B, first, frames.CLOSED_DISCONNECTED),
        closed(C, second, frames.CLOSED_DISCONNECTED),
    ]
    assert box.open_count == 1 and box.nameplates_of(B) == frozenset({mine})
    assert box.disconnect(A, 2.0) == []


def test_unclaimed_and_idle_nameplates_expire_on_the_clock() -> None:
    box = mailbox(code_expiry_s=100.0)
    unclaimed = allocated(box, A, 0.0)
    busy = allocated(box, A, 0.0)
    box.claim(B, busy, 50.0)
    assert box.expire(99.9) == []
    assert box.expire(100.0) == [closed(A, unclaimed, frames.CLOSED_EXPIRED)]
    # Activity keeps a nameplate alive; idleness ends it for both sides.
    box.add(A, busy, b"x", 140.0)
    assert box.expire(239.0) == []
    assert box.expire(240.0) == [
        closed(A, busy, frames.CLOSED_EXPIRED),
        closed(B, busy, frames.CLOSED_EXPIRED),
    ]
    assert box.metrics.nameplates_expired_total == 2
    assert box.claim(C, unclaimed, 241.0) == [closed(C, unclaimed, frames.CLOSED_EXPIRED)]
    assert box.claim(C, busy, 241.0) == [closed(C, busy, frames.CLOSED_USED)]


def test_a_claim_after_expiry_but_before_the_sweep_is_refused_and_the_allocator_told() -> None:
    box = mailbox(code_expiry_s=10.0)
    nameplate = allocated(box, A, 0.0)
    assert box.claim(B, nameplate, 11.0) == [
        closed(A, nameplate, frames.CLOSED_EXPIRED),
        closed(B, nameplate, frames.CLOSED_EXPIRED),
    ]


def test_waiting_messages_are_bounded_in_count_and_bytes() -> None:
    box = mailbox()
    nameplate = allocated(box, A)
    for _ in range(limits.MAILBOX_QUEUE_MESSAGES):
        assert box.add(A, nameplate, b"m", 0.0) == []
    assert box.add(A, nameplate, b"m", 0.0) == [closed(A, nameplate, frames.CLOSED_OVER_LIMIT)]
    assert box.open_count == 0
    by_bytes = allocated(box, A)
    body = b"x" * frames.MAX_MAILBOX_BODY_BYTES
    for _ in range(limits.MAILBOX_QUEUE_BYTES // len(body)):
        assert box.add(A, by_bytes, body, 0.0) == []
    assert box.add(A, by_bytes, b"y", 0.0) == [closed(A, by_bytes, frames.CLOSED_OVER_LIMIT)]
    assert box.metrics.nameplates_refused_total["over_limit"] == 2


def test_a_nameplate_carries_a_bounded_number_of_messages() -> None:
    box = mailbox()
    nameplate = allocated(box, A)
    box.claim(B, nameplate, 0.0)
    for index in range(limits.MAILBOX_MESSAGES_PER_NAMEPLATE):
        side, other = (A, B) if index % 2 else (B, A)
        assert box.add(side, nameplate, b"m", 0.0) == [
            Outgoing(other, frames.Message(nameplate, b"m"))
        ]
    assert box.add(A, nameplate, b"m", 0.0) == [
        closed(A, nameplate, frames.CLOSED_OVER_LIMIT),
        closed(B, nameplate, frames.CLOSED_OVER_LIMIT),
    ]


def test_nameplates_per_client_and_in_total_are_bounded() -> None:
    box = mailbox(nameplates_per_client=2, max_nameplates=4)
    first, _ = allocated(box, A), allocated(box, A)
    assert box.allocate(A, 0.0) == [closed(A, 0, frames.CLOSED_TOO_MANY)]
    # A claim counts toward the claimer's own bound too.
    allocated(box, B)
    third = allocated(box, C)  # the relay is now full: 4 open
    assert box.allocate(C, 0.0) == [closed(C, 0, frames.CLOSED_FULL)]
    box.claim(B, first, 0.0)  # claims are not refused for the total: no new nameplate
    assert box.claim(B, third, 0.0) == [closed(B, third, frames.CLOSED_TOO_MANY)]
    # Releasing makes room again.
    box.release(A, first, 1.0)
    assert isinstance(box.allocate(C, 1.0)[0].frame, frames.Allocated)
    refused = box.metrics.nameplates_refused_total
    assert (refused["too_many"], refused["full"]) == (2, 1)


def test_a_requested_free_nameplate_is_granted() -> None:
    box = mailbox()
    assert box.allocate(A, 0.0, 42) == [Outgoing(A, frames.Allocated(42))]
    assert box.nameplates_of(A) == {42}
    # It is a nameplate like any other: claimed, then used.
    assert box.claim(B, 42, 1.0) == [Outgoing(B, frames.Claimed(42))]
    # Random allocation goes on from 1 and never lands on it.
    assert [allocated(box, C) for _ in range(3)] == [1, 2, 3]


def test_a_requested_open_or_recently_ended_nameplate_is_refused() -> None:
    box = mailbox()
    assert box.allocate(A, 0.0, 7) == [Outgoing(A, frames.Allocated(7))]
    assert box.allocate(B, 1.0, 7) == [closed(B, 0, frames.CLOSED_USED)]
    # The holder is untouched by the refusal.
    assert box.nameplates_of(A) == {7} and box.nameplates_of(B) == frozenset()
    box.release(A, 7, 2.0)
    # Ended: remembered for ENDED_MEMORY_S, so a late claim cannot meet a new code.
    assert box.allocate(B, 3.0, 7) == [closed(B, 0, frames.CLOSED_USED)]
    later = 2.0 + limits.ENDED_MEMORY_S
    assert box.allocate(B, later, 7) == [Outgoing(B, frames.Allocated(7))]
    assert box.metrics.nameplates_refused_total["used"] == 2


def test_requested_nameplates_keep_the_bounds() -> None:
    box = mailbox(nameplates_per_client=2, max_nameplates=3)
    assert isinstance(box.allocate(A, 0.0, 5)[0].frame, frames.Allocated)
    assert isinstance(box.allocate(A, 0.0, 6)[0].frame, frames.Allocated)
    assert box.allocate(A, 0.0, 8) == [closed(A, 0, frames.CLOSED_TOO_MANY)]
    assert isinstance(box.allocate(B, 0.0, 9)[0].frame, frames.Allocated)
    assert box.allocate(C, 0.0, 10) == [closed(C, 0, frames.CLOSED_FULL)]
    assert box.open_count == 3


def test_random_allocation_skips_requested_nameplates() -> None:
    box = mailbox()
    box.allocate(A, 0.0, 2)
    assert [allocated(box, B) for _ in range(3)] == [1, 3, 4]
    # A requested number back in the free list (forgotten) is skipped while open.
    box.release(B, 3, 1.0)
    later = 1.0 + limits.ENDED_MEMORY_S
    assert box.allocate(C, later, 3) == [Outgoing(C, frames.Allocated(3))]
    assert allocated(box, B, later) == 5


def test_ended_memory_is_bounded_by_the_total() -> None:
    box = mailbox(max_nameplates=4)
    for now in range(20):
        nameplate = allocated(box, A, float(now))
        box.release(A, nameplate, float(now))
    # Never more than max_nameplates remembered: numbers stay small.
    assert allocated(box, A, 20.0) <= 5


def test_fail_ends_the_nameplate_for_both_sides() -> None:
    box = mailbox()
    nameplate = allocated(box, A)
    box.claim(B, nameplate, 0.0)
    assert box.fail(nameplate, 1.0) == [
        closed(A, nameplate, frames.CLOSED_OVER_LIMIT),
        closed(B, nameplate, frames.CLOSED_OVER_LIMIT),
    ]
    assert box.fail(nameplate, 1.0) == []


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                ["allocate", "request", "claim", "add", "release", "disconnect", "expire"]
            ),
            st.sampled_from([A, B, C]),
            st.integers(0, 12),
            st.floats(0, 5),
        ),
        max_size=80,
    )
)
def test_any_sequence_keeps_the_invariants(
    steps: list[tuple[str, int, int, float]],
) -> None:
    box = mailbox(nameplates_per_client=3, max_nameplates=5, code_expiry_s=20.0)
    now = 0.0
    for action, side, nameplate, step in steps:
        now += step
        was_open = {number for each in (A, B, C) for number in box.nameplates_of(each)}
        match action:
            case "allocate":
                out = box.allocate(side, now)
            case "request":
                out = box.allocate(side, now, nameplate or 1)
            case "claim":
                out = box.claim(side, nameplate or 1, now)
            case "add":
                out = box.add(side, nameplate or 1, b"m", now)
            case "release":
                out = box.release(side, nameplate or 1, now)
            case "disconnect":
                out = box.disconnect(side, now)
            case _:
                out = box.expire(now)
        for item in out:
            item.frame.encode()  # every frame it makes is well formed
            if isinstance(item.frame, frames.Allocated):
                # Asked for or not, a nameplate is never handed out twice at once.
                assert item.frame.nameplate not in was_open
        assert box.open_count <= 5
        for each in (A, B, C):
            assert len(box.nameplates_of(each)) <= 3
        assert box.metrics.nameplates_open == box.open_count


def test_the_mailbox_is_sans_io() -> None:
    source = Path(__file__).resolve().parents[3] / "p2pcp" / "relay" / "mailbox.py"
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"asyncio", "socket", "selectors", "time", "websockets", "logging"}


@pytest.mark.parametrize("bad", [{"code_expiry_s": 0.0}, {"max_nameplates": 0}])
def test_limits_refuse_nonsense(bad: dict[str, float]) -> None:
    from p2pcp.core.errors import UsageError

    with pytest.raises(UsageError):
        RelayLimits(**bad)  # type: ignore[arg-type]
