"""The p2pcp hash tree: a Merkle tree of keyed BLAKE3 over fixed-size leaves.

This module owns the content hash of a blob (tree format version 1, see
``docs/PROTOCOL.md``, section "Blobs"). It is sans-IO: it hashes bytes that
the caller hands in and never touches files, sockets or the clock.

Invariants:

- A blob of ``size`` bytes is cut into ``leaf_count(size)`` leaves of
  ``leaf_size`` bytes; the last leaf may be shorter. An empty blob has
  exactly one, empty, leaf.
- Domain separation: leaves, parents and the root are hashed with three
  different BLAKE3 keys (derived with BLAKE3's derive-key mode from fixed
  context strings), so no leaf can pose as a parent and no inner node as a
  root.
- Tree shape as in BLAKE3: a node over ``n > 1`` leaves has a left subtree
  over the largest power of two strictly below ``n`` leaves, and a right
  subtree over the rest. Equivalently, level ``k+1`` pairs the nodes of
  level ``k`` left to right and promotes an odd last node unchanged.
- ``top`` is the hash of the tree's top node (the leaf hash when there is one
  leaf); ``root = hash_root(top, size)`` binds the total length, so a header
  ``(size, top)`` that matches the root proves the size.
- ``Outboard.blake3_hex`` is the standard, unkeyed BLAKE3 of the whole blob:
  exactly what ``b3sum`` prints.

Speed: :class:`TreeBuilder` hashes full leaves straight from memoryview
slices (no copies) and, for updates of at least ``PARALLEL_MIN_BYTES``, runs
the standard whole-blob hash on a helper thread at the same time (blake3
releases the GIL), so both hashes proceed on two cores.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import blake3

from p2pcp.core.errors import LocalProtocolError

TREE_VERSION = 1

# 256 KiB, chosen with bench/leafsize.py (its figures: docs/design-notes.md,
# "Leaf size"). Per-leaf Python work (~1 us per blake3 object, more per decoded leaf and
# per LeafRef a sender handles) stops mattering at 256 KiB, where building
# reaches the one-thread blake3 speed. 256 KiB also keeps outboards small
# (64 bytes of hashes per leaf incl. parents: 256 MiB for a 1 TiB file vs
# 1 GiB at 64 KiB). The price, a resume and verification granularity of
# 256 KiB, is under 1 ms of transfer at QUIC's ~0.4 GB/s.
LEAF_SIZE = 256 * 1024

HASH_BYTES = 32
# u64: the largest size the header (and the root) can carry.
MAX_SIZE = 2**64 - 1
# Below this many bytes per update the thread hand-off (~20 us) costs more
# than running the two hashes one after the other.
PARALLEL_MIN_BYTES = 1024 * 1024
# What callers should read per update (readinto a reused buffer): large
# enough that the two hashes overlap well, small enough to stay in cache.
READ_BUFFER_BYTES = 4 * 1024 * 1024

_LEAF_CONTEXT = "p2pcp 2025 blobs tree v1 leaf"
_PARENT_CONTEXT = "p2pcp 2025 blobs tree v1 parent"
_ROOT_CONTEXT = "p2pcp 2025 blobs tree v1 root"


def _derive_key(context: str) -> bytes:
    return bytes(blake3.blake3(b"", derive_key_context=context).digest())


LEAF_KEY = _derive_key(_LEAF_CONTEXT)
PARENT_KEY = _derive_key(_PARENT_CONTEXT)
ROOT_KEY = _derive_key(_ROOT_CONTEXT)

Buffer = bytes | bytearray | memoryview


def check_leaf_size(leaf_size: int) -> int:
    """Return ``leaf_size`` or raise LocalProtocolError if it is not >= 1."""
    if not isinstance(leaf_size, int) or leaf_size < 1:
        raise LocalProtocolError(f"leaf size must be a positive int, not {leaf_size!r}")
    return leaf_size


def leaf_count(size: int, leaf_size: int = LEAF_SIZE) -> int:
    """Number of leaves of a blob of ``size`` bytes (at least one)."""
    if size < 0:
        raise LocalProtocolError(f"negative blob size {size}")
    return max(1, -(-size // leaf_size))


def leaf_length(index: int, size: int, leaf_size: int = LEAF_SIZE) -> int:
    """Byte length of leaf ``index`` of a blob of ``size`` bytes."""
    return max(0, min(leaf_size, size - index * leaf_size))


def hash_leaf(data: Buffer) -> bytes:
    """Keyed BLAKE3 of one leaf's bytes."""
    return bytes(blake3.blake3(data, key=LEAF_KEY).digest())


