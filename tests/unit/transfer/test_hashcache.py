"""The sender's hash cache (transfer/hashcache.py) and the consistent scan
(source.hash_consistent): real files, a real SQLite file, real processes."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import blake3
import pytest

from p2pcp.blobs.collection import Entry
from p2pcp.blobs.tree import LEAF_SIZE, Outboard
from p2pcp.core.errors import StorageError
from p2pcp.transfer.hashcache import (
    CACHE_FILE_NAME,
    RACY_MARGIN_NS,
    SCHEMA_VERSION,
    HashCache,
    Remembered,
    is_racy,
)
from p2pcp.transfer.placed import PlacedFiles
from p2pcp.transfer.source import import_scan, scan_paths

# Files made by a test are this much older than the racy margin before they
# are hashed, so that the cache may store them.
SETTLE_S = 2 * RACY_MARGIN_NS / 1e9
ROOT = b"r" * 32


def _settle() -> None:
    time.sleep(SETTLE_S)


def _remember(cache: HashCache, path: Path, root: bytes = ROOT) -> os.stat_result:
    st = os.stat(path)
    cache.remember(path, st, root, None, started_ns=time.time_ns())
    return st


@pytest.fixture
def cache_path(tmp_path: Path) -> Path:
    return tmp_path / "cache" / CACHE_FILE_NAME


@pytest.fixture
def settled(tmp_path: Path) -> Path:
    path = tmp_path / "file"
    path.write_bytes(b"version 1")
    _settle()
    return path


def test_a_file_remembered_is_found_until_it_changes(cache_path: Path, settled: Path) -> None:
    with HashCache.open(cache_path) as cache:
        assert cache.is_enabled
        st = _remember(cache, settled)
        hit = cache.lookup(settled, os.stat(settled))
        assert hit is not None and hit.root == ROOT and hit.size == st.st_size
        cache.flush()  # from the file now, not the queue
        assert cache.lookup(settled, os.stat(settled)) == hit
    with HashCache.open(cache_path) as cache:  # another run
        assert cache.lookup(settled, os.stat(settled)) == hit


def test_touch_misses(cache_path: Path, settled: Path) -> None:
    with HashCache.open(cache_path) as cache:
        st = _remember(cache, settled)
        os.utime(settled, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        assert cache.lookup(settled, os.stat(settled)) is None


def test_old_mtime_restored_still_misses_on_ctime(cache_path: Path, settled: Path) -> None:
    with HashCache.open(cache_path) as cache:
        st = _remember(cache, settled)
        time.sleep(0.05)
        settled.write_bytes(b"version 2")  # same size
        os.utime(settled, ns=(st.st_atime_ns, st.st_mtime_ns))
        now = os.stat(settled)
        assert (now.st_size, now.st_mtime_ns) == (st.st_size, st.st_mtime_ns)
        assert now.st_ctime_ns != st.st_ctime_ns
        assert cache.lookup(settled, now) is None


def test_another_file_at_the_same_path_misses(
    cache_path: Path, settled: Path, tmp_path: Path
) -> None:
    with HashCache.open(cache_path) as cache:
        st = _remember(cache, settled)
        other = tmp_path / "other"
        other.write_bytes(b"version 2")
        os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(other, settled)
        assert os.stat(settled).st_ino != st.st_ino
        assert cache.lookup(settled, os.stat(settled)) is None


def test_a_racy_entry_is_not_stored(cache_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "fresh"
    started_ns = time.time_ns()
    path.write_bytes(b"just written")
    st = os.stat(path)
    assert is_racy(st, started_ns)
    with HashCache.open(cache_path) as cache:
        cache.remember(path, st, ROOT, None, started_ns=started_ns)
        assert cache.lookup(path, st) is None
    # The same file, once settled, is stored.
    _settle()
    with HashCache.open(cache_path) as cache:
        _remember(cache, path)
        assert cache.lookup(path, os.stat(path)) is not None


def test_files_and_folder_are_private(cache_path: Path, settled: Path) -> None:
    with HashCache.open(cache_path) as cache:
        _remember(cache, settled)
        cache.flush()
    assert stat.S_IMODE(cache_path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(cache_path.stat().st_mode) == 0o600


def test_open_default_is_under_p2pcp_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settled: Path
) -> None:
    monkeypatch.setenv("P2PCP_HOME", str(tmp_path / "home"))
    with HashCache.open_default() as cache:
        assert cache.path == tmp_path / "home" / "cache" / CACHE_FILE_NAME
        _remember(cache, settled)
    assert (tmp_path / "home" / "cache" / CACHE_FILE_NAME).is_file()


def test_the_bounds_evict_the_least_recently_used(cache_path: Path, tmp_path: Path) -> None:
    paths = []
    for number in range(30):
        path = tmp_path / f"f{number}"
        path.write_bytes(b"x")
        paths.append(path)
    _settle()
    with HashCache.open(cache_path, max_entries=20) as cache:
        for path in paths[:10]:
            _remember(cache, path)
        cache.flush()
        time.sleep(1.1)  # later "used" seconds for the others
        for path in paths[10:]:
            _remember(cache, path)
        cache.flush()
        found = [cache.lookup(path, os.stat(path)) is not None for path in paths]
    # Over the bound, down to 90% of it: the oldest go first.
    assert 10 <= sum(found) <= 20
    assert not any(found[:10]), "the oldest went first"
    assert all(found[-10:]), "the most recent entries are kept"


def test_leaf_hash_bytes_are_bounded(cache_path: Path, tmp_path: Path) -> None:
    size = 4 * LEAF_SIZE
    leaves = os.urandom(32 * 4)  # 128 bytes of leaf hashes per file
    paths = []
    for number in range(6):
        path = tmp_path / f"big{number}"
        with open(path, "wb") as handle:
            handle.truncate(size)
        paths.append(path)
    _settle()
    with HashCache.open(cache_path, max_leaf_hash_bytes=512) as cache:
        for path in paths:
            st = os.stat(path)
            cache.remember(path, st, ROOT, leaves, started_ns=time.time_ns())
        cache.flush()
        kept = [cache.lookup(path, os.stat(path)) for path in paths]
    assert sum(hit is not None for hit in kept) * len(leaves) <= 512
    assert any(hit is not None and hit.leaf_hashes == leaves for hit in kept)


@pytest.mark.parametrize(
    "damage",
    [b"this is not a database at all" * 100, b"SQLite format 3\x00" + b"\xff" * 4000],
    ids=["garbage", "bad-header"],
)
def test_a_damaged_cache_is_moved_aside(cache_path: Path, settled: Path, damage: bytes) -> None:
    cache_path.parent.mkdir(parents=True)
    cache_path.write_bytes(damage)
    with HashCache.open(cache_path) as cache:
        assert cache.is_enabled
        _remember(cache, settled)
        assert cache.lookup(settled, os.stat(settled)) is not None
    assert cache_path.with_name(CACHE_FILE_NAME + ".corrupt").read_bytes() == damage


def test_a_cache_damaged_inside_still_never_raises(cache_path: Path, tmp_path: Path) -> None:
    paths = []
    for number in range(3000):
        path = tmp_path / f"f{number}"
        path.write_bytes(b"x")
        paths.append(path)
    _settle()
    with HashCache.open(cache_path) as cache:
        for path in paths:
            _remember(cache, path)
    size = cache_path.stat().st_size
    with open(cache_path, "r+b") as handle:  # keep the header, ruin the pages
        handle.seek(4096)
        handle.write(os.urandom(size - 4096))
    with HashCache.open(cache_path) as cache:
        for path in paths:
            hit = cache.lookup(path, os.stat(path))
            assert hit is None or hit.root == ROOT
            _remember(cache, path)
    with HashCache.open(cache_path) as cache:  # usable again (or made anew)
        assert cache.is_enabled


def test_an_unusable_folder_is_a_disabled_cache(tmp_path: Path, settled: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"")
    with HashCache.open(blocker / CACHE_FILE_NAME) as cache:
        assert not cache.is_enabled
        _remember(cache, settled)
        assert cache.lookup(settled, os.stat(settled)) is None


def test_a_locked_cache_neither_hangs_nor_raises(cache_path: Path, settled: Path) -> None:
    with HashCache.open(cache_path) as cache:
        _remember(cache, settled)
    other = sqlite3.connect(cache_path, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")  # another process's long write
        started = time.monotonic()
        with HashCache.open(cache_path) as cache:
            hit = cache.lookup(settled, os.stat(settled))
            assert hit is None or hit.root == ROOT
            _remember(cache, settled, b"n" * 32)
            cache.flush()
        assert time.monotonic() - started < 10
    finally:
        other.execute("ROLLBACK")
        other.close()


_WRITER = """
import os, sys, time
from pathlib import Path
from p2pcp.transfer.hashcache import HashCache
cache = HashCache.open(Path(sys.argv[1]))
paths = [Path(folder) / name for folder in sys.argv[2:] for name in sorted(os.listdir(folder))]
print("ready", flush=True)
while True:
    for path in paths:
        st = os.stat(path)
        cache.remember(path, st, path.name.encode().ljust(32, b"."), None,
                       started_ns=time.time_ns())
    cache.flush()
