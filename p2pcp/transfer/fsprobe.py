"""What the receiver's own file system can hold, found by asking it.

A manifest may hold names that are distinct on the sender's file system and
legal everywhere (``blobs.names``) but that the receiver's cannot keep
apart or store: ``README`` beside ``readme`` on a case-insensitive file
system (macOS, Windows, ext4 or tmpfs with casefold), ``café`` spelled in
NFC and in NFD on a normalizing one (APFS, HFS+, casefold ext4), bytes that
are not UTF-8 on one that refuses them (APFS, ZFS with utf8only). Neither
the platform nor the file system's type tells this reliably (ext4's
casefold is a per-folder attribute), so :func:`probe_folder` tries: it
creates a few names in a temporary folder inside the output folder (a new
folder inherits per-folder attributes, as the received folders will) and
removes it again.

:func:`find_unfit_names` then lists what the probed file system cannot
hold: two paths that would become one file there, a file and a folder that
would become one name, a name it refuses. Two folders that become one are
not a problem: their files land side by side (unless two of those collide,
which is reported as files).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from p2pcp.blobs.names import case_fold, display_path, nfc

# The temporary folder the probe creates inside the output folder.
PROBE_PREFIX = ".p2pcp-probe-"


@dataclass(frozen=True)
class FileSystemTraits:
    """How a file system treats names (all False: a plain POSIX file system)."""

    is_case_insensitive: bool = False
    """``name`` and ``NAME`` are one file."""
    is_normalizing: bool = False
    """The NFC and NFD spellings of a name are one file."""
    refuses_non_utf8: bool = False
    """A name whose bytes are not UTF-8 cannot be created."""


def probe_folder(folder: Path) -> FileSystemTraits:
    """Probe the file system of ``folder`` (an existing folder).

    A folder we cannot create a probe in (read-only, no permission) is taken
    for a plain file system: if anything needs writing there, the write
    itself reports why it cannot.
    """
    try:
        probe = Path(tempfile.mkdtemp(prefix=PROBE_PREFIX, dir=folder))
    except OSError:
        return FileSystemTraits()
    try:
        return FileSystemTraits(
            is_case_insensitive=_are_one_name(probe, "case-probe", "CASE-PROBE"),
            is_normalizing=_are_one_name(probe, "nf-\u00e9t\u00e9", "nf-e\u0301te\u0301"),
            refuses_non_utf8=_refuses_name(probe, "bytes-\udcff"),
        )
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def _are_one_name(folder: Path, name: str, twin: str) -> bool:
    """Whether creating ``name`` makes ``twin`` exist too."""
    try:
        (folder / name).touch(exist_ok=False)
        (folder / twin).lstat()
    except (OSError, UnicodeError):
        return False
    return True


def _refuses_name(folder: Path, name: str) -> bool:
    """Whether the file system refuses to create ``name`` (EILSEQ on APFS,
    EINVAL on casefold ext4 in strict mode). Other errors say nothing about
    names, so they count as accepted."""
    try:
        fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except UnicodeError:
        return True  # this Python cannot even spell the name's bytes
    except OSError as exc:
        return exc.errno in (errno.EILSEQ, errno.EINVAL)
    with contextlib.suppress(OSError):
        os.close(fd)
    return False


def _comparison_key(path: str, traits: FileSystemTraits) -> str:
    if traits.is_normalizing:
        path = nfc(path)
    if traits.is_case_insensitive:
        path = case_fold(path)
        if traits.is_normalizing:
            path = nfc(path)  # case folding can denormalize
    return path


def _why_one(first: str, second: str, traits: FileSystemTraits) -> str:
    if traits.is_normalizing and nfc(first) == nfc(second):
        return "this file system does not tell Unicode NFC and NFD spellings apart"
    return "this file system ignores case"


def find_unfit_names(
    files: Iterable[str], folders: Iterable[str], traits: FileSystemTraits
) -> list[str]:
    """One line per problem (paths shown with ``display_path``) that a file
    system with ``traits`` has with these manifest paths; ``folders`` are the
    empty folders (the folders holding files are found from the paths)."""
    problems: list[str] = []
    items: dict[str, bool] = {}  # path -> is a folder
    for path in files:
        items[path] = False
    for path in folders:
        items.setdefault(path, True)
    for path in list(items):
        parts = path.split("/")
        for end in range(1, len(parts)):
            items.setdefault("/".join(parts[:end]), True)
    if traits.refuses_non_utf8:
        for path, is_folder in sorted(items.items()):
            # Only the outermost such name: what is inside it is implied.
            if _has_escaped_bytes(path) and not _has_escaped_bytes(path.rpartition("/")[0]):
                kind = "folder" if is_folder else "file"
                problems.append(
                    f"the {kind} name {display_path(path)} is not UTF-8, "
                    "which this file system refuses"
                )
    if traits.is_case_insensitive or traits.is_normalizing:
        seen: dict[str, str] = {}
        for path in sorted(items):
            key = _comparison_key(path, traits)
            other = seen.setdefault(key, path)
            if other == path or (items[other] and items[path]):
                continue  # two folders that become one just share their files
            problems.append(
                f"{display_path(other)} and {display_path(path)} would be one "
                f"{'file' if not (items[other] or items[path]) else 'name'} here: "
                f"{_why_one(other, path, traits)}"
            )
    return problems


def _has_escaped_bytes(path: str) -> bool:
    """Whether ``path`` holds bytes that are not UTF-8 (surrogateescape'd)."""
    return any("\udc80" <= char <= "\udcff" for char in path)
