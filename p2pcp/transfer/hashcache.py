"""The hash cache: a file's root (and leaf hashes) remembered by its inode.

A second ``send`` of a folder that did not change reads none of its files:
``import_scan`` looks each file up here by what ``fstat`` says of it and
hashes only the files it does not find. The receiver (``--update``) uses
it the same way for the files already in its output folder, and keeps the
standard BLAKE3 it reports for each file here too (``CachedHash.blake3``;
the sender never computes it, so its entries have none), so that a
re-run reads nothing that did not change on either side. At the end of a
receive, the files it placed are remembered (``fetcher.py``): their
content was verified before it was renamed into place.

The cache is one SQLite file, ``<cache dir>/hashes.sqlite`` (see
``core.config.cache_dir``: ``$P2PCP_HOME/cache`` or the user cache dir),
in WAL mode. Rules:

- **Never trusted for a file that changed.** An entry is keyed by
  (st_dev, st_ino) and matches only when size, mtime_ns AND ctime_ns are
  all the same as the file's now. ctime cannot be set by a user (``touch
  -d`` and ``os.utime`` move it to now), so a file rewritten and given its
  old mtime back still misses; a new file at the same path has a new inode
  (or, for a reused inode, a newer ctime: see the next rule).
- **No racy entries** (git's "racy clean" rule). A timestamp is taken from
  a clock that ticks (the kernel's coarse clock: 1-10 ms; whole seconds
  on some file systems, two on FAT). A file written within the same tick
  as the stat taken before hashing can change without its mtime or ctime
  changing, and an entry made from it would then be trusted for content
  it never held. So an entry is stored only when the file's mtime and
  ctime are older than the moment the read started by more than
  ``racy_margin_ns`` (that tick, with room to spare); a file changed in
  that margin is simply hashed again next time. The same rule makes a
  reused inode safe: a file created after the hashing started has a
  ctime newer than any stored one.
- **Crash-safe.** Every write is a SQLite transaction in WAL mode
  (synchronous=NORMAL: a killed process loses nothing committed, a power
  cut at most the last transactions, never consistency). A file that is
  not a database or is damaged is moved aside (``hashes.sqlite.corrupt``)
  and a new one made; whatever still fails makes a *disabled* cache that
  caches nothing. Nothing here ever raises to the user: a cache that does
  not work only costs the time to hash.
- **Several processes at once.** SQLite's locks keep them apart; a writer
  waits at most ``BUSY_TIMEOUT_S`` for another, and a lookup or a write
  that still finds the database locked is a miss or a write dropped,
  never a hang or an error.
- **Bounded**: at most ``MAX_ENTRIES`` entries and ``MAX_LEAF_HASH_BYTES``
  of stored leaf hashes; the least recently used entries go first.
- **Private**: the folder is made 0700 and the file 0600 (SQLite gives its
  -wal and -shm files the database's mode): paths are not stored, but
  inode numbers and hashes of a user's files are nobody else's business.
- **Batched**: ``remember`` queues; the queue is written in one
  transaction per ``BATCH_ENTRIES`` (100,000 small files cost 50
  commits, not 100,000), and by ``flush`` and ``close``.
  ``remember_many`` queues many at once (the import's threads hand over
  a chunk of files at a time).
- **Free when empty**: whether the cache holds any entry of a device is
  asked once per device per scan (``begin_scan``), so on a first run every
  lookup of that device's files is answered without a query (until this
  cache itself writes some), and the import does not even stat them for
  it (``holds_device`` keeps the scan's first answer: a scan looks each
  file up once).
- **Upgraded in place**: a cache of an earlier schema version is migrated
  (version 1 had no ``blake3`` column); one of a later version, made by a
  newer p2pcp, is left alone (this run caches nothing).

Threads: every method may be called from any thread (one lock around the
connection); ``import_scan`` looks up and remembers from its hashing
threads. ``close`` ends it; calls after it do nothing.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from p2pcp.core.config import cache_dir

CACHE_FILE_NAME = "hashes.sqlite"
# 1: no blake3 column; 2: blake3 (NULL when unknown).
SCHEMA_VERSION = 2

# Bounds. An entry of a small file costs about 100 bytes in the file, so
# 250,000 of them (a large home folder's worth of files, more than any one
# backup set we aim at) cost about 25 MB. Leaf hashes are 32 bytes per
# 256 KiB leaf (1/8192 of the data): 128 MiB of them describe 1 TiB of
# large files, about the most one machine would send; one file's are
# stored only up to a quarter of that (a 256 GiB file), so a single huge
# file cannot push everything else out.
MAX_ENTRIES = 250_000
MAX_LEAF_HASH_BYTES = 128 * 1024 * 1024
# When over a bound, evict down to this fraction of it, so that eviction
# (an ordered scan of the table) runs seldom.
EVICT_TO_FRACTION = 0.9
# Files looked up in one query by lookup_many (SQLite allows 999 values in
# one statement before 3.32).
LOOKUP_BATCH = 500
# SQLite's page cache for the cache file, in KiB.
PAGE_CACHE_KIB = 256
# Entries queued before they are written in one transaction: 100,000 files
# cost 50 commits (in WAL mode, with synchronous=NORMAL, a commit does not
# wait for the disk), and the queue (~400 bytes an entry) stays under a MB
# however many files a run hashes.
BATCH_ENTRIES = 2_000
# A hit refreshes the entry's last use at most this often (a write per hit
# would make a cached run cost as many writes as a first one).
TOUCH_INTERVAL_S = 3600
# How long a write waits for another process's transaction.
BUSY_TIMEOUT_S = 1.0
# The racy margin: Linux stamps files from a clock that ticks every 1 to
# 10 ms (CONFIG_HZ), so 100 ms is one tick with ample room for the clock
# being read at slightly different moments. A file whose times are whole
# seconds lives on a file system that keeps seconds (or FAT's 2 s): 3 s.
RACY_MARGIN_NS = 100_000_000
COARSE_RACY_MARGIN_NS = 3_000_000_000

_I64 = 1 << 63


def racy_margin_ns(st: os.stat_result) -> int:
    """How much older than "now" a file's timestamps must be before its
    content can no longer change without them changing (see the module)."""
    if st.st_mtime_ns % 1_000_000_000 == 0 and st.st_ctime_ns % 1_000_000_000 == 0:
        return COARSE_RACY_MARGIN_NS
    return RACY_MARGIN_NS


def racy_wait_ns(st: os.stat_result, started_ns: int) -> int:
    """How long to wait before ``st`` (taken just after ``started_ns``,
    ``time.time_ns()``) stops being racy: 0 when it is not. A timestamp
    within the racy margin of ``started_ns`` is racy: a write in that tick
    may leave it as it is. One further in the future than that is not (a
    write would set it to now, which differs)."""
    margin = racy_margin_ns(st)
    wait = 0
    for stamp in (st.st_mtime_ns, st.st_ctime_ns):
        if started_ns - margin <= stamp <= started_ns + margin:
            wait = max(wait, stamp + margin - started_ns + 1)
    return wait


def is_racy(st: os.stat_result, started_ns: int) -> bool:
    """Whether ``st`` is too recent to prove that the content did not change
    without its times changing (``racy_wait_ns``)."""
    return racy_wait_ns(st, started_ns) > 0


def _signed(value: int) -> int:
    """An unsigned 64-bit number (st_dev, st_ino) as SQLite's signed INTEGER."""
    return value - (1 << 64) if value >= _I64 else value


