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
  skipped, as are sockets, FIFOs, devices and broken links. With
  ``links`` (``send --links``), every symbolic link inside a folder is
  sent as a link instead: its target text exactly as ``readlink`` gives
  it, never followed. A PATH given by name is always followed.
- A ``ScanFilter`` (``exclude.py``: ``--exclude``, ``--exclude-from``,
  ``--gitignore``) is asked about each entry of a folder before anything
  is stat'ed; an excluded folder is never listed, an excluded item is
  counted (``Scan.excluded``), not reported as skipped. A folder whose
  every entry is excluded is sent as an empty folder.
- Inside a folder, an item that cannot be read (a file that will not open
  or read, a folder that will not list) or whose path is unsafe everywhere
  (over 4096 bytes: see ``blobs.names``) is reported as skipped and the
  rest is sent. With ``strict``, the first one is an error instead
  (StorageError for I/O, exit 1; UsageError for a name, exit 2). A PATH
  given by name that cannot be read is always an error.
- Two PATHs with the same name are refused: they would collide on arrival.
- A file is hashed from one version of its bytes, never a mix
  (``hash_consistent``): the open file is fstat'ed before and after each
  read, and a read whose size, mtime or ctime moved (or whose length is
  not the size) is done again; a file changed within a timestamp tick of
  the read (``hashcache.racy_wait_ns``: a write then may not move the
  times) is read only once that tick is past (a wait of at most the racy
  margin, 100 ms on most file systems). One that still changes after
  READ_ATTEMPTS tries is skipped as "changed while it was being read"
  inside a folder (StorageError with ``strict``), and is an error when it
  is a PATH given by name, as an unreadable one is. The manifest entry
  takes size, mode and mtime from that version's fstat. (Timestamps cannot
  reveal a change made through a shared memory map, nor one single write
  call that lasts longer than the racy margin; the provider re-hashes
  every leaf it serves, so such a file is refused to the receiver, never
  sent wrong.)
- With a hash cache (``hashcache.py``), a file whose inode, size, mtime
  and ctime are those it had when it was last hashed is not read at all.
  Small files are looked up a chunk at a time and remembered a chunk at
  a time; a file on a device the cache holds nothing of (a first run) is
  not even stat'ed for it.
