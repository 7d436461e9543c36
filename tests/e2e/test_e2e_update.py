"""``receive --update`` through the CLI: only the changed leaves travel,
unchanged files are not touched, a differing file is swapped in whole, and
a kill -9 in the middle leaves each file old-and-whole or new-and-verified;
the rerun finishes and fetches less than the whole file.
"""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path
from typing import Any

import blake3
import pytest

from p2pcp.blobs.tree import HASH_BYTES, LEAF_SIZE, Outboard, leaf_count
from p2pcp.core.defaults import PARTIAL_DIR_PREFIX
from p2pcp.transfer.hashcache import CACHE_FILE_NAME, HashCache
from tests.support.processes import stop

from .conftest import SLOW_LINK, json_lines, start_receive, tree_of, wait_for_bytes

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
# What a receive costs on the wire beyond the leaves and the tree: the QUIC
# handshake, the file list, proofs, acknowledgements (measured ~15 KB).
WIRE_ALLOWANCE_BYTES = 64 * 1024


def _random_file(path: Path, size: int, seed: int) -> bytes:
    """``size`` bytes that share no leaf with each other (unlike one random
    MiB repeated: its leaves would match at other offsets)."""
    data = random.Random(seed).randbytes(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def _changed_leaf_bytes(old: bytes, new: bytes) -> int:
    """Bytes of the new version's leaves the old version does not hold at
    any leaf offset (what an update must fetch)."""
    old_hashes = Outboard.from_bytes(old).leaf_hashes
    have = {old_hashes[at : at + HASH_BYTES] for at in range(0, len(old_hashes), HASH_BYTES)}
    new_hashes = Outboard.from_bytes(new).leaf_hashes
    changed = 0
    for index in range(leaf_count(len(new))):
        if new_hashes[index * HASH_BYTES : (index + 1) * HASH_BYTES] not in have:
            changed += len(new[index * LEAF_SIZE : (index + 1) * LEAF_SIZE])
    return changed


def _final(out: Path) -> dict[str, bytes | None]:
    return {
        rel: data for rel, data in tree_of(out).items() if not rel.startswith(PARTIAL_DIR_PREFIX)
    }


def _receive(node: Any, ticket: str, out: Path, *extra: str) -> list[dict[str, Any]]:
    result = node.run("receive", ticket, "--out", str(out), "--json", *extra)
    assert result.returncode == 0, result.stderr
    return json_lines(result.stdout)


def _done(lines: list[dict[str, Any]]) -> dict[str, Any]:
    return next(line for line in lines if line["event"] == "done")


def _file_done(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {line["path"]: line for line in lines if line["event"] == "file_done"}


def _manifest(lines: list[dict[str, Any]]) -> dict[str, Any]:
    return next(line for line in lines if line["event"] == "manifest")


def test_a_rerun_reads_none_of_the_files_a_receive_placed(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    """The files a receive placed (large, small, a copy, an empty one) are
    in the hash cache with their BLAKE3 and leaf hashes: a second ``receive
    --update`` of the same ticket reads none of them (``files_from_cache``
    is every file) and reports the same BLAKE3; a file changed here since
    is read, and replaced."""
    src = tmp_path / "data"
    contents = {
        "big.bin": _random_file(src / "big.bin", 3 * LEAF_SIZE + 123, seed=7),
        "copy.bin": _random_file(src / "copy.bin", 2000, seed=8),
        "empty": b"",
    }
    contents["again/copy.bin"] = contents["copy.bin"]
    for number in range(30):
        data = _random_file(src / "small" / f"s{number}", 100 + number, seed=200 + number)
        contents[f"small/s{number}"] = data
    (src / "empty").write_bytes(b"")
    (src / "again").mkdir()
    (src / "again" / "copy.bin").write_bytes(contents["copy.bin"])
    sender_node, receiver = make_node(), make_node()
    sender = start_sender(sender_node, src)
    out = tmp_path / "out"
    first = _receive(receiver, sender.ticket, out)
    assert _manifest(first)["files_checked"] == 0
    assert _final(out / "data") == _final(src)

    # The large file went into the receiver's cache whole: root, leaves, BLAKE3.
    big = out / "data" / "big.bin"
    with HashCache.open(receiver.home / "cache" / CACHE_FILE_NAME) as cache:
        hit = cache.lookup(big, os.stat(big))
    expected = Outboard.from_bytes(contents["big.bin"])
    assert hit is not None
    assert (hit.root, hit.leaf_hashes) == (expected.root, expected.leaf_hashes)
    assert hit.blake3 == blake3.blake3(contents["big.bin"]).digest()

    lines = _receive(receiver, sender.ticket, out, "--update")
    manifest = _manifest(lines)
    assert manifest["files_checked"] == manifest["files_from_cache"] == len(contents)
    assert _done(lines)["bytes_received"] == 0
    reports = _file_done(lines)
    for rel, data in contents.items():
        assert reports[f"data/{rel}"]["already_present"] is True
        assert reports[f"data/{rel}"]["blake3"] == blake3.blake3(data).hexdigest()

    # A file changed here (same size) is read, found different, replaced.
    (out / "data" / "small" / "s3").write_bytes(b"z" * 103)
    lines = _receive(receiver, sender.ticket, out, "--update")
    manifest = _manifest(lines)
    assert manifest["files_checked"] == len(contents)
    assert manifest["files_from_cache"] == len(contents) - 1
    assert _file_done(lines)["data/small/s3"]["updated"] is True
    assert _final(out / "data") == _final(src)


def test_update_fetches_only_the_changed_leaves_and_leaves_the_rest_alone(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    src = tmp_path / "data"
    old_big = _random_file(src / "big.bin", 48 * MIB, seed=1)
    for number in range(20):
        _random_file(src / "small" / f"f{number:02d}.txt", 1000 + number, seed=100 + number)
    sender_node, receiver = make_node(), make_node()
    out = tmp_path / "out"
    first = start_sender(sender_node, src)
    _receive(receiver, first.ticket, out)
    stop(first.process)
    assert _final(out / "data") == _final(src)
    unchanged = {
        rel: os.stat(out / "data" / rel)
        for rel in [f"small/f{number:02d}.txt" for number in range(3, 20)]
    }

    # 1 MiB in the middle (not leaf-aligned: 5 leaves change), 3 small files.
    new_big = bytearray(old_big)
    new_big[24 * MIB + 1000 : 25 * MIB + 1000] = random.Random(2).randbytes(MIB)
    (src / "big.bin").write_bytes(new_big)
    (src / "small" / "f00.txt").write_bytes(b"changed")
    (src / "small" / "f01.txt").write_bytes(b"x" * 3000)
    (src / "small" / "f02.txt").write_bytes(b"y" * 1002)  # the same size
    changed = _changed_leaf_bytes(old_big, bytes(new_big))
    assert changed == 5 * LEAF_SIZE
    changed += 7 + 3000 + 1002
    tree_bytes = 8 + leaf_count(len(new_big)) * HASH_BYTES

    second = start_sender(sender_node, src)
    lines = _receive(receiver, second.ticket, out, "--update")
    done = _done(lines)
    assert done["bytes_received"] <= 1.1 * changed
    assert done["bytes_received"] >= changed
    assert done["bytes_reused"] == len(new_big) - 5 * LEAF_SIZE
    assert sum(done["paths"].values()) <= 1.1 * changed + tree_bytes + WIRE_ALLOWANCE_BYTES
    reports = _file_done(lines)
    assert reports["data/big.bin"]["updated"] is True
    assert reports["data/big.bin"]["bytes_reused"] == len(new_big) - 5 * LEAF_SIZE
    assert all(reports[f"data/small/f0{n}.txt"]["updated"] for n in range(3))
    assert all(reports[f"data/{rel}"]["already_present"] for rel in unchanged)
    assert _final(out / "data") == _final(src)
    for rel, before in unchanged.items():
        after = os.stat(out / "data" / rel)
        assert (after.st_ino, after.st_mtime_ns, after.st_ctime_ns) == (
            before.st_ino,
            before.st_mtime_ns,
            before.st_ctime_ns,
        ), f"{rel} was rewritten"
    assert [p.name for p in out.iterdir()] == ["data"]  # no partial folder left

    # Nothing changed since: nothing is fetched, nothing rewritten, nothing
    # read (the files the update placed, patched or not, are in the cache).
    lines = _receive(receiver, second.ticket, out, "--update")
    again = _done(lines)
    assert again["bytes_received"] == 0 and again["bytes_reused"] == 0
    manifest = _manifest(lines)
    assert manifest["files_checked"] == manifest["files_from_cache"] == 21


def test_update_of_files_that_grew_and_shrank(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    src = tmp_path / "data"
    grows = _random_file(src / "grows.bin", 10 * MIB + 100, seed=3)
    shrinks = _random_file(src / "shrinks.bin", 10 * MIB + 100, seed=4)
    sender_node, receiver = make_node(), make_node()
    out = tmp_path / "out"
    first = start_sender(sender_node, src)
    _receive(receiver, first.ticket, out)
    stop(first.process)

    (src / "grows.bin").write_bytes(grows + random.Random(5).randbytes(MIB + 7))
    (src / "shrinks.bin").write_bytes(shrinks[: 6 * MIB + 5])
    second = start_sender(sender_node, src)
    done = _done(_receive(receiver, second.ticket, out, "--update"))
    assert _final(out / "data") == _final(src)
    # grows: from its old short last leaf on (100 old bytes and 1 MiB + 7
    # new ones: 4 full leaves and 107 bytes); shrinks: its new short last leaf.
    assert done["bytes_received"] == (MIB + 107) + 5
    assert done["bytes_reused"] == 10 * MIB + 6 * MIB


def test_without_update_a_differing_file_is_refused_and_a_folder_always(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    src = tmp_path / "data"
    _random_file(src / "a.bin", 2 * LEAF_SIZE, seed=6)
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    (out / "data" / "a.bin").write_bytes(b"mine")
    sender = start_sender(make_node(), src)
    receiver = make_node()
    refused = receiver.run("receive", sender.ticket, "--out", str(out))
    assert refused.returncode == 5, refused.stderr
    assert (out / "data" / "a.bin").read_bytes() == b"mine"
    (out / "data" / "a.bin").unlink()
    (out / "data" / "a.bin").mkdir()
    folder = receiver.run("receive", sender.ticket, "--out", str(out), "--update")
    assert folder.returncode == 5, folder.stderr
    assert (out / "data" / "a.bin").is_dir()


def test_kill_9_during_an_update_leaves_old_or_new_and_the_rerun_resumes(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    src = tmp_path / "data"
    size = 96 * MIB
    old = _random_file(src / "big.bin", size, seed=7)
    sender_node, receiver = make_node(), make_node()
    out = tmp_path / "out"
    first = start_sender(sender_node, src)
    _receive(receiver, first.ticket, out)
    stop(first.process)

    # The first 8 MiB stay; the other 88 MiB change.
    new = old[: 8 * MIB] + random.Random(8).randbytes(size - 8 * MIB)
    (src / "big.bin").write_bytes(new)
    sender = start_sender(sender_node, src, env=SLOW_LINK)
    process = start_receive(receiver, sender.ticket, out, "--update")
    try:
        wait_for_bytes(process, 8 * MIB + 24 * MIB)  # reused, then fetched
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        stop(process)
    on_disk = (out / "data" / "big.bin").read_bytes()
    assert on_disk in (old, new), "the file is a mix of versions"
    patches = list(out.glob(f"{PARTIAL_DIR_PREFIX}*/*.patch"))
    assert on_disk == new or patches, "the update's work should be kept for the rerun"

    lines = _receive(receiver, sender.ticket, out, "--update")
    done = _done(lines)
    assert (out / "data" / "big.bin").read_bytes() == new
    if on_disk == old:
        assert 0 < done["bytes_received"] < size - 8 * MIB - 16 * MIB
        assert done["bytes_reused"] >= 8 * MIB + 16 * MIB
    assert [p.name for p in out.iterdir()] == ["data"]


def test_update_replaces_links_at_file_names_and_never_writes_through_them(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    src = tmp_path / "data"
    big = _random_file(src / "big.bin", 3 * LEAF_SIZE, seed=9)
    small = _random_file(src / "small.txt", 100, seed=10)
    target = tmp_path / "elsewhere.bin"
    target.write_bytes(b"not yours")
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    for name in ("big.bin", "small.txt"):
        (out / "data" / name).symlink_to(target)
    sender = start_sender(make_node(), src)
    lines = _receive(make_node(), sender.ticket, out, "--update")
    assert (out / "data" / "big.bin").read_bytes() == big
    assert (out / "data" / "small.txt").read_bytes() == small
    assert not (out / "data" / "big.bin").is_symlink()
    assert target.read_bytes() == b"not yours"
    reports = _file_done(lines)
    assert reports["data/big.bin"]["updated"] and reports["data/small.txt"]["updated"]
    assert _done(lines)["bytes_reused"] == 0