def hash_parent(left: bytes, right: bytes) -> bytes:
    """Keyed BLAKE3 of the concatenated hashes of two children."""
    return bytes(blake3.blake3(left + right, key=PARENT_KEY).digest())


def hash_root(top: bytes, size: int) -> bytes:
    """The content hash: keyed BLAKE3 of ``top || u64le(size)``."""
    if not 0 <= size <= MAX_SIZE:
        raise LocalProtocolError(f"blob size {size} does not fit in u64")
    return bytes(blake3.blake3(top + size.to_bytes(8, "little"), key=ROOT_KEY).digest())


def split_point(count: int) -> int:
    """Leaves in the left subtree of a node over ``count`` (> 1) leaves."""
    return 1 << ((count - 1).bit_length() - 1)


def node_height(count: int) -> int:
    """Level (0 = leaves) of the node over ``count`` leaves: ceil(log2(count))."""
    return (count - 1).bit_length()


def _parent_level(level: bytes) -> bytes:
    """Pair the hashes of one level; an odd last hash moves up unchanged."""
    out = bytearray()
    nodes = len(level) // HASH_BYTES
    pairs = nodes // 2
    view = memoryview(level)
    for i in range(pairs):
        at = 2 * i * HASH_BYTES
        out += blake3.blake3(view[at : at + 2 * HASH_BYTES], key=PARENT_KEY).digest()
    if nodes % 2:
        out += view[(nodes - 1) * HASH_BYTES :]
    return bytes(out)


class Outboard:
    """Every hash of one blob's tree: enough to answer any range request.

    ``levels[0]`` holds the leaf hashes (32 bytes each, concatenated),
    ``levels[k]`` the nodes of level ``k`` (an odd last node promoted
    unchanged), the last level has one hash: ``top``. Immutable.
    """

    __slots__ = ("_levels", "blake3_hex", "leaf_size", "root", "size", "top")

    def __init__(
        self,
        size: int,
        levels: tuple[bytes, ...],
        blake3_hex: str | None,
        leaf_size: int = LEAF_SIZE,
    ) -> None:
        check_leaf_size(leaf_size)
        if not levels or len(levels[0]) != HASH_BYTES * leaf_count(size, leaf_size):
            raise LocalProtocolError("outboard levels do not match the blob size")
        self.size = size
        self.leaf_size = leaf_size
        self._levels = levels
        self.top: bytes = levels[-1]
        if len(self.top) != HASH_BYTES:
            raise LocalProtocolError("outboard has no single top hash")
        self.root: bytes = hash_root(self.top, size)
        self.blake3_hex = blake3_hex

    @classmethod
    def from_leaf_hashes(
        cls, size: int, leaf_hashes: bytes, blake3_hex: str | None, leaf_size: int = LEAF_SIZE
    ) -> Outboard:
        """Build the parent levels over known leaf hashes (e.g. a saved record)."""
        levels = [bytes(leaf_hashes)]
        while len(levels[-1]) > HASH_BYTES:
            levels.append(_parent_level(levels[-1]))
        return cls(size, tuple(levels), blake3_hex, leaf_size)

    @classmethod
    def from_bytes(cls, data: Buffer, leaf_size: int = LEAF_SIZE) -> Outboard:
        """The outboard of an in-memory blob (e.g. a manifest)."""
        builder = TreeBuilder(leaf_size=leaf_size)
        builder.update(data)
        return builder.finalize()

    @property
    def leaf_count(self) -> int:
        return len(self._levels[0]) // HASH_BYTES

    @property
    def leaf_hashes(self) -> bytes:
        """All leaf hashes, 32 bytes each, in order."""
        return self._levels[0]

    def leaf_hash(self, index: int) -> bytes:
        if not 0 <= index < self.leaf_count:
            raise LocalProtocolError(f"leaf {index} out of range 0..{self.leaf_count}")
        return self._levels[0][index * HASH_BYTES : (index + 1) * HASH_BYTES]

    def node_hash(self, start: int, count: int) -> bytes:
        """Hash of the tree node over leaves ``[start, start + count)``.

        Only nodes of the tree exist: ``start`` is a multiple of
        ``2**node_height(count)`` (callers walk the tree from the top).
        """
        height = node_height(count)
        index = start >> height
        return self._levels[height][index * HASH_BYTES : (index + 1) * HASH_BYTES]

    def __repr__(self) -> str:
        return f"Outboard(size={self.size}, root={self.root.hex()[:16]}..)"


