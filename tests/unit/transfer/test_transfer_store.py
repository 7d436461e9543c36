"""The receiver's file rules, on real files in a temporary folder."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from p2pcp.blobs.collection import Entry, Manifest
from p2pcp.blobs.tree import TreeBuilder, hash_leaf
from p2pcp.core.errors import StorageError, UnsafePathError, WouldOverwriteError
from p2pcp.transfer.partial import PartialFile
from p2pcp.transfer.store import Store


def _entry(path: str, data: bytes, is_executable: bool = False) -> Entry:
    builder = TreeBuilder()
    builder.update(data)
    return Entry(path, len(data), bytes(builder.finalize().root), 0o755 if is_executable else 0o644)


def _manifest(*files: Entry, dirs: tuple[str, ...] = ()) -> Manifest:
    return Manifest.folder("top", files, dirs)


def _store(out: Path, manifest: Manifest, force: bool = False) -> Store:
    return Store(out, manifest, b"\x01" * 32, force=force)


def _deliver(store: Store, entries: list[Entry], data: bytes) -> str:
    async def deliver() -> tuple[PartialFile, str]:
        partial = await store.open_partial(entries[0].root, len(data))
        await partial.write_verified(0, data, hash_leaf(data))
        return partial, await partial.finish()

    partial, digest = asyncio.run(deliver())
    store.place(partial, entries)
    return digest


def test_plan_fetches_missing_and_keeps_identical(tmp_path: Path) -> None:
    a = _entry("top/a", b"alpha")
    b = _entry("top/b", b"beta")
    (tmp_path / "top").mkdir()
    (tmp_path / "top" / "a").write_bytes(b"alpha")
    plan = _store(tmp_path, _manifest(a, b)).plan()
    assert [entry.path for entry, _ in plan.present] == ["top/a"]
    assert list(plan.to_fetch) == [b.root]
    assert plan.bytes_to_fetch == 4 and plan.bytes_present == 5


def test_different_content_is_refused_without_force(tmp_path: Path) -> None:
    a = _entry("top/a", b"alpha")
    (tmp_path / "top").mkdir()
    (tmp_path / "top" / "a").write_bytes(b"other")
    with pytest.raises(WouldOverwriteError, match="--force"):
        _store(tmp_path, _manifest(a)).plan()
    plan = _store(tmp_path, _manifest(a), force=True).plan()
    assert list(plan.to_fetch) == [a.root]


def test_folder_in_the_way_is_refused_even_with_force(tmp_path: Path) -> None:
    a = _entry("top/a", b"alpha")
    (tmp_path / "top" / "a").mkdir(parents=True)
    with pytest.raises(WouldOverwriteError, match="folder"):
        _store(tmp_path, _manifest(a), force=True).plan()


def test_file_in_place_of_a_parent_folder_is_refused(tmp_path: Path) -> None:
    a = _entry("top/sub/a", b"alpha")
    (tmp_path / "top").write_bytes(b"i am a file")
    with pytest.raises(WouldOverwriteError, match="not a folder"):
        _store(tmp_path, _manifest(a), force=True).plan()


def test_symlinked_parent_is_never_written_through(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "top").symlink_to(elsewhere)
    a = _entry("top/a", b"alpha")
    with pytest.raises(UnsafePathError, match="symbolic link"):
        _store(out, _manifest(a), force=True).plan()
    assert list(elsewhere.iterdir()) == []


def test_place_puts_verified_data_under_every_name_with_modes(tmp_path: Path) -> None:
    data = b"same bytes"
    a = _entry("top/a", data)
    b = _entry("top/deep/b", data, is_executable=True)
    store = _store(tmp_path, _manifest(a, b, dirs=("top/empty",)))
    plan = store.plan()
    assert list(plan.to_fetch.values()) == [[a, b]]
    store.prepare()
    digest = _deliver(store, [a, b], data)
    store.make_empty_dirs()
    store.close(keep_partial=False)
    import blake3

    assert digest == blake3.blake3(data).hexdigest()
    assert (tmp_path / "top" / "a").read_bytes() == data
    assert (tmp_path / "top" / "deep" / "b").read_bytes() == data
    assert os.access(tmp_path / "top" / "deep" / "b", os.X_OK)
    assert not os.access(tmp_path / "top" / "a", os.X_OK)
    assert (tmp_path / "top" / "empty").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["top"]


def test_partial_file_refuses_out_of_order_writes(tmp_path: Path) -> None:
    store = _store(tmp_path, _manifest(_entry("top/a", b"x")))
    store.prepare()

    async def misuse() -> None:
        partial = await store.open_partial(b"\x02" * 32, 6)
        await partial.write_verified(0, b"abc", hash_leaf(b"abc"))
        with pytest.raises(StorageError):
            await partial.write_verified(10, b"def", hash_leaf(b"def"))
        await partial.discard()

    asyncio.run(misuse())
    assert list(store.partial_dir.iterdir()) == []


def test_output_that_is_a_file_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.write_bytes(b"")
    with pytest.raises(WouldOverwriteError):
        _store(out, _manifest(_entry("top/a", b"x"))).plan()


def test_not_enough_space_is_a_clear_error(tmp_path: Path) -> None:
    huge = Entry("top/huge", 2**60, b"\x03" * 32, False)
    store = _store(tmp_path, _manifest(huge))
    with pytest.raises(StorageError, match="not enough free space"):
        store.check_free_space(store.plan())