"""


def _files(folder: Path, count: int) -> list[Path]:
    folder.mkdir()
    paths = []
    for number in range(count):
        path = folder / f"f{number:05}"
        path.write_bytes(b"x")
        paths.append(path)
    _settle()
    return paths


def _writer(folder: Path, cache_path: Path, *more: Path) -> subprocess.Popen[str]:
    """A process remembering every file of ``folder`` (and ``more``) over
    and over, each as its name padded with dots, in one cache."""
    process = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(cache_path), str(folder), *map(str, more)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    with process.stdout:
        assert process.stdout.readline().strip() == "ready"
    return process


def _check_cache(cache_path: Path, paths: list[Path]) -> int:
    """The cache file is a sound database whose hits are right; their count."""
    connection = sqlite3.connect(cache_path)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        connection.close()
    hits = 0
    with HashCache.open(cache_path) as cache:
        assert cache.is_enabled
        for path in paths:
            hit = cache.lookup(path, os.stat(path))
            if hit is not None:
                assert hit.root == path.name.encode().ljust(32, b".")
                hits += 1
    return hits


def test_a_writer_killed_at_any_moment_leaves_a_usable_cache(
    cache_path: Path, tmp_path: Path
) -> None:
    paths = _files(tmp_path / "files", 2000)
    for delay_s in (0.05, 0.3, 0.7, 1.2):
        process = _writer(tmp_path / "files", cache_path)
        time.sleep(delay_s)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        _check_cache(cache_path, paths)
    assert _check_cache(cache_path, paths) > 0


def test_two_processes_share_one_cache(cache_path: Path, tmp_path: Path) -> None:
    """Two processes write the same entries (and each its own) at once; read
    meanwhile, the file is sound and holds both processes' entries, right."""
    paths = _files(tmp_path / "files", 2000)
    own = [_files(tmp_path / f"own{number}", 100) for number in range(2)]
    writers = [
        _writer(tmp_path / "files", cache_path, tmp_path / f"own{number}") for number in range(2)
    ]
    try:
        time.sleep(1.5)
        for process in writers:
            assert process.poll() is None, "a writer failed"
        everything = paths + own[0] + own[1]
        assert _check_cache(cache_path, everything) == len(everything)
    finally:
        for process in writers:
            process.kill()
            process.wait(timeout=30)


