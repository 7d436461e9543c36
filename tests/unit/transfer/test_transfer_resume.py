"""Resume records and partial files: what an interrupted run leaves is kept
only where it still matches, a torn record is never trusted."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pcp.blobs.encoding import LeafReceived
from p2pcp.blobs.tree import LEAF_SIZE, Outboard
from p2pcp.core.errors import StorageError
from p2pcp.transfer.partial import PartialFile
from p2pcp.transfer.resume import decode_record, encode_record, recorded_bytes
from tests.support.disks import small_tmpfs

ROOT = bytes(range(32))


def test_record_round_trip() -> None:
    hashes = os.urandom(32 * 5)
    record = encode_record(ROOT, 5 * LEAF_SIZE, LEAF_SIZE, hashes)
    assert decode_record(record, root=ROOT, size=5 * LEAF_SIZE, leaf_size=LEAF_SIZE) == hashes


def test_every_torn_or_flipped_record_is_refused() -> None:
    hashes = os.urandom(32 * 3)
    record = encode_record(ROOT, 3 * LEAF_SIZE, LEAF_SIZE, hashes)
    for cut in range(len(record)):
        assert (
            decode_record(record[:cut], root=ROOT, size=3 * LEAF_SIZE, leaf_size=LEAF_SIZE) is None
        )
    for position in range(len(record)):
        flipped = bytearray(record)
        flipped[position] ^= 0x40
        assert (
            decode_record(bytes(flipped), root=ROOT, size=3 * LEAF_SIZE, leaf_size=LEAF_SIZE)
            is None
        )


def test_a_record_of_another_blob_is_refused() -> None:
    record = encode_record(ROOT, LEAF_SIZE, LEAF_SIZE, os.urandom(32))
    assert decode_record(record, root=bytes(32), size=LEAF_SIZE, leaf_size=LEAF_SIZE) is None
    assert decode_record(record, root=ROOT, size=LEAF_SIZE + 1, leaf_size=LEAF_SIZE) is None


@given(st.binary(max_size=300))
def test_hostile_record_bytes_give_none(data: bytes) -> None:
    assert decode_record(data, root=ROOT, size=10 * LEAF_SIZE, leaf_size=LEAF_SIZE) is None


def _write_some(path: Path, data: bytes, outboard: Outboard, leaves: int) -> None:
    async def write() -> None:
        with ThreadPoolExecutor(max_workers=1) as writer:
            partial = await PartialFile.open_or_resume(
                path, writer, root=outboard.root, size=len(data)
            )
            for index in range(leaves):
                chunk = data[index * LEAF_SIZE : (index + 1) * LEAF_SIZE]
                await partial.write_leaf(
                    LeafReceived(index, index * LEAF_SIZE, chunk, outboard.leaf_hash(index))
                )
            await partial.suspend()

    asyncio.run(write())


def _reopen(path: Path, data: bytes, outboard: Outboard) -> tuple[int, int, str | None]:
    """(verified leaves, resumed bytes, digest if complete) of a reopened partial."""

    async def reopen() -> tuple[int, int, str | None]:
        with ThreadPoolExecutor(max_workers=1) as writer:
            partial = await PartialFile.open_or_resume(
                path, writer, root=outboard.root, size=len(data)
            )
            result = (partial.verified_leaves, partial.resumed_bytes)
            if partial.is_complete:
                return (*result, await partial.finish())
            await partial.suspend()
            return (*result, None)

    return asyncio.run(reopen())


@pytest.fixture
def blob() -> tuple[bytes, Outboard]:
    data = os.urandom(4 * LEAF_SIZE + 1000)
    return data, Outboard.from_bytes(data)


def test_suspended_partial_resumes_its_verified_leaves(
    tmp_path: Path, blob: tuple[bytes, Outboard]
) -> None:
    data, outboard = blob
    path = tmp_path / "x.part"
    _write_some(path, data, outboard, 3)
    assert _reopen(path, data, outboard)[:2] == (3, 3 * LEAF_SIZE)
    assert path.stat().st_size == 3 * LEAF_SIZE


def test_complete_partial_hashes_to_the_standard_blake3(
    tmp_path: Path, blob: tuple[bytes, Outboard]
) -> None:
    import blake3

    data, outboard = blob
    path = tmp_path / "x.part"
    _write_some(path, data, outboard, 5)
    leaves, resumed, digest = _reopen(path, data, outboard)
    assert (leaves, resumed) == (5, len(data))
    assert digest == blake3.blake3(data).hexdigest()


def test_damaged_data_is_cut_at_the_first_bad_leaf(
    tmp_path: Path, blob: tuple[bytes, Outboard]
) -> None:
    data, outboard = blob
    path = tmp_path / "x.part"
    _write_some(path, data, outboard, 4)
    with open(path, "r+b") as handle:
        # Flip the byte's bits (writing a fixed value left the data intact
        # whenever the random byte already had it: 1 run in 256).
        handle.seek(LEAF_SIZE + 7)
        handle.write(bytes([data[LEAF_SIZE + 7] ^ 0xFF]))
    assert _reopen(path, data, outboard)[:2] == (1, LEAF_SIZE)
    assert path.stat().st_size == LEAF_SIZE


def test_torn_record_means_starting_over(tmp_path: Path, blob: tuple[bytes, Outboard]) -> None:
    data, outboard = blob
    path = tmp_path / "x.part"
    _write_some(path, data, outboard, 4)
    record = path.with_suffix(".resume")
    record.write_bytes(record.read_bytes()[:-5])
    assert _reopen(path, data, outboard)[:2] == (0, 0)
    assert path.stat().st_size == 0


def test_data_lost_after_the_record_is_detected(
    tmp_path: Path, blob: tuple[bytes, Outboard]
) -> None:
    """A stale record (it lists more than the disk kept) is cut to the data."""
    data, outboard = blob
    path = tmp_path / "x.part"
    _write_some(path, data, outboard, 4)
    os.truncate(path, 2 * LEAF_SIZE + 10)
    assert _reopen(path, data, outboard)[:2] == (2, 2 * LEAF_SIZE)


def test_recorded_bytes_counts_an_intact_record_only() -> None:
    record = encode_record(ROOT, 3 * LEAF_SIZE - 5, LEAF_SIZE, os.urandom(32 * 3))
    assert recorded_bytes(record) == 3 * LEAF_SIZE - 5
    assert recorded_bytes(encode_record(ROOT, 9 * LEAF_SIZE, LEAF_SIZE, os.urandom(64))) == (
        2 * LEAF_SIZE
    )
    assert recorded_bytes(record[:-1]) == 0
    assert recorded_bytes(b"") == 0


# -- a disk that fills up: a real 2 MiB tmpfs ----------------------------------------

TINY_DISK_MIB = 2
TINY_DISK_BYTES = TINY_DISK_MIB * 1024 * 1024


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path, TINY_DISK_MIB) as mount:
        yield mount


def _write_until_full(path: Path, data: bytes, outboard: Outboard) -> StorageError:
    """Write leaves until the disk is full, then suspend; the write's error."""

    async def write() -> StorageError:
        with ThreadPoolExecutor(max_workers=1) as writer:
            partial = await PartialFile.open_or_resume(
                path, writer, root=outboard.root, size=len(data)
            )
            try:
                for index in range(len(data) // LEAF_SIZE):
                    chunk = data[index * LEAF_SIZE : (index + 1) * LEAF_SIZE]
                    await partial.write_leaf(
                        LeafReceived(index, index * LEAF_SIZE, chunk, outboard.leaf_hash(index))
                    )
                await partial.finish()
            except StorageError as exc:
                await partial.suspend()
                return exc
            raise AssertionError("the disk never filled up")

    return asyncio.run(write())


@pytest.mark.parametrize(
    ("room_leaves", "kept_leaves"),
    [
        # The failing write stopped half-way into a leaf: that half is cut,
        # which leaves room for the record of every whole leaf.
        (3.5, 3),
        # The disk filled exactly at a leaf's end: no room even for the
        # record, so the last leaf is given up to make room for it.
        (3, 2),
    ],
)
def test_full_disk_keeps_the_whole_leaves_it_can_record(
    room_leaves: float, kept_leaves: int, tiny_disk: Path
) -> None:
    data = os.urandom(8 * LEAF_SIZE)
    outboard = Outboard.from_bytes(data)
    filler = tiny_disk / "filler"
    filler.write_bytes(b"\0" * (TINY_DISK_BYTES - int(room_leaves * LEAF_SIZE)))
    path = tiny_disk / "x.part"
    error = _write_until_full(path, data, outboard)
    assert "the disk is full" in str(error)
    assert "resume" not in str(error)  # only the store knows what was kept
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler", "x.part", "x.resume"]
    assert path.stat().st_size == kept_leaves * LEAF_SIZE
    assert recorded_bytes(path.with_suffix(".resume").read_bytes()) == kept_leaves * LEAF_SIZE
    # Space comes back; a new run keeps exactly those leaves.
    filler.unlink()
    assert _reopen(path, data, outboard)[:2] == (kept_leaves, kept_leaves * LEAF_SIZE)


def test_full_disk_before_a_whole_leaf_leaves_nothing_behind(tiny_disk: Path) -> None:
    data = os.urandom(8 * LEAF_SIZE)
    outboard = Outboard.from_bytes(data)
    (tiny_disk / "filler").write_bytes(b"\0" * (TINY_DISK_BYTES - LEAF_SIZE // 2))
    path = tiny_disk / "x.part"
    _write_until_full(path, data, outboard)
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler", "x.part"]
    assert path.stat().st_size == 0
