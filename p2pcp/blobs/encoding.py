"""The verified-stream encoding of a blob, or of some of its leaves.

Sans-IO: the sender turns an :class:`~p2pcp.blobs.tree.Outboard` and a range
set into a plan (:func:`encode_plan`); the receiver feeds the bytes it gets
into a :class:`RangeDecoder` and pulls verified leaves out of it.

Wire layout (stream format version 1, ``docs/PROTOCOL.md`` section "Blobs"),
a response body for ``(root, ranges)`` is, with nothing in between:

    header   u64le size || top (32 bytes)                 40 bytes
    then a pre-order walk of the tree from the top node, visiting only the
    nodes whose leaves overlap the (clipped) ranges:
      inner node: left child hash || right child hash     64 bytes
      leaf:       the leaf's bytes (leaf_length bytes)

Invariants:

- Ranges are half-open leaf index ranges, sorted, non-empty and
  non-overlapping; they are clipped to the blob's leaf count. A range set
  that selects no leaf (empty, or entirely past the end) yields the header
  only: the header alone proves the size, because the root binds it.
- The receiver checks ``hash_root(top, size) == root`` before anything else,
  then every parent pair against the hash expected for that node, and every
  leaf against the hash expected for it, before handing the leaf out. No
  unverified byte ever leaves the decoder.
- Wrong data -> IntegrityError; bytes after the end -> RemoteProtocolError;
  a decoder that raised stays failed and raises again on every call.
"""

from __future__ import annotations

import bisect
import collections
from collections.abc import Iterator
from dataclasses import dataclass

from p2pcp.blobs.tree import (
    HASH_BYTES,
    LEAF_SIZE,
    Buffer,
    Outboard,
    check_leaf_size,
    hash_leaf,
    hash_parent,
    hash_root,
    leaf_count,
    leaf_length,
    split_point,
)
from p2pcp.core.errors import (
    IntegrityError,
    LocalProtocolError,
    P2pcpError,
    RemoteProtocolError,
)

STREAM_VERSION = 1
HEADER_BYTES = 8 + HASH_BYTES
PARENT_BYTES = 2 * HASH_BYTES
# The largest leaf index a range may name: leaves are at least one byte and a
# size is a u64, and 2**62 keeps every index a small int in any encoding.
MAX_LEAF_INDEX = 2**62

Ranges = tuple[tuple[int, int], ...]
ALL: Ranges = ((0, MAX_LEAF_INDEX),)


def ranges_are_valid(ranges: object) -> bool:
    """True if ``ranges`` is a tuple of sorted, non-overlapping, non-empty
    ``(start, end)`` int pairs within ``[0, MAX_LEAF_INDEX]``.

    The transfer layer checks a peer's request with this and raises its own
    (remote) error; the functions below raise LocalProtocolError instead.
    """
    if not isinstance(ranges, tuple):
        return False
    previous_end = 0
    for item in ranges:
        if not (isinstance(item, tuple) and len(item) == 2):
            return False
        start, end = item
        if type(start) is not int or type(end) is not int:
            return False
        if not previous_end <= start < end <= MAX_LEAF_INDEX:
            return False
        previous_end = end
    return True


def _check_ranges(ranges: Ranges) -> Ranges:
    if not ranges_are_valid(ranges):
        raise LocalProtocolError(f"invalid leaf ranges {ranges!r:.80}")
    return ranges


def clip_ranges(ranges: Ranges, count: int) -> Ranges:
    """``ranges`` restricted to leaves ``[0, count)``."""
    out = []
    for start, end in _check_ranges(ranges):
        if start >= count:
            break
        out.append((start, min(end, count)))
    return tuple(out)


class _RangeSet:
    """Overlap queries on clipped ranges in O(log r)."""

    __slots__ = ("_ends", "_ranges")

    def __init__(self, ranges: Ranges) -> None:
        self._ranges = ranges
        self._ends = [end for _, end in ranges]

    def overlaps(self, start: int, end: int) -> bool:
        at = bisect.bisect_right(self._ends, start)
        return at < len(self._ranges) and self._ranges[at][0] < end

    def covers(self, start: int, end: int) -> bool:
        at = bisect.bisect_right(self._ends, start)
        return at < len(self._ranges) and self._ranges[at][0] <= start and end <= self._ends[at]