def test_import_uses_the_cache_and_sees_changes(cache_path: Path, tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    for number in range(600):  # more than one chunk: the threads look up too
        (folder / f"s{number}").write_bytes(os.urandom(number))
    (folder / "large").write_bytes(os.urandom(3 * LEAF_SIZE + 7))
    _settle()
    first = import_scan(scan_paths([folder]))
    runs = []
    for _ in range(2):
        with HashCache.open(cache_path) as cache:
            runs.append(import_scan(scan_paths([folder]), cache=cache))
    assert [run.root for run in runs] == [first.root, first.root]
    assert runs[0].stats.files_hashed == 601 and runs[0].stats.files_cached == 0
    assert runs[1].stats.files_hashed == 0 and runs[1].stats.files_cached == 601
    assert runs[1].stats.bytes_cached == first.manifest.total_size
    large = runs[1].manifest.files[0]
    served = runs[1].blobs.get(large.root)
    assert served is not None and served.outboard.root == large.root
    assert (
        served.outboard.leaf_hashes
        == Outboard.from_bytes((folder / "large").read_bytes()).leaf_hashes
    )
    (folder / "s5").write_bytes(b"other")
    _settle()
    with HashCache.open(cache_path) as cache:
        changed = import_scan(scan_paths([folder]), cache=cache)
    assert changed.stats.files_hashed == 1 and changed.stats.files_cached == 600
    assert changed.root == import_scan(scan_paths([folder])).root != first.root


def _rewrite(path: Path, versions: tuple[bytes, bytes], stop: threading.Event) -> int:
    """Overwrite ``path`` in place with each version in turn until stopped,
    pausing now and then (so that some scans find it still); the writes."""
    writes = 0
    fd = os.open(path, os.O_WRONLY)
    try:
        while not stop.is_set():
            for _ in range(50):
                os.pwrite(fd, versions[writes % 2], 0)
                writes += 1
            time.sleep(0.3 if writes % 200 == 0 else 0.002)
    finally:
        os.close(fd)
    return writes


@pytest.mark.parametrize("size", [3 * LEAF_SIZE + 100, 60_000], ids=["large", "small"])
def test_a_file_rewritten_during_the_scan_is_one_version_or_skipped(
    tmp_path: Path, cache_path: Path, size: int
) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "still").write_bytes(b"still")
    versions = (os.urandom(size), os.urandom(size))
    target = folder / "moving"
    target.write_bytes(versions[0])
    roots = {Outboard.from_bytes(version).root for version in versions}
    stop = threading.Event()
    writes: list[int] = []
    writer = threading.Thread(target=lambda: writes.append(_rewrite(target, versions, stop)))
    writer.start()
    outcomes = {"version": 0, "skipped": 0}
    try:
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            with HashCache.open(cache_path) as cache:
                collection = import_scan(scan_paths([folder]), cache=cache)
            entries = {entry.path: entry for entry in collection.manifest.files}
            if "folder/moving" in entries:
                assert entries["folder/moving"].root in roots
                outcomes["version"] += 1
            else:
                assert collection.skipped == ["folder/moving (changed while it was being read)"]
                outcomes["skipped"] += 1
    finally:
        stop.set()
        writer.join(timeout=30)
    assert writes and writes[0] > 100
    assert outcomes["version"] + outcomes["skipped"] >= 5


