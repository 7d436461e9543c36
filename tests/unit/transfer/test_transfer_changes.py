"""The --dry-run listing (transfer/changes.py) and the metadata fixes of
--update, against real files planned by the real Store."""

from __future__ import annotations

import os
from pathlib import Path

from p2pcp.blobs.collection import Entry, Link, Manifest
from p2pcp.blobs.tree import TreeBuilder
from p2pcp.transfer import events
from p2pcp.transfer.changes import find_changes, fix_metadata
from p2pcp.transfer.events import Change, LocalKind
from p2pcp.transfer.metadata import MetadataPolicy
from p2pcp.transfer.store import Store

MTIME_NS = 981_173_106_123_456_789
POLICY = MetadataPolicy(umask=0o022)


def _entry(path: str, data: bytes, mode: int = 0o644) -> Entry:
    builder = TreeBuilder()
    builder.update(data)
    return Entry(path, len(data), bytes(builder.finalize().root), mode, MTIME_NS)


def _write(out: Path, entry: Entry, data: bytes) -> None:
    (out / entry.path).parent.mkdir(parents=True, exist_ok=True)
    (out / entry.path).write_bytes(data)
    (out / entry.path).chmod(POLICY.mode_for(entry))
    os.utime(out / entry.path, ns=(MTIME_NS, MTIME_NS))


def _listing(root: Path) -> dict[str, tuple[object, ...]]:
    result: dict[str, tuple[object, ...]] = {}
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        result[str(path)] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino)
    return result


def test_lists_each_change_in_manifest_order_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    same = _entry("top/same", b"same")
    touched = _entry("top/touched", b"touched", mode=0o755)
    changed = _entry("top/changed", b"new content")
    new = _entry("top/sub/new", b"new")
    _write(out, same, b"same")
    _write(out, touched, b"touched")
    (out / "top" / "touched").chmod(0o644)
    _write(out, changed, b"old")
    (out / "top" / "stray").write_bytes(b"stray")
    (out / "top" / "same-link").symlink_to("same")
    (out / "top" / "other-link").symlink_to("elsewhere")
    links = [
        Link("top/new-link", "same"),
        Link("top/other-link", "same"),
        Link("top/same-link", "same"),
        Link("top/unsafe", "/etc/passwd"),
    ]
    manifest = Manifest.folder("top", [same, touched, changed, new], [], links=links)
    store = Store(out, manifest, bytes(32), force=True, metadata=POLICY, is_dry_run=True)
    plan = store.plan()
    before = _listing(tmp_path)
    reported: list[object] = []
    done = find_changes(
        out,
        manifest,
        plan,
        reported.append,
        metadata=POLICY,
        is_update=True,
        may_replace=False,
        has_delete=True,
    )
    store.close(keep_partial=True)
    assert _listing(tmp_path) == before
    assert reported == [
        events.ChangeFound(Change.UPDATE, "top/changed", len(b"new content")),
        events.ChangeFound(Change.ADD, "top/sub/new", 3),
        events.ChangeFound(Change.TOUCH, "top/touched", 7, has_new_mode=True),
        events.ChangeFound(Change.ADD, "top/new-link", kind=LocalKind.LINK),
        events.ChangeFound(Change.UPDATE, "top/other-link", kind=LocalKind.LINK),
        events.ChangeFound(Change.DELETE, "top/stray", kind=LocalKind.FILE),
    ]
    assert (done.files_to_add, done.files_to_update, done.files_to_touch) == (2, 2, 1)
    assert (done.paths_to_delete, done.files_unchanged) == (1, 2)
    assert done.would_exit == 5 and "--update" in done.reason


def test_fix_metadata_changes_only_what_differs_in_place(tmp_path: Path) -> None:
    out = tmp_path / "out"
    right = _entry("top/right", b"right")
    off = _entry("top/off", b"off", mode=0o600)
    _write(out, right, b"right")
    _write(out, off, b"off")
    os.utime(out / "top" / "off", ns=(MTIME_NS, 1))
    (out / "top" / "off").chmod(0o644)
    inode = (out / "top" / "off").stat().st_ino
    reported: list[object] = []
    failures = fix_metadata(out, [(right, ""), (off, "")], POLICY, reported.append)
    assert failures == []
    assert reported == [events.FileTouched("top/off", True, True)]
    st = (out / "top" / "off").stat()
    assert (st.st_ino, st.st_mode & 0o777, st.st_mtime_ns) == (inode, 0o600, MTIME_NS)
    # --no-times: a time that differs is left alone.
    os.utime(out / "top" / "off", ns=(MTIME_NS, 1))
    no_times = MetadataPolicy(keep_times=False, umask=0o022)
    assert fix_metadata(out, [(off, "")], no_times, reported.append) == []
    assert (out / "top" / "off").stat().st_mtime_ns == 1
    assert len(reported) == 1
