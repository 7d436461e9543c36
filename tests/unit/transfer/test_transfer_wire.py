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


# -- GET_MANY ---------------------------------------------------------------------


@given(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=300, unique=True))
def test_get_many_round_trip(hashes: list[bytes]) -> None:
    request = wire.ManyRequest(tuple(hashes))
    if len(hashes) > wire.MAX_MANY_BLOBS:
        with pytest.raises(RemoteProtocolError):
            wire.encode_request(request)
        return
    encoded = wire.encode_request(request)
    assert len(encoded) == 3 + 32 * len(hashes) <= wire.MAX_REQUEST_BYTES
    assert wire.decode_request(encoded) == request


def test_get_many_refuses_empty_duplicate_and_too_many() -> None:
    for hashes in [(), (bytes(32), bytes(32)), (bytes(31),)]:
        with pytest.raises(RemoteProtocolError):
            wire.encode_request(wire.ManyRequest(hashes))
    # The same, written by hand (a receiver that does not use our encoder).
    for count, body in [(0, b""), (2, bytes(64)), (1, bytes(31)), (1, bytes(33))]:
        with pytest.raises(RemoteProtocolError):
            wire.decode_request(bytes([wire.REQUEST_GET_MANY]) + count.to_bytes(2, "big") + body)
    too_many = wire.MAX_MANY_BLOBS + 1
    payload = bytes([wire.REQUEST_GET_MANY]) + too_many.to_bytes(2, "big")
    payload += b"".join(i.to_bytes(32, "big") for i in range(too_many))
    with pytest.raises(RemoteProtocolError):
        wire.decode_request(payload)


def test_get_many_truncated_or_extended() -> None:
    encoded = wire.encode_request(wire.ManyRequest((bytes(32), b"\x01" * 32)))
    for cut in range(len(encoded)):
        with pytest.raises(RemoteProtocolError):
            wire.decode_request(encoded[:cut])
    with pytest.raises(RemoteProtocolError):
        wire.decode_request(encoded + b"\x00")


@given(st.integers(0, 2**16 - 1), st.binary(max_size=2000))
def test_get_many_hostile_bytes(count: int, body: bytes) -> None:
    """Any count with any body: our error, or a request within the bounds."""
    payload = bytes([wire.REQUEST_GET_MANY]) + count.to_bytes(2, "big") + body
    try:
        request = wire.decode_request(payload)
    except RemoteProtocolError:
        return
    assert isinstance(request, wire.ManyRequest)
    assert 1 <= len(request.blob_hashes) <= wire.MAX_MANY_BLOBS
    assert len(set(request.blob_hashes)) == len(request.blob_hashes)
    assert all(len(blob_hash) == 32 for blob_hash in request.blob_hashes)
