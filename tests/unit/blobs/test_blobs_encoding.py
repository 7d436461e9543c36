"""Verified range encoding: every range verifies, every flipped byte is caught."""

from __future__ import annotations

import contextlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcp.blobs.encoding import (
    ALL,
    HEADER_BYTES,
    DecodeFinished,
    Header,
    LeafReceived,
    LeafRef,
    LeafVerified,
    Parents,
    RangeDecoder,
    Ranges,
    SizeKnown,
    check_leaf,
    clip_ranges,
    encode_bytes,
    encode_plan,
    encoded_size,
    one_leaf_size,
    ranges_are_valid,
    verify_one_leaf,
)
from p2pcp.blobs.tree import LEAF_SIZE, Outboard, leaf_count
from p2pcp.core.errors import (
    IntegrityError,
    LocalProtocolError,
    P2pcpError,
    RemoteProtocolError,
)

LEAF = 1024
TINY_LEAF = 64
BOUNDARY_SIZES = [0, 1, LEAF - 1, LEAF, LEAF + 1, 2 * LEAF, 3 * LEAF + 5, 4 * LEAF, 9 * LEAF - 1]


def to_ranges(indices: set[int]) -> Ranges:
    out: list[tuple[int, int]] = []
    for index in sorted(indices):
        if out and out[-1][1] == index:
            out[-1] = (out[-1][0], index + 1)
        else:
            out.append((index, index + 1))
    return tuple(out)


def decode_all(
    decoder: RangeDecoder, body: bytes, chunk: int = 1 << 30
) -> list[SizeKnown | LeafVerified | DecodeFinished]:
    events: list[SizeKnown | LeafVerified | DecodeFinished] = []
    for at in range(0, len(body), chunk):
        decoder.receive_data(body[at : at + chunk])
        while (event := decoder.next_event()) is not None:
            events.append(event)
    while (event := decoder.next_event()) is not None:
        events.append(event)
    return events


def expected_leaves(size: int, ranges: Ranges, leaf_size: int) -> list[int]:
    return [
        i
        for start, end in clip_ranges(ranges, leaf_count(size, leaf_size))
        for i in range(start, end)
    ]


def check_round_trip(data: bytes, ranges: Ranges, leaf_size: int, chunk: int) -> None:
    outboard = Outboard.from_bytes(data, leaf_size)
    body = encode_bytes(outboard, data, ranges)
    assert len(body) == encoded_size(len(data), ranges, leaf_size)
    decoder = RangeDecoder(outboard.root, ranges, len(data), leaf_size=leaf_size)
    assert decoder.bytes_needed == len(body)
    events = decode_all(decoder, body, chunk)
    assert events[0] == SizeKnown(len(data))
    assert events[-1] == DecodeFinished()
    leaves = [e for e in events if isinstance(e, LeafVerified)]
    assert [e.index for e in leaves] == expected_leaves(len(data), ranges, leaf_size)
    for event in leaves:
        assert event.offset == event.index * leaf_size
        assert event.data == data[event.offset : event.offset + leaf_size]
    assert decoder.is_finished
    assert decoder.bytes_needed == 0
    assert decoder.size == len(data)


@st.composite
def blob_and_ranges(draw: st.DrawFn) -> tuple[bytes, Ranges]:
    size = draw(st.sampled_from(BOUNDARY_SIZES) | st.integers(0, 12 * LEAF))
    count = leaf_count(size, LEAF)
    indices = draw(st.sets(st.integers(0, count + 3), max_size=count + 4))
    ranges = draw(st.sampled_from([ALL, to_ranges(indices)]))
    return draw(st.binary(min_size=size, max_size=size)), ranges


@settings(max_examples=150, deadline=None)
@given(case=blob_and_ranges(), chunk=st.sampled_from([1, 7, 64, 1000, 1 << 20]))
def test_any_range_request_verifies(case: tuple[bytes, Ranges], chunk: int) -> None:
    data, ranges = case
    check_round_trip(data, ranges, LEAF, chunk)


@pytest.mark.parametrize("size", BOUNDARY_SIZES)
def test_byte_at_a_time(size: int) -> None:
    check_round_trip(os.urandom(size), ALL, LEAF, 1)
    check_round_trip(os.urandom(size), ((1, 3),), LEAF, 1)


