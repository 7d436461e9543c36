"""The sender's walk and hashing (``transfer.source``) on real files.

Deep trees are walked without recursion, every name the file system holds
is offered, permission bits and modification times are carried, and a file
or folder that cannot be read is reported and skipped (``strict``: the
first one is an error, as before).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p2pcp.blobs.collection import decode_manifest
from p2pcp.core.errors import EXIT_UNEXPECTED, StorageError, UsageError
from p2pcp.transfer.source import import_scan, scan_paths
from tests.support.processes import unprivileged_prefix


def remove_tree(top: Path) -> None:
    """Remove a tree too deep for ``shutil.rmtree`` (recursive on 3.11),
    which pytest would otherwise meet when it cleans its temporary folders."""
    folders: list[bytes] = []
    pending = [os.fsencode(top)]
    while pending:
        folder = pending.pop()
        folders.append(folder)
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                else:
                    os.unlink(entry.path)
    for folder in reversed(folders):
        os.rmdir(folder)


def _bytes_paths(paths: list[str]) -> list[bytes]:
    return [path.encode("utf-8", "surrogateescape") for path in paths]


def test_a_tree_deeper_than_the_recursion_limit_is_walked(tmp_path: Path) -> None:
    depth = 1500
    assert depth > sys.getrecursionlimit()
    path = os.fsencode(tmp_path / "deep")
    os.mkdir(path)
    for level in range(depth):
        path = os.path.join(path, b"d")
        os.mkdir(path)
        if level == 700:
            os.mkdir(os.path.join(path, b"empty"))
    with open(os.path.join(path, b"bottom.txt"), "wb") as handle:
        handle.write(b"bottom")
    try:
        scan = scan_paths([tmp_path / "deep"])
        bottom = "deep/" + "d/" * depth + "bottom.txt"
        assert [found.rel for found in scan.files] == [bottom]
        assert scan.empty_dirs == ["deep/" + "d/" * 701 + "empty"]
        assert scan.skipped == []
        collection = import_scan(scan)
        assert decode_manifest(collection.manifest_bytes).files[0].path == bottom
    finally:
        remove_tree(tmp_path / "deep")


def test_permission_bits_and_modification_time_are_carried(tmp_path: Path) -> None:
    top = tmp_path / "top"
    top.mkdir()
    modes = {"private": 0o600, "group": 0o640, "tool": 0o755, "setuid": 0o4755, "odd": 0o1421}
    for index, (name, mode) in enumerate(modes.items()):
        (top / name).write_bytes(name.encode())
        (top / name).chmod(mode)
        os.utime(top / name, ns=(0, 1_600_000_000_123_456_789 + index))
    entries = {e.path: e for e in import_scan(scan_paths([top])).manifest.files}
    for index, (name, mode) in enumerate(modes.items()):
        entry = entries[f"top/{name}"]
        assert entry.mode == mode & 0o777, name  # setuid, setgid, sticky never travel
        assert entry.mtime_ns == 1_600_000_000_123_456_789 + index
    assert entries["top/tool"].is_executable and not entries["top/group"].is_executable
    single = import_scan(scan_paths([top / "private"])).manifest.files[0]
    assert (single.path, single.mode) == ("private", 0o600)


ODD_NAMES = [
    b"README",
    b"readme",
    b"c:notes.txt",
    b"back\\slash",
    b"new\nline",
    b"esc\x1b[31m",
    "r\u00e9sum\u00e9".encode(),
    "re\u0301sume\u0301".encode(),
    b"latin1-\xe9t\xe9",
    b"\xff\xfe",
]


def test_every_name_the_file_system_holds_is_offered(tmp_path: Path) -> None:
    top = os.fsencode(tmp_path / "odd")
    os.mkdir(top)
    for name in ODD_NAMES:
        with open(os.path.join(top, name), "wb") as handle:
            handle.write(name)
        os.mkdir(os.path.join(top, name + b".d"))
    scan = scan_paths([tmp_path / "odd"])
    assert scan.skipped == []
    assert sorted(_bytes_paths([found.rel for found in scan.files])) == sorted(
        b"odd/" + name for name in ODD_NAMES
    )
    assert len(scan.empty_dirs) == len(ODD_NAMES)
    manifest = decode_manifest(import_scan(scan).manifest_bytes)
    for entry in manifest.files:
        with open(os.path.join(os.fsencode(tmp_path), _bytes_paths([entry.path])[0]), "rb") as f:
            assert f.read() == _bytes_paths([entry.path])[0][len(b"odd/") :]


def test_skipped_items_are_named_escaped(tmp_path: Path) -> None:
    top = tmp_path / "top"
    top.mkdir()
    (top / "kept.txt").write_text("kept")
    os.mkfifo(top / "fifo\x1b[2J\n")
    os.symlink(top / "missing", top / "broken")
    os.symlink(tmp_path, top / "folder-link")
    scan = scan_paths([top])
    assert [found.rel for found in scan.files] == ["top/kept.txt"]
    assert sorted(scan.skipped) == [
        "top/broken (broken link)",
        "top/fifo\\x1b[2J\\n (not a regular file)",
        "top/folder-link (link to a folder)",
    ]


def _make_too_long(top: Path) -> None:
    """A chain of 250-byte folder names whose paths pass 4096 bytes,
    built relative to each folder (no single call sees the whole path)."""
    top.mkdir()
    (top / "short.txt").write_text("short")
    fd = os.open(top, os.O_RDONLY)
    try:
        for _ in range(18):
            os.mkdir("x" * 250, dir_fd=fd)
            child = os.open("x" * 250, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = child
        with open(os.open("leaf.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as f:
            f.write(b"leaf")
    finally:
        os.close(fd)


def test_paths_over_the_limit_are_skipped_one_by_one(tmp_path: Path) -> None:
    top = tmp_path / "top"
    _make_too_long(top)
    try:
        scan = scan_paths([top])
        assert [found.rel for found in scan.files] == ["top/short.txt"]
        assert len(scan.skipped) == 1
        assert scan.skipped[0].startswith("top/xxx")
        assert "..." in scan.skipped[0] and len(scan.skipped[0]) < 160
        assert scan.skipped[0].endswith(("(file name too long)", "(longer than 4096 bytes)"))
        # Strict: an error, 2 for the name (or 1 if the OS refused the path first).
        with pytest.raises((UsageError, StorageError), match=r"too long|longer than 4096"):
            scan_paths([top], strict=True)
    finally:
        # rmtree walks by file descriptors, so it removes what no path reaches.
        shutil.rmtree(top)


# -- files that cannot be read ----------------------------------------------------

_SCAN_SCRIPT = """
import json, sys
from pathlib import Path
from p2pcp.core.errors import P2pcpError
from p2pcp.transfer.source import import_scan, scan_paths
try:
    collection = import_scan(scan_paths([Path(sys.argv[1])], strict=sys.argv[2] == "strict"))
