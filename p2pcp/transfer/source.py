"""The sender's side of the files: walking the paths, hashing them.

``scan_paths`` and ``import_scan`` turn the PATHs given to ``p2pcp send``
into a collection: a manifest blob plus one blob per distinct file content,
all committed to by the manifest's root hash. Hashing reads each file once:
a file larger than one leaf with ``readinto`` into one reused buffer (never
``f.read()`` a whole file), a file of at most one leaf with one ``read``;
small files are read and hashed on several threads at once, so a folder of
100,000 small files costs little more than its system calls.

Memory: what is kept per file is its manifest entry and, for a blob larger
than one leaf, its outboard; no ``Path`` objects (hundreds of bytes each).

Rules:
- A file is sent under its own name; a folder under its own name with its
  whole tree (sorted, so the same tree always gives the same ticket). The
  walk keeps its own stack: a tree is as deep as its paths allow, however
  that compares with Python's recursion limit.
- Every name the file system holds is sent as its bytes (``os.scandir``
  with ``str`` paths hands out surrogateescape'd names, kept as they are);
  each file carries its permission bits (``st_mode & 0o777``) and
  modification time.
- Symbolic links to files are sent as the files they point to; links to
  folders are not followed (no loops, no surprises) and are reported as
  skipped, as are sockets, FIFOs, devices and broken links.
- Inside a folder, an item that cannot be read (a file that will not open
  or read, a folder that will not list) or whose path is unsafe everywhere
  (over 4096 bytes: see ``blobs.names``) is reported as skipped and the
  rest is sent. With ``strict``, the first one is an error instead
  (StorageError for I/O, exit 1; UsageError for a name, exit 2). A PATH
  given by name that cannot be read is always an error.
- Two PATHs with the same name are refused: they would collide on arrival.
- Every skipped item and error names its path with ``display_path``.
"""

from __future__ import annotations

import os
import stat
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from p2pcp.blobs.collection import MODE_BITS, Entry, Manifest, encode_manifest
from p2pcp.blobs.names import display_path, unsafe_reason
from p2pcp.blobs.tree import LEAF_SIZE, Outboard, TreeBuilder, hash_leaf, hash_root
from p2pcp.core.defaults import IMPORT_READ_BYTES
from p2pcp.core.errors import P2pcpError, StorageError, UsageError

ProgressCallback = Callable[[int], None]

# Small files are hashed by this many threads at once (the system calls and
# blake3 release the GIL), a chunk of files per job so that a job's work
# dwarfs handing it over; progress is reported once per chunk.
IMPORT_THREADS = 4
IMPORT_CHUNK_FILES = 256


@dataclass(slots=True)
class SourceBlob:
    """A file on disk that the sender serves, with its outboard tree."""

    path: str
    outboard: Outboard


class BlobIndex:
    """The distinct file blobs a sender serves, by root hash.

    A blob of at most one leaf keeps nothing but its manifest path (shared
    with the manifest entry): its outboard is its single leaf hash, which
    the provider computes from the file when it serves it and checks against
    the root (``hash_root(leaf, size)`` binds both), so keeping it would
    save nothing. Larger blobs keep their outboard. A file's path on disk is
    its manifest path under the folder its top-level item came from.
    """

    def __init__(self, bases: dict[str, str]) -> None:
        self._bases = bases  # top-level item name -> the folder holding it
        self._small: dict[bytes, str] = {}
        self._large: dict[bytes, SourceBlob] = {}

    def add(self, root: bytes, rel: str, outboard: Outboard | None) -> None:
        """Add the blob of manifest path ``rel`` (``outboard`` None: one leaf)."""
        if root in self._small or root in self._large:
            return
        if outboard is None:
            self._small[root] = rel
        else:
            self._large[root] = SourceBlob(self.disk_path(rel), outboard)

    def disk_path(self, rel: str) -> str:
        return os.path.join(self._bases[rel.split("/", 1)[0]], rel)

    def small_path(self, root: bytes) -> str | None:
        """The file of a one-leaf blob, or None if ``root`` is not one."""
        rel = self._small.get(root)
        return None if rel is None else self.disk_path(rel)

    def get(self, root: bytes) -> SourceBlob | None:
        """A blob larger than one leaf, or None."""
        return self._large.get(root)

    def __contains__(self, root: object) -> bool:
        return root in self._small or root in self._large

    def __len__(self) -> int:
        return len(self._small) + len(self._large)


