"""Small files, written and made durable as a group.

A file of at most one leaf arrives whole in a GET_MANY answer (wire.py) and
is verified there; paying an fsync, a rename and a folder fsync for each
one cost more than receiving it (~2 ms each on a virtual disk). A
``SmallBatch`` collects verified small files and places them together.

The order, and why it is safe (the promise: nothing unverified or torn
under a final name, even after kill -9 or a power cut; a re-run resumes):

1. Write. Each verified file's bytes go to ``<partial>/<root>.part`` (and
   ``<root>.<n>.copy`` for each further path with the same content), with
   its permission bits and modification time (the store's
   ``MetadataPolicy``, ``metadata.py``), on the store's writer
   thread, a group at a time while the rest of the answer still arrives.
   Nothing here is under a final name.
2. Barrier. ``commit`` makes every byte and inode of step 1 durable before
   any rename is issued: one ``syncfs`` of the output's file system (the
   partial folder is on it, so the renames stay atomic), or, where there is
   no ``syncfs``, an ``fsync`` of each file. ``syncfs`` is called on the
   partial folder's lock descriptor, opened before the first write: Linux
   reports through it every write-back error since it was opened, so a
   failed write is an error here, never a torn file later.
3. Rename each file to its final name. Whenever a rename reaches the disk
   (now, or in the journal's next commit), the data it names is already
   there: after a power cut a final name is absent or complete.
4. ``fsync`` each folder that received a file, once per commit: now the
   renames are durable too. Only then are the files reported finished.

Steps 2-4 run as a group commit on a thread of their own: one commit at a
time, each for every file whose step 1 is done, so one barrier covers all
the files written while the previous commit ran, and step 1 goes on
meanwhile.

A crash (kill -9, power loss) before step 3 leaves only ``.part`` files in
the partial folder. The next run re-reads each one (``find_leftovers``):
one whose bytes hash to its root is verified data, kept and placed without
fetching it again; anything else is removed and fetched. A crash during
step 3 leaves some files in place (complete, as above) and the rest as
``.part``: the next run finds the placed ones identical (they count as
present) and resumes the others. Files are never renamed on top of one
another: each root is in one batch, each path once in the manifest.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import blake3

from p2pcp.blobs.collection import Entry
from p2pcp.blobs.names import display_path
from p2pcp.blobs.tree import LEAF_SIZE, hash_leaf, hash_root
from p2pcp.core.errors import P2pcpError, StorageError
from p2pcp.transfer.metadata import MetadataPolicy

# The writer thread gets the verified files of a batch in groups of about
# this size (or this many files), so that writing overlaps receiving while a
# batch holds at most a group's bytes in memory.
WRITE_GROUP_BYTES = 1024 * 1024
WRITE_GROUP_FILES = 64


@dataclass(slots=True)
class SmallFile:
    """A verified file of at most one leaf and every path it goes to."""

    root: bytes
    entries: tuple[Entry, ...]
    blake3_hex: str
    # The bytes, until every temporary file of it is written.
    data: bytes
    # Its ``.part`` holds the bytes already (written, or left by a run).
    is_on_disk: bool = False


def _load_syncfs() -> Callable[[int], int] | None:
    """libc's ``syncfs`` (Linux), or None where there is none. The running
    program's own symbols include libc's (no library search: that would
    start a subprocess on every receive)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_SYNCFS = _load_syncfs()


def part_path(partial_dir: Path, root: bytes) -> Path:
    return partial_dir / f"{root.hex()}.part"


def _temp_names(small: SmallFile) -> list[str]:
    """Where each of ``small.entries`` waits for its rename: names in the
    partial folder (``<root>.part``, then ``<root>.<n>.copy``)."""
    stem = small.root.hex()
    names = [f"{stem}.part"]
    names.extend(f"{stem}.{number}.copy" for number in range(1, len(small.entries)))
    return names


def _in_partial(partial_dir: Path, fs_fd: int | None, name: str) -> tuple[str, int | None]:
    """A name in the partial folder as (path, dir_fd) for an ``os`` call:
    relative to its open descriptor when there is one (no path walk per
    file), else the full path."""
    return (name, fs_fd) if fs_fd is not None else (os.path.join(partial_dir, name), None)


def write_files(
    partial_dir: Path,
    files: list[SmallFile],
    metadata: MetadataPolicy,
    fs_fd: int | None = None,
    out_dir: Path | None = None,
) -> None:
    """Step 1 (writer thread): each file's bytes and metadata to its
    temporary names (a ``.part`` already on disk gets only its metadata).
    ``fs_fd``: an open descriptor of the partial folder, if any;
    ``out_dir``: where the files go (``--no-perms`` keeps the mode of a
    file being replaced there)."""
    write_flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
    for small in files:
        data = small.data
        for number, (entry, name) in enumerate(zip(small.entries, _temp_names(small), strict=True)):
            has_bytes = number == 0 and small.is_on_disk
            path, dir_fd = _in_partial(partial_dir, fs_fd, name)
            try:
                if has_bytes:
                    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
                else:
                    fd = os.open(path, write_flags, 0o600, dir_fd=dir_fd)
                try:
                    if not has_bytes and data:
                        written = os.write(fd, data)
                        if written < len(data):
                            view = memoryview(data)[written:]
                            while view:
                                view = view[os.write(fd, view) :]
                    existing = None
                    if out_dir is not None and metadata.needs_existing_mode:
                        existing = metadata.existing_mode(os.path.join(out_dir, entry.path))
                    metadata.apply_to_fd(fd, entry, existing)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise _write_error(entry, exc) from None
        small.data = b""
        small.is_on_disk = True