@dataclass(frozen=True)
class CachedHash:
    """What the cache knows of a file: its blob root, its size, its leaf
    hashes when it is larger than one leaf (None: one leaf or less, or
    not known), and its standard BLAKE3 (32 bytes; None: not known, as
    for every file only a sender hashed)."""

    root: bytes
    size: int
    leaf_hashes: bytes | None
    blake3: bytes | None = None


class Remembered(NamedTuple):
    """One file for ``remember_many``: the arguments of ``remember``."""

    st: os.stat_result
    root: bytes
    leaf_hashes: bytes | None
    started_ns: int
    blake3: bytes | None = None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS hashes (
    dev INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    root BLOB NOT NULL,
    leaves BLOB,
    leaf_bytes INTEGER NOT NULL,
    used INTEGER NOT NULL,
    blake3 BLOB,
    PRIMARY KEY (dev, ino)
);
CREATE INDEX IF NOT EXISTS hashes_used ON hashes (used);
"""
_COLUMNS = "dev, ino, size, mtime_ns, ctime_ns, root, leaves, leaf_bytes, used, blake3"
# An entry written again for the same version of a file (same stamps and
# root: the sender re-hashed a file the receiver placed, say) keeps what
# the new row does not know (leaf hashes, BLAKE3); any other version's go.
_SAME = (
    "(hashes.size, hashes.mtime_ns, hashes.ctime_ns, hashes.root)"
    " = (excluded.size, excluded.mtime_ns, excluded.ctime_ns, excluded.root)"
)
_UPSERT = (
    f"INSERT INTO hashes ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
    " ON CONFLICT (dev, ino) DO UPDATE SET"
    " size = excluded.size, mtime_ns = excluded.mtime_ns, ctime_ns = excluded.ctime_ns,"
    " root = excluded.root, used = excluded.used,"
    f" leaves = CASE WHEN excluded.leaves IS NULL AND {_SAME}"
    " THEN hashes.leaves ELSE excluded.leaves END,"
    f" leaf_bytes = CASE WHEN excluded.leaves IS NULL AND {_SAME}"
    " THEN hashes.leaf_bytes ELSE excluded.leaf_bytes END,"
    f" blake3 = CASE WHEN excluded.blake3 IS NULL AND {_SAME}"
    " THEN hashes.blake3 ELSE excluded.blake3 END"
)

# dev, ino, size, mtime_ns, ctime_ns, root, leaves, leaf_bytes, used, blake3
_Row = tuple[int, int, int, int, int, bytes, bytes | None, int, int, bytes | None]


def _merged(old: _Row | None, new: _Row) -> _Row:
    """``new``, keeping the leaf hashes and BLAKE3 ``old`` knew when both
    describe the same version of the file (what ``_UPSERT`` does)."""
    if old is None or old[2:6] != new[2:6]:
        return new
    leaves, leaf_bytes = (new[6], new[7]) if new[6] is not None else (old[6], old[7])
    blake3 = new[9] if new[9] is not None else old[9]
    return (*new[:6], leaves, leaf_bytes, new[8], blake3)


def _cached(row: tuple[int, bytes, bytes | None, bytes | None]) -> CachedHash:
    """(size, root, leaves, blake3) as a CachedHash."""
    size, root, leaves, blake3 = row
    return CachedHash(
        bytes(root),
        size,
        None if leaves is None else bytes(leaves),
        None if blake3 is None else bytes(blake3),
    )


class HashCache:
    """See the module. ``HashCache.open_default()`` for the user's cache,
    ``HashCache.open(path)`` for a given file, ``HashCache.disabled()`` for
    one that caches nothing."""

    def __init__(
        self,
        connection: sqlite3.Connection | None,
        path: Path | None,
        *,
        max_entries: int = MAX_ENTRIES,
        max_leaf_hash_bytes: int = MAX_LEAF_HASH_BYTES,
    ) -> None:
        self._connection = connection
        self.path = path
        self.max_entries = max_entries
        self.max_leaf_hash_bytes = max_leaf_hash_bytes
        self._lock = threading.Lock()
        self._pending: dict[tuple[int, int], _Row] = {}
        self._touched: set[tuple[int, int]] = set()
        self._inserted = 0
        # Devices (signed st_dev) -> whether the file held any entry of
        # theirs when first asked in this scan (begin_scan asks again);
        # and the devices this cache wrote entries of since.
        self._devices: dict[int, bool] = {}
        self._written_devices: set[int] = set()

    # -- opening ---------------------------------------------------------

    @classmethod
    def disabled(cls) -> HashCache:
        return cls(None, None)

    @classmethod
    def open_default(cls) -> HashCache:
        """The user's cache (a disabled one if it cannot be had)."""
        return cls.open(cache_dir() / CACHE_FILE_NAME)

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        max_entries: int = MAX_ENTRIES,
        max_leaf_hash_bytes: int = MAX_LEAF_HASH_BYTES,
    ) -> HashCache:
        """The cache in ``path`` (made if missing; moved aside and made
        again if it is not a usable database); disabled when that fails.
        The bounds are the module's unless given (tests give small ones)."""
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                os.chmod(path.parent, 0o700)
        except OSError:
            return cls.disabled()
        for attempt in range(2):
            try:
                return cls(
                    _connect(path),
                    path,
                    max_entries=max_entries,
                    max_leaf_hash_bytes=max_leaf_hash_bytes,
                )
            except sqlite3.OperationalError:
                return cls.disabled()  # locked, read-only, no space, ...: no cache this run
            except (sqlite3.DatabaseError, ValueError):
                if attempt == 0 and _move_aside(path):
                    continue
                return cls.disabled()
            except OSError:
                return cls.disabled()
        return cls.disabled()

    @property
    def is_enabled(self) -> bool:
        return self._connection is not None

    # -- use ---------------------------------------------------------------

    def lookup(self, path: str | os.PathLike[str], st: os.stat_result) -> CachedHash | None:
        """The file's hashes if it is known with this very dev, inode,
        size, mtime and ctime; else None. (``path`` only names it.)"""
        key = (_signed(st.st_dev), _signed(st.st_ino))
        with self._lock:
            connection = self._connection
            if connection is None:
                return None
            row: tuple[int, int, int, bytes, bytes | None, int, bytes | None] | None
            pending = self._pending.get(key)
            if pending is not None:
                row = (*pending[2:7], pending[8], pending[9])
            elif not self._may_hold_locked(key[0]):
                return None
            else:
                try:
                    row = connection.execute(
                        "SELECT size, mtime_ns, ctime_ns, root, leaves, used, blake3 FROM hashes"
                        " WHERE dev = ? AND ino = ?",
                        key,
                    ).fetchone()
                except sqlite3.OperationalError:
                    return None
                except sqlite3.DatabaseError:
                    self._broken()
                    return None
            if row is None:
                return None
            size, mtime_ns, ctime_ns, root, leaves, used, blake3 = row
            if (size, mtime_ns, ctime_ns) != (st.st_size, st.st_mtime_ns, st.st_ctime_ns):
                return None
            if used < int(time.time()) - TOUCH_INTERVAL_S:
                self._touched.add(key)
        return _cached((size, root, leaves, blake3))

    def holds_device(self, st_dev: int) -> bool:
        """Whether the cache held any file of device ``st_dev`` when this
        scan began (False: a lookup of a file not remembered during the
        scan misses, so the scan need not even stat its files for it).
        Asked of the file once per device per scan."""
        with self._lock:
            return self._connection is not None and self._holds_device_locked(_signed(st_dev))

    def begin_scan(self) -> None:
        """A new scan (an import, a receiver's plan): whether each device
        holds entries is asked of the file again (a long-lived share finds
        what its earlier scans remembered)."""
        with self._lock:
            self._devices.clear()
            self._written_devices.clear()

    def lookup_many(self, stats: list[os.stat_result]) -> list[CachedHash | None]:
        """``lookup`` for many files at once (one query per device): what
        the import's threads use for a chunk of small files, where a query
        per file would cost more than reading them."""
        results: list[CachedHash | None] = [None] * len(stats)
        by_device: dict[int, list[int]] = {}
        for at, st in enumerate(stats):
            by_device.setdefault(_signed(st.st_dev), []).append(at)
        stale = int(time.time()) - TOUCH_INTERVAL_S
        with self._lock:
            connection = self._connection
            if connection is None:
                return results
            for dev, indexes in by_device.items():
                holds = self._may_hold_locked(dev)
                if not holds and not self._pending:
                    continue
                for start in range(0, len(indexes), LOOKUP_BATCH):
                    part = indexes[start : start + LOOKUP_BATCH]
                    inodes = {_signed(stats[at].st_ino): at for at in part}
                    rows: list[tuple[int, int, int, int, bytes, bytes | None, int, bytes | None]]
                    rows = []
                    for key in ((dev, ino) for ino in inodes):
                        pending = self._pending.get(key)
                        if pending is not None:
                            rows.append((key[1], *pending[2:7], pending[8], pending[9]))
                    # Placeholders only: no value is put in the text.
                    marks = ",".join("?" * len(inodes))
                    try:
                        if holds:
                            rows += connection.execute(
                                "SELECT ino, size, mtime_ns, ctime_ns, root, leaves, used, blake3"  # noqa: S608
                                f" FROM hashes WHERE dev = ? AND ino IN ({marks})",
                                (dev, *inodes),
                            ).fetchall()
                    except sqlite3.OperationalError:
                        continue
                    except sqlite3.DatabaseError:
                        self._broken()
                        return results
                    for ino, size, mtime_ns, ctime_ns, root, leaves, used, blake3 in rows:
                        at = inodes[ino]
                        st = stats[at]
                        if results[at] is not None or (size, mtime_ns, ctime_ns) != (
                            st.st_size,
                            st.st_mtime_ns,
                            st.st_ctime_ns,
                        ):
                            continue
                        if used < stale:
                            self._touched.add((dev, ino))
                        results[at] = CachedHash(
                            bytes(root),
                            size,
                            None if leaves is None else bytes(leaves),
                            None if blake3 is None else bytes(blake3),
                        )
        return results

    def remember(
        self,
        path: str | os.PathLike[str],
        st: os.stat_result,
        root: bytes,
        leaf_hashes: bytes | None,
        *,
        started_ns: int | None = None,
        blake3: bytes | None = None,
    ) -> None:
        """Remember that the file ``st`` describes hashed to ``root`` (and,
        when known, to the standard BLAKE3 ``blake3``).

        ``st`` must be the stat taken BEFORE the bytes were read, and the
        read must have been checked against a stat taken after it (the
        file did not change meanwhile); or, for a file the receiver placed,
        a stat taken after its verified content was renamed into place.
        ``started_ns``: ``time.time_ns()`` taken just before ``st``;
        without it, now. A racy entry (the file changed within the racy
        margin of that moment) is not stored."""
        if started_ns is None:
            started_ns = time.time_ns()
        self.remember_many([Remembered(st, root, leaf_hashes, started_ns, blake3)])

    def remember_many(self, files: Iterable[Remembered]) -> int:
        """``remember`` for many files at once (one lock for them all);
        returns how many were queued (the racy ones and those whose leaf
        hashes are over the bound are not)."""
        now = int(time.time())
        rows: list[_Row] = []
        for st, root, leaf_hashes, started_ns, blake3 in files:
            if is_racy(st, started_ns):
                continue
            leaf_bytes = 0 if leaf_hashes is None else len(leaf_hashes)
            if leaf_bytes > self.max_leaf_hash_bytes // 4:
                continue
            rows.append(
                (
                    _signed(st.st_dev),
                    _signed(st.st_ino),
                    st.st_size,
                    st.st_mtime_ns,
                    st.st_ctime_ns,
                    bytes(root),
                    None if leaf_hashes is None else bytes(leaf_hashes),
                    leaf_bytes,
                    now,
                    None if blake3 is None or len(blake3) != 32 else bytes(blake3),
                )
            )
        if not rows:
            return 0
        with self._lock:
            if self._connection is None:
                return 0
            pending = self._pending
            for row in rows:
                key = (row[0], row[1])
                old = pending.get(key)
                pending[key] = row if old is None else _merged(old, row)
            if len(pending) >= BATCH_ENTRIES:
                self._write_locked()
        return len(rows)

    def flush(self) -> None:
        """Write what is queued (one transaction), then keep to the bounds."""
        with self._lock:
            self._write_locked()
            if self._inserted:
                self._evict_locked()

    def close(self) -> None:
        """Flush, then let go of the file. Never raises."""
        self.flush()
        with self._lock:
            connection, self._connection = self._connection, None
            self._pending.clear()
            self._touched.clear()
        if connection is not None:
            with contextlib.suppress(sqlite3.Error):
                connection.close()

    def __enter__(self) -> HashCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- inside the lock -------------------------------------------------------

    def _write_locked(self) -> None:
        connection = self._connection
        if connection is None or not (self._pending or self._touched):
            return
        rows = list(self._pending.values())
        touched = [(int(time.time()), dev, ino) for dev, ino in self._touched]
        self._pending.clear()
        self._touched.clear()
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.executemany(_UPSERT, rows)
                connection.executemany(
                    "UPDATE hashes SET used = ? WHERE dev = ? AND ino = ?", touched
                )
                connection.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError:
            return  # locked by another process past the timeout, or no space: dropped
        except sqlite3.DatabaseError:
            self._broken()
            return
        self._inserted += len(rows)
        self._written_devices.update(row[0] for row in rows)

    def _may_hold_locked(self, dev: int) -> bool:
        """Whether a lookup of device ``dev`` (signed) must ask the file."""
        return dev in self._written_devices or self._holds_device_locked(dev)

    def _holds_device_locked(self, dev: int) -> bool:
        """Whether the file holds any entry of device ``dev`` (signed),
        asked once per device; an error says True (the lookups decide)."""
        holds = self._devices.get(dev)
        if holds is None:
            connection = self._connection
            try:
                holds = connection is not None and (
                    connection.execute(
                        "SELECT 1 FROM hashes WHERE dev = ? LIMIT 1", (dev,)
                    ).fetchone()
                    is not None
                )
            except sqlite3.Error:
                return True
            self._devices[dev] = holds
        return holds

    def _evict_locked(self) -> None:
        """Drop the least recently used entries while over a bound."""
        connection = self._connection
        if connection is None:
            return
        self._inserted = 0
        try:
            count, leaf_bytes = connection.execute(
                "SELECT count(*), coalesce(sum(leaf_bytes), 0) FROM hashes"
            ).fetchone()
            if count <= self.max_entries and leaf_bytes <= self.max_leaf_hash_bytes:
                return
            drop_count = max(0, count - int(self.max_entries * EVICT_TO_FRACTION))
            drop_bytes = max(0, leaf_bytes - int(self.max_leaf_hash_bytes * EVICT_TO_FRACTION))
            victims: list[tuple[int, int]] = []
            freed = 0
            for dev, ino, size in connection.execute(
                "SELECT dev, ino, leaf_bytes FROM hashes ORDER BY used, rowid"
            ):
                if len(victims) >= drop_count and freed >= drop_bytes:
                    break
                victims.append((dev, ino))
                freed += size
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.executemany("DELETE FROM hashes WHERE dev = ? AND ino = ?", victims)
                connection.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError:
            return
        except sqlite3.DatabaseError:
            self._broken()

    def _broken(self) -> None:
        """The file turned out damaged: stop using it, move it aside (the
        next run makes a new one)."""
        connection, self._connection = self._connection, None
        self._pending.clear()
        self._touched.clear()
        if connection is not None:
            with contextlib.suppress(sqlite3.Error):
                connection.close()
        if self.path is not None:
            _move_aside(self.path)


