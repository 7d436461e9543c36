"""A blob being received: verified leaves appended to ``<root>.part``.

Checking each leaf against its proven hash, writing it and the standard
BLAKE3 of what is written all happen on the store's writer thread, so
neither hashing nor a disk that throttles dirty pages stalls the event loop
that receives the next leaves (blake3 and os.write release the GIL). A leaf
is written only after its check passed; one that fails stops the file with
IntegrityError and nothing of it reaches the disk. ``write_leaf`` gathers
leaves into jobs of WRITE_BATCH_BYTES (one job per leaf cost the event loop
more in hand-offs to the thread than the hashing it saved); one job per
file is in flight at a time and ``write_leaf`` waits for the previous one,
which bounds the memory held to two batches per file.

Durability and resume (see ``resume.py``): every CHECKPOINT_BYTES or
CHECKPOINT_S the writer thread fsyncs the data, then replaces the resume
record; ``suspend`` does the same when a run stops early (Ctrl-C, a lost
connection, a full disk), so the next run re-fetches only what is missing.
``open_or_resume`` re-hashes what a previous run left against its record
and keeps only the leaves that still match.

A write that fails (a full disk) must not cost what was already verified:
``suspend`` cuts the file back to its last whole leaf (which also frees the
space the failed write took), fsyncs it and writes the record; when even
the small record does not fit, it gives up the last leaves, whose space the
record then takes. A temporary ``.resume-new`` never outlives a failed
write. The record is removed only once the file is in place
(``Store.place``), so a failure between ``finish`` and the rename keeps it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import blake3

from p2pcp.blobs.encoding import LeafReceived, check_leaf
from p2pcp.blobs.tree import HASH_BYTES, LEAF_SIZE, hash_leaf, leaf_count
from p2pcp.core.errors import P2pcpError, StorageError
from p2pcp.transfer.resume import decode_record, encode_record

# How much verified data may be lost to a crash (kill -9, power loss): a
# checkpoint (fsync + record) after this many bytes or seconds, whichever
# comes first. 64 MiB is ~0.3 s at loopback speed; fsync of that much costs
# ~40 ms (disk write + fsync measured at ~1.5 GB/s), a small price for a
# bounded loss.
CHECKPOINT_BYTES = 64 * 1024 * 1024
CHECKPOINT_S = 2.0
# When a full disk has no room for the resume record, the last leaves are
# given up to make room, at most this many times (another writer may keep
# taking the space freed); each time frees the record's size plus 64 KiB.
MAX_RECORD_ROOM_ATTEMPTS = 3
# Leaves handed to the writer thread per job: 4 leaves of 256 KiB.
WRITE_BATCH_BYTES = 1024 * 1024
_RECORD_ROOM_SLACK_BYTES = 64 * 1024


def _disk_error(path: Path, exc: OSError) -> StorageError:
    """The error of a failed write. It promises no resume: what is kept is
    known only once every file stopped (``Store.resume_note``)."""
    reason = "the disk is full" if exc.errno == errno.ENOSPC else exc.strerror
    return StorageError(f"cannot write {path.name} in {path.parent}: {reason}")


class PartialFile:
    def __init__(self, path: Path, writer: ThreadPoolExecutor, *, root: bytes, size: int) -> None:
        self.path = path
        self.record_path = path.with_suffix(".resume")
        self.root = root
        self.blob_size = size
        self.hasher = blake3.blake3()
        self.size = 0  # bytes received and queued for checking and writing, from offset 0
        self.resumed_bytes = 0  # of which found already on disk when opened
        self._writer = writer
        self._pending: asyncio.Future[None] | None = None
        self._batch: list[LeafReceived] = []  # not yet handed to the writer
        self._batch_bytes = 0
        self._leaf_hashes = bytearray()  # written (not necessarily durable)
        self._written_bytes = 0  # of the leaves in _leaf_hashes, from offset 0
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._fd: int | None = None
        self._finishing: Future[None] | None = None  # the fsync-and-close job

    # -- opening ------------------------------------------------------------------

    @classmethod
    async def open_or_resume(
        cls, path: Path, writer: ThreadPoolExecutor, *, root: bytes, size: int
    ) -> PartialFile:
        partial = cls(path, writer, root=root, size=size)
        await asyncio.shield(asyncio.get_running_loop().run_in_executor(writer, partial._open))
        return partial

    def _open(self) -> None:
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise _disk_error(self.path, exc) from None
        try:
            record = self.record_path.read_bytes()
        except OSError:
            record = b""
        hashes = decode_record(record, root=self.root, size=self.blob_size, leaf_size=LEAF_SIZE)
        kept = self._verify_existing(self._fd, hashes or b"")
        try:
            os.ftruncate(self._fd, kept)
        except OSError as exc:
            raise _disk_error(self.path, exc) from None
        os.lseek(self._fd, kept, os.SEEK_SET)
        self.size = self.resumed_bytes = self._written_bytes = kept

    def _verify_existing(self, fd: int, hashes: bytes) -> int:
        """Re-hash the data left on disk against the record; return the bytes kept."""
        kept = 0
        for index in range(len(hashes) // HASH_BYTES):
            length = min(LEAF_SIZE, self.blob_size - index * LEAF_SIZE)
            data = os.pread(fd, length, index * LEAF_SIZE)
            expected = hashes[index * HASH_BYTES : (index + 1) * HASH_BYTES]
            if len(data) != length or hash_leaf(data) != expected:
                break
            self.hasher.update(data)
            self._leaf_hashes += expected
            kept += length
        return kept

    @property
    def verified_leaves(self) -> int:
        return len(self._leaf_hashes) // HASH_BYTES

    @property
    def leaf_hashes(self) -> bytes:
        """The hashes of the leaves verified so far, from the first (every
        leaf's once ``finish`` returned): the hash cache keeps them."""
        return bytes(self._leaf_hashes)

    @property
    def is_complete(self) -> bool:
        return self.verified_leaves == leaf_count(self.blob_size) and self.size == self.blob_size

    # -- writing (the writer thread does the I/O) -----------------------------------

    def _write(self, fd: int, leaves: list[LeafReceived]) -> None:
        """Check each leaf, then write it: a leaf that fails its check stops
        here (IntegrityError), after the leaves before it were written."""
        for leaf in leaves:
            if leaf.offset != self._written_bytes:
                # an earlier job stopped part-way: what follows it cannot be appended
                raise StorageError(f"internal error: out-of-order write to {self.path}")
            check_leaf(leaf)
            try:
                view = memoryview(leaf.data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
            except OSError as exc:
                raise _disk_error(self.path, exc) from None
            self.hasher.update(leaf.data)
            self._leaf_hashes += leaf.hash
            self._written_bytes += len(leaf.data)
            self._since_checkpoint += len(leaf.data)
        now = time.monotonic()
        is_due = now - self._last_checkpoint >= CHECKPOINT_S
        if is_due or self._since_checkpoint >= CHECKPOINT_BYTES:
            self._checkpoint(fd)

    def _checkpoint(self, fd: int) -> None:
        """fsync the data, then atomically replace the record that describes it."""
        try:
            os.fsync(fd)
        except OSError as exc:
            raise _disk_error(self.path, exc) from None
        self._write_record()
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()

    def _write_record(self) -> None:
        """Replace the record (the data it lists must already be durable)."""
        try:
            self._replace_record()
        except OSError as exc:
            raise _disk_error(self.path, exc) from None

    def _replace_record(self) -> None:
        """Write the record to a temporary file, fsync it, rename it over the
        old one. On failure the temporary file is removed: the old record
        still describes durable data."""
        record = encode_record(self.root, self.blob_size, LEAF_SIZE, bytes(self._leaf_hashes))
        tmp = self.record_path.with_suffix(".resume-new")
        try:
            with open(tmp, "wb") as handle:
                handle.write(record)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.record_path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    async def _wait_pending(self) -> None:
        # Shielded: a cancelled caller must not cancel a queued write of a
        # verified leaf (the executor would drop it).
        if self._pending is not None:
            pending, self._pending = self._pending, None
            await asyncio.shield(pending)

    async def write_leaf(self, leaf: LeafReceived) -> None:
        """Queue ``leaf`` (the next one, in order): it is checked against its
        hash and written on the writer thread. A failed check or write of an
        earlier leaf is raised here or by ``finish``."""
        if leaf.offset != self.size or self._fd is None:
            raise StorageError(f"internal error: out-of-order write to {self.path}")
        self.size += len(leaf.data)
        self._batch.append(leaf)
        self._batch_bytes += len(leaf.data)
        if self._batch_bytes >= WRITE_BATCH_BYTES:
            await self._submit_batch()

    async def _submit_batch(self) -> None:
        await self._wait_pending()
        if not self._batch or self._fd is None:
            return
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        loop = asyncio.get_running_loop()
        self._pending = loop.run_in_executor(self._writer, self._write, self._fd, batch)

    async def finish(self) -> str:
        """Write what is pending, fsync, close; return the content's standard BLAKE3 hex.

        The record stays until the file is in place (``forget_record``).

        fsync and close are one writer job queued behind the last write: if
        this task is cancelled meanwhile the job still completes, and
        ``suspend`` then records the (durable, complete) leaves.
        """
        if self._fd is None:
            raise StorageError(f"internal error: {self.path} finished twice")
        await self._submit_batch()
        fd, self._fd = self._fd, None
        pending, self._pending = self._pending, None
        self._finishing = self._writer.submit(self._finish_in_writer, fd)
        if pending is not None:
            await asyncio.shield(pending)  # a write error surfaces here
        await asyncio.shield(asyncio.wrap_future(self._finishing))
        return str(self.hasher.hexdigest())

    def _finish_in_writer(self, fd: int) -> None:
        try:
            os.fsync(fd)
        except OSError as exc:
            raise _disk_error(self.path, exc) from None
        finally:
            os.close(fd)

    async def suspend(self) -> None:
        """Stop early but keep what verified: check and write the leaves not
        handed over yet, checkpoint, close. Best effort.

        The work is one job on the writer thread, queued behind the write in
        flight, so it completes even when the calling task is being cancelled
        (Ctrl-C, a sibling's failure) and never races that write for the fd.
        """
        if self._fd is None:
            if self._finishing is not None:
                # finish() was interrupted: once its fsync ran, every leaf is
                # durable; record them so the next attempt only renames.
                job = self._writer.submit(self._record_after_finish, self._finishing)
                with contextlib.suppress(Exception):
                    await asyncio.shield(asyncio.wrap_future(job))
            return
        fd, self._fd = self._fd, None
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        self._forget_pending()
        job = self._writer.submit(self._suspend_in_writer, fd, batch)
        with contextlib.suppress(Exception):
            await asyncio.shield(asyncio.wrap_future(job))

    def _record_after_finish(self, finishing: Future[None]) -> None:
        if finishing.done() and finishing.exception() is None:
            with contextlib.suppress(StorageError):
                self._write_record()

    def _suspend_in_writer(self, fd: int, batch: list[LeafReceived]) -> None:
        try:
            # Leaves that arrived but were not handed over yet: checked and
            # written like any others, as far as they go (a leaf that fails
            # its check, a full disk or a job that stopped early ends it).
            with contextlib.suppress(P2pcpError):
                self._write(fd, batch)
            self._keep_durable(fd)
        finally:
            os.close(fd)

    def _keep_durable(self, fd: int) -> None:
        """Make every whole leaf written durable and record it; on a full
        disk, give up the last leaves to make room for the record.

        Best effort: when nothing can be recorded, the previous record (if
        any) still describes durable data, and resuming re-checks it.
        """
        try:
            # A write that failed half-way left part of a leaf: cut it (this
            # also returns its space to a full disk).
            os.ftruncate(fd, self._written_bytes)
            if not self._leaf_hashes:
                return  # nothing to record
            os.fsync(fd)
        except OSError:
            return
        for _attempt in range(MAX_RECORD_ROOM_ATTEMPTS + 1):
            try:
                self._replace_record()
            except OSError as exc:
                if exc.errno != errno.ENOSPC or not self._leaf_hashes:
                    return
                record_bytes = len(self._leaf_hashes) + 2 * HASH_BYTES + 64
                drop = -(-(record_bytes + _RECORD_ROOM_SLACK_BYTES) // LEAF_SIZE)
                leaves = max(0, self.verified_leaves - drop)
                del self._leaf_hashes[leaves * HASH_BYTES :]
                self._written_bytes = min(leaves * LEAF_SIZE, self.blob_size)
                try:
                    os.ftruncate(fd, self._written_bytes)
                    os.fsync(fd)
                except OSError:
                    return
            else:
                self._since_checkpoint = 0
                self._last_checkpoint = time.monotonic()
                return

    def forget_record(self) -> None:
        """Remove the record once the complete file is in place."""
        with contextlib.suppress(FileNotFoundError):
            self.record_path.unlink()

    def _forget_pending(self) -> None:
        """Let the write in flight finish on its own; its error is not ours to raise now."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.add_done_callback(lambda done: done.cancelled() or done.exception())

    async def discard(self) -> None:
        """Throw the data away (it cannot be completed)."""
        fd, self._fd = self._fd, None
        self._batch, self._batch_bytes = [], 0
        self._forget_pending()
        job = self._writer.submit(self._discard_in_writer, fd)
        with contextlib.suppress(Exception):
            await asyncio.shield(asyncio.wrap_future(job))

    def _discard_in_writer(self, fd: int | None) -> None:
        if fd is not None:
            os.close(fd)
        for path in (self.path, self.record_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
