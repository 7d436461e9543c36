"""Small-file batches (transfer/batch.py) on real files: the order write ->
barrier -> rename -> folder fsync, leftovers of a killed run, failures."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import blake3
import pytest

from p2pcp.blobs.collection import Entry, Manifest
from p2pcp.blobs.tree import hash_leaf, hash_root
from p2pcp.core.errors import P2pcpError, StorageError, WouldOverwriteError
from p2pcp.transfer import batch as batch_module
from p2pcp.transfer.batch import SmallFile, find_leftovers, part_path, write_files
from p2pcp.transfer.metadata import MetadataPolicy
from p2pcp.transfer.store import Store


def _entry(path: str, data: bytes, mode: int = 0o640, mtime_ns: int | None = None) -> Entry:
    return Entry(path, len(data), hash_root(hash_leaf(data), len(data)), mode, mtime_ns)


def _small(data: bytes, *paths: str, mode: int = 0o640, mtime_ns: int | None = None) -> SmallFile:
    entries = [_entry(path, data, mode, mtime_ns) for path in paths]
    return SmallFile(entries[0].root, tuple(entries), blake3.blake3(data).hexdigest(), data)


def _umask() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _store(out: Path, files: list[SmallFile]) -> Store:
    entries = [entry for small in files for entry in small.entries]
    store = Store(out, Manifest.folder("top", entries, []), b"\x02" * 32, force=False)
    store.prepare()
    return store


def _commit(store: Store, files: list[SmallFile]) -> list[SmallFile]:
    async def run() -> list[SmallFile]:
        batch = store.small_batch()
        for small in files:
            batch.add(small)
        return await batch.commit()

    return asyncio.run(run())


def _leftover_names(store: Store) -> list[str]:
    return sorted(os.listdir(store.partial_dir))


def test_commit_places_every_file_with_its_metadata(tmp_path: Path) -> None:
    files = [
        _small(f"file {n}\n".encode() * n, f"top/d{n % 7}/f{n}", mtime_ns=1_600_000_000 * 10**9)
        for n in range(200)
    ]
    files.append(_small(b"twice", "top/a/same", "top/b/same", mode=0o755))
    expected = {entry.path: small.data for small in files for entry in small.entries}
    store = _store(tmp_path, files)
    try:
        placed = _commit(store, files)
        assert placed == files
        for small in files:
            for entry in small.entries:
                path = tmp_path / entry.path
                assert path.read_bytes() == expected[entry.path]
                assert stat.S_IMODE(path.stat().st_mode) == entry.mode & ~_umask()
                if entry.mtime_ns is not None:
                    assert path.stat().st_mtime_ns == entry.mtime_ns
        assert _leftover_names(store) == []  # every temporary name was renamed away
    finally:
        store.close(keep_partial=False)


def test_commit_without_syncfs_fsyncs_each_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(batch_module, "_SYNCFS", None)
    monkeypatch.setattr(os, "fsync", counting_fsync)
    files = [_small(bytes([n]) * 10, f"top/f{n}") for n in range(5)]
    store = _store(tmp_path, files)
    try:
        assert _commit(store, files) == files
        # Five files, then their one folder.
        assert len(synced) == 6
        assert all((tmp_path / f"top/f{n}").read_bytes() == bytes([n]) * 10 for n in range(5))
    finally:
        store.close(keep_partial=False)


def test_a_killed_run_leaves_only_part_files_that_the_next_run_checks(tmp_path: Path) -> None:
    """Steps 1 and 2 done, then the process died: nothing under a final
    name; the next run keeps the .part files whose bytes hash to their root
    (and places them), and removes the rest."""
    good = _small(b"verified bytes", "top/good", "top/copy")
    torn = _small(b"bytes cut short", "top/torn")
    wrong = _small(b"the right bytes", "top/wrong")
    store = _store(tmp_path, [good, torn, wrong])
    write_files(store.partial_dir, [good, torn, wrong], MetadataPolicy(umask=_umask()))
    part_path(store.partial_dir, torn.root).write_bytes(b"bytes cut")
    part_path(store.partial_dir, wrong.root).write_bytes(b"the wrong bytes")
    assert not (tmp_path / "top").exists()

    wanted = {small.root: small.entries for small in (good, torn, wrong)}
    found = find_leftovers(store.partial_dir, wanted)
    assert [small.root for small in found] == [good.root]
    assert found[0].blake3_hex == blake3.blake3(b"verified bytes").hexdigest()
    assert not part_path(store.partial_dir, torn.root).exists()
    assert not part_path(store.partial_dir, wrong.root).exists()
    try:
        _commit(store, found)
        assert (tmp_path / "top/good").read_bytes() == b"verified bytes"
        assert (tmp_path / "top/copy").read_bytes() == b"verified bytes"
        assert not (tmp_path / "top/torn").exists() and not (tmp_path / "top/wrong").exists()
    finally:
        store.close(keep_partial=False)


def test_a_failed_rename_keeps_what_was_placed_and_says_so(tmp_path: Path) -> None:
    first = _small(b"first", "top/a/one")
    blocked = _small(b"blocked", "top/b/two")
    last = _small(b"last", "top/c/three")
    store = _store(tmp_path, [first, blocked, last])
    (tmp_path / "top").mkdir()
    (tmp_path / "top" / "b").write_bytes(b"a file where a folder must go")
    try:

        async def run() -> tuple[list[SmallFile], P2pcpError | None]:
            batch = store.small_batch()
            for small in (first, blocked, last):
                batch.add(small)
            try:
                await batch.commit()
            except WouldOverwriteError as exc:
                return batch.placed, exc
            return batch.placed, None

        placed, error = asyncio.run(run())
        assert error is not None
        assert placed == [first]
        assert (tmp_path / "top/a/one").read_bytes() == b"first"
        assert not (tmp_path / "top/c/three").exists()
        # The unplaced files are still verified .part files for a re-run.
        assert part_path(store.partial_dir, last.root).read_bytes() == b"last"
    finally:
        store.close(keep_partial=True)


def test_a_failed_write_places_the_groups_written_before_it(tmp_path: Path) -> None:
    """A write error (here: a folder in the way of a temporary name) is
    raised by commit, after the files written before it were placed."""
    files = [
        _small(f"{n}".encode(), f"top/f{n:03d}") for n in range(batch_module.WRITE_GROUP_FILES)
    ]
    late = _small(b"late", "top/late")
    store = _store(tmp_path, [*files, late])
    part_path(store.partial_dir, late.root).mkdir()
    try:

        async def run() -> list[SmallFile]:
            batch = store.small_batch()
            for small in [*files, late]:
                batch.add(small)
            with pytest.raises(StorageError):
                await batch.commit()
            return batch.placed

        assert asyncio.run(run()) == files
        assert not (tmp_path / "top/late").exists()
    finally:
        store.close(keep_partial=False)


def test_files_are_placed_and_reported_while_the_batch_still_takes_more(tmp_path: Path) -> None:
    """Group commit: files written are placed (and reported through
    on_placed) without waiting for commit(); wait_room returns once few
    enough are left unplaced; commit() then places the rest."""
    count = batch_module.WRITE_GROUP_FILES * 3
    files = [_small(f"file {n}".encode(), f"top/d{n % 3}/f{n}") for n in range(count + 5)]
    expected = {small.entries[0].path: small.data for small in files}
    store = _store(tmp_path / "out", files)
    reported: list[SmallFile] = []

    async def run() -> list[SmallFile]:
        batch = store.small_batch()
        batch.on_placed = reported.extend
        for small in files[:count]:
            batch.add(small)
        # Three full groups are written and committed without commit().
        await asyncio.wait_for(batch.wait_room(1, 1 << 30), 30)
        assert batch.unplaced_files == 0
        assert {small.root for small in reported} == {small.root for small in files[:count]}
        for small in files[count:]:
            batch.add(small)
        return await asyncio.wait_for(batch.commit(), 30)

    placed = asyncio.run(run())
    store.close(keep_partial=False)
    assert placed == []  # reported instead: a batch with a listener keeps none
    assert len(reported) == len(files)
    for path, data in expected.items():
        assert (tmp_path / "out" / path).read_bytes() == data
