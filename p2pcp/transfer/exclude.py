"""What a send leaves out: ``--exclude``, ``--exclude-from`` and ``--gitignore``.

Patterns are git's (gitignore syntax, through pathspec's ``GitIgnoreSpec``,
which follows git's own edge cases): ``*.tmp`` matches at any depth,
``node_modules/`` only folders, ``/build`` only at the top, ``**`` any
number of folders, ``!keep.tmp`` takes a name back, ``#`` starts a comment.

Where they apply:
- Patterns given with ``--exclude`` and ``--exclude-from`` match each path
  relative to the folder of the top-level item it belongs to, as git would
  match them from a ``.gitignore`` at the top of that item: for
  ``send photos``, ``photos/raw/a.tmp`` is matched as ``raw/a.tmp``.
- With ``--gitignore``, each ``.gitignore`` file inside a sent folder
  applies to that folder and below, with paths relative to that folder; a
  deeper one overrides an outer one (its matching pattern decides), and
  within one file the last matching pattern decides, as in git. ``.git``
  (a folder, or a worktree's file) is then left out too.
- Precedence, as ``git ls-files --exclude`` gives it: the command line's
  patterns first (the last of them that matches decides), then the
  ``.gitignore`` files from the deepest up.
- A top-level PATH itself is never excluded: the user named it.
- An excluded folder is never listed (nothing under it costs a system
  call), so, as in git, no pattern can take back a name inside it.

This module only decides; ``source._walk`` asks it about each entry before
it stats anything, and counts what was left out (excluded items are not
reported as skipped: they were asked for).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pathspec

from p2pcp.blobs.names import display_path
from p2pcp.core.errors import StorageError, UsageError

GITIGNORE_NAME = ".gitignore"
GIT_FOLDER_NAME = ".git"
# A pattern file is a list of names, never data: 1 MiB is tens of thousands
# of patterns, and bounds what a mistaken --exclude-from (a disk image)
# costs before it is refused.
MAX_PATTERN_FILE_BYTES = 1024 * 1024


def pattern_lines(data: bytes) -> list[str]:
    """The lines of a pattern file as git reads them: split on ``\\n``, a
    trailing ``\\r`` dropped, bytes that are not UTF-8 kept
    (surrogateescape, like the names they must match). Comments and blank
    lines stay: the spec skips them."""
    text = data.decode("utf-8", "surrogateescape")
    return [line.removesuffix("\r") for line in text.split("\n")]


def _compile(lines: Iterable[str], where: str) -> pathspec.GitIgnoreSpec:
    try:
        return pathspec.GitIgnoreSpec.from_lines(list(lines))
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{where}: bad pattern: {exc}") from None


def read_pattern_file(path: Path) -> list[str]:
    """``--exclude-from FILE``'s patterns; an unreadable or oversized file
    is a usage error (exit 2)."""
    shown = display_path(str(path))
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_PATTERN_FILE_BYTES + 1)
    except OSError as exc:
        reason = (exc.strerror or type(exc).__name__).lower()
        raise UsageError(f"--exclude-from {shown}: cannot read it: {reason}") from None
    if len(data) > MAX_PATTERN_FILE_BYTES:
        raise UsageError(
            f"--exclude-from {shown}: larger than {MAX_PATTERN_FILE_BYTES} bytes; "
            "is it a pattern file?"
        )
    if b"\x00" in data:
        raise UsageError(f"--exclude-from {shown}: holds NUL bytes; is it a pattern file?")
    lines = pattern_lines(data)
    _compile(lines, f"--exclude-from {shown}")
    return lines


@dataclass(frozen=True)
class ScanFilter:
    """What a scan leaves out (the module's rules). The empty filter leaves
    out nothing and costs nothing."""

    patterns: tuple[str, ...] = ()
    """``--exclude`` patterns, then the lines of ``--exclude-from``, in
    order (gitignore syntax; the last that matches decides)."""
    use_gitignore: bool = False
    """Apply the ``.gitignore`` files inside the sent folders; leave out ``.git``."""

    @classmethod
    def build(
        cls,
        excludes: Iterable[str] = (),
        exclude_from: Path | None = None,
        *,
        use_gitignore: bool = False,
    ) -> ScanFilter:
        """From the command line's options; a bad pattern or pattern file
        is a usage error."""
        patterns = list(excludes)
        _compile(patterns, "--exclude")
        if exclude_from is not None:
            patterns += read_pattern_file(exclude_from)
        return cls(tuple(patterns), use_gitignore)

    @property
    def is_active(self) -> bool:
        return bool(self.use_gitignore or any(_is_pattern(line) for line in self.patterns))

    def rules(self) -> Rules | None:
        """The rules at the top of each top-level folder (None: nothing is
        excluded, and the walk asks nothing)."""
        if not self.is_active:
            return None
        return Rules(_compile(self.patterns, "--exclude"), (), self.use_gitignore)


def _is_pattern(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


@dataclass(frozen=True)
class Rules:
    """The rules in force in one folder of a walk: the command line's spec,
    and the ``.gitignore`` specs of this folder and those above it
    (outermost first, each with its folder's path inside the item, ``""``
    at the item's top)."""

    command_line: pathspec.GitIgnoreSpec
    gitignores: tuple[tuple[str, pathspec.GitIgnoreSpec], ...]
    use_gitignore: bool

    def enter(self, folder: str, inside: str, names: Iterable[str]) -> Rules:
        """The rules for the folder at ``folder`` on disk (``inside``: its
        path inside its item, ``""`` at the top) whose entries are ``names``:
        with ``--gitignore``, its own ``.gitignore`` added. A ``.gitignore``
        that exists but cannot be read is an error (StorageError): sending
        what it would have left out is worse than stopping."""
        if not self.use_gitignore or GITIGNORE_NAME not in names:
            return self
        path = os.path.join(folder, GITIGNORE_NAME)
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_PATTERN_FILE_BYTES + 1)
        except IsADirectoryError:
            return self
        except OSError as exc:
            reason = (exc.strerror or type(exc).__name__).lower()
            raise StorageError(f"cannot read {display_path(path)}: {reason}") from None
        spec = _compile(pattern_lines(data[:MAX_PATTERN_FILE_BYTES]), display_path(path))
        return Rules(self.command_line, (*self.gitignores, (inside, spec)), True)

    def is_excluded(self, inside: str, *, is_dir: bool) -> bool:
        """Whether the entry at ``inside`` (its path inside its top-level
        item, never empty) is left out."""
        if self.use_gitignore and inside.rpartition("/")[2] == GIT_FOLDER_NAME:
            return True
        decided = self.command_line.check_file(inside + "/" if is_dir else inside).include
        if decided is not None:
            return decided
        for base, spec in reversed(self.gitignores):
            relative = inside[len(base) + 1 :] if base else inside
            decided = spec.check_file(relative + "/" if is_dir else relative).include
            if decided is not None:
                return decided
        return False
