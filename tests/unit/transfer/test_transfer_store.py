"""The receiver's file rules, on real files in a temporary folder."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from p2pcp.blobs.collection import Entry, Manifest
from p2pcp.blobs.encoding import LeafReceived
from p2pcp.blobs.tree import TreeBuilder, hash_leaf
from p2pcp.core.defaults import PARTIAL_DIR_PREFIX
from p2pcp.core.errors import StorageError, WouldOverwriteError
from p2pcp.transfer.partial import PartialFile
from p2pcp.transfer.store import Store


def _entry(path: str, data: bytes, mode: int = 0o644, mtime_ns: int | None = None) -> Entry:
    builder = TreeBuilder()
    builder.update(data)
    return Entry(path, len(data), bytes(builder.finalize().root), mode, mtime_ns)


def _umask() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _manifest(*files: Entry, dirs: tuple[str, ...] = ()) -> Manifest:
    return Manifest.folder("top", files, dirs)


def _store(out: Path, manifest: Manifest, force: bool = False) -> Store:
    return Store(out, manifest, b"\x01" * 32, force=force)


def _deliver(store: Store, entries: tuple[Entry, ...], data: bytes) -> str:
    async def deliver() -> tuple[PartialFile, str]:
        partial = await store.open_partial(entries[0].root, len(data))
        await partial.write_leaf(LeafReceived(0, 0, data, hash_leaf(data)))
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
    # Local state, not the peer's doing: exit 5, even with --force.
    with pytest.raises(WouldOverwriteError, match="symbolic link"):
        _store(out, _manifest(a), force=True).plan()
    assert list(elsewhere.iterdir()) == []


def test_plan_inspects_each_folder_once_and_still_refuses_what_is_in_the_way(
    tmp_path: Path,
) -> None:
    """The planner remembers each folder it inspected: a file under a
    missing folder needs no look, one under an existing folder is still
    compared, and a link or a file where a folder belongs, at any depth,
    for a file or for an empty folder, is still refused."""
    out = tmp_path / "out"
    (out / "top" / "old").mkdir(parents=True)
    (out / "top" / "old" / "same").write_bytes(b"same")
    files = [
        _entry("top/new/deep/a", b"a"),  # under missing folders
        _entry("top/new/deep/b", b"b"),
        _entry("top/old/same", b"same"),  # already here
        _entry("top/old/z", b"z"),
    ]
    plan = _store(out, _manifest(*files)).plan()
    assert sorted(plan.to_fetch) == sorted(entry.root for entry in (files[0], files[1], files[3]))
    assert [entry.path for entry, _digest in plan.present] == ["top/old/same"]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "top" / "old" / "sub").symlink_to(elsewhere)
    with pytest.raises(WouldOverwriteError, match="symbolic link where the sender has a folder"):
        _store(out, _manifest(_entry("top/old/sub/deeper/f", b"f"))).plan()
    with pytest.raises(WouldOverwriteError, match="is not a folder"):
        _store(out, _manifest(_entry("top/old/same/f", b"f"))).plan()
    with pytest.raises(WouldOverwriteError, match="is not a folder"):
        _store(out, _manifest(dirs=("top/old/same",))).plan()
    with pytest.raises(WouldOverwriteError, match="symbolic link"):
        _store(out, _manifest(dirs=("top/old/sub",))).plan()
    assert list(elsewhere.iterdir()) == []


def test_symlink_under_a_final_name_is_replaced_only_with_force(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"keep me")
    out = tmp_path / "out"
    (out / "top").mkdir(parents=True)
    (out / "top" / "a").symlink_to(target)
    a = _entry("top/a", b"alpha")
    with pytest.raises(WouldOverwriteError, match=r"symbolic link.*--force"):
        _store(out, _manifest(a)).plan()
    store = _store(out, _manifest(a), force=True)
    assert list(store.plan().to_fetch) == [a.root]
    store.prepare()
    _deliver(store, [a], b"alpha")
    store.close(keep_partial=False)
    assert not (out / "top" / "a").is_symlink()
    assert (out / "top" / "a").read_bytes() == b"alpha"
    assert target.read_bytes() == b"keep me"


def test_output_folder_that_is_a_link_to_a_folder_is_followed(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    a = _entry("top/a", b"alpha")
    assert list(_store(tmp_path / "link", _manifest(a)).plan().to_fetch) == [a.root]


def test_place_puts_verified_data_under_every_name_with_modes(tmp_path: Path) -> None:
    data = b"same bytes"
    a = _entry("top/a", data)
    b = _entry("top/deep/b", data, mode=0o755)
    store = _store(tmp_path, _manifest(a, b, dirs=("top/empty",)))
    plan = store.plan()
    assert list(plan.to_fetch.values()) == [(a, b)]
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
        await partial.write_leaf(LeafReceived(0, 0, b"abc", hash_leaf(b"abc")))
        with pytest.raises(StorageError):
            await partial.write_leaf(LeafReceived(1, 10, b"def", hash_leaf(b"def")))
        await partial.discard()

    asyncio.run(misuse())
    assert list(store.partial_dir.iterdir()) == []


def test_output_that_is_a_file_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.write_bytes(b"")
    with pytest.raises(WouldOverwriteError):
        _store(out, _manifest(_entry("top/a", b"x"))).plan()


def test_not_enough_space_is_a_clear_error(tmp_path: Path) -> None:
    huge = Entry("top/huge", 2**60, b"\x03" * 32)
    store = _store(tmp_path, _manifest(huge))
    with pytest.raises(StorageError, match="not enough free space"):
        store.check_free_space(store.plan())


def test_each_path_gets_its_own_mode_and_mtime_masked_by_the_umask(tmp_path: Path) -> None:
    data = b"one blob, three names"
    entries = [
        _entry("top/private", data, mode=0o600, mtime_ns=1_000_000_000_123_456_789),
        _entry("top/group", data, mode=0o640, mtime_ns=1_200_000_000_000_000_001),
        _entry("top/tool", data, mode=0o4755, mtime_ns=None),
    ]
    store = _store(tmp_path, _manifest(*entries))
    plan = store.plan()
    store.prepare()
    _deliver(store, plan.to_fetch[entries[0].root], data)
    store.close(keep_partial=False)
    for entry in entries:
        got = (tmp_path / entry.path).stat()
        # setuid never travels; the rest is the sender's, masked by our umask.
        assert stat.S_IMODE(got.st_mode) == entry.mode & 0o777 & ~_umask(), entry.path
        if entry.mtime_ns is not None:
            assert got.st_mtime_ns == entry.mtime_ns, entry.path
    # Unknown mtime (a v1 manifest): the time it arrived.
    assert (tmp_path / "top/tool").stat().st_mtime_ns > entries[1].mtime_ns


def test_a_second_store_of_the_same_ticket_is_refused_until_the_first_closes(
    tmp_path: Path,
) -> None:
    a = _entry("top/a", b"alpha")
    first = _store(tmp_path, _manifest(a))
    first.plan()
    first.prepare()
    second = _store(tmp_path, _manifest(a))
    second.plan()
    with pytest.raises(WouldOverwriteError, match="another p2pcp receive"):
        second.prepare()
    # The refused store never touches the folder it does not hold.
    second.close(keep_partial=False)
    assert first.partial_dir.is_dir()
    _deliver(first, [a], b"alpha")
    first.close(keep_partial=False)
    assert not first.partial_dir.exists()
    third = _store(tmp_path, _manifest(a))
    third.prepare()
    assert third.partial_dir.is_dir()
    third.close(keep_partial=False)
    assert [p.name for p in (tmp_path / "top").iterdir()] == ["a"]
    assert not list(tmp_path.glob(f"{PARTIAL_DIR_PREFIX}*"))


def test_plan_writes_nothing_and_leaves_no_probe_behind(tmp_path: Path) -> None:
    _store(tmp_path / "new" / "out", _manifest(_entry("top/a", b"x"))).plan()
    assert list(tmp_path.iterdir()) == []


def test_resume_note_promises_only_what_is_recorded(tmp_path: Path) -> None:
    from p2pcp.blobs.tree import LEAF_SIZE, Outboard

    data = os.urandom(3 * LEAF_SIZE)
    outboard = Outboard.from_bytes(data)
    entry = Entry("top/a", len(data), bytes(outboard.root))
    store = _store(tmp_path, _manifest(entry))
    store.prepare()
    assert "no verified data" in store.resume_note()

    async def write_two_leaves() -> None:
        partial = await store.open_partial(entry.root, len(data))
        for index in range(2):
            chunk = data[index * LEAF_SIZE : (index + 1) * LEAF_SIZE]
            await partial.write_leaf(
                LeafReceived(index, index * LEAF_SIZE, chunk, outboard.leaf_hash(index))
            )
        await partial.suspend()

    asyncio.run(write_two_leaves())
    assert store.kept_bytes() == 2 * LEAF_SIZE
    assert f"{2 * LEAF_SIZE:,} bytes" in store.resume_note()
    assert "run the same command again" in store.resume_note()
    store.close(keep_partial=True)


def _remove_tree(top: Path) -> None:
    """Remove a tree level by level (shutil.rmtree recurses per level)."""
    stack = [str(top)]
    while stack:
        with os.scandir(stack[-1]) as scan:
            children = list(scan)
        folders = [child.path for child in children if child.is_dir(follow_symlinks=False)]
        for child in children:
            if not child.is_dir(follow_symlinks=False):
                os.unlink(child.path)
        if folders:
            stack.extend(folders)
        else:
            os.rmdir(stack.pop())


def test_a_tree_1000_levels_deep_is_placed(tmp_path: Path) -> None:
    deep = "top/" + "d/" * 1000
    a = _entry(deep + "bottom.txt", b"the bottom")
    store = _store(tmp_path / "out", _manifest(a, dirs=(deep + "empty",)))
    try:
        plan = store.plan()
        store.prepare()
        _deliver(store, plan.to_fetch[a.root], b"the bottom")
        store.make_empty_dirs()
        store.close(keep_partial=False)
        assert (tmp_path / "out" / a.path).read_bytes() == b"the bottom"
        assert (tmp_path / "out" / deep / "empty").is_dir()
    finally:
        _remove_tree(tmp_path / "out")


def test_partial_file_checks_each_leaf_before_it_writes_it(tmp_path: Path) -> None:
    """Leaves reach the partial file unchecked (the writer thread checks
    them): a leaf whose bytes do not have its proven hash fails the file
    with IntegrityError, and nothing of it, nor anything after it, is on
    disk; the leaves before it are kept for a resume."""
    from p2pcp.blobs.tree import LEAF_SIZE, Outboard
    from p2pcp.core.errors import IntegrityError

    data = os.urandom(6 * LEAF_SIZE)
    outboard = Outboard.from_bytes(data)
    entry = Entry("top/a", len(data), bytes(outboard.root))
    store = _store(tmp_path, _manifest(entry))
    store.prepare()
    bad = 2
    path: Path | None = None

    async def deliver() -> None:
        nonlocal path
        partial = await store.open_partial(entry.root, len(data))
        path = partial.path
        try:
            for index in range(6):
                chunk = data[index * LEAF_SIZE : (index + 1) * LEAF_SIZE]
                if index == bad:
                    chunk = bytes([chunk[0] ^ 1]) + chunk[1:]
                leaf = LeafReceived(index, index * LEAF_SIZE, chunk, outboard.leaf_hash(index))
                await partial.write_leaf(leaf)
            await partial.finish()
        except BaseException:
            await partial.suspend()
            raise

    with pytest.raises(IntegrityError, match=f"leaf {bad} does not match"):
        asyncio.run(deliver())
    assert path is not None
    assert path.read_bytes() == data[: bad * LEAF_SIZE]
    assert store.kept_bytes() == bad * LEAF_SIZE
    assert not (tmp_path / "top").exists()
    store.close(keep_partial=True)
