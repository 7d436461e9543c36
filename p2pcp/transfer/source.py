"""The sender's side of the files: walking the paths, hashing them.

``import_paths`` turns the PATHs given to ``p2pcp send`` into a collection:
a manifest blob plus one blob per distinct file content, all committed to by
the manifest's root hash. Hashing reads each file once with ``readinto``
into one reused buffer (FACTS.md: never ``f.read()`` a whole file).

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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from p2pcp.blobs.collection import MODE_BITS, Entry, Manifest, encode_manifest
from p2pcp.blobs.names import display_path, unsafe_reason
from p2pcp.blobs.tree import Outboard, TreeBuilder
from p2pcp.core.defaults import IMPORT_READ_BYTES
from p2pcp.core.errors import P2pcpError, StorageError, UsageError

ProgressCallback = Callable[[int], None]


@dataclass
class SourceBlob:
    """A file on disk that the sender serves, with its outboard tree."""

    path: Path
    outboard: Outboard


@dataclass
class Collection:
    manifest: Manifest
    manifest_bytes: bytes
    manifest_outboard: Outboard
    blobs: dict[bytes, SourceBlob]
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


@dataclass
class _Found:
    rel: str
    path: Path
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

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def skip(self, rel: str, reason: str, error: type[P2pcpError] = StorageError) -> None:
        """Report ``rel`` as skipped, or raise ``error`` when strict."""
        if self.is_strict:
            raise error(f"cannot send {display_path(rel)}: {reason}")
        self.skipped.append(f"{display_path(rel)} ({reason})")


def _found(rel: str, path: Path, st: os.stat_result) -> _Found:
    return _Found(rel, path, st.st_size, stat.S_IMODE(st.st_mode) & MODE_BITS, st.st_mtime_ns)


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
                scan.files.append(_found(rel, Path(entry.path), st))
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
        if stat.S_ISDIR(st.st_mode):
            _walk(path, name, scan)
        elif stat.S_ISREG(st.st_mode):
            scan.files.append(_found(name, path, st))
        else:
            raise UsageError(f"cannot send {shown}: not a regular file or folder")
    scan.name = names[0] if len(names) == 1 else f"{len(names)} items"
    scan.has_several_items = len(names) > 1
    return scan


def import_scan(scan: Scan, on_bytes: ProgressCallback | None = None) -> Collection:
    """Hash what a scan found into a collection. Blocking: run it in a thread.

    A file inside a folder that cannot be read is skipped (``scan.skip``);
    its bytes still count towards ``on_bytes``, so progress ends at the
    total the scan announced."""
    entries: list[Entry] = []
    blobs: dict[bytes, SourceBlob] = {}
    for found in scan.files:
        read = 0

        def count(chunk: int) -> None:
            nonlocal read
            read += chunk
            if on_bytes is not None:
                on_bytes(chunk)

        # The sender needs only the tree; the receiver computes and reports
        # the standard BLAKE3 of what it verified.
        try:
            outboard = _hash(found.path, count, with_blake3=False)
        except OSError as exc:
            if "/" not in found.rel:  # a PATH given by name
                raise StorageError(f"cannot read {display_path(found.rel)}: {_why(exc)}") from None
            scan.skip(found.rel, _why(exc))
            if on_bytes is not None and found.size > read:
                on_bytes(found.size - read)
            continue
        if outboard.size != found.size:
            raise StorageError(
                f"{display_path(str(found.path))} changed size while it was being read"
            )
        root = bytes(outboard.root)
        blobs.setdefault(root, SourceBlob(found.path, outboard))
        entries.append(Entry(found.rel, found.size, root, found.mode, found.mtime_ns))
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