def _write_error(entry: Entry, exc: OSError) -> StorageError:
    reason = "the disk is full" if exc.errno == errno.ENOSPC else exc.strerror
    return StorageError(f"cannot write {display_path(entry.path)}: {reason}")


def make_durable(partial_dir: Path, files: list[SmallFile], fs_fd: int | None) -> None:
    """Step 2 (writer thread): every byte written in step 1 is on stable
    storage when this returns. ``fs_fd``: an open descriptor on the file
    system (the partial folder's), opened before the writes."""
    if _SYNCFS is not None and fs_fd is not None:
        if _SYNCFS(fs_fd) == 0:
            return
        reason = os.strerror(ctypes.get_errno())
        raise StorageError(f"cannot write to {display_path(str(partial_dir))}: {reason}")
    for small in files:
        for entry, name in zip(small.entries, _temp_names(small), strict=True):
            path, dir_fd = _in_partial(partial_dir, fs_fd, name)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise _write_error(entry, exc) from None


def rename_into_place(
    partial_dir: Path,
    out_dir: Path,
    files: list[SmallFile],
    make_parents: Callable[[str], None],
    placed: list[SmallFile],
    fs_fd: int | None = None,
) -> None:
    """Steps 3 and 4 (writer thread): rename each file, then fsync each
    folder that received one, once. Appends each file placed to ``placed``;
    a failed rename is raised after the folders of the files already placed
    were made durable. Each folder is opened once per batch and named
    relative to it (no path walk per file)."""
    folders: dict[str, int] = {}
    error: P2pcpError | None = None
    try:
        for small in files:
            try:
                for entry, name in zip(small.entries, _temp_names(small), strict=True):
                    make_parents(entry.path)
                    folder, _slash, base = entry.path.rpartition("/")
                    folder_fd = folders.get(folder)
                    if folder_fd is None:
                        folder_fd = os.open(
                            os.path.join(out_dir, folder), os.O_RDONLY | os.O_DIRECTORY
                        )
                        folders[folder] = folder_fd
                    path, dir_fd = _in_partial(partial_dir, fs_fd, name)
                    os.replace(path, base, src_dir_fd=dir_fd, dst_dir_fd=folder_fd)
            except OSError as exc:
                error = StorageError(f"cannot write {display_path(entry.path)}: {exc.strerror}")
                break
            except P2pcpError as exc:  # a folder in the way (StorageError, WouldOverwriteError)
                error = exc
                break
            placed.append(small)
    finally:
        for folder_fd in folders.values():
            with contextlib.suppress(OSError):
                os.fsync(folder_fd)
            os.close(folder_fd)
    if error is not None:
        raise error


def find_leftovers(partial_dir: Path, wanted: dict[bytes, tuple[Entry, ...]]) -> list[SmallFile]:
    """Small files an earlier run wrote to the partial folder but did not
    place (it stopped between steps 1 and 3). Each ``.part`` of a wanted
    root is read back: bytes that hash to the root are verified data and
    returned (still on disk: ``write_files`` then only sets their metadata);
    anything else is removed, with its resume record."""
    try:
        names = set(os.listdir(partial_dir))
    except OSError:
        return []
    found: list[SmallFile] = []
    for root, entries in wanted.items():
        path = part_path(partial_dir, root)
        if path.name not in names:
            continue
        size = entries[0].size
        data = b""
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                data = os.read(fd, LEAF_SIZE + 1)
            finally:
                os.close(fd)
        if len(data) == size and hash_root(hash_leaf(data), size) == root:
            digest = blake3.blake3(data).hexdigest()
            found.append(SmallFile(root, entries, digest, data, is_on_disk=True))
            continue
        for stale in (path, path.with_suffix(".resume")):
            with contextlib.suppress(OSError):
                stale.unlink()
    return found


