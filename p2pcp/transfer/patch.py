"""``receive --update``: the new version of a file built beside the old one,
from the leaves the two share and the sender's leaves for the rest.

This module owns the plan of one update (which leaves of the new version
the base already holds, which the old file has at some other offset, which
must be fetched, and in which requests) and the file work of building
``<partial folder>/<blob root hex>.patch``. ``updater.py`` asks the sender
for the leaf hashes (GET_TREE) and the missing leaves (GET ranges:
``wire.py``) and hands each proven leaf here; ``Store.place_patch`` puts
the result in place.

The steps, and why the promise holds (the old file stays whole until the
new one is verified and in place; an interrupted update leaves every file
old-and-whole or new-and-verified; a rerun resumes):

1. The sender's leaf hashes are trusted only once they hash up to the
   manifest's root (``check_tree``; a mismatch is IntegrityError, exit 4):
   from then on every hash below is proven.
2. Base (``prepare``): a ``.patch`` an interrupted run left (hashed), else
   a new one: a reflink of the old file where the file system has them
   (its hashes assumed to be the old file's; step 5 checks), else an
   empty file. The old file is only ever read: it stays whole under its
   name.
3. Plan (``plan_patch``, hashes only, nothing read but the old file's
   hashes when the hash cache does not know them): a leaf whose hash is
   the base's at the same index is kept in place; one whose hash is the
   old file's at any index (a leaf's hash does not depend on its
   position; the same index preferred) is copied from there; the rest is
   fetched.
4. Fetched leaves come proven against the root (``RangeDecoder``) and are
   checked against their hash again right before each is written at its
   offset (``write_leaves``). They are fetched while the pass of step 5
   runs (``Patch.finish_while``): the pass copies the leaves before the
   first one still on its way, then waits for it (``_await_arrivals``).
5. One pass in leaf order (``finish``) makes and proves the result:
   each leaf is read into memory from where the plan says its bytes are
   (the old file for a copy, the ``.patch`` itself for a kept or fetched
   leaf), hashed there, and compared with the proven hash of its index;
   a copy is written at its offset from that same memory, after the
   check. The standard BLAKE3 the report gives is computed over that
   same memory, in order. So every leaf of the result is right because
   the very bytes that were written (or that are there) hashed to the
   proven hash of their index: what the plan believed (cached hashes of
   the old file, the hashes of a ``.patch``, a reflink) only decides where
   to look, never what is accepted, and an old file changed since it was
   hashed or during the copy only makes a leaf fail its check. The
   result's root is then the manifest's (its leaf hashes are the proven
   ones, bound to the root by step 1) with nothing read again. A leaf
   that fails is recorded as unknown (and, for a copy, its source in the
   old file as unusable), and the update plans again, once, from what
   the pass proved: the failed leaves are then fetched; then it gives up
   with a StorageError.
6. Only a result whose every leaf passed is fsynced and renamed over the
   old file (``Store.place_patch``). Whatever the base held (a stale
   ``.patch``, an old file that changed during the update), nothing else
   is ever placed.

Speed: the pass reads each byte of the result once, hashes it twice (leaf
hash and standard BLAKE3, on two threads) and writes the copies with
O_DIRECT where the file system allows it, the next run read and hashed
while the last one is written (a writer thread): writing a 1 GiB new
version through the page cache (copy_file_range, then a re-read for the
hashes, then fsync) took 1.2-3.7 s where this takes ~1 s, and it leaves
no gigabyte of dirty pages for fsync to wait on, nor evicts the page
cache (docs/design-notes.md, "Updates: where the time goes").

A kill at any moment leaves the old file whole (or, after the rename, the
new one) and the ``.patch`` in the partial folder. It needs no resume
record: the rerun hashes it against the tree and fetches only what is
still missing.

Memory: hashes only, 32 bytes a leaf (6.4 MB for a 50 GiB file; at most
three such lists: the new version's, the base's, the old file's), one
write batch of fetched leaves at a time, and the pass's ``PASS_BUFFERS``
buffers of ``PASS_RUN_BYTES``; never a file's data.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import functools
import mmap
import os
import stat
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import blake3

from p2pcp.blobs.encoding import LeafReceived, Ranges, check_leaf
from p2pcp.blobs.names import display_path
from p2pcp.blobs.tree import (
    HASH_BYTES,
    LEAF_SIZE,
    PARALLEL_MIN_BYTES,
    READ_BUFFER_BYTES,
    Outboard,
    TreeBuilder,
    hash_leaf,
    leaf_count,
    leaf_length,
)
from p2pcp.core.errors import IntegrityError, LocalProtocolError, StorageError
from p2pcp.transfer.wire import MAX_RANGES

# Leaves handed to a thread per write job (as partial.py: one job per leaf
# would cost more in hand-offs than the writing).
WRITE_BATCH_BYTES = 1024 * 1024
# Linux's FICLONE ioctl (_IOW(0x94, 9, int)): share the old file's extents
# (btrfs, XFS with reflink, bcachefs); elsewhere it fails and the pass copies.
_FICLONE = 0x40049409
# errnos that mean "this way of copying (or writing) is not available here".
_NO_FAST_COPY = frozenset(
    {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOTTY}
)
# The pass (step 5): runs of up to this many bytes (whole leaves) are read,
# checked and written at a time, in this many buffers: one being read and
# hashed while the others are written.
PASS_RUN_BYTES = 2 * 1024 * 1024
PASS_BUFFERS = 3
# O_DIRECT (Linux; 0 where it does not exist): the copies go to the disk
# without a page-cache copy of them (see the module's "Speed").
_O_DIRECT: int = getattr(os, "O_DIRECT", 0)
# Planning the same file again after a pass in which a leaf failed: the
# second plan starts from what the pass proved and fetches what failed,
# so only a file changed under us (in our own partial folder) fails twice.
PLAN_ATTEMPTS = 2
# Stands for a leaf whose content is unknown (a leaf that failed its
# check): no leaf hashes to it (that would take a BLAKE3 preimage).
_NO_HASH = bytes(HASH_BYTES)
# How often a pass waiting for fetched leaves looks again (it is woken as
# each batch is written; this only bounds a missed wake-up).
_ARRIVAL_POLL_S = 0.5


class PassAbandoned(Exception):
    """The pass stopped because the fetch it waited for failed or was
    cancelled (``PatchFile.abandon``): the fetch's error is the one to report."""


