"""The receiver's side of the files: where verified data goes, and when.

Invariants (the promise to backup scripts):
- Nothing unverified ever appears under a final name. Data is written to a
  hidden partial folder inside the output folder (same file system, so the
  final step is an atomic ``rename``); a file is fsynced and renamed into
  place only after every one of its leaves verified.
- Before anything is written, every destination is checked: an existing
  file with identical content is left alone and counts as done; a different
  one stops the receive with exit code 5 (nothing changed) unless ``force``;
  a folder where a file should go (or the reverse) always stops it.
- Paths come from a manifest that was already checked by ``blobs.names``;
  here we also refuse to write through a symbolic link that already exists
  in the output folder (it could point anywhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import blake3

from p2pcp.blobs.collection import Entry, Manifest
from p2pcp.core.defaults import PARTIAL_DIR_PREFIX
from p2pcp.core.errors import StorageError, UnsafePathError, WouldOverwriteError
from p2pcp.transfer.source import hash_file

# Room kept free on the disk beyond the data itself (file system metadata,
# other writers). Refusing early beats failing at 99 %.
DISK_HEADROOM_BYTES = 16 * 1024 * 1024


@dataclass
class Plan:
    """What to fetch: each distinct blob once, with every path it goes to."""

    to_fetch: dict[bytes, list[Entry]] = field(default_factory=dict)
    # Entries whose destination already holds identical content, with its BLAKE3.
    present: list[tuple[Entry, str]] = field(default_factory=list)

    @property
    def bytes_to_fetch(self) -> int:
        return sum(entries[0].size for entries in self.to_fetch.values())

    @property
    def bytes_present(self) -> int:
        return sum(entry.size for entry, _digest in self.present)


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return path.lstat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot inspect {path}: {exc.strerror}") from None


class Store:
    """Places verified files under ``out_dir``."""

    def __init__(self, out_dir: Path, manifest: Manifest, root: bytes, *, force: bool) -> None:
        self.out_dir = out_dir
        self.manifest = manifest
        self.force = force
        self.partial_dir = out_dir / f"{PARTIAL_DIR_PREFIX}{root.hex()[:16]}"
        # One writer thread: the disk is one queue anyway, and it keeps each
        # file's writes in order.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="p2pcp-writer")

    # -- checks before anything is written ---------------------------------

    def _check_parents(self, rel: str) -> None:
        """Every existing parent of ``rel`` must be a real folder, not a link."""
        current = self.out_dir
        for part in rel.split("/")[:-1]:
            current = current / part
            st = _lstat(current)
            if st is None:
                return
            if stat.S_ISLNK(st.st_mode):
                raise UnsafePathError(f"refusing to write through the symbolic link {current}")
            if not stat.S_ISDIR(st.st_mode):
                raise WouldOverwriteError(f"{current} exists and is not a folder")

    def plan(self) -> Plan:
        """Check every destination; return what must be fetched. Writes nothing."""
        st = _lstat(self.out_dir)
        if st is not None and not stat.S_ISDIR(st.st_mode):
            raise WouldOverwriteError(f"the output {self.out_dir} exists and is not a folder")
        plan = Plan()
        for entry in self.manifest.files:
            self._check_parents(entry.path)
            dest = self.out_dir / entry.path
            st = _lstat(dest)
            if st is None:
                plan.to_fetch.setdefault(entry.root, []).append(entry)
                continue
            if stat.S_ISDIR(st.st_mode):
                raise WouldOverwriteError(
                    f"{dest} is a folder; a file of that name would replace it"
                )
            if stat.S_ISREG(st.st_mode) and st.st_size == entry.size:
                existing = hash_file(dest)
                if bytes(existing.root) == entry.root:
                    plan.present.append((entry, existing.blake3_hex or ""))
                    continue
            if not self.force:
                raise WouldOverwriteError(
                    f"{dest} exists with different content (use --force to replace it)"
                )
            plan.to_fetch.setdefault(entry.root, []).append(entry)
        for rel in self.manifest.empty_dirs:
            self._check_parents(rel + "/x")
            st = _lstat(self.out_dir / rel)
            if st is not None and not stat.S_ISDIR(st.st_mode):
                raise WouldOverwriteError(f"{self.out_dir / rel} exists and is not a folder")
        return plan

    def check_free_space(self, plan: Plan) -> None:
        probe = self.out_dir
        while not probe.exists():
            probe = probe.parent
        try:
            free = shutil.disk_usage(probe).free
        except OSError:
            return
        needed = plan.bytes_to_fetch + DISK_HEADROOM_BYTES
        if free < needed:
            raise StorageError(
                f"not enough free space in {probe}: need {needed:,} bytes, {free:,} are free"
            )

    # -- writing --------------------------------------------------------------

    def prepare(self) -> None:
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.partial_dir.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {self.partial_dir}: {exc.strerror}") from None

    def open_partial(self, root: bytes) -> PartialFile:
        return PartialFile(self.partial_dir / f"{root.hex()}.part", self._writer)

    def _make_parents(self, rel: str) -> None:
        self._check_parents(rel)
        parent = (self.out_dir / rel).parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {parent}: {exc.strerror}") from None

    def place(self, partial: PartialFile, entries: list[Entry]) -> None:
        """Move a verified, fsynced partial file to every path that holds it."""
        for entry in entries[1:]:
            self._make_parents(entry.path)
            copy = self.partial_dir / f"{entry.root.hex()}.copy"
            try:
                shutil.copyfile(partial.path, copy)
                _fsync_path(copy)
                _set_mode(copy, entry.is_executable)
                os.replace(copy, self.out_dir / entry.path)
            except OSError as exc:
                raise StorageError(f"cannot write {entry.path}: {exc.strerror}") from None
        first = entries[0]
        self._make_parents(first.path)
        try:
            _set_mode(partial.path, first.is_executable)
            os.replace(partial.path, self.out_dir / first.path)
            _fsync_dir(self.out_dir / first.path)
        except OSError as exc:
            raise StorageError(f"cannot write {first.path}: {exc.strerror}") from None

    def make_empty_dirs(self) -> None:
        for rel in self.manifest.empty_dirs:
            self._check_parents(rel + "/x")
            try:
                (self.out_dir / rel).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot create {rel}: {exc.strerror}") from None

    def remove_partial_dir(self) -> None:
        self._writer.shutdown(wait=True)
        shutil.rmtree(self.partial_dir, ignore_errors=True)


class PartialFile:
    """A file being received: verified leaves are appended in order.

    Writing (and the standard BLAKE3 of what is written) happens on the
    store's writer thread, so a disk that throttles dirty pages never stalls
    the event loop that is receiving the next leaves. One write per file is
    in flight at a time; ``write_verified`` waits for the previous one, which
    also bounds the memory held to one leaf per file.
    """

    def __init__(self, path: Path, writer: ThreadPoolExecutor) -> None:
        self.path = path
        self.hasher = blake3.blake3()
        self.size = 0
        self._writer = writer
        self._pending: asyncio.Future[None] | None = None
        try:
            self._fd: int | None = os.open(
                path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600
            )
        except OSError as exc:
            raise StorageError(f"cannot create {path}: {exc.strerror}") from None

    def _write(self, fd: int, data: bytes) -> None:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        except OSError as exc:
            raise StorageError(f"cannot write {self.path}: {exc.strerror}") from None
        self.hasher.update(data)

    async def _wait_pending(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            await pending

    async def write_verified(self, offset: int, data: bytes) -> None:
        if offset != self.size or self._fd is None:
            raise StorageError(f"internal error: out-of-order write to {self.path}")
        await self._wait_pending()
        self.size += len(data)
        loop = asyncio.get_running_loop()
        self._pending = loop.run_in_executor(self._writer, self._write, self._fd, data)

    async def finish(self) -> str:
        """Write what is pending, fsync, close; return the content's standard BLAKE3 hex."""
        if self._fd is None:
            raise StorageError(f"internal error: {self.path} finished twice")
        fd = self._fd
        try:
            await self._wait_pending()
            await asyncio.get_running_loop().run_in_executor(self._writer, os.fsync, fd)
        except OSError as exc:
            raise StorageError(f"cannot write {self.path}: {exc.strerror}") from None
        finally:
            self._fd = None
            os.close(fd)
        return str(self.hasher.hexdigest())

    async def discard(self) -> None:
        with contextlib.suppress(Exception):
            await self._wait_pending()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _current_umask() -> int:
    # Reading the umask means setting it; do it once, before any thread runs.
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


_UMASK = _current_umask()


def _set_mode(path: Path, is_executable: bool) -> None:
    os.chmod(path, (0o777 if is_executable else 0o666) & ~_UMASK)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Make the rename that put ``path`` in place durable."""
    with contextlib.suppress(OSError):
        _fsync_path(path.parent)