class SmallBatch:
    """Verified small files on their way to their final names (the order
    in the module docstring). ``add`` in the event loop; the writing happens
    on the store's one writer thread, in groups; the barrier and the renames
    run on another thread, as a group commit: whenever no commit is running,
    one starts for every file written so far, so one ``syncfs`` covers all
    files that were written while the previous one ran, and writing never
    waits for the disk's flush. ``on_placed`` (if set) hears of each commit's
    placed files in the event loop; ``commit`` places everything added and
    raises the first error."""

    def __init__(
        self,
        writer: ThreadPoolExecutor,
        partial_dir: Path,
        out_dir: Path,
        *,
        metadata: MetadataPolicy,
        fs_fd: int | None,
        make_parents: Callable[[str], None],
    ) -> None:
        self._writer = writer
        self._partial_dir = partial_dir
        self._out_dir = out_dir
        self._metadata = metadata
        self._fs_fd = fs_fd
        self._make_parents = make_parents
        self._group: list[SmallFile] = []
        self._group_bytes = 0
        # Written (or being written) and not yet in a commit.
        self._written: list[tuple[list[SmallFile], Future[None]]] = []
        self._committing: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        # Files added and not yet placed (or failed), and their bytes.
        self.unplaced_files = 0
        self.unplaced_bytes = 0
        self.error: BaseException | None = None
        self.on_placed: Callable[[list[SmallFile]], None] | None = None
        # The files in their final place (even when a later one failed),
        # kept only without ``on_placed``: a receive of 100,000 files must
        # not hold every file it placed.
        self.placed: list[SmallFile] = []

    def add(self, small: SmallFile) -> None:
        size = len(small.data) * len(small.entries)
        self._group.append(small)
        self._group_bytes += size
        self.unplaced_files += 1
        self.unplaced_bytes += size
        if len(self._group) >= WRITE_GROUP_FILES or self._group_bytes >= WRITE_GROUP_BYTES:
            self._submit()
            self._start_commit()

    def _submit(self) -> None:
        if self._group:
            group, self._group, self._group_bytes = self._group, [], 0
            job = self._writer.submit(
                write_files,
                self._partial_dir,
                group,
                self._metadata,
                self._fs_fd,
                self._out_dir,
            )
            self._written.append((group, job))

    def _start_commit(self) -> None:
        """Start a commit of every file written so far, unless one runs."""
        if self._committing is not None or not self._written:
            return
        written, self._written = self._written, []
        self._loop = loop = asyncio.get_running_loop()
        # No caller awaits it directly: once begun, a commit always finishes.
        self._committing = loop.run_in_executor(None, self._commit_in_thread, written)
        self._committing.add_done_callback(self._committed)

    def _committed(self, job: asyncio.Future[None]) -> None:
        self._committing = None
        if job.cancelled():
            self.error = self.error or StorageError("the writing of small files was stopped")
        elif job.exception() is not None and self.error is None:
            self.error = job.exception()
        if self._changed is not None:
            self._changed.set()
        if self.error is None:
            self._start_commit()

    def _commit_in_thread(self, written: list[tuple[list[SmallFile], Future[None]]]) -> None:
        """Barrier and renames for ``written`` (their write jobs may still
        run on the writer thread: wait for them first)."""
        ready: list[SmallFile] = []
        error: BaseException | None = None
        for group, job in written:
            try:
                job.result()
            except BaseException as exc:  # reported once the others are placed
                error = error or exc
                self._release(group)
            else:
                ready.extend(group)
        placed: list[SmallFile] = []
        try:
            if ready:
                make_durable(self._partial_dir, ready, self._fs_fd)
                rename_into_place(
                    self._partial_dir,
                    self._out_dir,
                    ready,
                    self._make_parents,
                    placed,
                    self._fs_fd,
                )
        finally:
            self._release(ready)
            if self.on_placed is None:
                self.placed.extend(placed)
            elif placed:
                self._loop_call(placed)
        if error is not None:
            raise error

    def _release(self, files: list[SmallFile]) -> None:
        """Files that left the pipeline (placed or failed): room for more.
        Counted in the event loop (these run on a thread)."""
        count = len(files)
        size = sum(len(small.entries) * small.entries[0].size for small in files)
        if count and self._loop is not None:
            self._loop.call_soon_threadsafe(self._count_out, count, size)

    def _count_out(self, count: int, size: int) -> None:
        self.unplaced_files -= count
        self.unplaced_bytes -= size

    def _loop_call(self, placed: list[SmallFile]) -> None:
        if self.on_placed is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self.on_placed, placed)

    async def wait_room(self, max_files: int, max_bytes: int) -> None:
        """Wait until fewer than ``max_files`` files and ``max_bytes`` bytes
        are added and not yet placed; raise the pipeline's error, if any."""
        while self.error is None and (
            self.unplaced_files >= max_files or self.unplaced_bytes >= max_bytes
        ):
            self._submit()
            self._start_commit()
            self._changed = self._changed or asyncio.Event()
            self._changed.clear()
            await self._changed.wait()
        if self.error is not None:
            raise self.error

    async def commit(self) -> list[SmallFile]:
        """Place every file added whose writing succeeded (returns ``placed``,
        which, with ``on_placed``, stays empty); raise the first error after.
        Shielded: a cancelled caller does not stop it, so nothing verified is
        dropped half-way."""
        self._submit()
        return await asyncio.shield(self._drain())

    async def _drain(self) -> list[SmallFile]:
        while True:
            if self._committing is not None:
                with contextlib.suppress(BaseException):
                    await asyncio.wait([self._committing])
                # Its done callback may not have run yet.
                await asyncio.sleep(0)
                continue
            if not self._written:
                break
            self._start_commit()
        if self.error is not None:
            raise self.error
        return self.placed