@dataclass(frozen=True, slots=True)
class Header:
    """First item of a plan: ``u64le size || top``."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Parents:
    """The two child hashes of one inner node: ``left || right``."""

    data: bytes


@dataclass(frozen=True, slots=True)
class LeafRef:
    """A leaf to send: the caller reads ``length`` bytes at ``offset``,
    checks ``hash_leaf(data) == outboard.leaf_hash(index)`` and sends them."""

    index: int
    offset: int
    length: int


Item = Header | Parents | LeafRef


def encode_header(size: int, top: bytes) -> bytes:
    return size.to_bytes(8, "little") + top


def encode_plan(outboard: Outboard, ranges: Ranges) -> Iterator[Item]:
    """The items of the response body for ``ranges``, in wire order."""
    count = outboard.leaf_count
    wanted = _RangeSet(clip_ranges(ranges, count))
    leaf_size = outboard.leaf_size
    size = outboard.size
    yield Header(encode_header(size, outboard.top))
    if not wanted.overlaps(0, count):
        return
    stack = [(0, count)]
    while stack:
        start, span = stack.pop()
        if span == 1:
            yield LeafRef(start, start * leaf_size, leaf_length(start, size, leaf_size))
            continue
        left = split_point(span)
        yield Parents(
            outboard.node_hash(start, left) + outboard.node_hash(start + left, span - left)
        )
        if wanted.overlaps(start + left, start + span):
            stack.append((start + left, span - left))
        if wanted.overlaps(start, start + left):
            stack.append((start, left))


def encode_bytes(outboard: Outboard, data: Buffer, ranges: Ranges = ALL) -> bytes:
    """The whole response body for an in-memory blob (e.g. a manifest).

    Raises IntegrityError if ``data`` is not the blob of ``outboard``.
    """
    view = memoryview(data)
    if len(view) != outboard.size:
        raise IntegrityError("blob size differs from its outboard")
    parts: list[bytes] = []
    for item in encode_plan(outboard, ranges):
        if isinstance(item, LeafRef):
            leaf = bytes(view[item.offset : item.offset + item.length])
            if hash_leaf(leaf) != outboard.leaf_hash(item.index):
                raise IntegrityError(f"leaf {item.index} differs from its outboard")
            parts.append(leaf)
        else:
            parts.append(item.data)
    return b"".join(parts)


def encoded_size(size: int, ranges: Ranges, leaf_size: int = LEAF_SIZE) -> int:
    """Exact length of the response body for a blob of ``size`` bytes.

    Runs in O(len(ranges) * log(leaves)): a subtree inside one range costs
    ``64 * (leaves - 1)`` bytes of parents plus its leaf bytes.
    """
    check_leaf_size(leaf_size)
    count = leaf_count(size, leaf_size)
    wanted = _RangeSet(clip_ranges(ranges, count))

    def leaf_bytes(start: int, end: int) -> int:
        return max(0, min(end * leaf_size, size) - start * leaf_size)

    def subtree(start: int, span: int) -> int:
        end = start + span
        if not wanted.overlaps(start, end):
            return 0
        if wanted.covers(start, end):
            return PARENT_BYTES * (span - 1) + leaf_bytes(start, end)
        left = split_point(span)
        return PARENT_BYTES + subtree(start, left) + subtree(start + left, span - left)

    return HEADER_BYTES + subtree(0, count)


def one_leaf_size(size: int) -> int:
    """Length of the whole body of a blob of at most one leaf: header and leaf."""
    return HEADER_BYTES + size


def verify_one_leaf(root: bytes, size: int, body: Buffer) -> bytes:
    """The bytes of a blob of at most one leaf, from its whole body, checked
    exactly as :class:`RangeDecoder` checks it (header against ``root``,
    the size against ``size`` from a manifest, the leaf against the header)
    without a decoder's per-blob set-up: a receive of 100,000 small files
    verifies 100,000 of them. Raises IntegrityError for anything else."""
    if not 0 <= size <= LEAF_SIZE:
        raise LocalProtocolError(f"a blob of {size} bytes has more than one leaf")
    if len(body) != HEADER_BYTES + size:
        raise IntegrityError("the answer for a blob has the wrong length")
    header = bytes(body[:HEADER_BYTES])
    claimed = int.from_bytes(header[:8], "little")
    if claimed != size:
        raise IntegrityError(f"blob has {claimed} bytes where the manifest says {size}")
    top = header[8:]
    if hash_root(top, size) != root:
        raise IntegrityError("blob header does not match the content hash")
    data = bytes(body[HEADER_BYTES:])
    _check_leaf_bytes(0, data, top)
    return data


@dataclass(frozen=True, slots=True)
class SizeKnown:
    """The header verified against the root: the blob has ``size`` bytes."""

    size: int


@dataclass(frozen=True, slots=True)
class LeafVerified:
    """Leaf ``index`` (at byte ``offset`` of the blob) verified: ``data``,
    whose leaf hash (``hash_leaf(data)``, proven against the root) is ``hash``."""

    index: int
    offset: int
    data: bytes
    hash: bytes = b""


@dataclass(frozen=True, slots=True)
class LeafReceived:
    """Leaf ``index`` (at byte ``offset``) arrived, NOT yet checked: its bytes
    are ``data`` and its leaf hash, proven against the root, must be
    ``hash``. The consumer checks ``hash_leaf(data) == hash`` (``check_leaf``)
    before it uses a single byte. Emitted instead of LeafVerified by a
    decoder made with ``check_leaves=False``, so that the hashing (~0.25 s
    of CPU per GiB) can run beside the event loop, on the thread that
    writes (blake3 releases the GIL)."""

    index: int
    offset: int
    data: bytes
    hash: bytes


def check_leaf(leaf: LeafReceived) -> None:
    """Raise IntegrityError unless ``leaf``'s bytes have its proven hash."""
    _check_leaf_bytes(leaf.index, leaf.data, leaf.hash)


