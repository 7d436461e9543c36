"""The receiver's side of the files: where verified data goes, and when.

Invariants (the promise to backup scripts):
- Nothing unverified ever appears under a final name. Data is written to a
  hidden partial folder inside the output folder (same file system, so the
  final step is an atomic ``rename``); a file is fsynced, given its mode and
  modification time, and only then renamed into place after every one of
  its leaves verified: a file under its final name has its final metadata.
- Permissions and times follow the store's ``MetadataPolicy``
  (``metadata.py``: by default the sender's permission bits masked by the
  receiver's umask, as ``scp`` does, and its modification time;
  ``--no-perms``, ``--no-times``); each path a blob goes to gets its own
  entry's mode and time.
- Before anything is written, the output folder's file system is probed
  (``fsprobe``) and every name it cannot hold is refused: two paths that
  would become one file there (case or Unicode normalization twins), names
  it refuses. That refusal is a :class:`StorageError` (exit 1): the data is
  fine and nothing exists that would be overwritten (so neither 4 nor 5),
  but it cannot be written here; the one-line message lists the problems
  (the first few, and how many more) and suggests another ``--out``.
- Before anything is written, every destination is checked: an existing
  file with identical content is left alone and counts as done; a different
  one stops the receive with exit code 5 (nothing changed) unless ``force``
  or ``update`` (the new version replaces it; one larger than a leaf is
  built from the old file's leaves: ``patch.py``); a folder where a file
  should go (or the reverse) always stops it. Files already here are looked
  up in the hash cache first (``hashcache.py``; what is hashed is
  remembered, with its BLAKE3): a file it knows is not read again, unless
  it matches and the cache lacks the BLAKE3 the report gives (an entry
  only a sender made). ``Plan.files_checked`` and ``files_from_cache``
  say how many were compared and how many of them were not read.
- Symbolic links are local state, not the peer's doing: a link in place of
  a folder of the manifest is never written through (exit 5, even with
  ``force``); a link under a file's final name is replaced, as any other
  file, only with ``force`` (the rename replaces the link, not its target).
  The output folder itself may be a link: the user named it.
- One receive at a time per partial folder: ``prepare`` takes an exclusive
  ``flock`` on the partial folder itself before writing anything in it and
  holds it until ``close``, which removes the folder while still holding
  it. A second receive of the same ticket into the same folder stops at
  once with exit 5 and a one-line message, changing nothing.
- Small files (one leaf) are written and made durable a batch at a time
  (``small_batch``; the order that keeps the promise above is in
  ``batch.py``): one file-system barrier, the renames, one fsync per folder.
- Paths come from a manifest that was already checked by ``blobs.names``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import shutil
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from p2pcp.blobs.collection import Entry, Manifest
from p2pcp.blobs.names import display_path
from p2pcp.blobs.tree import LEAF_SIZE
from p2pcp.core.defaults import PARTIAL_DIR_PREFIX
from p2pcp.core.errors import StorageError, WouldOverwriteError
from p2pcp.transfer.batch import SmallBatch, SmallFile, find_leftovers
from p2pcp.transfer.fsprobe import FileSystemTraits, find_unfit_names, probe_folder
from p2pcp.transfer.hashcache import HashCache
from p2pcp.transfer.metadata import MetadataPolicy
from p2pcp.transfer.partial import PartialFile
from p2pcp.transfer.patch import Patch, PatchFile, released_later
from p2pcp.transfer.resume import recorded_bytes
from p2pcp.transfer.source import hash_file

# Room kept free on the disk beyond the data itself (file system metadata,
# other writers). Refusing early beats failing at 99 %.
DISK_HEADROOM_BYTES = 16 * 1024 * 1024
# How many of the names a file system cannot hold one message lists; the
# rest are counted. A line stays readable, and the first fix is the same.
SHOWN_PROBLEMS = 3
# The receive that held a partial folder's lock may remove the folder just
# as we lock it; then we lock the new one. Twice more is plenty.
LOCK_ATTEMPTS = 3
# flock errors that mean "this file system has no locks" (some network file
# systems): receiving there must still work, so the folder goes unlocked.
_NO_LOCKS_HERE = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP})


@dataclass
class Plan:
    """What to fetch: each distinct blob once, with every path it goes to."""

    to_fetch: dict[bytes, tuple[Entry, ...]] = field(default_factory=dict)
    # Entries whose destination already holds identical content, with its BLAKE3.
    present: list[tuple[Entry, str]] = field(default_factory=list)
    # --update: blobs larger than one leaf to build from an old file (patch.py).
    updates: dict[bytes, UpdateBase] = field(default_factory=dict)
    # --update: paths whose differing file (or link) the fetched one replaces.
    replaced: set[str] = field(default_factory=set)
    # Files already here (regular, of the manifest's size) compared with
    # the manifest, and how many of them the hash cache answered unread.
    files_checked: int = 0
    files_from_cache: int = 0

    @property
    def bytes_to_fetch(self) -> int:
        return sum(entries[0].size for entries in self.to_fetch.values())

    @property
    def bytes_present(self) -> int:
        return sum(entry.size for entry, _digest in self.present)


@dataclass(frozen=True)
class UpdateBase:
    """The old file an update starts from, and its leaf hashes when the
    plan had them (hashed or cached; None: hashed when the update runs)."""

    path: Path
    leaf_hashes: bytes | None


class _Placeable(Protocol):
    """A complete, verified, fsynced file to put in place."""

    @property
    def path(self) -> Path: ...

    def forget_record(self) -> None: ...


@dataclass(frozen=True)
class _PlacedPatch:
    """A verified ``.patch`` (it has no resume record to forget)."""

    path: Path

    def forget_record(self) -> None:
        pass


def _add(to_fetch: dict[bytes, tuple[Entry, ...]], entry: Entry) -> None:
    """One more path for a blob. Tuples, not lists: a plan of 100,000 files
    holds one per blob, and a one-item tuple is half a list's size."""
    known = to_fetch.get(entry.root)
    to_fetch[entry.root] = (entry,) if known is None else (*known, entry)