@dataclass
class Collection:
    manifest: Manifest
    manifest_bytes: bytes
    manifest_outboard: Outboard
    blobs: BlobIndex
    skipped: list[str] = field(default_factory=list)

    @property
    def root(self) -> bytes:
        return bytes(self.manifest_outboard.root)


def hash_file(
    path: Path, on_bytes: ProgressCallback | None = None, *, with_blake3: bool = True
) -> Outboard:
    """Hash one file into its outboard tree (and, ``with_blake3``, its standard BLAKE3)."""
    try:
        return _hash(path, on_bytes, with_blake3=with_blake3)
    except OSError as exc:
        raise StorageError(f"cannot read {display_path(str(path))}: {_why(exc)}") from None


def _hash(path: Path, on_bytes: ProgressCallback | None, *, with_blake3: bool) -> Outboard:
    """``hash_file`` that lets the OSError out."""
    builder = TreeBuilder(with_blake3=with_blake3)
    buffer = bytearray(IMPORT_READ_BYTES)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while True:
            count = handle.readinto(buffer)
            if not count:
                break
            builder.update(view[:count])
            if on_bytes is not None:
                on_bytes(count)
    return builder.finalize()


def _why(exc: OSError) -> str:
    """An OS error's reason in a few lower-case words ("permission denied")."""
    reason = exc.strerror or type(exc).__name__
    return reason[:1].lower() + reason[1:]


@dataclass(slots=True)
class _Found:
    rel: str
    size: int
    mode: int
    mtime_ns: int


@dataclass
class Scan:
    """What ``scan_paths`` found: the files and empty folders to send."""

    files: list[_Found]
    empty_dirs: list[str]
    skipped: list[str]
    name: str
    has_several_items: bool = False
    is_strict: bool = False
    # Each top-level item's name -> the folder that holds it (a file's path
    # on disk is that folder joined with its manifest path).
    bases: dict[str, str] = field(default_factory=dict)

    def disk_path(self, rel: str) -> str:
        return os.path.join(self.bases[rel.split("/", 1)[0]], rel)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def skip(self, rel: str, reason: str, error: type[P2pcpError] = StorageError) -> None:
        """Report ``rel`` as skipped, or raise ``error`` when strict."""
        if self.is_strict:
            raise error(f"cannot send {display_path(rel)}: {reason}")
        self.skipped.append(f"{display_path(rel)} ({reason})")


def _found(rel: str, st: os.stat_result) -> _Found:
    return _Found(rel, st.st_size, stat.S_IMODE(st.st_mode) & MODE_BITS, st.st_mtime_ns)


