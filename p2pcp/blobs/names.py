"""Checks on untrusted relative paths (from a peer's manifest), and how a
path is shown in a message.

The manifest rules refuse only what is unsafe on ANY system, so that a
sender can offer every name its file system holds. The receiver applies
them before it creates anything; what its own file system cannot hold
(case or normalization twins on a case-insensitive or normalizing file
system, bytes that are not UTF-8 where names must be) is a property of
that file system, not of the manifest, and the receiver's store checks it
against the output folder.

A path is a ``str`` whose bytes (:func:`path_bytes`: UTF-8, with
surrogateescape'd bytes put back) are the name on disk. It is accepted
only if it is a non-empty, ``/``-separated, relative path (no leading
``/``) of at most ``MAX_PATH_BYTES`` bytes, free of NUL, whose components
are all non-empty, not ``.`` or ``..``, and at most ``MAX_COMPONENT_BYTES``
bytes. Everything else is a legal name: case twins (``README`` beside
``readme``), NFC/NFD twins, backslashes, ``c:notes.txt``, newlines and
other control characters, bytes that are not UTF-8.

A set of paths is accepted only if no two are equal and no path is also a
folder of another (a name cannot be a file and a folder at once).

Every refusal raises :class:`UnsafePathError` with one line naming the path
as :func:`display_path` shows it, so a control character in a name never
reaches a terminal raw.

A symbolic link's target is any text (the manifest checks only its length
and NUL); :func:`link_escape_reason` is the receiver's safety rule for it:
a target that is absolute, or that, resolved lexically from the link's
folder, steps above the link's top-level item, is unsafe. Resolving
follows the manifest's own links met on the way (``d/l -> deep/up/..``
where ``d/deep/up -> ..`` leaves ``d`` although its text alone stays
inside), at most MAX_LINK_HOPS of them, as the kernel would.
"""

from __future__ import annotations

import itertools
import unicodedata
from collections import deque
from collections.abc import Iterable, Mapping

from p2pcp.core.errors import UnsafePathError

# Linux NAME_MAX (and the common limit of ext4, APFS, NTFS in UTF-16 units).
MAX_COMPONENT_BYTES = 255
# Linux PATH_MAX: a longer relative path cannot be opened in one call anyway.
MAX_PATH_BYTES = 4096
# Links followed while resolving one target: Linux's limit (ELOOP).
MAX_LINK_HOPS = 40
# How much of a path a message shows: a terminal line, with room for the
# words around it.
_SHOWN_CHARS = 100


# Characters that move the cursor or reorder text without being control
# characters (Unicode Cc): line and paragraph separators, and the bidi
# overrides and isolates that make a name read differently than it is.
_INVISIBLE = frozenset("\u2028\u2029\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e") | {
    chr(code) for code in range(0x2066, 0x206A)
}
_SHORT_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\"}


def _shown_char(char: str) -> str:
    """One character as a message shows it: printable characters as they
    are, a backslash doubled (so an escape is never ambiguous), control
    characters and the invisible ones above escaped, and a byte that was
    not UTF-8 (surrogateescape's U+DC80..U+DCFF) as ``\\xNN``."""
    short = _SHORT_ESCAPES.get(char)
    if short is not None:
        return short
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    if unicodedata.category(char) in ("Cc", "Cs") or char in _INVISIBLE:
        return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
    return char


def display_path(path: str) -> str:
    """``path`` for a message: one line, escaped as :func:`_shown_char`
    says, and at most ``_SHOWN_CHARS`` characters (a long path keeps its
    start and its end, where the file name is, around ``...``)."""
    pieces = [_shown_char(char) for char in path]
    if sum(len(piece) for piece in pieces) <= _SHOWN_CHARS:
        return "".join(pieces)
    budget = (_SHOWN_CHARS - 3) // 2
    head: list[str] = []
    used = 0
    for piece in pieces:
        if used + len(piece) > budget:
            break
        head.append(piece)
        used += len(piece)
    tail: list[str] = []
    used = 0
    for piece in reversed(pieces[len(head) :]):
        if used + len(piece) > budget:
            break
        tail.append(piece)
        used += len(piece)
    return "".join(head) + "..." + "".join(reversed(tail))


def case_fold(path: str) -> str:
    """``path`` as a case-insensitive file system compares it (Unicode
    case folding only), for the receiver's collision checks."""
    return path.casefold()


def nfc(path: str) -> str:
    """``path`` as a normalizing file system compares it (NFC only)."""
    return unicodedata.normalize("NFC", path)