def lstat_or_none(path: Path) -> os.stat_result | None:
    """``path``'s lstat, None when nothing is there (any other error: StorageError)."""
    try:
        return path.lstat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot inspect {_shown(path)}: {exc.strerror}") from None


@dataclass(frozen=True)
class _Existing:
    """What hashing a file already in place found (``blake3_hex``: None when
    the hash cache answered without it; ``is_cached``: nothing was read)."""

    root: bytes
    leaf_hashes: bytes | None
    blake3_hex: str | None
    is_cached: bool = False


def _unchanged(path: Path, before: os.stat_result) -> bool:
    """Whether ``path`` still is the file ``before`` described (checked
    after reading it, before its hashes are remembered)."""
    try:
        after = path.lstat()
    except OSError:
        return False
    fields = ("st_ino", "st_dev", "st_size", "st_mtime_ns", "st_ctime_ns")
    return all(getattr(after, name) == getattr(before, name) for name in fields)


def is_real_folder(path: Path) -> bool:
    """Whether a folder the sender's files go into exists (False: missing);
    a link or anything else in its place is refused (exit 5)."""
    st = lstat_or_none(path)
    if st is None:
        return False
    if stat.S_ISLNK(st.st_mode):
        raise WouldOverwriteError(
            f"{_shown(path)} is a symbolic link where the sender has a folder; "
            "p2pcp never writes through one (remove it or choose another --out)"
        )
    if not stat.S_ISDIR(st.st_mode):
        raise WouldOverwriteError(f"{_shown(path)} exists and is not a folder")
    return True


def folder_exists(out_dir: Path, rel: str, known: dict[str, bool]) -> bool:
    """Whether folder ``rel`` of ``out_dir`` exists, as a real folder;
    refuses a link or a non-folder at it or above it (exit 5). ``known``
    holds the answers so far and must hold ``""`` (the output folder itself)."""
    if rel in known:
        return known[rel]
    unknown = [rel]  # rel and its ancestors not yet inspected, deepest first
    parent = rel.rpartition("/")[0]
    while parent not in known:
        unknown.append(parent)
        parent = parent.rpartition("/")[0]
    exists = known[parent]
    for folder in reversed(unknown):
        exists = exists and is_real_folder(out_dir / folder)
        known[folder] = exists
    return exists


def _shown(path: Path) -> str:
    return display_path(str(path))


