"""The metadata a received file gets: permission bits and modification time.

Every path a file reaches (``Store.place`` for files larger than one leaf,
each further copy of the same content, and ``batch.write_files`` for small
files) asks one :class:`MetadataPolicy`, and applies it to the temporary
file before the rename, so that a file under its final name has its final
metadata.

Rules:
- Times (default, ``keep_times``): the sender's modification time, to the
  nanosecond, when the manifest knows it (a version 1 manifest does not);
  the access time is the time of writing. ``--no-times``: the file keeps
  the time it was written.
- Permissions (default, ``keep_perms``): the sender's permission bits (never
  setuid, setgid or sticky: the manifest does not carry them) masked by the
  receiver's umask, as ``scp -p`` does. ``--no-perms``: a new file gets the
  mode any new file gets here, ``0o666`` masked by the umask, with the
  executable bits (masked too) when the sender's file is executable (what
  the receivers of version 1 manifests did); a file that replaces an
  existing regular file keeps that file's permission bits.
- A file already in place with the same content (``--update``) whose time
  or mode differs from what the policy would give it is fixed in place
  (``needs_fix``, ``fix_in_place``), never written again; as ``rsync -a``.
  Only what the policy keeps is compared: with ``--no-times`` a different
  time is not a difference.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from p2pcp.blobs.collection import MODE_BITS, Entry

# The bits a new file starts from before the umask: open(2)'s usual 0o666,
# and 0o777 for an executable (what cp and the version 1 receivers gave it).
NEW_FILE_MODE = 0o666
NEW_EXECUTABLE_MODE = 0o777


def _read_umask() -> int:
    # Reading the umask means setting it; do it once, at import, before any
    # thread runs (another thread creating a file meanwhile would get 0o022).
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


UMASK = _read_umask()


@dataclass(frozen=True)
class MetadataPolicy:
    """What metadata a received file gets (the module docstring's rules)."""

    keep_times: bool = True
    """Set the sender's modification time (``--no-times``: False)."""
    keep_perms: bool = True
    """Set the sender's permission bits, masked (``--no-perms``: False)."""
    umask: int = UMASK
    """The receiver's umask, read once."""

    @property
    def needs_existing_mode(self) -> bool:
        """Whether ``mode_for`` needs the mode of the file being replaced."""
        return not self.keep_perms

    def mode_for(self, entry: Entry, existing_mode: int | None = None) -> int:
        """The permission bits for ``entry``'s file; ``existing_mode``: the
        bits of the regular file it replaces, if any (used only with
        ``--no-perms``)."""
        if self.keep_perms:
            return entry.mode & MODE_BITS & ~self.umask
        if existing_mode is not None:
            return existing_mode & MODE_BITS
        base = NEW_EXECUTABLE_MODE if entry.is_executable else NEW_FILE_MODE
        return base & ~self.umask

    def mtime_for(self, entry: Entry) -> int | None:
        """The modification time to set (ns), or None to leave it."""
        return entry.mtime_ns if self.keep_times else None

    def apply_to_fd(self, fd: int, entry: Entry, existing_mode: int | None = None) -> None:
        """Set the metadata on an open file (the temporary name's)."""
        os.fchmod(fd, self.mode_for(entry, existing_mode))
        mtime_ns = self.mtime_for(entry)
        if mtime_ns is not None:
            os.utime(fd, ns=(time.time_ns(), mtime_ns))

    def apply_to_path(self, path: Path, entry: Entry, existing_mode: int | None = None) -> None:
        """Set the metadata on a file we just wrote (never a link: it is ours)."""
        os.chmod(path, self.mode_for(entry, existing_mode))
        mtime_ns = self.mtime_for(entry)
        if mtime_ns is not None:
            os.utime(path, ns=(time.time_ns(), mtime_ns))

    def existing_mode(self, dest: str | Path, dir_fd: int | None = None) -> int | None:
        """The permission bits of the regular file at ``dest`` that a new
        file will replace (None: nothing, or not a regular file there);
        looked up only when the policy needs them."""
        if not self.needs_existing_mode:
            return None
        with contextlib.suppress(OSError):
            st = os.lstat(dest, dir_fd=dir_fd)
            if stat.S_ISREG(st.st_mode):
                return stat.S_IMODE(st.st_mode)
        return None

    def needs_fix(self, st: os.stat_result, entry: Entry) -> tuple[bool, bool]:
        """(time differs, mode differs) of a file already in place with
        ``entry``'s content, counting only what this policy keeps."""
        mtime_ns = self.mtime_for(entry)
        is_time_off = mtime_ns is not None and st.st_mtime_ns != mtime_ns
        is_mode_off = self.keep_perms and stat.S_IMODE(st.st_mode) != self.mode_for(entry)
        return is_time_off, is_mode_off

    def fix_in_place(self, path: Path, entry: Entry) -> tuple[bool, bool]:
        """Give the regular file at ``path`` (never through a link) the
        metadata this policy wants for ``entry``; returns what was changed,
        (time, mode). Raises OSError."""
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return False, False
            is_time_off, is_mode_off = self.needs_fix(st, entry)
            if is_mode_off:
                os.fchmod(fd, self.mode_for(entry))
            mtime_ns = self.mtime_for(entry)
            if is_time_off and mtime_ns is not None:
                os.utime(fd, ns=(st.st_atime_ns, mtime_ns))
            return is_time_off, is_mode_off
        finally:
            os.close(fd)