def _walk(top: Path, name: str, scan: Scan) -> None:
    """Add the tree under folder ``top`` (sent as ``name``) to ``scan``.

    Depth-first with an explicit stack, children in name order, so the
    walk is as deep as the file system's paths and its output is stable."""
    pending: list[tuple[str, str]] = [(str(top), name)]
    while pending:
        folder, folder_rel = pending.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as exc:
            if folder_rel == name:
                raise StorageError(f"cannot list {display_path(folder)}: {_why(exc)}") from None
            scan.skip(folder_rel, _why(exc))
            continue
        if not entries:
            scan.empty_dirs.append(folder_rel)
            continue
        subfolders: list[tuple[str, str]] = []
        for entry in entries:
            rel = f"{folder_rel}/{entry.name}"
            reason = unsafe_reason(rel)
            if reason is not None:
                scan.skip(rel, reason, UsageError)
                continue
            try:
                st = os.stat(entry.path)  # follows links to files
            except OSError as exc:
                if entry.is_symlink() and isinstance(exc, FileNotFoundError):
                    scan.skipped.append(f"{display_path(rel)} (broken link)")
                else:
                    scan.skip(rel, _why(exc))
                continue
            if entry.is_symlink() and stat.S_ISDIR(st.st_mode):
                scan.skipped.append(f"{display_path(rel)} (link to a folder)")
            elif stat.S_ISDIR(st.st_mode):
                subfolders.append((entry.path, rel))
            elif stat.S_ISREG(st.st_mode):
                scan.files.append(_found(rel, st))
            else:
                scan.skipped.append(f"{display_path(rel)} (not a regular file)")
        pending.extend(reversed(subfolders))


def scan_paths(paths: list[Path], *, strict: bool = False) -> Scan:
    """Find what to send (see the module's rules; ``strict``: the first
    unreadable or unsendable item is an error, not a skip)."""
    if not paths:
        raise UsageError("nothing to send: give at least one PATH")
    scan = Scan([], [], [], "", is_strict=strict)
    names: list[str] = []
    for given in paths:
        path = Path(os.path.abspath(given))
        name = path.name
        shown = display_path(str(given))
        if not name:
            raise UsageError(f"cannot send {shown}: it has no name")
        if name in names:
            raise UsageError(f"two PATHs are both named {display_path(name)}; they would collide")
        names.append(name)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise UsageError(f"no such file or folder: {shown}") from None
        except OSError as exc:
            raise StorageError(f"cannot read {shown}: {_why(exc)}") from None
        scan.bases[name] = str(path.parent)
        if stat.S_ISDIR(st.st_mode):
            _walk(path, name, scan)
        elif stat.S_ISREG(st.st_mode):
            scan.files.append(_found(name, st))
        else:
            raise UsageError(f"cannot send {shown}: not a regular file or folder")
    scan.name = names[0] if len(names) == 1 else f"{len(names)} items"
    scan.has_several_items = len(names) > 1
    return scan


def _hash_small(path: str, size: int) -> tuple[int, bytes]:
    """A file of at most one leaf: (bytes read, its leaf hash). Reads one
    byte more than ``size`` so that a file that grew is noticed."""
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.read(fd, size + 1)
        if len(data) == size:  # a short read of a file that kept its size: read on
            while chunk := os.read(fd, 1):
                data += chunk
    finally:
        os.close(fd)
    return len(data), hash_leaf(data)


# A small file's (size read, leaf hash), the OSError that stopped it, or
# None for a larger file (hashed by the caller, which reports its progress).
_Hashed = tuple[int, bytes] | OSError | None


def _hash_found(scan: Scan, found: _Found) -> _Hashed:
    if found.size > LEAF_SIZE:
        return None
    try:
        return _hash_small(scan.disk_path(found.rel), found.size)
    except OSError as exc:
        return exc


def _hash_chunk(scan: Scan, chunk: list[_Found]) -> list[_Hashed]:
    return [_hash_found(scan, found) for found in chunk]


def _hash_all(scan: Scan) -> Iterator[tuple[_Found, _Hashed]]:
    """Every file of the scan with its small-file hash, in scan order. Small
    files are hashed in chunks on IMPORT_THREADS threads, at most twice that
    many chunks ahead (so memory does not grow with the number of files)."""
    chunks = [
        scan.files[at : at + IMPORT_CHUNK_FILES]
        for at in range(0, len(scan.files), IMPORT_CHUNK_FILES)
    ]
    if len(chunks) <= 1:
        for chunk in chunks:
            yield from zip(chunk, _hash_chunk(scan, chunk), strict=True)
        return
    ahead = 2 * IMPORT_THREADS
    with ThreadPoolExecutor(IMPORT_THREADS, thread_name_prefix="p2pcp-import") as pool:
        futures = deque(pool.submit(_hash_chunk, scan, chunk) for chunk in chunks[:ahead])
        try:
            for number, chunk in enumerate(chunks):
                results = futures.popleft().result()
                if number + ahead < len(chunks):
                    futures.append(pool.submit(_hash_chunk, scan, chunks[number + ahead]))
                yield from zip(chunk, results, strict=True)
        finally:
            for future in futures:
                future.cancel()