except P2pcpError as exc:
    print(json.dumps({"error": str(exc), "exit_code": exc.exit_code}))
else:
    files = [entry.path for entry in collection.manifest.files]
    print(json.dumps({"files": files, "skipped": collection.skipped}))
"""


@pytest.fixture
def unreadable_tree() -> Iterator[Path]:
    """``top/`` with readable files, a mode-000 file and a mode-000 folder."""
    with tempfile.TemporaryDirectory() as temp:
        top = Path(temp) / "top"
        (top / "sub").mkdir(parents=True)
        (top / "a.txt").write_text("a")
        (top / "sub" / "c.txt").write_text("c")
        (top / "b.txt").write_text("secret")
        (top / "b.txt").chmod(0)
        (top / "locked").mkdir()
        (top / "locked" / "inside.txt").write_text("inside")
        (top / "locked").chmod(0)
        try:
            yield top
        finally:
            (top / "locked").chmod(0o700)


def _scan_unprivileged(top: Path, mode: str) -> dict[str, Any]:
    result = subprocess.run(
        [*unprivileged_prefix(), sys.executable, "-c", _SCAN_SCRIPT, str(top), mode],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def test_an_unreadable_file_or_folder_is_skipped_and_the_rest_sent(unreadable_tree: Path) -> None:
    answer = _scan_unprivileged(unreadable_tree, "lenient")
    assert answer["files"] == ["top/a.txt", "top/sub/c.txt"]
    assert sorted(answer["skipped"]) == [
        "top/b.txt (permission denied)",
        "top/locked (permission denied)",
    ]


def test_strict_stops_at_the_first_unreadable_item(unreadable_tree: Path) -> None:
    answer = _scan_unprivileged(unreadable_tree, "strict")
    assert answer["exit_code"] == EXIT_UNEXPECTED
    assert "permission denied" in str(answer["error"]).lower()
    (unreadable_tree / "locked").chmod(0o700)
    answer = _scan_unprivileged(unreadable_tree, "strict")
    assert answer == {"error": answer["error"], "exit_code": EXIT_UNEXPECTED}
    assert "top/b.txt" in str(answer["error"])


def test_an_unreadable_path_given_by_name_is_an_error(unreadable_tree: Path) -> None:
    answer = _scan_unprivileged(unreadable_tree / "b.txt", "lenient")
    assert answer["exit_code"] == EXIT_UNEXPECTED
    assert "permission denied" in str(answer["error"]).lower()