_T = TypeVar("_T")


def _hash_at(hashes: bytes, index: int) -> bytes:
    return hashes[index * HASH_BYTES : (index + 1) * HASH_BYTES]


def check_tree(root: bytes, size: int, leaf_hashes: bytes, what: str) -> None:
    """Raise IntegrityError unless ``leaf_hashes`` are those of the blob
    ``root`` of ``size`` bytes (what GET_TREE answered for ``what``)."""
    if len(leaf_hashes) != leaf_count(size) * HASH_BYTES:
        raise IntegrityError(f"the sender's leaf hashes of {what} have the wrong length")
    if Outboard.from_leaf_hashes(size, leaf_hashes, None).root != root:
        raise IntegrityError(f"the sender's leaf hashes of {what} do not match its content hash")


@dataclass
class PatchPlan:
    """How to make the new version from the base and the old file."""

    kept_bytes: int = 0
    """Bytes of the leaves the base already holds at their index."""
    copies: list[tuple[int, int]] = field(default_factory=list)
    """(leaf of the new version, leaf of the old file with its hash)."""
    fetch: list[int] = field(default_factory=list)
    """Leaves to ask the sender for, ascending."""


def plan_patch(new_hashes: bytes, size: int, base_hashes: bytes, old_hashes: bytes) -> PatchPlan:
    """The plan for a new version of ``size`` bytes whose leaf hashes are
    ``new_hashes``, over a base whose leaves hash to ``base_hashes`` and
    an old file whose leaves hash to ``old_hashes`` (sans-IO).

    A leaf's hash binds its bytes and their length, so equal hashes mean
    equal leaves whatever their index (a short last leaf equals only a
    leaf of the same bytes). A copy comes from the same index of the old
    file when it is there (the pass then reads the old file in order),
    else from the first index that has it. ``_NO_HASH`` (a leaf a pass
    found wrong) is never kept nor a source. Only the hashes still wanted
    are looked up in the old file, so memory follows the changes, not the
    file's size."""
    count = leaf_count(size)
    if len(new_hashes) != count * HASH_BYTES:
        raise LocalProtocolError("leaf hashes do not match the blob size")
    base_count = len(base_hashes) // HASH_BYTES
    plan = PatchPlan()
    todo: list[int] = []
    for index in range(count):
        leaf_hash = _hash_at(new_hashes, index)
        if index < base_count and _hash_at(base_hashes, index) == leaf_hash != _NO_HASH:
            plan.kept_bytes += leaf_length(index, size)
        else:
            todo.append(index)
    old_count = len(old_hashes) // HASH_BYTES
    wanted = {
        _hash_at(new_hashes, index)
        for index in todo
        if index >= old_count or _hash_at(old_hashes, index) != _hash_at(new_hashes, index)
    }
    wanted.discard(_NO_HASH)
    sources: dict[bytes, int] = {}
    for index in range(old_count):
        if not wanted:
            break
        leaf_hash = _hash_at(old_hashes, index)
        if leaf_hash in wanted:
            sources[leaf_hash] = index
            wanted.discard(leaf_hash)
    for index in todo:
        leaf_hash = _hash_at(new_hashes, index)
        if index < old_count and _hash_at(old_hashes, index) == leaf_hash:
            source: int | None = index  # the same place: the pass reads the old file in order
        else:
            source = sources.get(leaf_hash)
        if source is None or leaf_hash == _NO_HASH:
            plan.fetch.append(index)
        else:
            plan.copies.append((index, source))
    return plan


