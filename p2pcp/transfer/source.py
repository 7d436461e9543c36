"""The sender's side of the files: walking the paths, hashing them.

``import_paths`` turns the PATHs given to ``p2pcp send`` into a collection:
a manifest blob plus one blob per distinct file content, all committed to by
the manifest's root hash. Hashing reads each file once with ``readinto``
into one reused buffer (FACTS.md: never ``f.read()`` a whole file).

Rules:
- A file is sent under its own name; a folder under its own name with its
  whole tree (sorted, so the same tree always gives the same ticket).
- Symbolic links to files are sent as the files they point to; links to
  folders are not followed (no loops, no surprises) and are reported as
  skipped, as are sockets, FIFOs and devices.
- Two PATHs with the same name are refused: they would collide on arrival.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from p2pcp.blobs.collection import Entry, Manifest, encode_manifest
from p2pcp.blobs.names import check_manifest_paths
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
    builder = TreeBuilder(with_blake3=with_blake3)
    buffer = bytearray(IMPORT_READ_BYTES)
    view = memoryview(buffer)
    try:
        with open(path, "rb", buffering=0) as handle:
            while True:
                count = handle.readinto(buffer)
                if not count:
                    break
                builder.update(view[:count])
                if on_bytes is not None:
                    on_bytes(count)
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror}") from None
    return builder.finalize()


@dataclass
class _Found:
    rel: str
    path: Path
    size: int
    mode: int
    mtime_ns: int


def _walk(top: Path, name: str, files: list[_Found], dirs: list[str], skipped: list[str]) -> None:
    try:
        entries = sorted(os.scandir(top), key=lambda e: e.name)
    except OSError as exc:
        raise StorageError(f"cannot list {top}: {exc.strerror}") from None
    if not entries:
        dirs.append(name)
        return
    for entry in entries:
        rel = f"{name}/{entry.name}"
        try:
            st = os.stat(entry.path)  # follows links to files
        except OSError:
            skipped.append(f"{rel} (broken link or unreadable)")
            continue
        if entry.is_symlink() and stat.S_ISDIR(st.st_mode):
            skipped.append(f"{rel} (link to a folder)")
        elif stat.S_ISDIR(st.st_mode):
            _walk(Path(entry.path), rel, files, dirs, skipped)
        elif stat.S_ISREG(st.st_mode):
            files.append(
                _Found(rel, Path(entry.path), st.st_size, st.st_mode & 0o777, st.st_mtime_ns)
            )
        else:
            skipped.append(f"{rel} (not a regular file)")


@dataclass
class Scan:
    """What ``scan_paths`` found: the files and empty folders to send."""

    files: list[_Found]
    empty_dirs: list[str]
    skipped: list[str]
    name: str
    has_several_items: bool = False

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)


def scan_paths(paths: list[Path]) -> Scan:
    """Find what to send, checking names as a receiver will."""
    if not paths:
        raise UsageError("nothing to send: give at least one PATH")
    scan = Scan([], [], [], "")
    names: list[str] = []
    for given in paths:
        path = Path(os.path.abspath(given))
        name = path.name
        if not name:
            raise UsageError(f"cannot send {str(given)!r}: it has no name")
        if name in names:
            raise UsageError(f"two PATHs are both named {name!r}; they would collide")
        names.append(name)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise UsageError(f"no such file or folder: {str(given)!r}") from None
        except OSError as exc:
            raise StorageError(f"cannot read {str(given)!r}: {exc.strerror}") from None
        if stat.S_ISDIR(st.st_mode):
            _walk(path, name, scan.files, scan.empty_dirs, scan.skipped)
        elif stat.S_ISREG(st.st_mode):
            scan.files.append(_Found(name, path, st.st_size, st.st_mode & 0o777, st.st_mtime_ns))
        else:
            raise UsageError(f"cannot send {str(given)!r}: not a regular file or folder")
    try:
        check_manifest_paths([f.rel for f in scan.files] + scan.empty_dirs)
    except P2pcpError as exc:
        raise UsageError(f"cannot send these names: {exc}") from None
    scan.name = names[0] if len(names) == 1 else f"{len(names)} items"
    scan.has_several_items = len(names) > 1
    return scan


def import_scan(scan: Scan, on_bytes: ProgressCallback | None = None) -> Collection:
    """Hash what a scan found into a collection. Blocking: run it in a thread."""
    entries: list[Entry] = []
    blobs: dict[bytes, SourceBlob] = {}
    for found in scan.files:
        # The sender needs only the tree; the receiver computes and reports
        # the standard BLAKE3 of what it verified.
        outboard = hash_file(found.path, on_bytes, with_blake3=False)
        if outboard.size != found.size:
            raise StorageError(f"{found.path} changed size while it was being read")
        root = bytes(outboard.root)
        blobs.setdefault(root, SourceBlob(found.path, outboard))
        entries.append(Entry(found.rel, found.size, root, found.mode, found.mtime_ns))
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
