"""Permission bits and modification times through the real CLI, on both paths a
file takes (larger than a leaf: fetched alone and placed by the store; one
leaf or less: a GET_MANY batch), copies of one content included:
by default, with --no-times, with --no-perms, and fixed in place by
--update when only the metadata differs."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from p2pcp.blobs.tree import LEAF_SIZE
from tests.support.processes import p2pcp_command

from .conftest import PROCESS_TIMEOUT_S, json_lines

pytestmark = pytest.mark.e2e

MTIME_NS = 981_173_106_123_456_789
UMASK = 0o027
# name -> (sender's mode, content)
BIG = os.urandom(2 * LEAF_SIZE + 5)
FILES = {
    "small-tool": (0o755, b"#!/bin/sh\necho hi\n"),
    "small-private": (0o600, b"secret\n"),
    "small-copy": (0o644, b"secret\n"),  # same content as small-private
    "big-tool": (0o775, BIG),
    "big-private": (0o640, BIG[::-1]),
    "big-copy": (0o604, BIG),  # same content as big-tool
}


def _receive(node: Any, ticket: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*p2pcp_command(), "receive", ticket, "--out", str(out), "--json", *extra],
        env=node.env,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
        umask=UMASK,
        check=False,
    )


def _source(tmp_path: Path) -> Path:
    src = tmp_path / "folder"
    src.mkdir()
    for offset, (name, (mode, content)) in enumerate(sorted(FILES.items())):
        (src / name).write_bytes(content)
        (src / name).chmod(mode)
        os.utime(src / name, ns=(MTIME_NS, MTIME_NS + offset))
    return src


def _sent_mtime(name: str) -> int:
    return MTIME_NS + sorted(FILES).index(name)


def _done(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    last = json_lines(result.stdout)[-1]
    assert last["event"] == "done", last
    return last


@pytest.mark.parametrize(
    "flags", [(), ("--no-times",), ("--no-perms",), ("--no-times", "--no-perms")]
)
def test_new_files_get_the_metadata_the_flags_say_on_both_paths(
    flags: tuple[str, ...], tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    sender = start_sender(make_node(), _source(tmp_path))
    out = tmp_path / "out"
    started_ns = time.time_ns()
    _done(_receive(make_node(), sender.ticket, out, *flags))
    for name, (mode, content) in FILES.items():
        got = (out / "folder" / name).stat()
        assert (out / "folder" / name).read_bytes() == content, name
        # --no-perms: as a new file here, 0o666 (0o777 for an executable), masked.
        base = (0o777 if mode & 0o100 else 0o666) if "--no-perms" in flags else mode
        wanted = base & ~UMASK
        assert stat.S_IMODE(got.st_mode) == wanted, name
        if "--no-times" in flags:
            assert got.st_mtime_ns >= started_ns - 1_000_000_000, name  # written now
        else:
            assert got.st_mtime_ns == _sent_mtime(name), name


@pytest.mark.parametrize("replace", ["--force", "--update"])
def test_no_perms_keeps_the_mode_of_a_file_it_replaces(
    replace: str, tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    sender = start_sender(make_node(), _source(tmp_path))
    out = tmp_path / "out" / "folder"
    out.mkdir(parents=True)
    for name in ("small-tool", "big-private"):
        # An older version: for --update, the big one shares its first leaf.
        (out / name).write_bytes(FILES[name][1][:LEAF_SIZE] + b"older")
        (out / name).chmod(0o711)
    _done(_receive(make_node(), sender.ticket, out.parent, replace, "--no-perms"))
    for name in ("small-tool", "big-private"):
        assert (out / name).read_bytes() == FILES[name][1]
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o711, name
        assert (out / name).stat().st_mtime_ns == _sent_mtime(name), name


def test_update_fixes_only_the_metadata_of_files_whose_content_is_right(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    sender = start_sender(make_node(), _source(tmp_path))
    receiver = make_node()
    out = tmp_path / "out"
    _done(_receive(receiver, sender.ticket, out))
    folder = out / "folder"
    os.utime(folder / "big-tool", ns=(MTIME_NS, 5))
    (folder / "small-private").chmod(0o644)
    os.utime(folder / "small-copy", ns=(MTIME_NS, 7))
    (folder / "small-copy").chmod(0o600)
    inodes = {name: (folder / name).stat().st_ino for name in FILES}

    result = _receive(receiver, sender.ticket, out, "--update")

    done = _done(result)
    assert done["bytes_received"] == 0
    touched = {
        event["path"]: (event["time"], event["mode"])
        for event in json_lines(result.stdout)
        if event["event"] == "touched"
    }
    assert touched == {
        "folder/big-tool": (True, False),
        "folder/small-private": (False, True),
        "folder/small-copy": (True, True),
    }
    for name, (mode, content) in FILES.items():
        got = (folder / name).stat()
        assert got.st_ino == inodes[name], name  # fixed in place, never rewritten
        assert stat.S_IMODE(got.st_mode) == mode & ~UMASK, name
        assert got.st_mtime_ns == _sent_mtime(name), name
        assert (folder / name).read_bytes() == content
    # With --no-times a different time is no difference; the mode still is.
    os.utime(folder / "big-private", ns=(MTIME_NS, 9))
    (folder / "small-tool").chmod(0o700)
    again = _receive(receiver, sender.ticket, out, "--update", "--no-times")
    _done(again)
    touched_again = [event for event in json_lines(again.stdout) if event["event"] == "touched"]
    assert [(e["path"], e["time"], e["mode"]) for e in touched_again] == [
        ("folder/small-tool", False, True)
    ]
    assert (folder / "big-private").stat().st_mtime_ns == 9