def request_ranges(leaves: Iterable[int], max_ranges: int = MAX_RANGES) -> list[Ranges]:
    """The GET requests for ``leaves`` (ascending, distinct): consecutive
    leaves merged into one range, at most ``max_ranges`` ranges a request.

    Never a leaf that is not asked for: with more runs than one request
    may name, the rest go in further requests (one round trip each, and
    the fetcher keeps the next one in flight) instead of widening ranges
    over leaves we have (a 256 KiB leaf costs more than a round trip)."""
    runs: list[tuple[int, int]] = []
    for leaf in leaves:
        if runs and runs[-1][1] == leaf:
            runs[-1] = (runs[-1][0], leaf + 1)
        elif runs and leaf < runs[-1][1]:
            raise LocalProtocolError("leaves to fetch must be ascending and distinct")
        else:
            runs.append((leaf, leaf + 1))
    return [tuple(runs[at : at + max_ranges]) for at in range(0, len(runs), max_ranges)]


def ranges_bytes(ranges: Ranges, size: int) -> int:
    """The leaf bytes ``ranges`` select in a blob of ``size`` bytes."""
    return sum(min(end * LEAF_SIZE, size) - start * LEAF_SIZE for start, end in ranges)


def _disk_error(path: Path, exc: OSError) -> StorageError:
    reason = "the disk is full" if exc.errno == errno.ENOSPC else exc.strerror
    return StorageError(f"cannot write {path.name} in {display_path(str(path.parent))}: {reason}")


def hash_fd(fd: int, *, with_blake3: bool) -> Outboard:
    """The tree of an open file's whole content, read from its start (and,
    ``with_blake3``, its standard BLAKE3)."""
    builder = TreeBuilder(with_blake3=with_blake3)
    buffer = bytearray(READ_BUFFER_BYTES)
    view = memoryview(buffer)
    offset = 0
    while True:
        count = os.preadv(fd, [buffer], offset)
        if not count:
            return builder.finalize()
        builder.update(view[:count])
        offset += count


def _write_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _try_reflink(source: int, target: int) -> bool:
    """Make the empty ``target`` share ``source``'s extents (nothing is
    copied); False where the file system cannot."""
    try:
        fcntl.ioctl(target, _FICLONE, source)
    except OSError as exc:
        if exc.errno not in _NO_FAST_COPY:
            raise
        return False
    return True


_executors: dict[str, ThreadPoolExecutor] = {}
_executors_lock = threading.Lock()


def _executor(name: str) -> ThreadPoolExecutor:
    """One shared thread per job of the pass ("blake3": the standard hash
    beside the leaf hashes; "write": the copies), made on first use."""
    with _executors_lock:
        executor = _executors.get(name)
        if executor is None:
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"p2pcp-patch-{name}")
            _executors[name] = executor
        return executor


@dataclass
class _Run:
    """Consecutive leaves of the result whose bytes lie together: in the
    ``.patch`` itself at their place (``source`` None), or copied from the
    old file from leaf ``source`` on."""

    first: int
    count: int
    source: int | None