def test_default_leaf_size() -> None:
    data = os.urandom(2 * LEAF_SIZE + 100)
    check_round_trip(data, ALL, LEAF_SIZE, 16 * 1024)
    check_round_trip(data, ((2, 3),), LEAF_SIZE, 16 * 1024)


def test_plan_is_pre_order() -> None:
    data = os.urandom(3 * LEAF + 1)  # 4 leaves: one parent on top, two below
    outboard = Outboard.from_bytes(data, LEAF)
    kinds = [type(item).__name__ for item in encode_plan(outboard, ALL)]
    assert kinds == [
        "Header",
        "Parents",
        "Parents",
        "LeafRef",
        "LeafRef",
        "Parents",
        "LeafRef",
        "LeafRef",
    ]
    items = list(encode_plan(outboard, ((3, 4),)))
    assert isinstance(items[0], Header)
    assert [type(item) for item in items[1:]] == [Parents, Parents, LeafRef]
    assert items[-1] == LeafRef(3, 3 * LEAF, 1)


@pytest.mark.parametrize("ranges", [(), ((5, 9),), ((100, 2**62),)])
def test_nothing_selected_sends_the_header_only(ranges: Ranges) -> None:
    data = os.urandom(3 * LEAF)
    outboard = Outboard.from_bytes(data, LEAF)
    body = encode_bytes(outboard, data, ranges)
    assert len(body) == HEADER_BYTES == encoded_size(len(data), ranges, LEAF)
    decoder = RangeDecoder(outboard.root, ranges, leaf_size=LEAF)
    assert decode_all(decoder, body) == [SizeKnown(len(data)), DecodeFinished()]


def flip_cases(size: int, ranges: Ranges) -> list[tuple[bytes, bytes, Outboard, int]]:
    data = os.urandom(size)
    outboard = Outboard.from_bytes(data, TINY_LEAF)
    body = encode_bytes(outboard, data, ranges)
    return [(data, body, outboard, position) for position in range(len(body))]


@pytest.mark.parametrize(
    ("size", "ranges"),
    [
        (0, ALL),
        (5, ALL),
        (TINY_LEAF, ALL),
        (5 * TINY_LEAF + 9, ALL),
        (7 * TINY_LEAF, ((2, 3), (5, 6))),
    ],
)
def test_every_flipped_byte_is_caught(size: int, ranges: Ranges) -> None:
    for data, body, outboard, position in flip_cases(size, ranges):
        for mask in (0x01, 0x80):
            bad = bytearray(body)
            bad[position] ^= mask
            decoder = RangeDecoder(outboard.root, ranges, leaf_size=TINY_LEAF)
            emitted: list[LeafVerified] = []
            with pytest.raises(IntegrityError):
                for at in range(0, len(bad), 13):
                    decoder.receive_data(bytes(bad[at : at + 13]))
                    while (event := decoder.next_event()) is not None:
                        if isinstance(event, LeafVerified):
                            emitted.append(event)
            for event in emitted:  # nothing unverified got out
                assert event.data == data[event.offset : event.offset + TINY_LEAF]
            with pytest.raises(IntegrityError):  # and it stays failed
                decoder.next_event()
            with pytest.raises(IntegrityError):
                decoder.receive_data(b"")


def test_truncation_never_finishes() -> None:
    data = os.urandom(5 * TINY_LEAF + 3)
    outboard = Outboard.from_bytes(data, TINY_LEAF)
    body = encode_bytes(outboard, data)
    for cut in range(len(body)):
        decoder = RangeDecoder(outboard.root, ALL, leaf_size=TINY_LEAF)
        events = decode_all(decoder, body[:cut])
        assert DecodeFinished() not in events
        assert not decoder.is_finished
        if cut >= HEADER_BYTES:
            assert decoder.bytes_needed == len(body) - cut


@pytest.mark.parametrize("split", ["together", "after"])
def test_extra_bytes_are_a_protocol_error(split: str) -> None:
    data = os.urandom(2 * LEAF + 1)
    outboard = Outboard.from_bytes(data, LEAF)
    body = encode_bytes(outboard, data)
    decoder = RangeDecoder(outboard.root, ALL, leaf_size=LEAF)
    with pytest.raises(RemoteProtocolError):
        if split == "together":
            decode_all(decoder, body + b"\x00")
        else:
            assert decode_all(decoder, body)[-1] == DecodeFinished()
            decoder.receive_data(b"\x00")
    with pytest.raises(RemoteProtocolError):
        decoder.next_event()


