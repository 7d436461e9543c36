"""Checks on untrusted relative paths (from a peer's manifest).

Transfer-agnostic rules; the receiver applies them before it creates
anything, and the sender should apply them before it offers a folder (so a
folder the receiver would refuse fails early, with a clear message).

A path is accepted only if it is a non-empty, ``/``-separated, relative
path whose components are all:

- non-empty, not ``.`` or ``..``;
- free of NUL, control characters (Unicode category Cc: C0, DEL, C1),
  backslashes, and lone surrogates (the path must be valid UTF-8);
- not starting with a drive letter (``C:``), which Windows reads as a drive;
- at most ``MAX_COMPONENT_BYTES`` UTF-8 bytes; the whole path at most
  ``MAX_PATH_BYTES``.

A set of paths is accepted only if, after Unicode NFC normalization and case
folding, no two paths are equal and no path is also a directory prefix of
another (a name cannot be a file and a folder at once). Case-insensitive,
normalizing file systems (macOS, Windows) would otherwise merge two entries
into one file. Windows-reserved names (``CON``, ``NUL``...) are not refused:
they are only a problem on Windows, where the writer must check them.

Every refusal raises :class:`UnsafePathError` with one line naming the path.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from p2pcp.core.errors import UnsafePathError

# Linux NAME_MAX (and the common limit of ext4, APFS, NTFS in UTF-16 units).
MAX_COMPONENT_BYTES = 255
# Linux PATH_MAX: a longer relative path cannot be opened in one call anyway.
MAX_PATH_BYTES = 4096
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


def describe_path(path: str) -> str:
    """``repr`` of ``path``, truncated for a one-line message."""
    shown = repr(path)
    if len(shown) > _SHOWN_CHARS:
        shown = shown[: _SHOWN_CHARS - 3] + "..."
    return shown


def path_bytes(path: str) -> bytes:
    """The bytes a path names (UTF-8, with surrogateescape'd bytes put back).

    Raises UnsafePathError for a string no file system name decodes to: a
    lone surrogate outside U+DC80..U+DCFF, or escaped bytes that form valid
    UTF-8 (two strings must never stand for the same bytes)."""
    try:
        data = path.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise _refuse(path, "holds a character that is no byte sequence") from None
    if data.decode("utf-8", "surrogateescape") != path:
        raise _refuse(path, "escapes bytes that are valid UTF-8")
    return data


def _refuse(path: str, reason: str) -> UnsafePathError:
    return UnsafePathError(f"unsafe path in manifest {describe_path(path)}: {reason}")


def _is_drive_letter(component: str) -> bool:
    return (
        len(component) >= 2
        and component[1] == ":"
        and component[0].isascii()
        and (component[0].isalpha())
    )


def check_relative_path(path: str) -> str:
    """Return ``path`` unchanged if it is a safe relative path, else raise."""
    if not isinstance(path, str):
        raise UnsafePathError(f"path must be a string, not {type(path).__name__}")
    if not path:
        raise _refuse(path, "empty path")
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        raise _refuse(path, "not valid UTF-8") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise _refuse(path, f"longer than {MAX_PATH_BYTES} bytes")
    if path.startswith("/"):
        raise _refuse(path, "absolute path")
    for char in path:
        if char == "\x00":
            raise _refuse(path, "contains NUL")
        if char == "\\":
            raise _refuse(path, "contains a backslash")
        if unicodedata.category(char) == "Cc":
            raise _refuse(path, "contains a control character")
    for component in path.split("/"):
        if not component:
            raise _refuse(path, "empty component")
        if component in (".", ".."):
            raise _refuse(path, f"{component!r} component")
        if _is_drive_letter(component):
            raise _refuse(path, "starts like a drive letter")
        if len(component.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise _refuse(path, f"a component is longer than {MAX_COMPONENT_BYTES} bytes")
    return path


def fold_path(path: str) -> str:
    """The form two paths share if a case-insensitive, normalizing file
    system would treat them as one: NFC, case-folded, NFC again."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", path).casefold())


def check_manifest_paths(paths: Iterable[str]) -> None:
    """Check each path, then the set: no duplicates, no case-fold or
    normalization collisions, no path that is a folder of another path."""
    seen: dict[str, str] = {}
    prefixes: dict[str, str] = {}
    for path in paths:
        check_relative_path(path)
        folded = fold_path(path)
        other = seen.get(folded)
        if other is not None:
            if other == path:
                raise _refuse(path, "listed twice")
            raise _refuse(path, f"collides with {describe_path(other)} (case or normalization)")
        seen[folded] = path
        parts = folded.split("/")
        for end in range(1, len(parts)):
            prefixes.setdefault("/".join(parts[:end]), path)
    for folded, path in seen.items():
        holder = prefixes.get(folded)
        if holder is not None:
            raise _refuse(path, f"is also a folder of {describe_path(holder)}")