- Every skipped item and error names its path with ``display_path``.
"""

from __future__ import annotations

import os
import stat
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from p2pcp.blobs.collection import (
    MAX_LINK_TARGET_BYTES,
    MODE_BITS,
    Entry,
    Link,
    Manifest,
    encode_manifest,
)
from p2pcp.blobs.names import display_path, unsafe_reason
from p2pcp.blobs.tree import (
    HASH_BYTES,
    LEAF_SIZE,
    Outboard,
    TreeBuilder,
    hash_leaf,
    hash_root,
    leaf_count,
)
from p2pcp.core.defaults import IMPORT_READ_BYTES
from p2pcp.core.errors import P2pcpError, StorageError, UsageError
from p2pcp.transfer.exclude import Rules, ScanFilter
from p2pcp.transfer.hashcache import CachedHash, HashCache, Remembered, racy_wait_ns

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


@dataclass(frozen=True)
class ImportStats:
    """What an import read: files (and their bytes) hashed, and those the
    hash cache knew, so nothing of them was read."""

    files_hashed: int = 0
    bytes_hashed: int = 0
    files_cached: int = 0
    bytes_cached: int = 0


@dataclass
class Collection:
    manifest: Manifest
    manifest_bytes: bytes
    manifest_outboard: Outboard
    blobs: BlobIndex
    skipped: list[str] = field(default_factory=list)
    stats: ImportStats = field(default_factory=ImportStats)

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
    dev: int  # st_dev (one shared int per device: see _found)


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
    # Symbolic links sent as links (``links``), in walk order.
    links: list[Link] = field(default_factory=list)
    # Items the ScanFilter left out (an excluded folder counts once).
    excluded: int = 0

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


# One int object per device number, shared by every _Found of that device
# (a fresh int per file would cost 32 bytes each).
_DEVICES: dict[int, int] = {}


def _found(rel: str, st: os.stat_result) -> _Found:
    dev = _DEVICES.setdefault(st.st_dev, st.st_dev)
    return _Found(rel, st.st_size, stat.S_IMODE(st.st_mode) & MODE_BITS, st.st_mtime_ns, dev)


def _keep(
    scan: Scan, rules: Rules, folder: str, folder_rel: str, entries: list[os.DirEntry[str]]
) -> tuple[Rules, list[os.DirEntry[str]]]:
    """The folder's rules (its own ``.gitignore`` added) and the entries
    they do not exclude; each excluded one is counted."""
    inside = folder_rel.partition("/")[2]  # the folder's path inside its item
    rules = rules.enter(folder, inside, [entry.name for entry in entries])
    kept = []
    for entry in entries:
        try:
            is_dir = entry.is_dir(follow_symlinks=False)  # a link is a file to git
        except OSError:
            is_dir = False
        path = f"{inside}/{entry.name}" if inside else entry.name
        if rules.is_excluded(path, is_dir=is_dir):
            scan.excluded += 1
        else:
            kept.append(entry)
    return rules, kept


def _add_link(scan: Scan, path: str, rel: str) -> None:
    """Send the link at ``path`` as a link: its target text, unresolved."""
    try:
        target = os.readlink(path)
    except OSError as exc:
        scan.skip(rel, _why(exc))
        return
    # readlink's bytes, as the file system decoded them (like every name).
    size = len(target.encode("utf-8", "surrogateescape"))
    if not 0 < size <= MAX_LINK_TARGET_BYTES:
        scan.skip(rel, f"its target is empty or longer than {MAX_LINK_TARGET_BYTES} bytes")
    else:
        scan.links.append(Link(rel, target))


def _walk(
    top: Path, name: str, scan: Scan, rules: Rules | None = None, *, keep_links: bool = False
) -> None:
    """Add the tree under folder ``top`` (sent as ``name``) to ``scan``,
    leaving out what ``rules`` exclude; ``keep_links``: links as links.

    Depth-first with an explicit stack, children in name order, so the
    walk is as deep as the file system's paths and its output is stable."""
    pending: list[tuple[str, str, Rules | None]] = [(str(top), name, rules)]
    while pending:
        folder, folder_rel, folder_rules = pending.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as exc:
            if folder_rel == name:
                raise StorageError(f"cannot list {display_path(folder)}: {_why(exc)}") from None
            scan.skip(folder_rel, _why(exc))
            continue
        if folder_rules is not None and entries:
            folder_rules, entries = _keep(scan, folder_rules, folder, folder_rel, entries)
        if not entries:
            scan.empty_dirs.append(folder_rel)
            continue
        subfolders: list[tuple[str, str, Rules | None]] = []
        for entry in entries:
            rel = f"{folder_rel}/{entry.name}"
            reason = unsafe_reason(rel)
            if reason is not None:
                scan.skip(rel, reason, UsageError)
                continue
            if keep_links and entry.is_symlink():
                _add_link(scan, entry.path, rel)
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
                subfolders.append((entry.path, rel, folder_rules))
            elif stat.S_ISREG(st.st_mode):
                scan.files.append(_found(rel, st))
            else:
                scan.skipped.append(f"{display_path(rel)} (not a regular file)")
        pending.extend(reversed(subfolders))


def scan_paths(
    paths: list[Path],
    *,
    strict: bool = False,
    scan_filter: ScanFilter | None = None,
    links: bool = False,
) -> Scan:
    """Find what to send (see the module's rules; ``strict``: the first
    unreadable or unsendable item is an error, not a skip; ``scan_filter``:
    what to leave out; ``links``: symbolic links inside folders as links)."""
    if not paths:
        raise UsageError("nothing to send: give at least one PATH")
    rules = None if scan_filter is None else scan_filter.rules()
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
            _walk(path, name, scan, rules, keep_links=links)
        elif stat.S_ISREG(st.st_mode):
            scan.files.append(_found(name, st))
        else:
            raise UsageError(f"cannot send {shown}: not a regular file or folder")
    scan.name = names[0] if len(names) == 1 else f"{len(names)} items"
    scan.has_several_items = len(names) > 1
    return scan


# A file that changes while it is read is read again, up to this many tries
# in all (a try on a file changed within the racy margin waits for the
# margin to pass instead of reading), then skipped as "changed while it was
# being read".
READ_ATTEMPTS = 4
CHANGED_REASON = "changed while it was being read"