def import_scan(scan: Scan, on_bytes: ProgressCallback | None = None) -> Collection:
    """Hash what a scan found into a collection. Blocking: run it in a thread.

    A file inside a folder that cannot be read is skipped (``scan.skip``);
    its bytes still count towards ``on_bytes``, so progress ends at the
    total the scan announced. ``on_bytes`` is called from this thread: as a
    large file is read, and once per IMPORT_READ_BYTES of small files."""
    entries: list[Entry] = []
    blobs = BlobIndex(scan.bases)
    progress = _Progress(on_bytes)
    for found, small in _hash_all(scan):
        progress.file_started()
        outboard: Outboard | None = None
        hashed: tuple[int, bytes] | OSError
        if small is None:
            # The sender needs only the tree; the receiver computes and
            # reports the standard BLAKE3 of what it verified.
            try:
                path = Path(scan.disk_path(found.rel))
                outboard = _hash(path, progress.count, with_blake3=False)
                hashed = (outboard.size, outboard.root)
            except OSError as exc:
                hashed = exc
        else:
            hashed = small
            progress.count_small(found.size)
        if isinstance(hashed, OSError):
            if "/" not in found.rel:  # a PATH given by name
                raise StorageError(f"cannot read {display_path(found.rel)}: {_why(hashed)}")
            scan.skip(found.rel, _why(hashed))
            progress.count_rest(found.size)
            continue
        size = hashed[0]
        if size != found.size:
            raise StorageError(
                f"{display_path(scan.disk_path(found.rel))} changed size while it was being read"
            )
        root = bytes(hashed[1]) if outboard is not None else hash_root(hashed[1], size)
        blobs.add(root, found.rel, outboard)
        entries.append(Entry(found.rel, found.size, root, found.mode, found.mtime_ns))
    progress.flush()
    if not entries and not scan.empty_dirs:
        raise UsageError(f"nothing to send: every item in {display_path(scan.name)} was skipped")
    manifest = Manifest.folder(
        scan.name, entries, scan.empty_dirs, has_several_items=scan.has_several_items
    )
    manifest_bytes = encode_manifest(manifest)
    return Collection(
        manifest=manifest,
        manifest_bytes=manifest_bytes,
        manifest_outboard=Outboard.from_bytes(manifest_bytes),
        blobs=blobs,
        skipped=scan.skipped,
    )


class _Progress:
    """Hands hashed byte counts to a progress callback: a large file's as
    it is read, small files' gathered (a call per file would cost more than
    hashing a small file)."""

    def __init__(self, on_bytes: ProgressCallback | None) -> None:
        self.on_bytes = on_bytes
        self.unreported = 0  # small files' bytes not yet handed on
        self.read = 0  # of the current file

    def file_started(self) -> None:
        self.read = 0

    def count(self, chunk: int) -> None:
        self.read += chunk
        if self.on_bytes is not None:
            self.on_bytes(chunk)

    def count_small(self, size: int) -> None:
        self.unreported += size
        if self.unreported >= IMPORT_READ_BYTES:
            self.flush()

    def count_rest(self, size: int) -> None:
        """A skipped file still counts in full."""
        if size > self.read:
            self.count(size - self.read)

    def flush(self) -> None:
        if self.on_bytes is not None and self.unreported:
            self.on_bytes(self.unreported)
        self.unreported = 0