def test_extra_bytes_in_the_first_chunk_are_caught() -> None:
    data = os.urandom(10)
    outboard = Outboard.from_bytes(data, LEAF)
    decoder = RangeDecoder(outboard.root, ALL, leaf_size=LEAF)
    decoder.receive_data(encode_bytes(outboard, data) + b"junk")
    with pytest.raises(RemoteProtocolError):
        decode_all(decoder, b"")


def test_wrong_root_and_wrong_expected_size() -> None:
    data = os.urandom(3 * LEAF)
    outboard = Outboard.from_bytes(data, LEAF)
    body = encode_bytes(outboard, data)
    with pytest.raises(IntegrityError):
        decode_all(RangeDecoder(bytes(32), ALL, leaf_size=LEAF), body)
    with pytest.raises(IntegrityError):
        decode_all(RangeDecoder(outboard.root, ALL, len(data) + 1, leaf_size=LEAF), body)
    # A blob with the right hash of another size: caught by the root check.
    other = Outboard.from_bytes(data[:-1], LEAF)
    with pytest.raises(IntegrityError):
        decode_all(RangeDecoder(outboard.root, ALL, leaf_size=LEAF), encode_bytes(other, data[:-1]))


def test_encode_bytes_refuses_changed_data() -> None:
    data = bytearray(os.urandom(2 * LEAF))
    outboard = Outboard.from_bytes(bytes(data), LEAF)
    data[LEAF] ^= 1
    with pytest.raises(IntegrityError):
        encode_bytes(outboard, data)
    with pytest.raises(IntegrityError):
        encode_bytes(outboard, data[:-1])


@pytest.mark.parametrize(
    "ranges",
    [
        ((1, 1),),
        ((2, 1),),
        ((-1, 2),),
        ((0, 3), (2, 5)),
        ((3, 4), (0, 1)),
        [(0, 1)],
        ((0, 2**62 + 1),),
        ((0.0, 1),),
    ],
)
def test_invalid_ranges_are_refused(ranges: object) -> None:
    assert not ranges_are_valid(ranges)
    with pytest.raises(LocalProtocolError):
        RangeDecoder(bytes(32), ranges, leaf_size=LEAF)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        encoded_size(10, ranges, LEAF)  # type: ignore[arg-type]


def test_valid_ranges() -> None:
    assert ranges_are_valid(())
    assert ranges_are_valid(ALL)
    assert ranges_are_valid(((0, 1), (1, 2), (5, 9)))
    assert clip_ranges(((0, 2), (3, 9), (12, 20)), 5) == ((0, 2), (3, 5))


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=600), chunk=st.integers(1, 64))
def test_hostile_bytes_raise_only_project_errors(garbage: bytes, chunk: int) -> None:
    root = Outboard.from_bytes(b"x" * 300, TINY_LEAF).root
    decoder = RangeDecoder(root, ALL, leaf_size=TINY_LEAF)
    with contextlib.suppress(P2pcpError):
        decode_all(decoder, garbage, chunk)


@settings(max_examples=300, deadline=None)
@given(suffix=st.binary(max_size=600), chunk=st.integers(1, 64))
def test_valid_header_then_garbage(suffix: bytes, chunk: int) -> None:
    data = b"y" * 300
    outboard = Outboard.from_bytes(data, TINY_LEAF)
    header = encode_bytes(outboard, data)[:HEADER_BYTES]
    decoder = RangeDecoder(outboard.root, ALL, leaf_size=TINY_LEAF)
    try:
        events = decode_all(decoder, header + suffix, chunk)
    except P2pcpError:
        return
    for event in events:
        if isinstance(event, LeafVerified):
            assert event.data == data[event.offset : event.offset + TINY_LEAF]