def check_names_fit(manifest: Manifest, traits: FileSystemTraits) -> None:
    """Raise StorageError naming every path (the first few: files, links
    and empty folders) that a file system with ``traits`` cannot hold."""
    paths = [entry.path for entry in manifest.files] + [link.path for link in manifest.links]
    problems = find_unfit_names(paths, manifest.empty_dirs, traits)
    if not problems:
        return
    shown = "; ".join(problems[:SHOWN_PROBLEMS])
    more = len(problems) - SHOWN_PROBLEMS
    if more > 0:
        shown += f"; and {more} more"
    raise StorageError(
        f"the output folder's file system cannot hold these names: {shown} "
        "(nothing was written; choose an --out on another file system)"
    )


class Store:
    """Places verified files under ``out_dir``."""

    def __init__(
        self,
        out_dir: Path,
        manifest: Manifest,
        root: bytes,
        *,
        force: bool,
        metadata: MetadataPolicy | None = None,
        is_dry_run: bool = False,
        update: bool = False,
        hash_cache: HashCache | None = None,
    ) -> None:
        self.out_dir = out_dir
        self.manifest = manifest
        self.force = force
        # --update: a differing file (or a link) is replaced by the new
        # version, built from its leaves where it is larger than one leaf.
        self.update = update
        # Hashes of the files already here, so a rerun reads only what changed.
        self.hash_cache = hash_cache
        # Permission bits and times of the files placed (metadata.py).
        self.metadata = metadata or MetadataPolicy()
        # A dry run plans without writing anything: no file system probe.
        self.is_dry_run = is_dry_run
        # Paths this receive placed itself from an earlier snapshot of a
        # share (snapshot.py): replaced by the new snapshot's like --force.
        self.replaceable: frozenset[str] = frozenset()
        self.partial_dir = out_dir / f"{PARTIAL_DIR_PREFIX}{root.hex()[:16]}"
        # One writer thread: the disk is one queue anyway, and it keeps each
        # file's writes in order.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="p2pcp-writer")
        # The partial folder's lock, held from prepare() to close().
        self._lock_fd: int | None = None
        # Folders (relative paths) this store made or found in place.
        self._made_folders: set[str] = set()

    # -- checks before anything is written ---------------------------------

    def _check_parents(self, rel: str) -> None:
        """Every existing parent of ``rel`` must be a real folder, not a link."""
        current = self.out_dir
        for part in rel.split("/")[:-1]:
            current = current / part
            if not is_real_folder(current):
                return

    def _probe_folder(self) -> Path:
        """The folder whose file system the output will be on: the output
        folder, or the nearest existing folder above it."""
        folder = self.out_dir
        while not folder.is_dir() and folder != folder.parent:
            folder = folder.parent
        return folder

    def plan(self) -> Plan:
        """Check every destination; return what must be fetched.

        Leaves nothing behind: the file system probe's temporary folder is
        removed before this returns.
        """
        try:
            st: os.stat_result | None = self.out_dir.stat()  # a link the user named is fine
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise StorageError(f"cannot inspect {_shown(self.out_dir)}: {exc.strerror}") from None
        if st is not None and not stat.S_ISDIR(st.st_mode):
            raise WouldOverwriteError(
                f"the output {_shown(self.out_dir)} exists and is not a folder"
            )
        if not self.is_dry_run:  # the probe writes (and removes) a folder
            check_names_fit(self.manifest, probe_folder(self._probe_folder()))
        plan = Plan()
        if self.hash_cache is not None:
            self.hash_cache.begin_scan()
        # Each folder is inspected once, and nothing under a missing folder
        # at all: a fresh receive of 100,000 files made ~300,000 lstat calls.
        folders: dict[str, bool] = {"": st is not None}
        for entry in self.manifest.files:
            if not folder_exists(self.out_dir, entry.path.rpartition("/")[0], folders):
                _add(plan.to_fetch, entry)
                continue
            dest = self.out_dir / entry.path
            started_ns = time.time_ns()  # before the stat: the hash cache's racy rule
            st = lstat_or_none(dest)
            if st is None:
                _add(plan.to_fetch, entry)
                continue
            if stat.S_ISDIR(st.st_mode):
                raise WouldOverwriteError(
                    f"{_shown(dest)} is a folder; a file of that name would replace it"
                )
            leaf_hashes: bytes | None = None
            if stat.S_ISREG(st.st_mode) and st.st_size == entry.size:
                existing = self._existing(dest, st, started_ns, entry.root)
                plan.files_checked += 1
                plan.files_from_cache += existing.is_cached
                if existing.root == entry.root and existing.blake3_hex is not None:
                    plan.present.append((entry, existing.blake3_hex))
                    continue
                leaf_hashes = existing.leaf_hashes
            if self.update:
                self._plan_update(plan, entry, dest, st, leaf_hashes)
                continue
            if not self.force and stat.S_ISLNK(st.st_mode):
                raise WouldOverwriteError(
                    f"{_shown(dest)} is a symbolic link (use --force to replace the link "
                    "itself with the file; its target is never written)"
                )
            if not self.force and entry.path not in self.replaceable:
                raise WouldOverwriteError(
                    f"{_shown(dest)} exists with different content (use --force to replace it)"
                )
            _add(plan.to_fetch, entry)
        for rel in self.manifest.empty_dirs:
            folder_exists(self.out_dir, rel, folders)  # a link or a file there is refused
        return plan

    def _existing(self, dest: Path, st: os.stat_result, started_ns: int, root: bytes) -> _Existing:
        """The hashes of the regular file ``dest`` (``st``: its stat, taken
        after ``started_ns``): from the hash cache when it knows the file as
        it is (and, for a file that matches ``root``, its BLAKE3 too), else
        read and remembered."""
        cache = self.hash_cache
        cached = None if cache is None else cache.lookup(dest, st)
        if cached is not None and cached.size == st.st_size:
            if cached.root != root:
                return _Existing(cached.root, cached.leaf_hashes, None, is_cached=True)
            if cached.blake3 is not None:
                return _Existing(cached.root, cached.leaf_hashes, cached.blake3.hex(), True)
        outboard = hash_file(dest)
        leaf_hashes = outboard.leaf_hashes if outboard.leaf_count > 1 else None
        if cache is not None and _unchanged(dest, st):
            digest = None if outboard.blake3_hex is None else bytes.fromhex(outboard.blake3_hex)
            cache.remember(
                dest, st, outboard.root, leaf_hashes, started_ns=started_ns, blake3=digest
            )
        return _Existing(outboard.root, leaf_hashes, outboard.blake3_hex)

    def _plan_update(
        self,
        plan: Plan,
        entry: Entry,
        dest: Path,
        st: os.stat_result,
        leaf_hashes: bytes | None,
    ) -> None:
        """--update: the file (or link) at ``dest`` differs; the new version
        replaces it. One larger than a leaf is built from the old file's
        leaves (a link is never a base: it is replaced, not followed)."""
        plan.replaced.add(entry.path)
        is_base = stat.S_ISREG(st.st_mode) and entry.size > LEAF_SIZE
        if is_base and entry.root not in plan.updates:
            if leaf_hashes is None and self.hash_cache is not None:
                cached = self.hash_cache.lookup(dest, st)
                leaf_hashes = None if cached is None else cached.leaf_hashes
            plan.updates[entry.root] = UpdateBase(dest, leaf_hashes)
        _add(plan.to_fetch, entry)

    def check_free_space(self, plan: Plan) -> None:
        probe = self.out_dir
        while not probe.exists():
            probe = probe.parent
        try:
            free = shutil.disk_usage(probe).free
        except OSError:
            return
        already = self.resumable_bytes(plan) + self._patch_bytes(plan)
        # place() copies a blob to every further path that holds it.
        copies = sum(entry.size for entries in plan.to_fetch.values() for entry in entries[1:])
        needed = max(0, plan.bytes_to_fetch - already) + copies + DISK_HEADROOM_BYTES
        if free < needed:
            raise StorageError(
                f"not enough free space in {_shown(probe)}: "
                f"need {needed:,} bytes, {free:,} are free"
            )

    # -- writing --------------------------------------------------------------

    def prepare(self) -> None:
        """Create the output and partial folders and lock the partial folder."""
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {_shown(self.out_dir)}: {exc.strerror}") from None
        self._lock_fd = self._lock_partial_dir()

    def _lock_partial_dir(self) -> int:
        """An fd of the partial folder holding its exclusive lock.

        The lock is on the folder itself (a folder is a file to ``flock``),
        so there is no lock file to outlive it. A receive that held the lock
        removes the folder before releasing it; when that happens between
        our open and our lock, the fd we locked is a removed folder's and
        we lock the new one.
        """
        for _attempt in range(LOCK_ATTEMPTS):
            try:
                self.partial_dir.mkdir(mode=0o700, exist_ok=True)
                fd = os.open(self.partial_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StorageError(
                    f"cannot create {_shown(self.partial_dir)}: {exc.strerror}"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = os.fstat(fd)
                current = os.lstat(self.partial_dir)
            except BlockingIOError:
                os.close(fd)
                raise WouldOverwriteError(
                    f"another p2pcp receive of this ticket is writing into "
                    f"{_shown(self.out_dir)}; nothing was changed (wait for it to finish, "
                    "or choose another --out)"
                ) from None
            except FileNotFoundError:
                os.close(fd)
                continue
            except OSError as exc:
                if exc.errno in _NO_LOCKS_HERE:
                    return fd  # a file system without locks: write unlocked, as before
                os.close(fd)
                raise StorageError(
                    f"cannot lock {_shown(self.partial_dir)}: {exc.strerror}"
                ) from None
            if (locked.st_dev, locked.st_ino) == (current.st_dev, current.st_ino):
                return fd
            os.close(fd)
        raise StorageError(
            f"cannot lock {_shown(self.partial_dir)}: other receives keep replacing it"
        )

    async def open_partial(self, root: bytes, size: int) -> PartialFile:
        """The partial file of a blob, resuming what an earlier run verified."""
        return await PartialFile.open_or_resume(
            self.partial_dir / f"{root.hex()}.part", self._writer, root=root, size=size
        )

    def resumable_bytes(self, plan: Plan) -> int:
        """Bytes earlier runs left in the partial folder for blobs still to
        fetch (not yet re-verified). One listing of the folder, not a stat
        per blob: a plan may hold 100,000 blobs, the folder a few."""
        sizes: dict[str, int] = {}
        with contextlib.suppress(OSError), os.scandir(self.partial_dir) as listing:
            for item in listing:
                if item.name.endswith(".part"):
                    with contextlib.suppress(OSError):
                        sizes[item.name] = item.stat(follow_symlinks=False).st_size
        if not sizes:
            return 0
        return sum(sizes.get(f"{root.hex()}.part", 0) for root in plan.to_fetch)

    def _patch_bytes(self, plan: Plan) -> int:
        """Bytes the ``.patch`` files of earlier runs hold for the updates
        (an update needs its new version beside the old one: what an
        earlier run made of it is already taken)."""
        total = 0
        for root in plan.updates:
            with contextlib.suppress(OSError):
                total += (self.partial_dir / f"{root.hex()}.patch").stat().st_size
        return total

    def open_patch(self, root: bytes, size: int, base: UpdateBase, leaf_hashes: bytes) -> Patch:
        """The new version of a blob, to build from ``base`` (patch.py)."""
        path = self.partial_dir / f"{root.hex()}.patch"
        return Patch(PatchFile(path, base.path, root, size, leaf_hashes))

    def place_patch(self, patch: Patch, entries: tuple[Entry, ...]) -> None:
        """Put a verified, fsynced ``.patch`` in place, as ``place`` does:
        the rename replaces the old file in one step (whose blocks are
        freed on a helper thread: ``released_later``)."""
        with released_later(self.out_dir / entries[0].path):
            self.place(_PlacedPatch(patch.path), entries)

    def partial_bytes(self, root: bytes) -> int:
        """Bytes an earlier run left for this blob (not yet re-verified)."""
        try:
            return (self.partial_dir / f"{root.hex()}.part").stat().st_size
        except OSError:
            return 0

    def _make_parents(self, rel: str) -> None:
        parent = rel.rpartition("/")[0]
        if not parent or parent in self._made_folders:
            return  # checked and made (or found) for an earlier file of that folder
        self._check_parents(rel)
        self._make_folders(rel.split("/")[:-1])

    def small_batch(self) -> SmallBatch:
        """A group of small files to place together (``batch.py``)."""
        return SmallBatch(
            self._writer,
            self.partial_dir,
            self.out_dir,
            metadata=self.metadata,
            fs_fd=self._lock_fd,
            make_parents=self._make_parents,
        )

    async def find_leftovers(self, wanted: dict[bytes, tuple[Entry, ...]]) -> list[SmallFile]:
        """Small files of ``wanted`` an earlier run verified and wrote to the
        partial folder but did not place (checked again, on the writer thread)."""
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(self._writer, find_leftovers, self.partial_dir, wanted)
        return await asyncio.shield(job)

    def _make_folders(self, parts: list[str]) -> None:
        """Create ``out_dir/part/part/...`` level by level: a tree may be
        thousands of levels deep, and ``mkdir(parents=True)`` recurses per
        level. The caller checked that no level is a link."""
        current = self.out_dir
        for end, part in enumerate(parts, 1):
            current = current / part
            rel = "/".join(parts[:end])
            if rel in self._made_folders:
                continue  # many files share a folder: one mkdir each, not one per file
            try:
                current.mkdir()
            except FileExistsError:
                pass
            except OSError as exc:
                raise StorageError(f"cannot create {_shown(current)}: {exc.strerror}") from None
            self._made_folders.add(rel)

    def place(self, partial: _Placeable, entries: tuple[Entry, ...]) -> None:
        """Move a verified, fsynced partial file to every path that holds it,
        each with its own entry's mode and modification time."""
        for entry in entries[1:]:
            self._make_parents(entry.path)
            copy = self.partial_dir / f"{entry.root.hex()}.copy"
            try:
                shutil.copyfile(partial.path, copy)
                _fsync_path(copy)
                _set_metadata(copy, entry, self.metadata, self.out_dir / entry.path)
                os.replace(copy, self.out_dir / entry.path)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    copy.unlink()
                raise StorageError(
                    f"cannot write {display_path(entry.path)}: {exc.strerror}"
                ) from None
        first = entries[0]
        self._make_parents(first.path)
        try:
            _set_metadata(partial.path, first, self.metadata, self.out_dir / first.path)
            os.replace(partial.path, self.out_dir / first.path)
            _fsync_dir(self.out_dir / first.path)
        except OSError as exc:
            raise StorageError(f"cannot write {display_path(first.path)}: {exc.strerror}") from None
        partial.forget_record()

    def make_empty_dirs(self) -> None:
        for rel in self.manifest.empty_dirs:
            self._check_parents(rel + "/x")
            self._make_folders(rel.split("/"))

    def close(self, *, keep_partial: bool) -> None:
        """Stop the writer; remove the partial folder unless it holds data to
        resume; release its lock. A store that never took the lock leaves
        the folder alone: it may be another receive's."""
        self._writer.shutdown(wait=True)
        if self._lock_fd is None:
            return
        try:
            if not keep_partial:
                shutil.rmtree(self.partial_dir, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    self.partial_dir.rmdir()  # only if empty
        finally:
            os.close(self._lock_fd)
            self._lock_fd = None

    def kept_bytes(self) -> int:
        """Verified bytes the partial folder's resume records list (what a
        rerun may keep; it checks them again)."""
        kept = 0
        with contextlib.suppress(OSError):
            for record in self.partial_dir.glob("*.resume"):
                with contextlib.suppress(OSError):
                    on_disk = record.with_suffix(".part").stat().st_size
                    kept += min(on_disk, recorded_bytes(record.read_bytes()))
        return kept

    def resume_note(self) -> str:
        """What a failed receive kept, for its error message: a resume is
        promised only when verified data really is recorded on disk."""
        kept = self.kept_bytes()
        if kept:
            return (
                f"{kept:,} bytes of verified data are kept: run the same command again "
                "to resume (only the rest is fetched)"
            )
        return "no verified data could be kept for a resume"


def _set_metadata(path: Path, entry: Entry, policy: MetadataPolicy, dest: Path) -> None:
    """Give the file at ``path``, about to be renamed to ``dest``, the mode
    and time ``policy`` wants for ``entry`` (by default the sender's bits
    masked by our umask, as scp, and its modification time when known)."""
    policy.apply_to_path(path, entry, policy.existing_mode(dest))


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
