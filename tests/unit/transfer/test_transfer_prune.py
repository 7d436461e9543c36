"""What ``receive --delete`` removes (transfer/prune.py), on real files: exactly
the paths the manifest does not hold inside the received folders, never
through a link, never a partial folder, never outside the scope."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pcp.blobs.collection import Entry, Link, Manifest
from p2pcp.core.defaults import PARTIAL_DIR_PREFIX
from p2pcp.transfer import events
from p2pcp.transfer.events import Change, LocalKind
from p2pcp.transfer.prune import folder_items, prune


def _entry(path: str) -> Entry:
    return Entry(path, 1, bytes(32))


def _files(root: Path, *paths: str) -> None:
    for path in paths:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(b"x")


def _listing(root: Path) -> dict[str, str]:
    """Every path under root (links not followed) and what it is."""
    result: dict[str, str] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                result[rel] = "link:" + os.readlink(path)
            elif path.is_dir():
                result[rel] = "dir"
            else:
                result[rel] = "file:" + path.read_bytes().hex()
    return result


def _run(out: Path, manifest: Manifest, *, is_dry_run: bool = False) -> list[object]:
    reported: list[object] = []
    result = prune(out, manifest, reported.append, is_dry_run=is_dry_run)
    assert result.removed == sum(
        isinstance(event, (events.FileDeleted, events.ChangeFound)) for event in reported
    )
    assert list(result.failures) == [e for e in reported if isinstance(e, events.DeleteFailed)]
    return reported


def test_removes_exactly_what_the_manifest_does_not_hold_deepest_first(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _files(out, "top/keep", "top/sub/keep", "top/gone", "top/sub/gone", "top/old/deep/x")
    (out / "top" / "empty-kept").mkdir()
    (out / "top" / "empty-gone").mkdir()
    (out / "top" / "link-gone").symlink_to("keep")
    manifest = Manifest.folder(
        "top", [_entry("top/keep"), _entry("top/sub/keep")], ["top/empty-kept"]
    )
    reported = _run(out, manifest)
    assert reported == [
        events.FileDeleted("top/empty-gone", LocalKind.DIR),
        events.FileDeleted("top/gone", LocalKind.FILE),
        events.FileDeleted("top/link-gone", LocalKind.LINK),
        events.FileDeleted("top/old/deep/x", LocalKind.FILE),
        events.FileDeleted("top/old/deep", LocalKind.DIR),
        events.FileDeleted("top/old", LocalKind.DIR),
        events.FileDeleted("top/sub/gone", LocalKind.FILE),
    ]
    assert _listing(out) == {
        "top": "dir",
        "top/keep": "file:78",
        "top/sub": "dir",
        "top/sub/keep": "file:78",
        "top/empty-kept": "dir",
    }


def test_a_dry_run_reports_the_same_paths_and_removes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _files(out, "top/keep", "top/gone", "top/old/x")
    manifest = Manifest.folder("top", [_entry("top/keep")], [])
    before = _listing(out)
    reported = _run(out, manifest, is_dry_run=True)
    assert reported == [
        events.ChangeFound(Change.DELETE, "top/gone", kind=LocalKind.FILE),
        events.ChangeFound(Change.DELETE, "top/old/x", kind=LocalKind.FILE),
        events.ChangeFound(Change.DELETE, "top/old", kind=LocalKind.DIR),
    ]
    assert _listing(out) == before


def test_links_are_never_followed_and_their_targets_stay(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    _files(outside, "precious", "sub/also")
    out = tmp_path / "out"
    _files(out, "top/keep")
    # A link the manifest holds (to a folder outside): kept, never entered.
    (out / "top" / "kept-link").symlink_to(outside)
    # Links it does not hold: removed as links.
    (out / "top" / "stray-link").symlink_to(outside)
    (out / "top" / "dangling").symlink_to(tmp_path / "nowhere")
    # A folder the manifest holds as a link: kept, never entered.
    _files(out, "top/was-link/inside")
    manifest = Manifest.folder(
        "top",
        [_entry("top/keep")],
        [],
        links=[Link("top/kept-link", str(outside)), Link("top/was-link", "keep")],
    )
    outside_before = _listing(outside)
    reported = _run(out, manifest)
    assert reported == [
        events.FileDeleted("top/dangling", LocalKind.LINK),
        events.FileDeleted("top/stray-link", LocalKind.LINK),
    ]
    assert (out / "top" / "kept-link").is_symlink()
    assert (out / "top" / "was-link" / "inside").exists()
    assert _listing(outside) == outside_before


def test_partial_folders_anywhere_are_kept_with_their_parents(tmp_path: Path) -> None:
    out = tmp_path / "out"
    partial = f"{PARTIAL_DIR_PREFIX}0123456789abcdef"
    _files(out, "top/keep", f"top/{partial}/x.part", f"top/old/{partial}/y.part", "top/old/z")
    manifest = Manifest.folder("top", [_entry("top/keep")], [])
    reported = _run(out, manifest)
    # The extraneous folder holding a partial folder keeps it and stays.
    assert reported == [events.FileDeleted("top/old/z", LocalKind.FILE)]
    assert (out / "top" / partial / "x.part").exists()
    assert (out / "top" / "old" / partial / "y.part").exists()


def test_scope_is_the_received_folder_items_only(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _files(out, "a.txt", "photos/keep", "photos/gone", "sibling/x", "loose.txt", "docs/gone")
    several = Manifest.folder(
        "label", [_entry("a.txt"), _entry("photos/keep")], [], has_several_items=True
    )
    assert folder_items(several) == ["photos"]
    assert _run(out, several) == [events.FileDeleted("photos/gone", LocalKind.FILE)]
    assert sorted(_listing(out)) == [
        "a.txt",
        "docs",
        "docs/gone",
        "loose.txt",
        "photos",
        "photos/keep",
        "sibling",
        "sibling/x",
    ]
    single = Manifest.single_file("a.txt", 1, bytes(32))
    assert folder_items(single) == []
    assert _run(out, single) == []
    # A whole empty folder sent: everything in it goes.
    empty = Manifest.folder("docs", [], ["docs"])
    assert _run(out, empty) == [events.FileDeleted("docs/gone", LocalKind.FILE)]


def test_an_item_that_is_a_link_or_missing_is_not_entered(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    _files(outside, "x")
    out = tmp_path / "out"
    out.mkdir()
    (out / "photos").symlink_to(outside)
    manifest = Manifest.folder("photos", [_entry("photos/keep")], [])
    assert _run(out, manifest) == []
    assert (outside / "x").exists()
    assert _run(tmp_path / "missing", manifest) == []


@contextlib.contextmanager
def _immutable(folder: Path) -> Iterator[None]:
    """A folder whose entries cannot be removed: chattr +i as root (root
    ignores permission bits), read-only bits otherwise."""
    if os.geteuid() == 0:
        made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False)
        if made.returncode != 0:
            pytest.skip("chattr +i is not available on this file system")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=False)
    else:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)


def test_what_cannot_be_removed_is_reported_and_the_rest_goes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _files(out, "top/keep", "top/a-gone", "top/locked/stuck", "top/z-gone")
    manifest = Manifest.folder("top", [_entry("top/keep")], [])
    with _immutable(out / "top" / "locked"):
        reported = _run(out, manifest)
    failures = [event for event in reported if isinstance(event, events.DeleteFailed)]
    assert [(f.path, f.kind) for f in failures] == [("top/locked/stuck", LocalKind.FILE)]
    assert failures[0].reason
    deleted = [event for event in reported if isinstance(event, events.FileDeleted)]
    # The folder holding what stays is kept; everything else went.
    assert deleted == [
        events.FileDeleted("top/a-gone", LocalKind.FILE),
        events.FileDeleted("top/z-gone", LocalKind.FILE),
    ]
    assert sorted(_listing(out)) == ["top", "top/keep", "top/locked", "top/locked/stuck"]
