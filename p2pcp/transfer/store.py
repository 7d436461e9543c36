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

import contextlib
import os
import shutil
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from p2pcp.blobs.collection import Entry, Manifest
from p2pcp.core.defaults import PARTIAL_DIR_PREFIX
from p2pcp.core.errors import StorageError, UnsafePathError, WouldOverwriteError
from p2pcp.transfer.partial import PartialFile
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
        already = sum(self.partial_bytes(root) for root in plan.to_fetch)
        # place() copies a blob to every further path that holds it.
        copies = sum(entry.size for entries in plan.to_fetch.values() for entry in entries[1:])
        needed = max(0, plan.bytes_to_fetch - already) + copies + DISK_HEADROOM_BYTES
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

    async def open_partial(self, root: bytes, size: int) -> PartialFile:
        """The partial file of a blob, resuming what an earlier run verified."""
        return await PartialFile.open_or_resume(
            self.partial_dir / f"{root.hex()}.part", self._writer, root=root, size=size
        )

    def partial_bytes(self, root: bytes) -> int:
        """Bytes an earlier run left for this blob (not yet re-verified)."""
        try:
            return (self.partial_dir / f"{root.hex()}.part").stat().st_size
        except OSError:
            return 0

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

    def close(self, *, keep_partial: bool) -> None:
        """Stop the writer; remove the partial folder unless it holds data to resume."""
        self._writer.shutdown(wait=True)
        if not keep_partial:
            shutil.rmtree(self.partial_dir, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                self.partial_dir.rmdir()  # only if empty


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
