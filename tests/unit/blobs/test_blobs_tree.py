"""Hash tree: shape, domain separation, chunking independence, b3sum agreement."""

from __future__ import annotations

import itertools
import os

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcp.blobs.tree import (
    LEAF_SIZE,
    PARALLEL_MIN_BYTES,
    Outboard,
    TreeBuilder,
    hash_leaf,
    hash_parent,
    hash_root,
    leaf_count,
    leaf_length,
)
from p2pcp.core.errors import LocalProtocolError

SMALL_LEAF = 1024


def reference_top(data: bytes, leaf_size: int) -> bytes:
    """The tree as the protocol text defines it, written recursively."""
    leaves = [data[at : at + leaf_size] for at in range(0, len(data), leaf_size)] or [b""]

    def node(start: int, count: int) -> bytes:
        if count == 1:
            return hash_leaf(leaves[start])
        left = 1
        while left * 2 < count:
            left *= 2
        return hash_parent(node(start, left), node(start + left, count - left))

    return node(0, len(leaves))


def test_leaf_count_and_lengths() -> None:
    assert leaf_count(0, SMALL_LEAF) == 1
    assert leaf_count(1, SMALL_LEAF) == 1
    assert leaf_count(SMALL_LEAF, SMALL_LEAF) == 1
    assert leaf_count(SMALL_LEAF + 1, SMALL_LEAF) == 2
    assert leaf_length(0, 0, SMALL_LEAF) == 0
    assert leaf_length(1, SMALL_LEAF + 5, SMALL_LEAF) == 5
    assert leaf_count(LEAF_SIZE * 3) == 3


def test_domain_separation_and_length_binding() -> None:
    left, right = hash_leaf(b"a"), hash_leaf(b"b")
    assert hash_parent(left, right) != hash_leaf(left + right)
    top = hash_leaf(b"x")
    assert hash_root(top, 1) != hash_root(top, 2)
    assert hash_root(top, 1) != hash_parent(top, (1).to_bytes(8, "little") + bytes(24))
    assert len(hash_root(top, 0)) == 32


def test_known_answers() -> None:
    """Pinned vectors: a change here changes the wire format (bump versions)."""
    assert Outboard.from_bytes(b"").root.hex() == KNOWN_EMPTY
    assert Outboard.from_bytes(bytes(range(256)) * 4, 256).root.hex() == KNOWN_4_LEAVES


@pytest.mark.parametrize(
    "size",
    [
        0,
        1,
        SMALL_LEAF - 1,
        SMALL_LEAF,
        SMALL_LEAF + 1,
        2 * SMALL_LEAF,
        3 * SMALL_LEAF + 7,
        7 * SMALL_LEAF,
        9 * SMALL_LEAF - 1,
    ],
)
def test_matches_reference_tree(size: int) -> None:
    data = os.urandom(size)
    outboard = Outboard.from_bytes(data, SMALL_LEAF)
    assert outboard.size == size
    assert outboard.leaf_count == leaf_count(size, SMALL_LEAF)
    assert outboard.top == reference_top(data, SMALL_LEAF)
    assert outboard.root == hash_root(outboard.top, size)
    assert outboard.blake3_hex == blake3.blake3(data).hexdigest()
    for index in range(outboard.leaf_count):
        chunk = data[index * SMALL_LEAF : (index + 1) * SMALL_LEAF]
        assert outboard.leaf_hash(index) == hash_leaf(chunk)


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(max_size=6 * SMALL_LEAF),
    cuts=st.lists(st.integers(min_value=0, max_value=6 * SMALL_LEAF), max_size=8),
)
def test_chunking_does_not_matter(data: bytes, cuts: list[int]) -> None:
    builder = TreeBuilder(leaf_size=SMALL_LEAF)
    bounds = sorted({0, len(data), *(cut for cut in cuts if cut <= len(data))})
    for start, end in itertools.pairwise(bounds):
        builder.update(memoryview(data)[start:end])
    outboard = builder.finalize()
    whole = Outboard.from_bytes(data, SMALL_LEAF)
    assert outboard.root == whole.root
    assert outboard.leaf_hashes == whole.leaf_hashes
    assert outboard.top == reference_top(data, SMALL_LEAF)
    assert outboard.blake3_hex == blake3.blake3(data).hexdigest()


def test_large_updates_use_the_parallel_path() -> None:
    data = os.urandom(3 * PARALLEL_MIN_BYTES + 12345)
    builder = TreeBuilder()
    builder.update(bytearray(data[:5]))
    builder.update(data[5:])
    outboard = builder.finalize()
    assert builder.size == len(data)
    assert outboard.blake3_hex == blake3.blake3(data).hexdigest()
    assert outboard.top == reference_top(data, LEAF_SIZE)


def test_misuse_raises_local_error() -> None:
    builder = TreeBuilder(leaf_size=SMALL_LEAF)
    outboard = builder.finalize()
    with pytest.raises(LocalProtocolError):
        builder.update(b"x")
    with pytest.raises(LocalProtocolError):
        builder.finalize()
    with pytest.raises(LocalProtocolError):
        outboard.leaf_hash(1)
    with pytest.raises(LocalProtocolError):
        TreeBuilder(leaf_size=0)


def test_from_leaf_hashes_rebuilds_the_same_outboard() -> None:
    data = os.urandom(5 * SMALL_LEAF + 3)
    outboard = Outboard.from_bytes(data, SMALL_LEAF)
    again = Outboard.from_leaf_hashes(
        outboard.size, outboard.leaf_hashes, outboard.blake3_hex, SMALL_LEAF
    )
    assert again.root == outboard.root
    with pytest.raises(LocalProtocolError):
        Outboard.from_leaf_hashes(outboard.size + SMALL_LEAF, outboard.leaf_hashes, "", SMALL_LEAF)


KNOWN_EMPTY = "f4644dd2196b38dccf3d56b7138ec1558c30298bfe79ca0322fb7a9af9bcad5b"
KNOWN_4_LEAVES = "94ff001d4bf8969cb939063e25c982a51d9a2b30e76c58fc592a636a7d445989"


def test_tree_without_standard_hash_is_the_same_tree() -> None:
    """The sender's import skips the standard BLAKE3 and splits leaves over
    two threads; the tree must not change, whatever the update sizes."""
    import os

    from p2pcp.blobs.tree import LEAF_SIZE, TreeBuilder

    data = os.urandom(5 * LEAF_SIZE + 12345)
    with_hash = TreeBuilder()
    with_hash.update(data)
    expected = with_hash.finalize()
    for piece in (1000, LEAF_SIZE - 1, 4 * 1024 * 1024, len(data)):
        builder = TreeBuilder(with_blake3=False)
        for at in range(0, len(data), piece):
            builder.update(data[at : at + piece])
        outboard = builder.finalize()
        assert outboard.root == expected.root
        assert outboard.leaf_hashes == expected.leaf_hashes
        assert outboard.blake3_hex is None
