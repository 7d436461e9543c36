"""``receive --update``: the new version of a file built beside the old one,
from the leaves the two share and the sender's leaves for the rest.

This module owns the plan of one update (which leaves of the new version
the base already holds, which the old file has at some other offset, which
must be fetched, and in which requests) and the file work of building
``<partial folder>/<blob root hex>.patch``. The fetcher asks the sender
for the leaf hashes (GET_TREE) and the missing leaves (GET ranges:
``wire.py``) and hands each proven leaf here; ``Store.place_patch`` puts
the result in place.

The steps, and why the promise holds (the old file stays whole until the
new one is verified and in place; an interrupted update leaves every file
old-and-whole or new-and-verified; a rerun resumes):

1. The sender's leaf hashes are trusted only once they hash up to the
   manifest's root (``check_tree``; a mismatch is IntegrityError, exit 4):
   from then on every hash below is proven.
2. Base: a ``.patch`` an interrupted run left, else a copy of the old file
   (a reflink where the file system has them, else ``copy_file_range``).
   The old file is only ever read: it stays whole under its name.
3. Plan (``plan_patch``): a leaf whose hash is the base's at the same
   index is kept; one whose hash is the old file's at any index (a leaf's
   hash does not depend on its position) is copied from there; the rest
   is fetched. Copies are read from the old file, never from the base, so
   no copy overwrites a leaf another copy still needs; each is checked
   against its hash as it is read (one that fails is fetched instead).
4. Fetched leaves come proven against the root (``RangeDecoder``) and are
   checked against their hash again right before each is written at its
   offset.
5. The result is cut to the new size and hashed again, whole: only when
   its root is the manifest's is it fsynced and renamed over the old
   file. Whatever the base held (a stale ``.patch``, an old file that
   changed during the update), nothing else is ever placed. A mismatch
   plans again, once, from the hashes just computed (the base's real
   ones), and then gives up with a StorageError.

A kill at any moment leaves the old file whole (or, after the rename, the
new one) and the ``.patch`` in the partial folder. It needs no resume
record: the rerun hashes it against the tree and fetches only what is
still missing.

Memory: hashes only, 32 bytes a leaf (6.4 MB for a 50 GiB file; at most
three such lists: the new version's, the base's, the old file's), and one
write batch of leaves at a time; never a file's data.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from p2pcp.blobs.encoding import LeafReceived, Ranges, check_leaf
from p2pcp.blobs.names import display_path
from p2pcp.blobs.tree import (
    HASH_BYTES,
    LEAF_SIZE,
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
# (btrfs, XFS with reflink, bcachefs); elsewhere it fails and we copy.
_FICLONE = 0x40049409
# errnos that mean "this way of copying is not available here": try the next.
_NO_FAST_COPY = frozenset(
    {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOTTY}
)
# Planning the same file again after its result did not hash to the root:
# the second plan starts from the result's real hashes, so only a file
# changed under us (in our own partial folder) can fail twice.
PLAN_ATTEMPTS = 2

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
    leaf of the same bytes). Only the hashes still wanted are looked up in
    the old file, so memory follows the changes, not the file's size."""
    count = leaf_count(size)
    if len(new_hashes) != count * HASH_BYTES:
        raise LocalProtocolError("leaf hashes do not match the blob size")
    base_count = len(base_hashes) // HASH_BYTES
    plan = PatchPlan()
    todo: list[int] = []
    for index in range(count):
        if index < base_count and _hash_at(base_hashes, index) == _hash_at(new_hashes, index):
            plan.kept_bytes += leaf_length(index, size)
        else:
            todo.append(index)
    wanted = {_hash_at(new_hashes, index) for index in todo}
    sources: dict[bytes, int] = {}
    for index in range(len(old_hashes) // HASH_BYTES):
        if not wanted:
            break
        leaf_hash = _hash_at(old_hashes, index)
        if leaf_hash in wanted:
            sources[leaf_hash] = index
            wanted.discard(leaf_hash)
    for index in todo:
        source = sources.get(_hash_at(new_hashes, index))
        if source is None:
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


def _copy_whole(source: int, target: int) -> None:
    """The whole of ``source`` into the empty ``target``: a reflink if the
    file system shares extents, else ``copy_file_range`` (in the kernel),
    else reads and writes."""
    try:
        fcntl.ioctl(target, _FICLONE, source)
        return
    except OSError as exc:
        if exc.errno not in _NO_FAST_COPY:
            raise
    offset = 0
    try:
        while copied := os.copy_file_range(source, target, 64 * 1024 * 1024, offset, offset):
            offset += copied
        return
    except OSError as exc:
        if exc.errno not in _NO_FAST_COPY:
            raise
    while data := os.pread(source, READ_BUFFER_BYTES, offset):
        _write_all(target, data, offset)
        offset += len(data)


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
        # The base's real leaf hashes, once known (after a result that did
        # not hash to the root); None: hash the base when planning.
        self.base_hashes: bytes | None = None
        self.reused_bytes = 0  # kept and copied in the last plan carried out
        self.written_bytes = 0  # fetched leaves written since then
        self.result: Outboard | None = None  # the verified new version's tree

    def _open_old(self) -> int | None:
        """The old file, read-only; None if it is gone or is no longer a
        regular file (a link is never followed)."""
        if self.old_path is None:
            return None
        try:
            fd = os.open(self.old_path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        return fd

    def prepare(self, old_hashes: bytes | None) -> PatchPlan:
        """Open (or make) the base, plan, copy what the old file has; the
        plan's ``fetch`` is what is left. ``old_hashes``: the old file's leaf
        hashes if known (the hash cache, the planner), else it is hashed."""
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
                    if is_fresh and old is not None:
                        _copy_whole(old, self.fd)
                except OSError as exc:
                    raise _disk_error(self.path, exc) from None
                if is_fresh:
                    base_hashes = old_hashes  # the copy's; step 5 finds out if not
            if base_hashes is None:
                base_hashes = self._hash_base().leaf_hashes
            plan = plan_patch(self.new_hashes, self.size, base_hashes, old_hashes)
            copied, failed = self._copy_leaves(old, plan.copies)
        finally:
            if old is not None:
                os.close(old)
        plan.fetch = sorted(plan.fetch + failed)
        self.reused_bytes = plan.kept_bytes + copied
        self.written_bytes = 0
        return plan

    def _hash_base(self) -> Outboard:
        if self.fd is None:
            raise LocalProtocolError("internal: the patch is not open")
        try:
            return hash_fd(self.fd, with_blake3=False)
        except OSError as exc:
            raise StorageError(f"cannot read {self.path.name}: {exc.strerror}") from None

    def _copy_leaves(self, old: int | None, copies: list[tuple[int, int]]) -> tuple[int, list[int]]:
        """Copy each (target, source) leaf from the old file into the base,
        checked against its hash first. Returns the bytes copied and the
        leaves that must be fetched after all (the old file changed)."""
        if self.fd is None:
            raise LocalProtocolError("internal: the patch is not open")
        copied = 0
        failed: list[int] = []
        for target, source in copies:
            length = leaf_length(target, self.size)
            try:
                data = b"" if old is None else os.pread(old, length, source * LEAF_SIZE)
            except OSError:
                data = b""
            if len(data) != length or hash_leaf(data) != _hash_at(self.new_hashes, target):
                failed.append(target)
                continue
            try:
                _write_all(self.fd, data, target * LEAF_SIZE)
            except OSError as exc:
                raise _disk_error(self.path, exc) from None
            copied += length
        return copied, failed

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
            self.written_bytes += len(leaf.data)

    def finish(self) -> bool:
        """Cut the result to its size and hash it whole: True (and fsynced,
        closed, ``result`` set) if it is the new version; False if not (its
        real hashes are then the base's for the next plan)."""
        if self.fd is None:
            raise LocalProtocolError("internal: the patch is not open")
        try:
            os.ftruncate(self.fd, self.size)
        except OSError as exc:
            raise _disk_error(self.path, exc) from None
        try:
            outboard = hash_fd(self.fd, with_blake3=True)
        except OSError as exc:
            raise StorageError(f"cannot read {self.path.name}: {exc.strerror}") from None
        if outboard.root != self.root:
            self.base_hashes = outboard.leaf_hashes
            return False
        try:
            os.fsync(self.fd)
        except OSError as exc:
            raise _disk_error(self.path, exc) from None
        self.close()
        self.result = outboard
        return True

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)


async def _in_thread(function: Callable[..., _T], *args: object) -> _T:
    """``function(*args)`` on a thread. A caller cancelled meanwhile still
    waits for it to end: the patch's fd must not be closed under it."""
    job = asyncio.ensure_future(asyncio.to_thread(function, *args))
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
        is raised here or by ``finish``."""
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

    async def finish(self) -> bool:
        """Write what is queued, then ``PatchFile.finish``."""
        await self._submit()
        await self._wait_pending()
        return await _in_thread(self.file.finish)

    async def close(self) -> None:
        """Stop: leaves queued but not written are dropped (a rerun fetches
        them again); the ``.patch`` stays for the rerun."""
        self._batch, self._batch_bytes = [], 0
        pending, self._pending = self._pending, None
        if pending is not None:
            await asyncio.wait([pending])
            if not pending.cancelled():
                pending.exception()  # seen: its error was raised elsewhere or is moot
        await _in_thread(self.file.close)
