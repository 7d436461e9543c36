"""How verified data lands on the receiver's disk, through the real CLI:
permissions and times, the output folder's own file system, two receivers
into one folder, symbolic links in the way, and a disk that fills up."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p2pcp.core.defaults import PARTIAL_DIR_PREFIX
from tests.support.disks import big_file, small_tmpfs
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

# Small datagrams keep loopback slow enough (~30-60 MB/s) to act mid-transfer.
# 2001-02-03 04:05:06.123456789 UTC: nanoseconds that a copy would lose.
MTIME_NS = 981_173_106_123_456_789


def _receive(
    node: Any, ticket: str, out: Path, *extra: str, umask: int = 0o022
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*p2pcp_command(), "receive", ticket, "--out", str(out), "--json", *extra],
        env=node.env,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
        umask=umask,
        check=False,
    )


def _done(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    events = json_lines(result.stdout)
    assert events[-1]["event"] == "done", events
    return events[-1]


def _leftovers(folder: Path) -> list[str]:
    """Names p2pcp must never leave behind: temporary records, probes."""
    return sorted(
        path.name
        for path in folder.rglob("*")
        if path.name.endswith(".resume-new") or path.name.startswith(".p2pcp-probe")
    )


# -- defect 3: permissions and modification times ------------------------------


@pytest.mark.parametrize(
    ("umask", "expected"),
    [
        (0o022, {"private": 0o600, "group": 0o640, "tool": 0o755}),
        (0o027, {"private": 0o600, "group": 0o640, "tool": 0o750}),
    ],
)
def test_permission_bits_and_mtimes_arrive_masked_by_the_umask(
    umask: int, expected: dict[str, int], tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    src = tmp_path / "folder"
    src.mkdir()
    modes = {"private": 0o600, "group": 0o640, "tool": 0o755}
    for offset, (name, mode) in enumerate(modes.items()):
        path = src / name
        path.write_bytes(os.urandom(1000 + offset))
        path.chmod(mode)
        os.utime(path, ns=(MTIME_NS, MTIME_NS + offset))
    sender = start_sender(make_node(), src)
    out = tmp_path / "out"
    _done(_receive(make_node(), sender.ticket, out, umask=umask))
    for offset, name in enumerate(modes):
        got = (out / "folder" / name).stat()
        assert stat.S_IMODE(got.st_mode) == expected[name], name
        assert got.st_mtime_ns == MTIME_NS + offset, name
        assert (out / "folder" / name).read_bytes() == (src / name).read_bytes()


# -- defect 6, receiver side: refuse only what this file system cannot hold -------


def test_case_and_normalization_twins_arrive_on_a_case_sensitive_file_system(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    src = tmp_path / "twins"
    src.mkdir()
    names = ["README", "readme", "\u00e9t\u00e9", "e\u0301te\u0301"]
    for name in names:
        (src / name).write_text(f"I am {name!r}\n")
    sender = start_sender(make_node(), src)
    out = tmp_path / "out"
    _done(_receive(make_node(), sender.ticket, out))
    for name in names:
        assert (out / "twins" / name).read_bytes() == (src / name).read_bytes()
    assert _leftovers(out) == []


@pytest.fixture
def casefold_folder(tmp_path: Path) -> Iterator[Path]:
    """A case-insensitive folder on a real ext4 with casefold (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a file system image needs root")
    if shutil.which("mkfs.ext4") is None or shutil.which("chattr") is None:
        pytest.skip("mkfs.ext4 or chattr is not installed")
    image = tmp_path / "casefold.img"
    with open(image, "wb") as handle:
        handle.truncate(64 * 1024 * 1024)
    mount = tmp_path / "casefold"
    mount.mkdir()
    made = subprocess.run(
        ["mkfs.ext4", "-q", "-O", "casefold", str(image)],
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"mkfs.ext4 -O casefold failed: {made.stderr.strip()}")
    mounted = subprocess.run(
        ["mount", "-o", "loop", str(image), str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount an ext4 casefold image (kernel without CONFIG_UNICODE?): "
            f"{mounted.stderr.strip().splitlines()[0]}"
        )
    try:
        folder = mount / "out"
        folder.mkdir()
        flagged = subprocess.run(
            ["chattr", "+F", str(folder)], capture_output=True, text=True, check=False
        )
        if flagged.returncode != 0:
            pytest.skip(f"chattr +F failed: {flagged.stderr.strip()}")
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_case_twins_are_refused_by_a_case_insensitive_output_folder(
    casefold_folder: Path, tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    src = tmp_path / "twins"
    src.mkdir()
    (src / "README").write_text("upper\n")
    (src / "readme").write_text("lower\n")
    (src / "other").write_text("fine\n")
    sender = start_sender(make_node(), src)
    result = _receive(make_node(), sender.ticket, casefold_folder)
    assert result.returncode == 1, result.stderr
    assert_one_line_error(result.stderr)
    assert "twins/README" in result.stderr and "twins/readme" in result.stderr
    assert "case" in result.stderr
    # Refused before anything was written.
    assert list(casefold_folder.iterdir()) == []


# -- defect 10: two receivers into one folder ----------------------------------------


def test_second_receiver_into_the_same_folder_says_so_and_changes_nothing(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    src = big_file(tmp_path / "big.bin", 96 * 1024 * 1024)
    sender = start_sender(make_node(), src, env=SLOW_LINK)
    out = tmp_path / "out"
    first = start_receive(make_node(), sender.ticket, out)
    try:
        wait_for_bytes(first, 8 * 1024 * 1024)
        second = _receive(make_node(), sender.ticket, out)
        assert second.returncode == 5, second.stderr
        assert_one_line_error(second.stderr)
        assert "another p2pcp receive" in second.stderr
        assert first.wait(timeout=PROCESS_TIMEOUT_S) == 0
    finally:
        stop(first)
    assert (out / "big.bin").read_bytes() == src.read_bytes()
    assert [path.name for path in out.iterdir()] == ["big.bin"]


def test_two_receivers_started_together_never_fail_obscurely(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    src = tmp_path / "folder"
    src.mkdir()
    for name in ("a.bin", "b.bin", "c.bin"):
        big_file(src / name, 8 * 1024 * 1024)
    sender = start_sender(make_node(), src)
    out = tmp_path / "out"
    processes = [start_receive(make_node(), sender.ticket, out) for _ in range(2)]
    try:
        codes = [process.wait(timeout=PROCESS_TIMEOUT_S) for process in processes]
        errors = [process.stderr.read() if process.stderr else "" for process in processes]
    finally:
        for process in processes:
            stop(process)
    assert 0 in codes, errors
    for code, error in zip(codes, errors, strict=True):
        # Either it received (or found) everything, or it said why not.
        assert code in (0, 5), error
        if code == 5:
            assert_one_line_error(error)
            assert "another p2pcp receive" in error
    for name in ("a.bin", "b.bin", "c.bin"):
        assert (out / "folder" / name).read_bytes() == (src / name).read_bytes()
    assert [path.name for path in out.iterdir()] == ["folder"]


# -- defect 11a: symbolic links where the data would go ---------------------------------


def test_symlinked_folder_in_the_output_is_refused_as_local_state(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    src = tmp_path / "top"
    src.mkdir()
    (src / "a.txt").write_text("alpha\n")
    sender = start_sender(make_node(), src)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "top").symlink_to(elsewhere)
    for extra in ((), ("--force",)):
        result = _receive(make_node(), sender.ticket, out, *extra)
        assert result.returncode == 5, result.stderr
        assert_one_line_error(result.stderr)
        assert "symbolic link" in result.stderr
        assert list(elsewhere.iterdir()) == []
        assert sorted(path.name for path in out.iterdir()) == ["top"]


def test_symlink_under_the_final_name_is_replaced_only_with_force(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    src = tmp_path / "a.txt"
    src.write_text("the sender's content\n")
    sender = start_sender(make_node(), src)
    victim = tmp_path / "victim.txt"
    victim.write_text("must not change\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.txt").symlink_to(victim)
    refused = _receive(make_node(), sender.ticket, out)
    assert refused.returncode == 5, refused.stderr
    assert_one_line_error(refused.stderr)
    assert "symbolic link" in refused.stderr and "--force" in refused.stderr
    assert (out / "a.txt").is_symlink()
    _done(_receive(make_node(), sender.ticket, out, "--force"))
    # The link itself was replaced by the file; its target is untouched.
    assert not (out / "a.txt").is_symlink()
    assert (out / "a.txt").read_bytes() == src.read_bytes()
    assert victim.read_text() == "must not change\n"


# -- defect 12: a disk that fills up mid-transfer ----------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 112 MiB tmpfs: a real file system that really fills up (root only)."""
    with small_tmpfs(tmp_path, 112) as mount:
        yield mount


def _fill(path: Path) -> None:
    """Write zeros to ``path`` until the disk is full."""
    chunk = b"\0" * (256 * 1024)
    with open(path, "wb") as handle:
        try:
            while True:
                handle.write(chunk)
                handle.flush()
        except OSError:
            pass  # full: what we wanted


def test_disk_full_keeps_what_verified_and_the_rerun_fetches_only_the_rest(
    small_disk: Path, tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    size = 80 * 1024 * 1024
    src = big_file(tmp_path / "data.bin", size)
    sender = start_sender(make_node(), src, env=SLOW_LINK)
    receiver = make_node()
    out = small_disk / "out"
    filler = small_disk / "filler"
    # The free-space check passes (80 MiB + headroom < 112 MiB); once data
    # flows, another writer takes the rest of the disk.
    process = start_receive(receiver, sender.ticket, out)
    try:
        wait_for_bytes(process, 8 * 1024 * 1024)
        _fill(filler)
        assert process.wait(timeout=PROCESS_TIMEOUT_S) == 1
        assert process.stderr is not None
        message = process.stderr.read()
    finally:
        stop(process)
    assert_one_line_error(message)
    assert "disk is full" in message
    # The promise is made only because verified data really is kept.
    assert "run the same command again" in message and "kept" in message
    assert not (out / "data.bin").exists()
    assert _leftovers(small_disk) == []
    assert list(out.glob(f"{PARTIAL_DIR_PREFIX}*/*.resume")), "no resume record was written"
    filler.unlink()
    done = _done(_receive(receiver, sender.ticket, out))
    assert done["bytes_present"] > 0
    assert done["bytes_received"] + done["bytes_present"] == size
    assert (out / "data.bin").read_bytes() == src.read_bytes()
    assert [path.name for path in out.iterdir()] == ["data.bin"]