@dataclass(frozen=True, slots=True)
class HashedFile:
    """A file hashed from one version of its bytes: ``st`` is the fstat
    taken before they were read (size, mode and mtime of that version),
    ``outboard`` None for one leaf or less, ``is_cached`` when the hash
    cache knew it and nothing was read."""

    st: os.stat_result
    root: bytes
    outboard: Outboard | None
    is_cached: bool = False


class _Changed:
    """The file kept changing while it was read (READ_ATTEMPTS times)."""


_CHANGED = _Changed()


def _stamp(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _from_cache(st: os.stat_result, hit: CachedHash) -> HashedFile | None:
    """A cache hit as a HashedFile, or None if it does not hold together."""
    if st.st_size <= LEAF_SIZE:
        return HashedFile(st, hit.root, None, True) if hit.leaf_hashes is None else None
    if hit.leaf_hashes is None or len(hit.leaf_hashes) != HASH_BYTES * leaf_count(st.st_size):
        return None
    outboard = Outboard.from_leaf_hashes(st.st_size, hit.leaf_hashes, None)
    return HashedFile(st, hit.root, outboard, True) if outboard.root == hit.root else None


def _read_fd(fd: int, size: int, progress: _Progress | None) -> tuple[int, bytes, Outboard | None]:
    """Read and hash an open file expected to hold ``size`` bytes: (bytes
    read, root, outboard or None for one leaf). Reads at most ``size + 1``
    bytes, so that a file that grew is noticed without reading on forever."""
    if size <= LEAF_SIZE:
        data = os.read(fd, size + 1)
        while 0 < len(data) < size:  # a short read: read on
            chunk = os.read(fd, size + 1 - len(data))
            if not chunk:
                break
            data += chunk
        if progress is not None:
            progress.count(len(data))
        return len(data), hash_root(hash_leaf(data), len(data)), None
    # The sender needs only the tree; the receiver computes and reports the
    # standard BLAKE3 of what it verified.
    builder = TreeBuilder(with_blake3=False)
    buffer = bytearray(IMPORT_READ_BYTES)
    view = memoryview(buffer)
    length = 0
    with open(fd, "rb", buffering=0, closefd=False) as handle:
        while length <= size:
            count = handle.readinto(view[: min(len(buffer), size + 1 - length)])
            if not count:
                break
            builder.update(view[:count])
            length += count
            if progress is not None:
                progress.count(count)
    outboard = builder.finalize()
    if length <= LEAF_SIZE:
        return length, outboard.root, None
    return length, outboard.root, outboard


def hash_consistent(
    path: str,
    cache: HashCache | None = None,
    *,
    max_size: int | None = None,
    progress: _Progress | None = None,
    is_looked_up: bool = False,
    remembered: list[Remembered] | None = None,
) -> HashedFile | _Changed | None:
    """Hash one version of the file at ``path`` (see the module: fstat before
    and after each read; a racy file waited for, then read), from ``cache`` when it
    knows the file and into it when it did not. ``_CHANGED`` when it kept
    changing; None when it is larger than ``max_size`` (left to the caller).
    OSError when it cannot be opened or read. ``is_looked_up``: the caller
    just looked it up and missed (its first read skips the lookup).
    ``remembered``: what to remember goes there (the caller hands a chunk
    of them to ``cache.remember_many``) instead of into ``cache``."""
    for attempt in range(READ_ATTEMPTS):
        started_ns = time.time_ns()
        # O_NONBLOCK: a FIFO put where a file was must not block the open.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                raise OSError(0, "not a regular file")
            if max_size is not None and before.st_size > max_size:
                return None
            if cache is not None and not (is_looked_up and attempt == 0):
                hit = cache.lookup(path, before)
                found = None if hit is None else _from_cache(before, hit)
                if found is not None:
                    return found
            # Changed within a timestamp tick of now: a write during the
            # read might not move the times. Wait until it would.
            wait_ns = racy_wait_ns(before, started_ns)
            if not wait_ns:
                if progress is not None and attempt:
                    progress.file_restarted()
                length, root, outboard = _read_fd(fd, before.st_size, progress)
                after = os.fstat(fd)
        finally:
            os.close(fd)
        if wait_ns:
            time.sleep(wait_ns / 1e9)
            continue
        if length != before.st_size or _stamp(before) != _stamp(after):
            continue
        if cache is not None:
            leaves = None if outboard is None else outboard.leaf_hashes
            if remembered is not None:
                remembered.append(Remembered(before, root, leaves, started_ns))
            else:
                cache.remember(path, before, root, leaves, started_ns=started_ns)
        return HashedFile(before, root, outboard)
    return _CHANGED


# A small file's HashedFile, the OSError that stopped it, _CHANGED, or None
# for a larger file (hashed by the caller, which reports its progress).
_Result = HashedFile | OSError | _Changed | None


def _hash_found(
    scan: Scan,
    found: _Found,
    cache: HashCache | None,
    *,
    is_looked_up: bool = False,
    remembered: list[Remembered] | None = None,
) -> _Result:
    if found.size > LEAF_SIZE:
        return None
    try:
        return hash_consistent(
            scan.disk_path(found.rel),
            cache,
            max_size=LEAF_SIZE,
            is_looked_up=is_looked_up,
            remembered=remembered,
        )
    except OSError as exc:
        return exc


def _hash_chunk(scan: Scan, chunk: list[_Found], cache: HashCache | None) -> list[_Result]:
    """A chunk of files: the small ones found in the cache (one query for
    them all, by a stat of each; none for a device the cache holds nothing
    of) or hashed and remembered together, the larger ones left as None."""
    if cache is None or not cache.is_enabled:
        return [_hash_found(scan, found, None) for found in chunk]
    holds = {dev: cache.holds_device(dev) for dev in {found.dev for found in chunk}}
    stats: list[os.stat_result] = []
    known: list[int] = []
    for at, found in enumerate(chunk):
        if found.size <= LEAF_SIZE and holds[found.dev]:
            try:
                st = os.stat(scan.disk_path(found.rel))
            except OSError:
                continue  # hashing it says why
            if stat.S_ISREG(st.st_mode) and st.st_size <= LEAF_SIZE:
                stats.append(st)
                known.append(at)
    hits: dict[int, HashedFile] = {}
    if stats:
        for at, st, hit in zip(known, stats, cache.lookup_many(stats), strict=True):
            cached = None if hit is None else _from_cache(st, hit)
            if cached is not None:
                hits[at] = cached
    remembered: list[Remembered] = []
    results = [
        hits[at]
        if at in hits
        else _hash_found(scan, found, cache, is_looked_up=True, remembered=remembered)
        for at, found in enumerate(chunk)
    ]
    cache.remember_many(remembered)
    return results


def _hash_all(scan: Scan, cache: HashCache | None) -> Iterator[tuple[_Found, _Result]]:
    """Every file of the scan with its small-file hash, in scan order. Small
    files are hashed (or found in the cache) in chunks on IMPORT_THREADS
    threads, at most twice that many chunks ahead (so memory does not grow
    with the number of files)."""
    chunks = [
        scan.files[at : at + IMPORT_CHUNK_FILES]
        for at in range(0, len(scan.files), IMPORT_CHUNK_FILES)
    ]
    if len(chunks) <= 1:
        for chunk in chunks:
            yield from zip(chunk, _hash_chunk(scan, chunk, cache), strict=True)
        return
    ahead = 2 * IMPORT_THREADS
    with ThreadPoolExecutor(IMPORT_THREADS, thread_name_prefix="p2pcp-import") as pool:
        futures = deque(pool.submit(_hash_chunk, scan, chunk, cache) for chunk in chunks[:ahead])
        try:
            for number, chunk in enumerate(chunks):
                results = futures.popleft().result()
                if number + ahead < len(chunks):
                    futures.append(pool.submit(_hash_chunk, scan, chunks[number + ahead], cache))
                yield from zip(chunk, results, strict=True)
        finally:
            for future in futures:
                future.cancel()


def _entry(found: _Found, st: os.stat_result, root: bytes) -> Entry:
    """The manifest entry of the version hashed (``st``). The scan's own
    int objects are reused where they are equal: a fresh int per field and
    file was ~100 bytes a file that a large folder's sender kept to the end."""
    size = found.size if st.st_size == found.size else st.st_size
    mode = stat.S_IMODE(st.st_mode) & MODE_BITS
    mode = found.mode if mode == found.mode else mode
    mtime_ns = found.mtime_ns if st.st_mtime_ns == found.mtime_ns else st.st_mtime_ns
    return Entry(found.rel, size, root, mode, mtime_ns)


def import_scan(
    scan: Scan, on_bytes: ProgressCallback | None = None, *, cache: HashCache | None = None
) -> Collection:
    """Hash what a scan found into a collection. Blocking: run it in a thread.

    A file inside a folder that cannot be read, or that kept changing while
    it was read, is skipped (``scan.skip``); its bytes still count towards
    ``on_bytes``, so progress ends at the total the scan announced.
    ``on_bytes`` is called from this thread: as a large file is read, and
    once per IMPORT_READ_BYTES of small files. ``cache``: files it knows
    (same inode, size, mtime and ctime) are not read; the others go into it
    (the caller flushes and closes it)."""
    entries: list[Entry] = []
    blobs = BlobIndex(scan.bases)
    progress = _Progress(on_bytes)
    if cache is not None:
        cache.begin_scan()
    counts = [0, 0, 0, 0]  # files hashed, bytes hashed, files cached, bytes cached
    for found, small in _hash_all(scan, cache):
        progress.file_started()
        result: HashedFile | OSError | _Changed | None = small
        if small is None:
            try:
                result = hash_consistent(scan.disk_path(found.rel), cache, progress=progress)
            except OSError as exc:
                result = exc
        if small is None or isinstance(result, (OSError, _Changed)):
            progress.count_rest(found.size)
        else:
            progress.count_small(found.size)
        if isinstance(result, OSError):
            if "/" not in found.rel:  # a PATH given by name
                raise StorageError(f"cannot read {display_path(found.rel)}: {_why(result)}")
            scan.skip(found.rel, _why(result))
            continue
        if not isinstance(result, HashedFile):  # kept changing
            if "/" not in found.rel:
                raise StorageError(
                    f"{display_path(scan.disk_path(found.rel))} {CHANGED_REASON}: "
                    "send it again when it is no longer being written"
                )
            scan.skip(found.rel, CHANGED_REASON)
            continue
        st = result.st
        at = 2 if result.is_cached else 0
        counts[at] += 1
        counts[at + 1] += st.st_size
        blobs.add(result.root, found.rel, result.outboard)
        entries.append(_entry(found, st, result.root))
    progress.flush()
    if not entries and not scan.empty_dirs and not scan.links:
        raise UsageError(f"nothing to send: every item in {display_path(scan.name)} was skipped")
    manifest = Manifest.folder(
        scan.name,
        entries,
        scan.empty_dirs,
        has_several_items=scan.has_several_items,
        links=scan.links,
    )
    manifest_bytes = encode_manifest(manifest)
    return Collection(
        manifest=manifest,
        manifest_bytes=manifest_bytes,
        manifest_outboard=Outboard.from_bytes(manifest_bytes),
        blobs=blobs,
        skipped=scan.skipped,
        stats=ImportStats(*counts),
    )


class _Progress:
    """Hands hashed byte counts to a progress callback: a large file's as
    it is read, small files' gathered (a call per file would cost more than
    hashing a small file). A file read again (it changed) counts once."""

    def __init__(self, on_bytes: ProgressCallback | None) -> None:
        self.on_bytes = on_bytes
        self.unreported = 0  # small files' bytes not yet handed on
        self.read = 0  # of the current file, in this read
        self.shown = 0  # of the current file, handed on

    def file_started(self) -> None:
        self.read = 0
        self.shown = 0

    def file_restarted(self) -> None:
        self.read = 0

    def count(self, chunk: int) -> None:
        self.read += chunk
        if self.read > self.shown:
            if self.on_bytes is not None:
                self.on_bytes(self.read - self.shown)
            self.shown = self.read

    def count_small(self, size: int) -> None:
        self.unreported += size
        if self.unreported >= IMPORT_READ_BYTES:
            self.flush()

    def count_rest(self, size: int) -> None:
        """A file's bytes not yet counted (cached, skipped, or shrunk)."""
        if size > self.shown:
            if self.on_bytes is not None:
                self.on_bytes(size - self.shown)
            self.shown = size

    def flush(self) -> None:
        if self.on_bytes is not None and self.unreported:
            self.on_bytes(self.unreported)
        self.unreported = 0