def _runs(count: int, copies: dict[int, int], most: int) -> list[_Run]:
    """The pass's runs over ``count`` leaves (``copies``: target -> source),
    each at most ``most`` leaves."""
    runs: list[_Run] = []
    for index in range(count):
        source = copies.get(index)
        if runs:
            last = runs[-1]
            if last.count < most and (
                (source is None and last.source is None)
                or (
                    source is not None
                    and last.source is not None
                    and source == last.source + last.count
                )
            ):
                last.count += 1
                continue
        runs.append(_Run(index, 1, source))
    return runs


@contextlib.contextmanager
def released_later(path: Path) -> Iterator[None]:
    """Keep the file at ``path`` referenced while the caller replaces it,
    then drop it on a helper thread: freeing a large file's blocks takes
    ~0.25 s a GiB (ext4), which then happens beside the rest of the
    receive instead of inside the rename. An O_PATH reference opens
    nothing (no device, FIFO or link is ever opened through it)."""
    fd = None
    o_path: int = getattr(os, "O_PATH", 0)
    if o_path:
        with contextlib.suppress(OSError):
            fd = os.open(path, o_path | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        yield
    finally:
        if fd is not None:
            _executor("release").submit(os.close, fd)


class PatchFile:
    """One ``.patch`` being built (see the module for the steps).

    Every method does blocking I/O: ``Patch`` runs each on a thread, one
    at a time."""

    def __init__(
        self, path: Path, old_path: Path | None, root: bytes, size: int, new_hashes: bytes
    ) -> None:
        self.path = path
        self.old_path = old_path
        self.root = root
        self.size = size
        self.new_hashes = new_hashes
        self.fd: int | None = None
        self._direct_fd: int | None = None  # the same file with O_DIRECT, if allowed
        self._direct_writes = False  # whether the pass writes through it
        # The base's leaf hashes as far as known: after a pass, the proven
        # ones (``_NO_HASH`` for a leaf that failed); None: hash the base.
        self.base_hashes: bytes | None = None
        # Leaves of the old file found not to hold the hash the plan had
        # for them (it changed): never a source again.
        self.bad_old: set[int] = set()
        self._copies: dict[int, int] = {}  # the last plan's, target -> source
        self.reused_bytes = 0  # kept and copied in the last plan
        self.result: Outboard | None = None  # the verified new version's tree
        # Leaves of the current plan still to be fetched and written; the
        # pass waits for one before it reads it (step 4). ``_arrivals_over``:
        # the fetch ended (what is missing then fails its check);
        # ``_abandoned``: it failed, the pass stops (PassAbandoned).
        self._arrival = threading.Condition()
        self._pending: set[int] = set()
        self._arrivals_over = False
        self._abandoned = False

    def _open_old(self) -> int | None:
        """The old file, read-only; None if it is gone or is no longer a
        regular file (a link is never followed)."""
        if self.old_path is None:
            return None
        try:
            fd = os.open(self.old_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        return fd

    def prepare(self, old_hashes: bytes | None) -> PatchPlan:
        """Open (or make) the base and plan (steps 2 and 3): nothing is
        copied yet (``finish`` does, checked); the plan's ``fetch`` is what
        to ask the sender for. ``old_hashes``: the old file's leaf hashes if
        known (the hash cache, the planner), else it is hashed."""
        old = self._open_old()
        try:
            if old is None:
                old_hashes = b""
            elif old_hashes is None:
                old_hashes = hash_fd(old, with_blake3=False).leaf_hashes
            base_hashes = self.base_hashes
            if self.fd is None:
                is_fresh = not os.path.lexists(self.path)
                try:
                    self.fd = os.open(
                        self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
                    )
                    is_clone = is_fresh and old is not None and _try_reflink(old, self.fd)
                except OSError as exc:
                    raise _disk_error(self.path, exc) from None
                if is_fresh:  # a reflink holds the old file's leaves (step 5 checks)
                    base_hashes = old_hashes if is_clone else b""
        finally:
            if old is not None:
                os.close(old)
        if base_hashes is None:
            base_hashes = self._hash_base().leaf_hashes
        if self.bad_old:
            masked = bytearray(old_hashes)
            for index in self.bad_old:
                masked[index * HASH_BYTES : (index + 1) * HASH_BYTES] = _NO_HASH
            old_hashes = bytes(masked)
        plan = plan_patch(self.new_hashes, self.size, base_hashes, old_hashes)
        self._copies = dict(plan.copies)
        with self._arrival:
            self._pending = set(plan.fetch)
            self._arrivals_over = self._abandoned = False
        copied = sum(leaf_length(target, self.size) for target, _source in plan.copies)
        self.reused_bytes = plan.kept_bytes + copied
        return plan

    def _hash_base(self) -> Outboard:
        if self.fd is None:
            raise LocalProtocolError("internal: the patch is not open")
        try:
            return hash_fd(self.fd, with_blake3=False)
        except OSError as exc:
            raise StorageError(f"cannot read {self.path.name}: {exc.strerror}") from None

    def write_leaves(self, leaves: list[LeafReceived]) -> None:
        """Check each fetched leaf against its proven hash, then write it at
        its offset (a leaf that fails stops here: IntegrityError)."""
        if self.fd is None:
            raise LocalProtocolError("internal: the patch is not open")
        for leaf in leaves:
            check_leaf(leaf)
            try:
                _write_all(self.fd, leaf.data, leaf.offset)
            except OSError as exc:
                raise _disk_error(self.path, exc) from None
        with self._arrival:
            self._pending.difference_update(leaf.index for leaf in leaves)
            self._arrival.notify_all()

    def arrivals_over(self) -> None:
        """The fetch ended: a leaf still missing will not come (the pass
        reads what is there; it fails its check and is planned again)."""
        with self._arrival:
            self._arrivals_over = True
            self._arrival.notify_all()

    def abandon(self) -> None:
        """The fetch failed: a pass waiting for it (or about to) stops."""
        with self._arrival:
            self._abandoned = True
            self._arrival.notify_all()

    def _await_arrivals(self, first: int, count: int) -> None:
        """Block until leaves ``first`` .. ``first + count - 1`` that the
        plan fetches are written (or will not be)."""
        with self._arrival:
            while True:
                if self._abandoned:
                    raise PassAbandoned
                if self._arrivals_over or not any(
                    index in self._pending for index in range(first, first + count)
                ):
                    return
                self._arrival.wait(_ARRIVAL_POLL_S)

    def finish(self) -> bool:
        """The pass (step 5): every leaf read from where the plan put it,
        checked against its proven hash, copies written; True (and fsynced,
        closed, ``result`` set) if every leaf passed; False if not (the
        next ``prepare`` plans from what passed)."""
        fd = self.fd
        if fd is None:
            raise LocalProtocolError("internal: the patch is not open")
        try:
            os.ftruncate(fd, self.size)
        except OSError as exc:
            raise _disk_error(self.path, exc) from None
        if self._copies and self._direct_fd is None:
            self._direct_fd = _open_direct(self.path, os.fstat(fd))
            self._direct_writes = self._direct_fd is not None
        old = self._open_old() if self._copies else None
        try:
            if old is not None:  # read once, in order: a larger readahead
                with contextlib.suppress(OSError, AttributeError):
                    os.posix_fadvise(old, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            proven, whole = self._pass(fd, old)
        finally:
            if old is not None:
                os.close(old)
        if whole is None:
            self.base_hashes = proven
            return False
        result = Outboard.from_leaf_hashes(self.size, self.new_hashes, str(whole.hexdigest()))
        if result.root != self.root:
            raise LocalProtocolError("internal: leaf hashes not checked against their root")
        try:
            os.fsync(fd)
        except OSError as exc:
            raise _disk_error(self.path, exc) from None
        self.close()
        self.result = result
        return True

    def _pass(self, fd: int, old: int | None) -> tuple[bytes, Any]:
        """Read, check and (copies) write every leaf in order; the hashes
        proven (``_NO_HASH`` where a leaf failed) and the standard BLAKE3
        of the result (None if a leaf failed)."""
        size = self.size
        runs = _runs(leaf_count(size), self._copies, PASS_RUN_BYTES // LEAF_SIZE)
        buffers = [mmap.mmap(-1, PASS_RUN_BYTES) for _ in range(PASS_BUFFERS)]
        writes: list[Future[None] | None] = [None] * PASS_BUFFERS
        whole: Any = blake3.blake3()
        proven = bytearray(self.new_hashes)
        try:
            for number, run in enumerate(runs):
                slot = number % PASS_BUFFERS
                pending = writes[slot]
                if pending is not None:  # its buffer is free once written
                    writes[slot] = None
                    pending.result()
                start = run.first * LEAF_SIZE
                length = min((run.first + run.count) * LEAF_SIZE, size) - start
                view = memoryview(buffers[slot])[:length]
                if run.source is None:  # fetched leaves among them may be on their way
                    self._await_arrivals(run.first, run.count)
                source = fd if run.source is None else old
                offset = start if run.source is None else run.source * LEAF_SIZE
                got = 0
                if source is not None:
                    with contextlib.suppress(OSError):  # the leaves not read fail their check
                        got = _read_into(source, view, offset)
                hashing = None
                if whole is not None and length >= PARALLEL_MIN_BYTES:
                    hashing = _executor("blake3").submit(whole.update, view[:got])
                elif whole is not None:
                    whole.update(view[:got])
                good: list[int] = []
                for at in range(run.count):
                    index = run.first + at
                    end = min((at + 1) * LEAF_SIZE, length)
                    expected = _hash_at(self.new_hashes, index)
                    if end > got or hash_leaf(view[at * LEAF_SIZE : end]) != expected:
                        proven[index * HASH_BYTES : (index + 1) * HASH_BYTES] = _NO_HASH
                        if run.source is not None:
                            self.bad_old.add(run.source + at)
                    else:
                        good.append(at)
                if hashing is not None:
                    hashing.result()
                if len(good) < run.count:
                    whole = None  # the standard hash needs every byte in order
                if run.source is not None and good:
                    writes[slot] = _executor("write").submit(
                        self._write_run, view, start, good, length
                    )
        finally:
            for pending in writes:  # never return (or close fds) with a write in flight
                if pending is not None:
                    _wait_quietly(pending)
            # The buffers are unmapped when the last view of them goes
            # (close() would refuse while a slice of one is still around).
        for pending in writes:
            if pending is not None:
                pending.result()  # raises a write's error
        return bytes(proven), whole

    def _write_run(self, view: memoryview, start: int, good: list[int], length: int) -> None:
        """Write leaves ``good`` (indexes within the run) of ``view``, the
        run's bytes, at ``start``: whole leaves with O_DIRECT if open (a
        short last leaf through the page cache)."""
        if self.fd is None:
            raise LocalProtocolError("internal: the patch is not open")
        spans: list[tuple[int, int]] = []
        for at in good:
            if spans and spans[-1][1] == at * LEAF_SIZE:
                spans[-1] = (spans[-1][0], min((at + 1) * LEAF_SIZE, length))
            else:
                spans.append((at * LEAF_SIZE, min((at + 1) * LEAF_SIZE, length)))
        try:
            for begin, end in spans:
                rest = begin  # what is left for the page cache
                whole_leaves = begin + (end - begin) // LEAF_SIZE * LEAF_SIZE
                direct = self._direct_fd
                if whole_leaves > begin and direct is not None and self._direct_writes:
                    try:
                        _write_all(direct, view[begin:whole_leaves], start + begin)
                        rest = whole_leaves
                    except OSError as exc:
                        if exc.errno not in _NO_FAST_COPY:
                            raise
                        self._direct_writes = False  # refused after all: the page cache
                if end > rest:
                    _write_all(self.fd, view[rest:end], start + rest)
        except OSError as exc:
            raise _disk_error(self.path, exc) from None

    def _close_direct(self) -> None:
        if self._direct_fd is not None:
            fd, self._direct_fd = self._direct_fd, None
            os.close(fd)

    def close(self) -> None:
        self._close_direct()
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)


def _open_direct(path: Path, st: os.stat_result) -> int | None:
    """``path`` opened again for writing with O_DIRECT, if the file system
    allows it and it is still the file of ``st``; else None (the page
    cache it is)."""
    if not _O_DIRECT:
        return None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC | _O_DIRECT)
    except OSError:
        return None
    again = os.fstat(fd)
    if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        return None
    return fd


def _read_into(fd: int, view: memoryview, offset: int) -> int:
    """Fill ``view`` from ``fd`` at ``offset``; the bytes read (fewer at
    the file's end). An error is raised."""
    got = 0
    while got < len(view):
        count = os.preadv(fd, [view[got:]], offset + got)
        if not count:
            break
        got += count
    return got


def _wait_quietly(job: Future[None]) -> None:
    """Wait for ``job`` to end; its error, if any, is for whoever reads it."""
    wait([job])


# The passes run here, never on the event loop's default threads: a pass
# may wait for fetched leaves, which are written on those threads, and the
# fetch workers (FETCH_CONCURRENCY) may run more passes at once than the
# default pool has threads. A thread each, made on demand.
_PASS_THREADS = 64
_passes = ThreadPoolExecutor(max_workers=_PASS_THREADS, thread_name_prefix="p2pcp-patch-pass")


async def _in_thread(
    function: Callable[..., _T], *args: object, executor: ThreadPoolExecutor | None = None
) -> _T:
    """``function(*args)`` on a thread (of ``executor``, else the loop's
    default ones). A caller cancelled meanwhile still waits for it to end:
    the patch's fd must not be closed under it."""
    loop = asyncio.get_running_loop()
    job = asyncio.ensure_future(loop.run_in_executor(executor, functools.partial(function, *args)))
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        await asyncio.wait([job])
        raise


class Patch:
    """The async face of a ``PatchFile``: each step on a thread (hashing
    and copying a large file takes seconds, and blake3 and the system
    calls release the GIL), fetched leaves written a batch at a time with
    one batch in flight while the next ones arrive."""

    def __init__(self, file: PatchFile) -> None:
        self.file = file
        self._batch: list[LeafReceived] = []
        self._batch_bytes = 0
        self._pending: asyncio.Future[None] | None = None

    @property
    def path(self) -> Path:
        return self.file.path

    @property
    def reused_bytes(self) -> int:
        return self.file.reused_bytes

    @property
    def result(self) -> Outboard | None:
        return self.file.result

    async def prepare(self, old_hashes: bytes | None) -> PatchPlan:
        return await _in_thread(self.file.prepare, old_hashes)

    async def write_leaf(self, leaf: LeafReceived) -> None:
        """Queue a proven leaf; a failed check or write of an earlier one
        is raised here or by ``finish_while``."""
        self._batch.append(leaf)
        self._batch_bytes += len(leaf.data)
        if self._batch_bytes >= WRITE_BATCH_BYTES:
            await self._submit()

    async def _submit(self) -> None:
        await self._wait_pending()
        if self._batch:
            batch, self._batch, self._batch_bytes = self._batch, [], 0
            self._pending = asyncio.ensure_future(_in_thread(self.file.write_leaves, batch))

    async def _wait_pending(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            await asyncio.shield(pending)

    async def finish_while(self, fetching: Awaitable[None]) -> bool:
        """``PatchFile.finish`` (the pass), started now, while ``fetching``
        brings the leaves the plan fetches (through ``write_leaf``): the
        pass copies what comes before the first leaf still on its way, then
        waits for it (step 4). A fetch that fails stops the pass and is
        raised; a pass that fails stops the fetch. True if every leaf passed."""
        passing = asyncio.ensure_future(_in_thread(self.file.finish, executor=_passes))
        bringing = asyncio.ensure_future(self._bring(fetching))
        both = {passing, bringing}
        try:
            await asyncio.wait(both, return_when=asyncio.FIRST_EXCEPTION)
            if bringing.done() and bringing.exception() is not None:
                self.file.abandon()
            elif passing.done() and passing.exception() is not None:
                bringing.cancel()
            await asyncio.wait(both)
        except BaseException:  # cancelled: never leave the pass waiting for leaves
            self.file.abandon()
            bringing.cancel()
            await asyncio.wait(both)
            for task in both:  # seen: the cancellation is what goes up
                if not task.cancelled():
                    task.exception()
            raise
        if not bringing.cancelled() and bringing.exception() is not None:
            if not passing.cancelled():
                passing.exception()  # PassAbandoned: the fetch's error is the news
            raise bringing.exception()  # type: ignore[misc]
        # The pass's answer, or its error (then it was what stopped the fetch).
        return passing.result()

    async def _bring(self, fetching: Awaitable[None]) -> None:
        """``fetching``, then the last batch of its leaves written."""
        try:
            await fetching
            await self._submit()
            await self._wait_pending()
        finally:
            self.file.arrivals_over()

    async def close(self) -> None:
        """Stop: leaves queued but not written are dropped (a rerun fetches
        them again); the ``.patch`` stays for the rerun."""
        self.file.abandon()
        self._batch, self._batch_bytes = [], 0
        pending, self._pending = self._pending, None
        if pending is not None:
            await asyncio.wait([pending])
            if not pending.cancelled():
                pending.exception()  # seen: its error was raised elsewhere or is moot
        await _in_thread(self.file.close)
