"""Collections: the manifest blob that names the files of one send.

A send is a manifest (itself a blob, fetched and verified like any other)
followed by the blobs of its files. The manifest lists, for a single file,
one entry whose path is the top-level name; for a folder, every file as
``name/sub/file`` with its size, content hash, permission bits and
modification time, every empty folder (``name`` itself when the whole
folder is empty), and, when the sender asked for them (``send --links``),
the symbolic links inside its folders with their targets.

Paths are ``str`` holding the file system's bytes decoded as UTF-8 with
``surrogateescape``: a name that is not UTF-8 travels byte for byte, and
``path.encode("utf-8", "surrogateescape")`` gives the original bytes back.
Those bytes are what the wire carries and what the order is taken over.

Wire layout, manifest format version 2 (``docs/PROTOCOL.md``, "Blobs"),
all integers little-endian, nothing in between and nothing after:

    magic         8 bytes   b"P2PCPMAN"
    version       u8        2
    flags         u8        bit 0: several top-level items (see below);
                            bit 1: a text message (see below);
                            bit 2: a links section follows the dirs;
                            other bits must be 0
    name          u16 length || bytes (one path component)
    file count    u32
    dir count     u32
    files         file count times:
                    u16 path length || path bytes
                    u64 size || 32-byte root
                    u16 mode (permission bits; bits above 0o777 must be 0)
                    i64 mtime_ns (ns since the epoch; -2**63: unknown)
    empty dirs    dir count times: u16 path length || path bytes
    links         only with flag bit 2:
                  u32 link count (at least 1), then that many times:
                    u16 path length || path bytes
                    u16 target length || target bytes

A manifest without links has bit 2 clear and no links section, so it is
byte for byte what this version wrote before links existed, and an older
receiver reads it; an older receiver refuses one with links as an unknown
flag ("update p2pcp").

Version 1 (still decoded, never written) differs only in the file tail,
``u64 size || 32-byte root || u8 flags`` (bit 0: executable, others 0),
read as mode 0o755 or 0o644 and an unknown mtime; its paths were UTF-8.

With flag bit 0 clear, every path is the name (a single file, or the empty
top folder) or starts with ``name/``. With it set (``send a.txt photos``),
``name`` is only a label and each path's first component is one top-level
item; the name rules below then apply per item.

With flag bit 1 set (``send --text``) the manifest is a single file of at
most MAX_TEXT_BYTES whose content is a UTF-8 message: a receiver shows it
and writes nothing to disk. Bits 0 and 1 are never set together.

A link (:class:`Link`) is a path and the link's target text, exactly the
bytes ``readlink`` gave the sender (surrogateescape'd like paths): not
empty, at most MAX_PATH_BYTES bytes, no NUL. A link is never a top-level
item (its path has at least two components). Whether a receiver creates it
(a target that is absolute or leaves the received item is refused unless
the user allows it) is the receiver's rule, not the format's:
:func:`~p2pcp.blobs.names.link_escape_reason`.

Invariants checked by :func:`decode_manifest` (and by
:func:`encode_manifest`, so we never write what a receiver refuses):
file paths strictly ascending by their bytes, dir paths likewise, link
paths likewise; the paths placed under the name as above; limits below;
then :func:`~p2pcp.blobs.names.check_manifest_paths` on all paths
together, files, dirs and links (only what is unsafe on any system: see
``names``; so a link's path is never also a file's or a folder's, and no
path lies inside a link's).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from p2pcp.blobs.names import (
    MAX_COMPONENT_BYTES,
    MAX_PATH_BYTES,
    check_manifest_paths,
    check_relative_path,
    display_path,
    path_bytes,
)
from p2pcp.blobs.tree import HASH_BYTES, MAX_SIZE
from p2pcp.core.errors import (
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    UnsafePathError,
)

MANIFEST_MAGIC = b"P2PCPMAN"
# The version encode_manifest writes; decode_manifest also reads version 1.
MANIFEST_VERSION = 2
MANIFEST_VERSION_1 = 1
# Permission bits only: setuid, setgid and sticky never travel (a received
# file must not gain privileges), and file types are implied by the format.
MODE_BITS = 0o777
DEFAULT_MODE = 0o644
# Files plus empty folders plus links. A million covers large source trees and photo
# libraries, and decoding that many entries takes ~1 s and a few hundred MB
# of Python objects: the most a receiver should commit before writing a byte.
MAX_MANIFEST_ENTRIES = 1_000_000
# 1,000,000 entries of 52 fixed bytes plus a path averaging ~215 bytes. The
# manifest is held in memory once, verified against the ticket's root
# before it is decoded; a larger one is refused unread.
MAX_MANIFEST_BYTES = 256 * 1024 * 1024

_HEAD = struct.Struct("<8sBB")
_COUNTS = struct.Struct("<II")
_U16 = struct.Struct("<H")
_FILE_TAIL = struct.Struct(f"<Q{HASH_BYTES}sHq")
_FILE_TAIL_V1 = struct.Struct(f"<Q{HASH_BYTES}sB")
_EXECUTABLE_V1 = 0x01
_SEVERAL_ITEMS = 0x01
_TEXT = 0x02
_LINKS = 0x04
# A text message is shown, not stored: 1 MiB is pages of prose, and bounds
# what a receiver holds in memory to print it. Larger is a file or a pipe.
MAX_TEXT_BYTES = 1024 * 1024
# The i64 that stands for "modification time unknown".
_UNKNOWN_MTIME = -(2**63)
_MIN_DIR_BYTES = _U16.size + 1
_LINK_COUNT = struct.Struct("<I")
_MIN_LINK_BYTES = 2 * (_U16.size + 1)
# A link's target: Linux PATH_MAX, the most readlink returns (u16 length).
MAX_LINK_TARGET_BYTES = MAX_PATH_BYTES


@dataclass(frozen=True, slots=True)
class Entry:
    """One file: ``path`` (relative, ``/``-separated, starting with the
    manifest's name), ``size`` in bytes, content ``root`` hash, permission
    bits ``mode`` (``st_mode & 0o777``) and ``mtime_ns`` (ns since the
    epoch, None when unknown)."""

    path: str
    size: int
    root: bytes
    mode: int = DEFAULT_MODE
    mtime_ns: int | None = None

    @property
    def is_executable(self) -> bool:
        return bool(self.mode & 0o100)


@dataclass(frozen=True, slots=True)
class Link:
    """One symbolic link: ``path`` (relative, as a file's) and ``target``,
    the link's text as ``os.readlink`` gives it (surrogateescape'd bytes),
    never resolved by the sender."""

    path: str
    target: str


def _sort_key(path: str) -> bytes:
    """The wire order's key; a path that has no bytes (a lone surrogate
    that no file system produces) sorts somewhere, and the check refuses it."""
    try:
        return path.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogatepass")


@dataclass(frozen=True, slots=True)
class Manifest:
    """The files and empty folders of one send under the top-level ``name``."""

    files: tuple[Entry, ...]
    empty_dirs: tuple[str, ...]
    name: str
    has_several_items: bool = False
    is_text: bool = False
    """A text message (flag bit 1): one file, at most MAX_TEXT_BYTES, UTF-8."""
    links: tuple[Link, ...] = ()
    """Symbolic links sent as links (flag bit 2), in wire order."""

    @classmethod
    def single_file(
        cls,
        name: str,
        size: int,
        root: bytes,
        mode: int = DEFAULT_MODE,
        mtime_ns: int | None = None,
    ) -> Manifest:
        return cls((Entry(name, size, root, mode, mtime_ns),), (), name)

    @classmethod
    def folder(
        cls,
        name: str,
        files: Iterable[Entry],
        empty_dirs: Iterable[str],
        *,
        has_several_items: bool = False,
        links: Iterable[Link] = (),
    ) -> Manifest:
        """A folder send (or several items), entries sorted into wire order.

        An empty folder: no files and ``empty_dirs=[name]``. Several items:
        ``name`` is a label, paths start with each item's own name.
        """
        return cls(
            tuple(sorted(files, key=lambda entry: _sort_key(entry.path))),
            tuple(sorted(empty_dirs, key=_sort_key)),
            name,
            has_several_items,
            links=tuple(sorted(links, key=lambda link: _sort_key(link.path))),
        )

    @property
    def total_size(self) -> int:
        return sum(entry.size for entry in self.files)

    @property
    def is_single_file(self) -> bool:
        return (
            not self.has_several_items
            and len(self.files) == 1
            and self.files[0].path == self.name
            and not self.empty_dirs
            and not self.links
        )

    @property
    def is_dir(self) -> bool:
        return not self.is_single_file


def _shown(path: str) -> str:
    return f"'{display_path(path)}'"


def check_manifest(manifest: Manifest, error: type[ProtocolError] = RemoteProtocolError) -> None:
    """Raise ``error`` (structure) or UnsafePathError (a path) unless
    ``manifest`` obeys every rule of the module docstring."""
    name = manifest.name
    check_relative_path(name)
    if "/" in name:
        raise UnsafePathError(f"manifest name {_shown(name)} is not a single component")
    files, dirs, links = manifest.files, manifest.empty_dirs, manifest.links
    if not files and not dirs and not links:
        raise error("manifest lists nothing")
    if len(files) + len(dirs) + len(links) > MAX_MANIFEST_ENTRIES:
        raise error(f"manifest has more than {MAX_MANIFEST_ENTRIES} entries")
    prefix = "" if manifest.has_several_items else name + "/"
    is_single = len(files) == 1 and files[0].path == name and not manifest.has_several_items
    is_empty_top = not files and dirs == (name,) and not manifest.has_several_items
    previous: bytes | None = None
    for entry in files:
        path = check_relative_path(entry.path)
        if not (path.startswith(prefix) or (is_single and not dirs)):
            raise UnsafePathError(f"manifest path {_shown(path)} is not under {_shown(name)}")
        encoded = path_bytes(path)
        if previous is not None and encoded <= previous:
            raise error(f"manifest files not sorted or repeated at {_shown(path)}")
        previous = encoded
        if not (isinstance(entry.size, int) and 0 <= entry.size <= MAX_SIZE):
            raise error(f"bad size for {_shown(path)}")
        if not (isinstance(entry.root, bytes) and len(entry.root) == HASH_BYTES):
            raise error(f"bad hash for {_shown(path)}")
        if not (isinstance(entry.mode, int) and 0 <= entry.mode <= MODE_BITS):
            raise error(f"bad mode for {_shown(path)}")
        mtime_ns = entry.mtime_ns
        if mtime_ns is not None and not (
            isinstance(mtime_ns, int) and _UNKNOWN_MTIME < mtime_ns < 2**63
        ):
            raise error(f"bad modification time for {_shown(path)}")
    previous = None
    for path in dirs:
        check_relative_path(path)
        if not (path.startswith(prefix) or is_empty_top):
            raise UnsafePathError(f"manifest path {_shown(path)} is not under {_shown(name)}")
        encoded = path_bytes(path)
        if previous is not None and encoded <= previous:
            raise error(f"manifest dirs not sorted or repeated at {_shown(path)}")
        previous = encoded
    _check_links(links, prefix, error)
    check_manifest_paths(
        [entry.path for entry in files] + list(dirs) + [link.path for link in links]
    )
    if manifest.is_text and not (
        is_single and not dirs and not links and files[0].size <= MAX_TEXT_BYTES
    ):
        raise error(f"a text message is one file of at most {MAX_TEXT_BYTES} bytes")


def _check_links(links: tuple[Link, ...], prefix: str, error: type[ProtocolError]) -> None:
    """Each link inside a top-level folder, in wire order, with a target of
    1..MAX_LINK_TARGET_BYTES bytes and no NUL (the set rules are checked
    with every other path)."""
    previous: bytes | None = None
    for link in links:
        path = check_relative_path(link.path)
        if "/" not in path or not path.startswith(prefix):
            raise UnsafePathError(f"manifest link {_shown(path)} is not inside a sent folder")
        encoded = path_bytes(path)
        if previous is not None and encoded <= previous:
            raise error(f"manifest links not sorted or repeated at {_shown(path)}")
        previous = encoded
        target = link.target
        if not isinstance(target, str):
            raise error(f"bad target for link {_shown(path)}")
        try:
            target_bytes = path_bytes(target)
        except UnsafePathError:
            raise error(f"bad target for link {_shown(path)}") from None
        if not target_bytes:
            raise error(f"empty target for link {_shown(path)}")
        if len(target_bytes) > MAX_LINK_TARGET_BYTES:
            raise error(
                f"target of link {_shown(path)} is longer than {MAX_LINK_TARGET_BYTES} bytes"
            )
        if b"\x00" in target_bytes:
            raise error(f"target of link {_shown(path)} contains NUL")


def _encode_text(text: str) -> bytes:
    data = path_bytes(text)
    return _U16.pack(len(data)) + data


def encode_manifest(manifest: Manifest) -> bytes:
    """The manifest blob. Raises LocalProtocolError or UnsafePathError if the
    manifest breaks a rule (the sender should check its paths first)."""
    check_manifest(manifest, LocalProtocolError)
    # Appended to one buffer: a list of two pieces per file, joined at the
    # end, held ~4x the manifest's size at once (100,000 files: 32 MB over
    # a 7.7 MB result, the sender's peak).
    out = bytearray(
        _HEAD.pack(
            MANIFEST_MAGIC,
            MANIFEST_VERSION,
            (_SEVERAL_ITEMS if manifest.has_several_items else 0)
            | (_TEXT if manifest.is_text else 0)
            | (_LINKS if manifest.links else 0),
        )
    )
    out += _encode_text(manifest.name)
    out += _COUNTS.pack(len(manifest.files), len(manifest.empty_dirs))
    for entry in manifest.files:
        out += _encode_text(entry.path)
        mtime_ns = _UNKNOWN_MTIME if entry.mtime_ns is None else entry.mtime_ns
        out += _FILE_TAIL.pack(entry.size, entry.root, entry.mode, mtime_ns)
    for path in manifest.empty_dirs:
        out += _encode_text(path)
    if manifest.links:
        out += _LINK_COUNT.pack(len(manifest.links))
        for link in manifest.links:
            out += _encode_text(link.path)
            out += _encode_text(link.target)
    if len(out) > MAX_MANIFEST_BYTES:
        raise LocalProtocolError(f"manifest is larger than {MAX_MANIFEST_BYTES} bytes")
    return bytes(out)


class _Reader:
    __slots__ = ("_at", "_data")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self._at

    def take(self, count: int) -> bytes:
        if count > self.remaining:
            raise RemoteProtocolError("manifest is truncated")
        chunk = self._data[self._at : self._at + count]
        self._at += count
        return chunk

    def text(self, limit: int) -> str:
        (length,) = _U16.unpack(self.take(_U16.size))
        if length > limit:
            raise RemoteProtocolError(f"manifest path longer than {limit} bytes")
        # Any bytes decode (surrogateescape); what they name is checked later.
        return self.take(length).decode("utf-8", "surrogateescape")


def decode_manifest(data: bytes) -> Manifest:
    """Parse and validate a manifest blob (version 2, or the older 1);
    raises RemoteProtocolError (malformed, over a limit, unknown version)
    or UnsafePathError."""
    data = bytes(data)
    if len(data) > MAX_MANIFEST_BYTES:
        raise RemoteProtocolError(f"manifest is larger than {MAX_MANIFEST_BYTES} bytes")
    reader = _Reader(data)
    magic, version, flags = _HEAD.unpack(reader.take(_HEAD.size))
    if magic != MANIFEST_MAGIC:
        raise RemoteProtocolError("not a p2pcp manifest")
    if version not in (MANIFEST_VERSION, MANIFEST_VERSION_1):
        raise RemoteProtocolError(
            f"unsupported manifest version {version} (update p2pcp to read it)"
        )
    known_flags = _SEVERAL_ITEMS | _TEXT | (_LINKS if version == MANIFEST_VERSION else 0)
    if flags & ~known_flags:
        raise RemoteProtocolError(f"unknown manifest flags {flags} (update p2pcp to read them)")
    name = reader.text(MAX_COMPONENT_BYTES)
    file_count, dir_count = _COUNTS.unpack(reader.take(_COUNTS.size))
    if file_count + dir_count > MAX_MANIFEST_ENTRIES:
        raise RemoteProtocolError(f"manifest has more than {MAX_MANIFEST_ENTRIES} entries")
    tail = _FILE_TAIL if version == MANIFEST_VERSION else _FILE_TAIL_V1
    min_file_bytes = _U16.size + 1 + tail.size
    if file_count * min_file_bytes + dir_count * _MIN_DIR_BYTES > reader.remaining:
        raise RemoteProtocolError("manifest is truncated")
    files = []
    for _ in range(file_count):
        path = reader.text(MAX_PATH_BYTES)
        if version == MANIFEST_VERSION:
            size, root, mode, mtime_ns = tail.unpack(reader.take(tail.size))
            if mode & ~MODE_BITS:
                raise RemoteProtocolError(f"bad mode {mode:#o} for {_shown(path)}")
            files.append(
                Entry(path, size, root, mode, None if mtime_ns == _UNKNOWN_MTIME else mtime_ns)
            )
        else:
            size, root, entry_flags = tail.unpack(reader.take(tail.size))
            if entry_flags & ~_EXECUTABLE_V1:
                raise RemoteProtocolError(f"unknown flags {entry_flags} for {_shown(path)}")
            mode = 0o755 if entry_flags & _EXECUTABLE_V1 else DEFAULT_MODE
            files.append(Entry(path, size, root, mode))
    dirs = tuple(reader.text(MAX_PATH_BYTES) for _ in range(dir_count))
    links: list[Link] = []
    if flags & _LINKS:
        (link_count,) = _LINK_COUNT.unpack(reader.take(_LINK_COUNT.size))
        if not link_count:
            raise RemoteProtocolError("manifest has a links section with no links")
        if file_count + dir_count + link_count > MAX_MANIFEST_ENTRIES:
            raise RemoteProtocolError(f"manifest has more than {MAX_MANIFEST_ENTRIES} entries")
        if link_count * _MIN_LINK_BYTES > reader.remaining:
            raise RemoteProtocolError("manifest is truncated")
        for _ in range(link_count):
            path = reader.text(MAX_PATH_BYTES)
            links.append(Link(path, reader.text(MAX_LINK_TARGET_BYTES)))
    if reader.remaining:
        raise RemoteProtocolError("manifest has bytes after its last entry")
    manifest = Manifest(
        tuple(files),
        dirs,
        name,
        bool(flags & _SEVERAL_ITEMS),
        is_text=bool(flags & _TEXT),
        links=tuple(links),
    )
    check_manifest(manifest)
    return manifest