def test_unchecked_leaves_carry_their_proven_hash_and_a_flipped_leaf_fails_its_check() -> None:
    """check_leaves=False: the decoder still proves every leaf's expected hash
    (proof nodes and header), hands out the bytes unchecked, and check_leaf
    catches a leaf whose bytes were changed in flight."""
    data = os.urandom(5 * LEAF + 7)
    outboard = Outboard.from_bytes(data, LEAF)
    body = bytearray(encode_bytes(outboard, data, ALL))
    decoder = RangeDecoder(outboard.root, ALL, len(data), leaf_size=LEAF, check_leaves=False)
    decoder.receive_data(bytes(body))
    leaves = []
    while (event := decoder.next_event()) is not None:
        if isinstance(event, LeafReceived):
            check_leaf(event)  # every honest leaf passes
            leaves.append(event)
        assert not isinstance(event, LeafVerified)
    assert [leaf.index for leaf in leaves] == list(range(6))
    assert b"".join(leaf.data for leaf in leaves) == data
    assert [leaf.hash for leaf in leaves] == [outboard.leaf_hash(i) for i in range(6)]

    body[-3] ^= 0x01  # inside the last leaf
    decoder = RangeDecoder(outboard.root, ALL, len(data), leaf_size=LEAF, check_leaves=False)
    decoder.receive_data(bytes(body))
    last = [e for e in iter(decoder.next_event, None) if isinstance(e, LeafReceived)][-1]
    with pytest.raises(IntegrityError, match="leaf 5 does not match"):
        check_leaf(last)

    body[-3] ^= 0x01
    body[HEADER_BYTES + 1] ^= 0x01  # inside the first proof node: still the decoder's job
    decoder = RangeDecoder(outboard.root, ALL, len(data), leaf_size=LEAF, check_leaves=False)
    decoder.receive_data(bytes(body))
    with pytest.raises(IntegrityError):
        list(iter(decoder.next_event, None))


# -- verify_one_leaf: the GET_MANY fast path must accept and refuse exactly
# what a RangeDecoder for the whole blob accepts and refuses.


def _decoder_result(root: bytes, size: int, body: bytes) -> bytes | None:
    """The leaf a RangeDecoder hands out for ``body`` (None: refused)."""
    decoder = RangeDecoder(root, ALL, expected_size=size)
    data = None
    try:
        decoder.receive_data(body)
        while (event := decoder.next_event()) is not None:
            if isinstance(event, LeafVerified):
                data = event.data
    except P2pcpError:
        return None
    return data if decoder.is_finished else None


def _fast_result(root: bytes, size: int, body: bytes) -> bytes | None:
    try:
        return verify_one_leaf(root, size, body)
    except IntegrityError:
        return None


@pytest.mark.parametrize("size", [0, 1, 1000, LEAF_SIZE])
def test_verify_one_leaf_accepts_the_honest_body(size: int) -> None:
    data = os.urandom(size)
    outboard = Outboard.from_bytes(data)
    body = encode_bytes(outboard, data, ALL)
    assert len(body) == one_leaf_size(size) == encoded_size(size, ALL)
    assert verify_one_leaf(outboard.root, size, body) == data


@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(min_value=0, max_value=64),
    position=st.integers(min_value=0, max_value=200),
    cut=st.integers(min_value=-3, max_value=3),
    flip=st.booleans(),
)
def test_verify_one_leaf_refuses_what_the_decoder_refuses(
    size: int, position: int, cut: int, flip: bool
) -> None:
    data = bytes(range(size))
    outboard = Outboard.from_bytes(data)
    body = bytearray(encode_bytes(outboard, data, ALL))
    if flip and body:
        body[position % len(body)] ^= 0x01
    if cut < 0:
        del body[cut:]
    else:
        body += b"\x00" * cut
    lying = bytes(body)
    fast = _fast_result(outboard.root, size, lying)
    assert fast == _decoder_result(outboard.root, size, lying)
    if lying != encode_bytes(outboard, data, ALL):
        assert fast is None


def test_verify_one_leaf_refuses_another_size_or_root() -> None:
    data = b"hello"
    outboard = Outboard.from_bytes(data)
    body = encode_bytes(outboard, data, ALL)
    with pytest.raises(IntegrityError):
        verify_one_leaf(outboard.root, 4, body[:-1])  # the manifest says 4 bytes
    with pytest.raises(IntegrityError):
        verify_one_leaf(b"\x00" * 32, 5, body)
    with pytest.raises(LocalProtocolError):
        verify_one_leaf(outboard.root, LEAF_SIZE + 1, body)