def test_a_file_that_keeps_changing_is_an_error_under_strict(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    size = 8 * LEAF_SIZE
    versions = (os.urandom(size), os.urandom(size))
    target = folder / "moving"
    target.write_bytes(versions[0])
    stop = threading.Event()

    def rewrite() -> None:  # never pauses: every read sees a change
        fd = os.open(target, os.O_WRONLY)
        number = 0
        while not stop.is_set():
            os.pwrite(fd, versions[number % 2], 0)
            os.utime(fd, ns=(number, number))
            number += 1
        os.close(fd)

    writer = threading.Thread(target=rewrite)
    writer.start()
    errors = 0
    try:
        for _ in range(20):
            try:
                import_scan(scan_paths([folder], strict=True))
            except StorageError as exc:
                assert "changed while it was being read" in str(exc)
                errors += 1
    finally:
        stop.set()
        writer.join(timeout=30)
    assert errors > 0


# -- the standard BLAKE3, the schema, the first run, files a receive placed --

DIGEST = b"b" * 32


def test_blake3_is_kept_and_none_when_unknown(cache_path: Path, tmp_path: Path) -> None:
    known, unknown = tmp_path / "known", tmp_path / "unknown"
    known.write_bytes(b"one")
    unknown.write_bytes(b"two")
    _settle()
    with HashCache.open(cache_path) as cache:
        cache.remember(known, os.stat(known), ROOT, None, blake3=DIGEST)
        _remember(cache, unknown)
        for _ in range(2):  # queued, then from the file
            assert cache.lookup(known, os.stat(known)) == cache.lookup_many([os.stat(known)])[0]
            hit = cache.lookup(known, os.stat(known))
            assert hit is not None and hit.blake3 == DIGEST
            hit = cache.lookup_many([os.stat(unknown)])[0]
            assert hit is not None and hit.blake3 is None
            cache.flush()


@pytest.mark.parametrize("flush_between", [False, True], ids=["queued", "written"])
def test_the_same_version_remembered_again_keeps_what_it_knew(
    cache_path: Path, tmp_path: Path, flush_between: bool
) -> None:
    """A sender re-hashing a file the receiver placed (it has no BLAKE3)
    keeps the BLAKE3 and the leaf hashes; another version loses them."""
    path = tmp_path / "big"
    with open(path, "wb") as handle:
        handle.truncate(2 * LEAF_SIZE)
    leaves = os.urandom(64)
    _settle()
    with HashCache.open(cache_path) as cache:
        st = os.stat(path)
        cache.remember(path, st, ROOT, leaves, blake3=DIGEST)
        if flush_between:
            cache.flush()
        cache.remember(path, st, ROOT, None)  # the same version, less known
        cache.flush()
        hit = cache.lookup(path, st)
        assert hit is not None and (hit.leaf_hashes, hit.blake3) == (leaves, DIGEST)
        cache.remember(path, st, b"n" * 32, None)  # another root: nothing kept
        if flush_between:
            cache.flush()
        hit = cache.lookup(path, st)
        assert hit is not None and (hit.root, hit.leaf_hashes, hit.blake3) == (
            b"n" * 32,
            None,
            None,
        )


_SCHEMA_1 = """
CREATE TABLE hashes (
    dev INTEGER NOT NULL, ino INTEGER NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, root BLOB NOT NULL,
    leaves BLOB, leaf_bytes INTEGER NOT NULL, used INTEGER NOT NULL,
    PRIMARY KEY (dev, ino)
);
CREATE INDEX hashes_used ON hashes (used);
PRAGMA user_version=1;
"""


def test_a_version_1_cache_is_migrated(cache_path: Path, settled: Path) -> None:
    st = os.stat(settled)
    cache_path.parent.mkdir()
    old = sqlite3.connect(cache_path, isolation_level=None)
    old.execute("PRAGMA journal_mode=WAL")
    old.executescript(_SCHEMA_1)
    old.execute(
        "INSERT INTO hashes VALUES (?, ?, ?, ?, ?, ?, NULL, 0, ?)",
        (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, ROOT, int(time.time())),
    )
    old.close()
    with HashCache.open(cache_path) as cache:
        assert cache.is_enabled
        hit = cache.lookup(settled, st)
        assert hit is not None and (hit.root, hit.blake3) == (ROOT, None)  # kept, upgraded
        cache.remember(settled, st, ROOT, None, blake3=DIGEST)
    with HashCache.open(cache_path) as cache:
        hit = cache.lookup(settled, st)
        assert hit is not None and hit.blake3 == DIGEST
    check = sqlite3.connect(cache_path)
    try:
        assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        check.close()


def test_a_later_version_is_left_alone(cache_path: Path, settled: Path) -> None:
    cache_path.parent.mkdir()
    later = sqlite3.connect(cache_path, isolation_level=None)
    later.execute("CREATE TABLE other (x)")
    later.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    later.close()
    before = cache_path.read_bytes()
    with HashCache.open(cache_path) as cache:
        assert not cache.is_enabled
        _remember(cache, settled)
        assert cache.lookup(settled, os.stat(settled)) is None
    assert cache_path.read_bytes() == before


def test_a_first_run_asks_the_empty_cache_once_per_device(cache_path: Path, tmp_path: Path) -> None:
    """With no entry of the device, an import looks nothing up per file
    (one query for the device, whatever the count of files); its next run
    finds every file, a chunk per query."""
    folder = tmp_path / "folder"
    folder.mkdir()
    for number in range(700):  # three chunks
        (folder / f"s{number}").write_bytes(os.urandom(number % 50))
    (folder / "large").write_bytes(os.urandom(2 * LEAF_SIZE + 1))
    _settle()
    runs = []
    for _ in range(2):
        statements: list[str] = []
        with HashCache.open(cache_path) as cache:
            connection = cache._connection
            assert connection is not None
            connection.set_trace_callback(statements.append)
            runs.append(import_scan(scan_paths([folder]), cache=cache))
            connection.set_trace_callback(None)
        lookups = [text for text in statements if "FROM hashes WHERE" in text]
        if len(runs) == 1:
            assert len(lookups) == 1, lookups  # the device, once
            assert "LIMIT 1" in lookups[0]
        else:
            assert 2 <= len(lookups) <= 1 + 3 + 1, lookups  # the device, 3 chunks, the large file
    assert (runs[0].stats.files_hashed, runs[0].stats.files_cached) == (701, 0)
    assert (runs[1].stats.files_hashed, runs[1].stats.files_cached) == (0, 701)
    assert runs[0].root == runs[1].root


def test_each_scan_asks_again_whether_a_device_holds_entries(
    cache_path: Path, settled: Path
) -> None:
    """A long-lived cache (a share's) finds what was written since its last
    scan: ``begin_scan`` asks the file again."""
    st = os.stat(settled)
    with HashCache.open(cache_path) as long_lived:
        long_lived.begin_scan()
        assert not long_lived.holds_device(st.st_dev)
        with HashCache.open(cache_path) as other:
            _remember(other, settled)
        assert long_lived.lookup(settled, st) is None  # this scan's answer stands
        long_lived.begin_scan()
        assert long_lived.holds_device(st.st_dev)
        hit = long_lived.lookup(settled, st)
        assert hit is not None and hit.root == ROOT


def test_remember_many_leaves_out_racy_files(cache_path: Path, tmp_path: Path) -> None:
    old, fresh = tmp_path / "old", tmp_path / "fresh"
    old.write_bytes(b"old")
    _settle()
    started_ns = time.time_ns()
    fresh.write_bytes(b"fresh")
    with HashCache.open(cache_path) as cache:
        count = cache.remember_many(
            [
                Remembered(os.stat(old), ROOT, None, started_ns, DIGEST),
                Remembered(os.stat(fresh), ROOT, None, started_ns, DIGEST),
            ]
        )
        assert count == 1
        assert cache.lookup(old, os.stat(old)) is not None
        assert cache.lookup(fresh, os.stat(fresh)) is None


def _place(folder: Path, name: str, data: bytes) -> Path:
    """Write ``data`` beside ``name`` and rename it into place, as a receive does."""
    temp = folder / f".{name}.tmp"
    temp.write_bytes(data)
    os.replace(temp, folder / name)
    return folder / name


def _entry(name: str, data: bytes) -> Entry:
    return Entry(f"out/{name}", len(data), Outboard.from_bytes(data).root)


def test_files_a_receive_placed_are_remembered_once_the_margin_passed(
    cache_path: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    large = os.urandom(3 * LEAF_SIZE + 5)
    small = b"small file"
    placed = PlacedFiles()
    _place(folder, "large", large)
    tree = Outboard.from_bytes(large)
    placed.add((_entry("large", large),), blake3.blake3(large).hexdigest(), tree.leaf_hashes)
    _place(folder, "small", small)
    _place(folder, "small copy", small)
    entry = _entry("small", small)
    copy = Entry("out/small copy", entry.size, entry.root)
    last_added_ns = time.time_ns()
    placed.add((entry, copy), blake3.blake3(small).hexdigest())
    with HashCache.open(cache_path) as cache:
        assert placed.remember(cache, tmp_path) == 3  # just renamed: it waited, not refused
        # It stat'ed them only once the margin had passed since the last placement.
        assert time.time_ns() - last_added_ns > RACY_MARGIN_NS
    with HashCache.open(cache_path) as cache:
        hit = cache.lookup(folder / "large", os.stat(folder / "large"))
        assert hit is not None
        assert (hit.root, hit.leaf_hashes) == (tree.root, tree.leaf_hashes)
        assert hit.blake3 == blake3.blake3(large).digest()
        for name in ("small", "small copy"):
            hit = cache.lookup(folder / name, os.stat(folder / name))
            assert hit is not None and hit.root == entry.root and hit.leaf_hashes is None
            assert hit.blake3 == blake3.blake3(small).digest()


def test_a_placed_file_changed_or_replaced_since_is_not_remembered(
    cache_path: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    data = b"0123456789"
    placed = PlacedFiles()
    names = ("rewritten", "renamed over", "link", "gone", "grown", "kept")
    for name in names:
        _place(folder, name, data)
        placed.add((_entry(name, data),), blake3.blake3(data).hexdigest())
    time.sleep(0.05)  # a later clock tick than the placements
    (folder / "rewritten").write_bytes(b"9876543210")  # same size, after placement
    _place(folder, "renamed over", b"abcdefghij")
    (folder / "link").unlink()
    (folder / "link").symlink_to("kept")
    (folder / "gone").unlink()
    (folder / "grown").write_bytes(data + b"!")
    with HashCache.open(cache_path) as cache:
        assert placed.remember(cache, tmp_path) == 1
        for name in names:
            path = folder / name
            if path.exists():
                hit = cache.lookup(path, os.lstat(path))
                assert (hit is not None) == (name == "kept"), name


def test_wrong_leaf_hashes_are_not_remembered(cache_path: Path, tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    data = os.urandom(2 * LEAF_SIZE + 1)
    _place(folder, "large", data)
    placed = PlacedFiles()
    wrong = os.urandom(len(Outboard.from_bytes(data).leaf_hashes))
    placed.add((_entry("large", data),), blake3.blake3(data).hexdigest(), wrong)
    with HashCache.open(cache_path) as cache:
        assert placed.remember(cache, tmp_path) == 1
        hit = cache.lookup(folder / "large", os.stat(folder / "large"))
        assert hit is not None and hit.leaf_hashes is None  # the root alone


def test_placed_files_off_notes_nothing(cache_path: Path, tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    _place(folder, "f", b"data")
    placed = PlacedFiles(is_on=False)
    placed.add((_entry("f", b"data"),), blake3.blake3(b"data").hexdigest())
    assert len(placed) == 0
    with HashCache.open(cache_path) as cache:
        assert placed.remember(cache, tmp_path) == 0