def _check_leaf_bytes(index: int, data: Buffer, expected: bytes) -> None:
    """The one leaf check, wherever a leaf is checked (decoder, writer, small files)."""
    if hash_leaf(data) != expected:
        raise IntegrityError(f"leaf {index} does not match the content hash")


@dataclass(frozen=True, slots=True)
class DecodeFinished:
    """Every requested leaf was verified and the body ended exactly there."""


Event = SizeKnown | LeafVerified | LeafReceived | DecodeFinished


class _Chunks:
    """Received bytes waiting to be decoded, kept as the chunks they came in:
    taking a leaf copies its bytes once (none when a chunk is exactly it),
    where a bytearray copied each chunk in and the leaf out, and moved what
    was left."""

    __slots__ = ("_chunks", "_length", "_offset")

    def __init__(self) -> None:
        self._chunks: collections.deque[bytes] = collections.deque()
        self._offset = 0  # bytes of the first chunk already taken
        self._length = 0

    def __len__(self) -> int:
        return self._length

    def append(self, data: bytes) -> None:
        self._chunks.append(data)
        self._length += len(data)

    def take(self, count: int) -> bytes:
        """The next ``count`` bytes (``count <= len(self)``)."""
        if count <= 0:
            return b""
        chunks = self._chunks
        first = chunks[0]
        at = self._offset
        self._length -= count
        if len(first) - at > count:
            self._offset = at + count
            return first[at : at + count]
        parts: list[bytes | memoryview] = []
        while count:
            chunk = chunks[0]
            available = len(chunk) - at
            if available > count:
                parts.append(memoryview(chunk)[at : at + count])
                self._offset = at + count
                break
            parts.append(memoryview(chunk)[at:] if at else chunk)
            chunks.popleft()
            count -= available
            at = self._offset = 0
        if len(parts) == 1 and type(parts[0]) is bytes:
            return parts[0]
        return b"".join(parts)


