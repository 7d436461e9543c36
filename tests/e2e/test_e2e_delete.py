"""``receive --delete`` and ``receive --dry-run`` through the real CLI: what is
removed (exactly the extraneous paths in the received folders, each
reported), what never is (outside the scope, a link's target, partial
folders, anything when the receive fails), and a dry run that writes
nothing and lists exactly what would change."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from p2pcp.blobs.tree import LEAF_SIZE
from p2pcp.core.defaults import PARTIAL_DIR_PREFIX
from tests.support.disks import big_file
from tests.support.processes import p2pcp_command, stop

from .conftest import (
    PROCESS_TIMEOUT_S,
    SLOW_LINK,
    assert_one_line_error,
    json_lines,
    start_receive,
    wait_for_bytes,
)

pytestmark = pytest.mark.e2e

MTIME_NS = 981_173_106_123_456_789


def _receive(node: Any, ticket: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*p2pcp_command(), "receive", ticket, "--out", str(out), *extra],
        env=node.env,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
        umask=0o022,
        check=False,
    )


def _snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Everything about every path under ``root`` (``root`` itself too): its
    kind, size, mode, modification time and content or link target. Links
    are not followed."""
    result: dict[str, tuple[Any, ...]] = {}
    if not root.exists() and not root.is_symlink():
        return result
    paths = [root, *root.rglob("*")]
    for path in paths:
        st = path.lstat()
        rel = path.relative_to(root).as_posix()
        if stat.S_ISLNK(st.st_mode):
            result[rel] = ("link", os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            result[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_mtime_ns)
        else:
            content = path.read_bytes()
            result[rel] = ("file", st.st_size, stat.S_IMODE(st.st_mode), st.st_mtime_ns, content)
    return result


def _make_photos(src: Path) -> Path:
    """A folder with small files, one larger than a leaf, and a subfolder."""
    photos = src / "photos"
    (photos / "sub").mkdir(parents=True)
    (photos / "a.txt").write_bytes(b"alpha\n")
    (photos / "sub" / "b.txt").write_bytes(b"beta\n")
    (photos / "big.bin").write_bytes(os.urandom(3 * LEAF_SIZE + 17))
    for path in photos.rglob("*"):
        os.utime(path, ns=(MTIME_NS, MTIME_NS))
    return photos


def _events(result: subprocess.CompletedProcess[str], name: str) -> list[dict[str, Any]]:
    return [event for event in json_lines(result.stdout) if event["event"] == name]


def test_delete_removes_exactly_the_extraneous_paths_in_scope_and_nothing_else(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    photos = _make_photos(tmp_path / "src")
    sender = start_sender(make_node(), photos)
    receiver = make_node()
    out = tmp_path / "out"
    first = _receive(receiver, sender.ticket, out, "--json")
    assert first.returncode == 0, first.stderr
    # What the snapshot does not hold, inside the received folder...
    mine = out / "photos"
    (mine / "stray.txt").write_bytes(b"stray")
    (mine / "old" / "deeper").mkdir(parents=True)
    (mine / "old" / "deeper" / "x.bin").write_bytes(b"x")
    (mine / "old" / "y.txt").write_bytes(b"y")
    (mine / "sub" / "gone.txt").write_bytes(b"gone")
    (mine / "empty").mkdir()
    # ...a link to a folder outside, and a dangling one (removed as links)...
    outside = tmp_path / "outside"
    (outside / "inner").mkdir(parents=True)
    (outside / "keep.txt").write_bytes(b"keep")
    (outside / "inner" / "deep.txt").write_bytes(b"deep")
    (mine / "to-outside").symlink_to(outside)
    (mine / "dangling").symlink_to(tmp_path / "nowhere")
    # ...and what is out of scope: a sibling of the item, partial folders.
    (out / "sibling").mkdir()
    (out / "sibling" / "s.txt").write_bytes(b"sibling")
    (out / "loose.txt").write_bytes(b"loose")
    (out / f"{PARTIAL_DIR_PREFIX}00112233aabbccdd").mkdir()
    (out / f"{PARTIAL_DIR_PREFIX}00112233aabbccdd" / "x.part").write_bytes(b"p")
    (mine / f"{PARTIAL_DIR_PREFIX}ffeeddccbbaa9988").mkdir()
    (mine / f"{PARTIAL_DIR_PREFIX}ffeeddccbbaa9988" / "y.part").write_bytes(b"q")
    outside_before = _snapshot(outside)
    sibling_before = _snapshot(out / "sibling")

    result = _receive(receiver, sender.ticket, out, "--delete", "--json")

    assert result.returncode == 0, result.stderr
    deleted = [(event["path"], event["kind"]) for event in _events(result, "deleted")]
    assert deleted == [
        ("photos/dangling", "link"),
        ("photos/empty", "dir"),
        ("photos/old/deeper/x.bin", "file"),
        ("photos/old/deeper", "dir"),
        ("photos/old/y.txt", "file"),
        ("photos/old", "dir"),
        ("photos/stray.txt", "file"),
        ("photos/sub/gone.txt", "file"),
        ("photos/to-outside", "link"),
    ]
    assert json_lines(result.stdout)[-1]["event"] == "done"
    left = set(_snapshot(mine)) - {"."}
    assert left == {
        "a.txt",
        "big.bin",
        "sub",
        "sub/b.txt",
        f"{PARTIAL_DIR_PREFIX}ffeeddccbbaa9988",
        f"{PARTIAL_DIR_PREFIX}ffeeddccbbaa9988/y.part",
    }
    for name in ("a.txt", "big.bin", "sub/b.txt"):
        assert (mine / name).read_bytes() == (photos / name).read_bytes()
    assert _snapshot(outside) == outside_before
    assert _snapshot(out / "sibling") == sibling_before
    assert (out / "loose.txt").read_bytes() == b"loose"
    assert (out / f"{PARTIAL_DIR_PREFIX}00112233aabbccdd" / "x.part").read_bytes() == b"p"


def test_delete_says_each_removal_to_people_and_a_failure_is_exit_1(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    photos = _make_photos(tmp_path / "src")
    sender = start_sender(make_node(), photos)
    receiver = make_node()
    out = tmp_path / "out"
    assert _receive(receiver, sender.ticket, out).returncode == 0
    (out / "photos" / "stray.txt").write_bytes(b"stray")
    (out / "photos" / "stuck").mkdir()
    (out / "photos" / "stuck" / "file").write_bytes(b"stuck")
    locked = out / "photos" / "stuck"
    is_root = os.geteuid() == 0
    made = subprocess.run(
        ["chattr", "+i", str(locked)] if is_root else ["chmod", "555", str(locked)],
        capture_output=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip("cannot make a folder whose files cannot be removed here")
    try:
        result = _receive(receiver, sender.ticket, out, "--delete")
    finally:
        subprocess.run(
            ["chattr", "-i", str(locked)] if is_root else ["chmod", "755", str(locked)],
            check=False,
        )
    assert result.returncode == 1, result.stderr
    assert_one_line_error(result.stderr)
    assert "deleted photos/stray.txt" in result.stderr
    assert "could not delete photos/stuck/file" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "could not delete 1 paths" in last and "everything received is" in last
    # The rest went; what could not go, and its folder, stayed.
    assert not (out / "photos" / "stray.txt").exists()
    assert (out / "photos" / "stuck" / "file").exists()


def test_a_failed_receive_deletes_nothing(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    src = tmp_path / "src" / "photos"
    src.mkdir(parents=True)
    big_file(src / "big.bin", 64 * 1024 * 1024)
    sender = start_sender(make_node(), src, env=SLOW_LINK)
    out = tmp_path / "out"
    (out / "photos" / "old").mkdir(parents=True)
    (out / "photos" / "old" / "stray.txt").write_bytes(b"stray")
    (out / "photos" / "stray.txt").write_bytes(b"stray")
    before = _snapshot(out / "photos")
    process = start_receive(make_node(), sender.ticket, out, "--delete", "--retry-for", "0")
    try:
        wait_for_bytes(process, 8 * 1024 * 1024)
        stop(sender.process)
        assert process.wait(timeout=PROCESS_TIMEOUT_S) == 3
        assert process.stdout is not None
        rest = process.stdout.read()
    finally:
        stop(process)
    assert '"deleted"' not in rest
    assert _snapshot(out / "photos") == before


def test_dry_run_writes_nothing_and_lists_exactly_the_changes(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    photos = _make_photos(tmp_path / "src")
    first_sender = start_sender(make_node(), photos)
    receiver = make_node()
    out = tmp_path / "out"
    assert _receive(receiver, first_sender.ticket, out).returncode == 0
    stop(first_sender.process)
    # The sender's side changes: a new file, a changed one.
    (photos / "new.txt").write_bytes(b"new\n")
    (photos / "sub" / "b.txt").write_bytes(b"beta, changed\n")
    os.utime(photos / "sub" / "b.txt", ns=(MTIME_NS, MTIME_NS))
    # Ours: an extraneous file, the big file's time and mode off.
    (out / "photos" / "stray.txt").write_bytes(b"stray")
    os.utime(out / "photos" / "big.bin", ns=(MTIME_NS, MTIME_NS + 1))
    (out / "photos" / "a.txt").chmod(0o600)
    sender = start_sender(make_node(), photos, extra=("--once",))
    before = _snapshot(tmp_path / "out")

    result = _receive(receiver, sender.ticket, out, "--dry-run", "--update", "--delete", "--json")

    assert result.returncode == 0, result.stderr
    changes = [
        (event["event"], event["path"])
        for event in json_lines(result.stdout)
        if event["event"].startswith("would_")
    ]
    assert changes == [
        ("would_touch", "photos/a.txt"),
        ("would_touch", "photos/big.bin"),
        ("would_add", "photos/new.txt"),
        ("would_update", "photos/sub/b.txt"),
        ("would_delete", "photos/stray.txt"),
    ]
    touches = {event["path"]: event for event in _events(result, "would_touch")}
    assert (touches["photos/a.txt"]["mode"], touches["photos/a.txt"]["time"]) == (True, False)
    assert (touches["photos/big.bin"]["mode"], touches["photos/big.bin"]["time"]) == (False, True)
    (done,) = _events(result, "dry_run_done")
    assert done["files_to_add"] == 1 and done["bytes_to_add"] == 4
    assert done["files_to_update"] == 1 and done["bytes_to_update"] == 14
    assert done["files_to_touch"] == 2 and done["paths_to_delete"] == 1
    assert done["files_unchanged"] == 2 and done["would_exit"] == 0
    assert not _events(result, "done") and not _events(result, "file_done")
    # Nothing changed anywhere under out (times and modes included).
    assert _snapshot(tmp_path / "out") == before
    # Without --update the receive would stop at the changed file: said, exit 0.
    plain = _receive(receiver, sender.ticket, out, "--dry-run", "--json")
    assert plain.returncode == 0, plain.stderr
    (done,) = _events(plain, "dry_run_done")
    assert done["would_exit"] == 5 and "--update" in done["reason"]
    assert [event["path"] for event in _events(plain, "would_update")] == ["photos/sub/b.txt"]
    assert not _events(plain, "would_touch") and not _events(plain, "would_delete")
    assert _snapshot(tmp_path / "out") == before
    # A dry run is not a finished receive: `send --once` still serves.
    assert sender.process.poll() is None
    real = _receive(receiver, sender.ticket, out, "--update", "--delete", "--json")
    assert real.returncode == 0, real.stderr
    assert sender.wait() == 0
    assert not (out / "photos" / "stray.txt").exists()
    assert (out / "photos" / "new.txt").read_bytes() == b"new\n"


def test_dry_run_into_a_missing_folder_creates_nothing(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    photos = _make_photos(tmp_path / "src")
    sender = start_sender(make_node(), photos)
    out = tmp_path / "not-yet" / "out"
    result = _receive(make_node(), sender.ticket, out, "--dry-run", "--delete")
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "not-yet").exists()
    assert "would add photos/big.bin" in result.stderr
    assert "Nothing was written" in result.stderr


def test_dry_run_and_delete_refuse_standard_output(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    photos = _make_photos(tmp_path / "src")
    sender = start_sender(make_node(), photos)
    for flag in ("--dry-run", "--delete"):
        result = _receive(make_node(), sender.ticket, Path("-"), flag)
        assert result.returncode == 2, result.stderr
        assert_one_line_error(result.stderr)