def _bytes_of(path: str) -> bytes | str:
    """The bytes ``path`` names, or why it names none."""
    try:
        data = path.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return "holds a character that is no byte sequence"
    if data.decode("utf-8", "surrogateescape") != path:
        return "escapes bytes that are valid UTF-8"
    return data


def path_bytes(path: str) -> bytes:
    """The bytes a path names (UTF-8, with surrogateescape'd bytes put back).

    Raises UnsafePathError for a string no file system name decodes to: a
    lone surrogate outside U+DC80..U+DCFF, or escaped bytes that form valid
    UTF-8 (two strings must never stand for the same bytes)."""
    data = _bytes_of(path)
    if isinstance(data, str):
        raise _refuse(path, data)
    return data


def _refuse(path: str, reason: str) -> UnsafePathError:
    return UnsafePathError(f"unsafe path in manifest '{display_path(path)}': {reason}")


def unsafe_reason(path: str) -> str | None:
    """Why ``path`` is not a safe relative path (a few words), or None if it is."""
    if not isinstance(path, str):
        return f"a path must be a string, not {type(path).__name__}"
    if not path:
        return "empty path"
    if len(path) > MAX_PATH_BYTES:  # each character is at least one byte
        return f"longer than {MAX_PATH_BYTES} bytes"
    data = _bytes_of(path)
    if isinstance(data, str):
        return data
    if len(data) > MAX_PATH_BYTES:
        return f"longer than {MAX_PATH_BYTES} bytes"
    if data.startswith(b"/"):
        return "absolute path"
    if b"\x00" in data:
        return "contains NUL"
    for component in data.split(b"/"):
        if not component:
            return "empty component"
        if component in (b".", b".."):
            return f"{component.decode()!r} component"
        if len(component) > MAX_COMPONENT_BYTES:
            return f"a component is longer than {MAX_COMPONENT_BYTES} bytes"
    return None


def check_relative_path(path: str) -> str:
    """Return ``path`` unchanged if it is a safe relative path, else raise."""
    reason = unsafe_reason(path)
    if reason is not None:
        if not isinstance(path, str):
            raise UnsafePathError(reason)
        raise _refuse(path, reason)
    return path


def check_manifest_paths(paths: Iterable[str]) -> None:
    """Check each path, then the set: no path listed twice, none that is
    also a folder of another.

    Both set rules are found between neighbours once the paths are sorted
    by their bytes with ``/`` counted as the smallest byte (NUL, which no
    path holds): a folder ``a`` then sorts right before ``a/...``, so the
    work is one sort, whatever the depth of the tree."""
    keyed = []
    for path in paths:
        check_relative_path(path)
        keyed.append((path_bytes(path).replace(b"/", b"\x00"), path))
    keyed.sort()
    for (key, path), (next_key, next_path) in itertools.pairwise(keyed):
        if key == next_key:
            raise _refuse(path, "listed twice")
        if next_key.startswith(key + b"\x00"):
            raise _refuse(path, f"is also a folder of '{display_path(next_path)}'")


def link_escape_reason(
    path: str, target: str, links: Mapping[str, str] | None = None
) -> str | None:
    """Why the link at manifest ``path`` (a checked path with at least two
    components) pointing at ``target`` would reach outside its top-level
    item (a few words), or None when it stays inside.

    Lexical: each ``..`` leaves a folder, ``.`` and empty components do
    nothing; stepping above the item at any point is an escape (even if a
    later component comes back). A component that is itself one of
    ``links`` (manifest path -> target) and has more components after it
    is replaced by that link's target, resolved from that link's folder."""
    if target.startswith("/"):
        return "its target is absolute"
    item, _, inside = path.partition("/")
    folder = inside.split("/")[:-1]
    pending = deque(target.split("/"))
    hops = 0
    while pending:
        part = pending.popleft()
        if part in ("", "."):
            continue
        if part == "..":
            if not folder:
                return f"its target leaves '{display_path(item)}'"
            folder.pop()
            continue
        folder.append(part)
        if links is None or not any(rest not in ("", ".") for rest in pending):
            continue
        hop = links.get("/".join([item, *folder]))
        if hop is None:
            continue
        hops += 1
        if hops > MAX_LINK_HOPS:
            return "its target goes through too many links"
        if hop.startswith("/"):
            return "its target goes through a link whose target is absolute"
        folder.pop()
        pending.extendleft(reversed(hop.split("/")))
    return None