def _connect(path: Path) -> sqlite3.Connection:
    """Open (or make) the cache file: 0600, WAL, the schema in place."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    os.close(fd)
    connection = sqlite3.connect(
        str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )
    try:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION or version < 0:
            # A later p2pcp's cache: leave it alone, cache nothing.
            raise sqlite3.OperationalError(f"unknown hash cache version {version}")
        if connection.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
            raise sqlite3.OperationalError("the hash cache cannot use WAL mode")
        connection.execute("PRAGMA synchronous=NORMAL")
        # Lookups and writes go by primary key, a few pages each: SQLite's
        # default page cache (2 MB) would only add to a send's memory, which
        # is budgeted per file (tests/e2e/test_e2e_memory.py).
        connection.execute(f"PRAGMA cache_size=-{PAGE_CACHE_KIB}")
        if version != SCHEMA_VERSION:
            _upgrade(connection)
        # Reads the table's first page: a damaged file fails here, not later.
        connection.execute("SELECT count(*) FROM (SELECT 1 FROM hashes LIMIT 1)").fetchone()
    except BaseException:
        connection.close()
        raise
    return connection


def _upgrade(connection: sqlite3.Connection) -> None:
    """Make the schema (a new file) or bring an earlier one up to date, in
    one transaction that looks at the version again under the write lock
    (two processes may both have found the file old)."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    connection.execute(statement)
        elif version == 1:
            connection.execute("ALTER TABLE hashes ADD COLUMN blake3 BLOB")
        elif version != SCHEMA_VERSION:
            raise sqlite3.OperationalError(f"unknown hash cache version {version}")
        connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        connection.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")
        raise


def _move_aside(path: Path) -> bool:
    """Rename a damaged cache (and its -wal, -shm) out of the way."""
    try:
        os.replace(path, path.with_name(path.name + ".corrupt"))
    except FileNotFoundError:
        pass
    except OSError:
        return False
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(OSError):
            os.unlink(path.with_name(path.name + suffix))
    return True