_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _helper() -> ThreadPoolExecutor:
    """One shared helper thread for the whole-blob hash (created on first use)."""
    global _executor  # noqa: PLW0603
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="p2pcp-blake3")
        return _executor


class TreeBuilder:
    """Incremental hasher of one blob: ``update(data)`` any number of times,
    then ``finalize() -> Outboard`` once.

    Computes the leaf hashes and, with ``with_blake3`` (the default), the
    standard BLAKE3 of the whole blob in one pass, the two on two threads.
    Without it (the sender's import: only the receiver reports the standard
    hash) the leaves of a large update are hashed on two threads instead,
    which is as fast as ``b3sum``. ``update`` returns only when it is done
    with ``data``, so the caller may reuse its buffer (``readinto``) right
    after. Different builders may run in different threads.
    """

    def __init__(self, *, leaf_size: int = LEAF_SIZE, with_blake3: bool = True) -> None:
        self.leaf_size = check_leaf_size(leaf_size)
        self._leaves = bytearray()
        self._whole: Any = blake3.blake3() if with_blake3 else None
        self._partial = blake3.blake3(key=LEAF_KEY)
        self._partial_bytes = 0
        self._size = 0
        self._is_finalized = False

    @property
    def size(self) -> int:
        """Bytes hashed so far."""
        return self._size

    def update(self, data: Buffer) -> None:
        if self._is_finalized:
            raise LocalProtocolError("TreeBuilder.update after finalize")
        view = memoryview(data).cast("B")
        length = len(view)
        if length == 0:
            return
        future: Future[object] | None = None
        if self._whole is None:
            pass
        elif length >= PARALLEL_MIN_BYTES:
            future = _helper().submit(self._whole.update, view)
        else:
            self._whole.update(view)
        try:
            self._hash_leaves(view, split=self._whole is None and length >= PARALLEL_MIN_BYTES)
        finally:
            if future is not None:
                future.result()
        self._size += length

    def _full_leaves(self, view: memoryview) -> bytes:
        """Hashes of the full leaves that make up ``view``, concatenated."""
        leaf_size = self.leaf_size
        key = LEAF_KEY
        return b"".join(
            blake3.blake3(view[at : at + leaf_size], key=key).digest()
            for at in range(0, len(view), leaf_size)
        )

    def _hash_leaves(self, view: memoryview, *, split: bool = False) -> None:
        leaf_size = self.leaf_size
        length = len(view)
        at = 0
        if self._partial_bytes:
            take = min(leaf_size - self._partial_bytes, length)
            self._partial.update(view[:take])
            self._partial_bytes += take
            at = take
            if self._partial_bytes < leaf_size:
                return
            self._leaves += self._partial.digest()
            self._partial = blake3.blake3(key=LEAF_KEY)
            self._partial_bytes = 0
        # Full leaves straight from the caller's memory: a full leaf's hash
        # does not depend on what follows, so it is closed at once.
        full = (length - at) // leaf_size
        if split and full >= 2:
            middle = at + (full // 2) * leaf_size
            end = at + full * leaf_size
            first = _helper().submit(self._full_leaves, view[at:middle])
            second = self._full_leaves(view[middle:end])
            self._leaves += first.result() + second
        else:
            self._leaves += self._full_leaves(view[at : at + full * leaf_size])
        at += full * leaf_size
        if at < length:
            self._partial.update(view[at:])
            self._partial_bytes = length - at

    def finalize(self) -> Outboard:
        if self._is_finalized:
            raise LocalProtocolError("TreeBuilder.finalize called twice")
        self._is_finalized = True
        if self._partial_bytes or not self._leaves:
            self._leaves += self._partial.digest()
        return Outboard.from_leaf_hashes(
            self._size,
            bytes(self._leaves),
            None if self._whole is None else str(self._whole.hexdigest()),
            self.leaf_size,
        )