class RangeDecoder:
    """Incremental verifier of one response body for ``(root, ranges)``.

    Inputs: ``receive_data(data)`` with the body bytes in any chunking.
    Outputs: ``next_event()`` -> SizeKnown once, then LeafVerified for each
    requested leaf in index order, then DecodeFinished once, else None when
    it needs more bytes. ``bytes_needed`` counts the body bytes still to
    come (a lower bound until the size is known, unless ``expected_size``
    was given). The caller must see DecodeFinished before it trusts that all
    requested leaves came: the end of the stream alone proves nothing.

    ``expected_size`` (from a manifest) must equal the verified size, else
    IntegrityError. ``max_size`` (a limit of the caller's, e.g. for a
    manifest held in memory) refuses a larger verified size with
    RemoteProtocolError as soon as the header arrives, before any leaf.
    ``check_leaves=False``: leaves come out as LeafReceived, checked by the
    consumer (every proof node is still checked here, so each leaf's
    expected hash is proven).
    """

    def __init__(
        self,
        root: bytes,
        ranges: Ranges,
        expected_size: int | None = None,
        *,
        leaf_size: int = LEAF_SIZE,
        max_size: int | None = None,
        check_leaves: bool = True,
    ) -> None:
        if len(root) != HASH_BYTES:
            raise LocalProtocolError("a root hash has 32 bytes")
        self._root = bytes(root)
        self._ranges = _check_ranges(ranges)
        self._expected_size = expected_size
        self._max_size = max_size
        self._leaf_size = check_leaf_size(leaf_size)
        self._buffer = _Chunks()
        self._received = 0
        self._size: int | None = None
        self._total: int | None = None
        self._wanted = _RangeSet(())
        # Nodes still to read, last = next: (first leaf, leaf count, expected hash).
        self._stack: list[tuple[int, int, bytes]] = []
        self._error: P2pcpError | None = None
        self._is_finished = False
        self._check_leaves = check_leaves

    @property
    def size(self) -> int | None:
        """The verified size, once SizeKnown was emitted."""
        return self._size

    @property
    def is_finished(self) -> bool:
        """True once DecodeFinished was emitted."""
        return self._is_finished

    @property
    def bytes_needed(self) -> int:
        if self._total is not None:
            return max(0, self._total - self._received)
        if self._expected_size is not None:
            estimate = encoded_size(self._expected_size, self._ranges, self._leaf_size)
            return max(0, estimate - self._received)
        return max(0, HEADER_BYTES - self._received)

    def _fail(self, error: P2pcpError) -> P2pcpError:
        self._error = error
        self._buffer = _Chunks()
        self._stack = []
        return error

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise type(self._error)(self._error.message)

    def receive_data(self, data: Buffer) -> None:
        self._raise_if_failed()
        length = len(memoryview(data))
        if not length:
            return
        self._received += length
        if self._is_finished or (self._total is not None and self._received > self._total):
            raise self._fail(RemoteProtocolError("the peer sent bytes after the end of a blob"))
        self._buffer.append(data if type(data) is bytes else bytes(data))

    def next_event(self) -> Event | None:
        self._raise_if_failed()
        try:
            return self._next_event()
        except P2pcpError as error:
            raise self._fail(error) from None

    def _take(self, count: int) -> bytes:
        return self._buffer.take(count)

    def _next_event(self) -> Event | None:
        buffer = self._buffer
        if self._size is None:
            if len(buffer) < HEADER_BYTES:
                return None
            return self._read_header()
        stack = self._stack
        while stack:
            start, span, expected = stack[-1]
            if span == 1:
                length = leaf_length(start, self._size, self._leaf_size)
                if len(buffer) < length:
                    return None
                data = self._take(length)
                stack.pop()
                if not self._check_leaves:
                    return LeafReceived(start, start * self._leaf_size, data, expected)
                _check_leaf_bytes(start, data, expected)
                return LeafVerified(start, start * self._leaf_size, data, expected)
            if len(buffer) < PARENT_BYTES:
                return None
            pair = self._take(PARENT_BYTES)
            if hash_parent(pair[:HASH_BYTES], pair[HASH_BYTES:]) != expected:
                raise IntegrityError(f"proof node over leaf {start} does not match")
            stack.pop()
            left = split_point(span)
            if self._wanted.overlaps(start + left, start + span):
                stack.append((start + left, span - left, pair[HASH_BYTES:]))
            if self._wanted.overlaps(start, start + left):
                stack.append((start, left, pair[:HASH_BYTES]))
        if self._is_finished:
            return None
        if buffer:
            raise RemoteProtocolError("the peer sent bytes after the end of a blob")
        self._is_finished = True
        return DecodeFinished()

    def _read_header(self) -> SizeKnown:
        header = self._take(HEADER_BYTES)
        size = int.from_bytes(header[:8], "little")
        top = header[8:]
        if hash_root(top, size) != self._root:
            raise IntegrityError("blob header does not match the content hash")
        if self._expected_size is not None and size != self._expected_size:
            raise IntegrityError(
                f"blob has {size} bytes where the manifest says {self._expected_size}"
            )
        if self._max_size is not None and size > self._max_size:
            raise RemoteProtocolError(
                f"blob has {size:,} bytes, more than the {self._max_size:,} accepted"
            )
        count = leaf_count(size, self._leaf_size)
        clipped = clip_ranges(self._ranges, count)
        self._wanted = _RangeSet(clipped)
        self._size = size
        self._total = encoded_size(size, clipped, self._leaf_size)
        if self._received > self._total:
            raise RemoteProtocolError("the peer sent bytes after the end of a blob")
        if self._wanted.overlaps(0, count):
            self._stack.append((0, count, top))
        return SizeKnown(size)
