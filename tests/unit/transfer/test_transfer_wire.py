"""Request framing: round trips; hostile bytes raise only RemoteProtocolError."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pcp.core.errors import RemoteProtocolError
from p2pcp.transfer import wire


@st.composite
def range_sets(draw: st.DrawFn) -> tuple[tuple[int, int], ...]:
    points = sorted(draw(st.sets(st.integers(0, 2**62), min_size=2, max_size=40)))
    pairs = [(points[i], points[i + 1]) for i in range(0, len(points) - 1, 2)]
    # Disjoint and not touching.
    return tuple(p for i, p in enumerate(pairs) if i == 0 or p[0] > pairs[i - 1][1])


@given(st.binary(min_size=32, max_size=32), range_sets())
def test_get_round_trip(blob_hash: bytes, ranges: tuple[tuple[int, int], ...]) -> None:
    request = wire.GetRequest(blob_hash, ranges)
    assert wire.decode_request(wire.encode_request(request)) == request


def test_done_round_trip() -> None:
    request = wire.DoneRequest(12345)
    assert wire.decode_request(wire.encode_request(request)) == request


@pytest.mark.parametrize(
    "ranges",
    [(), ((5, 5),), ((6, 5),), ((0, 4), (2, 8)), ((0, 4), (4, 8)), ((4, 8), (0, 2))],
)
def test_bad_ranges_are_refused(ranges: tuple[tuple[int, int], ...]) -> None:
    with pytest.raises(RemoteProtocolError):
        wire.encode_request(wire.GetRequest(bytes(32), ranges))


def test_too_many_ranges() -> None:
    ranges = tuple((i * 2, i * 2 + 1) for i in range(wire.MAX_RANGES + 1))
    with pytest.raises(RemoteProtocolError):
        wire.encode_request(wire.GetRequest(bytes(32), ranges))


@given(st.binary(max_size=200))
def test_hostile_bytes(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):  # anything else fails the test
        wire.decode_request(data)


def test_truncated_requests() -> None:
    encoded = wire.encode_request(wire.GetRequest(bytes(32), ((0, 10), (20, 30))))
    for cut in range(len(encoded)):
        with pytest.raises(RemoteProtocolError):
            wire.decode_request(encoded[:cut])
    with pytest.raises(RemoteProtocolError):
        wire.decode_request(encoded + b"\x00")


@given(st.binary(min_size=32, max_size=32), st.integers(0, 2**32 - 1))
def test_get_item_round_trip(collection_hash: bytes, index: int) -> None:
    request = wire.ItemRequest(collection_hash, index)
    encoded = wire.encode_request(request)
    assert len(encoded) == 1 + 32 + 4
    assert wire.decode_request(encoded) == request


def test_get_item_out_of_range_or_truncated() -> None:
    with pytest.raises(RemoteProtocolError):
        wire.encode_request(wire.ItemRequest(bytes(32), 2**32))
    with pytest.raises(RemoteProtocolError):
        wire.encode_request(wire.ItemRequest(bytes(31), 0))
    encoded = wire.encode_request(wire.ItemRequest(bytes(32), 7))
    for cut in range(len(encoded)):
        with pytest.raises(RemoteProtocolError):
            wire.decode_request(encoded[:cut])
    with pytest.raises(RemoteProtocolError):
        wire.decode_request(encoded + b"\x00")
