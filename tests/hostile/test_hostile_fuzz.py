"""Hypothesis against the decoders, where tests/unit does not already reach.

tests/unit fuzzes the ticket, manifest, wire, relay frame, STUN, probe and
disco decoders and the verified stream with random bytes. Random bytes
rarely get past a decoder's first checks, so these add structured inputs
that do: path sets (``blobs.names``), manifests built from arbitrary entries,
GET requests with arbitrary ranges, and verified streams for arbitrary
range sets with one byte changed. Only p2pcp's own errors may come out, and
whatever is accepted must be safe (a path stays inside its folder, leaves
are the true bytes).
"""

from __future__ import annotations

import contextlib
import posixpath

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcp.blobs.collection import decode_manifest
from p2pcp.blobs.encoding import (
    MAX_LEAF_INDEX,
    LeafVerified,
    RangeDecoder,
    encode_bytes,
    ranges_are_valid,
)
from p2pcp.blobs.names import check_manifest_paths, check_relative_path, display_path
from p2pcp.blobs.tree import Outboard
from p2pcp.core.errors import P2pcpError, RemoteProtocolError, UnsafePathError
from p2pcp.transfer import wire
from tests.support.peers import get_payload, raw_manifest

# Characters that make paths interesting: separators, dots, case, composed
# and decomposed accents, controls, NUL, drive colons, escape sequences,
# bytes that are not UTF-8 (surrogateescape'd) and a lone surrogate that
# stands for no byte.
PATH_ALPHABET = st.sampled_from(
    [
        *["/", ".", "\\", ":", "a", "A", "e", "K", " ", "\x00", "\n", "\x1b", "\x7f", "\x85"],
        *["\u00e9", "\u0301", "\u212a", "\u0130", "\u202e", "\udcff", "\udcc3", "\udca9"],
        "\ud800",
    ]
)
PATHS = st.text(PATH_ALPHABET, min_size=0, max_size=12)
TINY_LEAF = 16
INDEX = st.one_of(
    st.integers(0, 40),
    st.sampled_from([MAX_LEAF_INDEX - 1, MAX_LEAF_INDEX, MAX_LEAF_INDEX + 1, 2**64 - 1]),
)


def _is_contained(path: str) -> bool:
    normalized = posixpath.normpath(posixpath.join("/out", path))
    return normalized.startswith("/out/")


@settings(max_examples=400, deadline=None)
@given(st.lists(PATHS, max_size=6))
def test_path_sets_only_raise_unsafe_path_and_accepted_ones_stay_inside(
    paths: list[str],
) -> None:
    try:
        check_manifest_paths(paths)
    except UnsafePathError as exc:
        assert "\n" not in str(exc) and "\x1b" not in str(exc)
        return
    assert len(set(paths)) == len(paths)
    for path in paths:
        assert _is_contained(path), path
        assert check_relative_path(path) == path
        assert not any(other.startswith(path + "/") for other in paths), path
        assert display_path(path).isprintable()


ENTRY = st.tuples(PATHS, st.integers(0, 2**64 - 1), st.binary(min_size=32, max_size=32))


@settings(max_examples=300, deadline=None)
@given(
    name=PATHS,
    files=st.lists(ENTRY, max_size=5),
    dirs=st.lists(PATHS, max_size=3),
    flags=st.integers(0, 3),
    extra=st.binary(max_size=3),
    version=st.sampled_from([1, 2]),
    mode=st.sampled_from([0, 0o600, 0o755, 0o777, 0o1000, 0o4755, 0xFFFF]),
)
def test_structured_manifests_only_raise_project_errors(
    name: str,
    files: list[tuple[str, int, bytes]],
    dirs: list[str],
    flags: int,
    extra: bytes,
    version: int,
    mode: int,
) -> None:
    data = raw_manifest(name, files, dirs, flags=flags, version=version, mode=mode)
    try:
        manifest = decode_manifest(data + extra)
    except P2pcpError:
        return
    assert all(0 <= entry.mode <= 0o777 for entry in manifest.files)
    for path in [entry.path for entry in manifest.files] + list(manifest.empty_dirs):
        assert _is_contained(path), path


@settings(max_examples=400, deadline=None)
@given(
    ranges=st.lists(st.tuples(INDEX, INDEX), max_size=5),
    count_delta=st.integers(-1, 1),
)
def test_structured_get_requests_only_raise_remote_errors(
    ranges: list[tuple[int, int]], count_delta: int
) -> None:
    clamped = [(start % 2**64, end % 2**64) for start, end in ranges]
    payload = get_payload(bytes(32), clamped)
    if count_delta:
        count = max(0, len(clamped) + count_delta)
        payload = payload[:33] + count.to_bytes(2, "big") + payload[35:]
    try:
        request = wire.decode_request(payload)
    except RemoteProtocolError:
        return
    assert isinstance(request, wire.GetRequest)
    assert ranges_are_valid(request.ranges)


def _sorted_ranges(points: list[int]) -> tuple[tuple[int, int], ...]:
    """Disjoint, non-touching ranges from a set of cut points."""
    cuts = sorted(set(points))
    return tuple((cuts[i], cuts[i + 1]) for i in range(0, len(cuts) - 1, 2))


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=200),
    points=st.lists(st.integers(0, 20), max_size=6),
    position=st.integers(0, 10_000),
    value=st.integers(1, 255),
    chunk=st.integers(1, 50),
    expected_size=st.one_of(st.none(), st.integers(0, 300)),
)
def test_mutated_range_streams_never_yield_wrong_bytes(
    data: bytes,
    points: list[int],
    position: int,
    value: int,
    chunk: int,
    expected_size: int | None,
) -> None:
    """A valid body for any range set, one byte xor-ed: the decoder either
    raises our error or hands out only true leaves."""
    ranges = _sorted_ranges(points)
    outboard = Outboard.from_bytes(data, TINY_LEAF)
    body = bytearray(encode_bytes(outboard, data, ranges))
    body[position % len(body)] ^= value
    decoder = RangeDecoder(outboard.root, ranges, expected_size, leaf_size=TINY_LEAF)
    with contextlib.suppress(P2pcpError):
        for at in range(0, len(body), chunk):
            decoder.receive_data(bytes(body[at : at + chunk]))
            while (event := decoder.next_event()) is not None:
                if isinstance(event, LeafVerified):
                    assert event.data == data[event.offset : event.offset + TINY_LEAF]
