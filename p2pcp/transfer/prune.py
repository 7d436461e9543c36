"""``receive --delete``: what it removes from the output folder, and removing it.

When: only after the whole snapshot is verified and in place (every file
finished, the empty folders made, the sender told). A receive that fails or
is interrupted before that deletes nothing, so a half-received snapshot
never costs the files it did not bring.

Scope: inside the received top-level items only. A folder item ``photos``
received into DIR: everything under ``DIR/photos`` that the manifest does
not hold as a file, a folder (empty, or the parent of anything it holds) or
a symbolic link. A single-file item: nothing. Several items: each folder
item. Nothing else in DIR, nothing outside it.

Never:
- the partial folders (``.p2pcp-partial-*``) or the file system probes
  (``.p2pcp-probe-*``), at any depth: another receive may be using them;
  a folder that holds one is kept, silently;
- through a symbolic link: every folder is opened relative to its parent's
  descriptor with ``O_NOFOLLOW``, so a link (in the manifest or not) is
  never descended, even one swapped in during the walk; a link the
  manifest does not hold is removed as a link (its target stays as it is);
- a path the manifest holds: on a file system that ignores case or Unicode
  normalization, a name on disk that is not spelled as in the manifest but
  is the same file (the same inode as the manifest's spelling) is kept.

Order: one ``scandir`` per folder, names sorted, compared against the
manifest's paths (a dict lookup each); a folder the manifest does not hold
is emptied first and removed after its contents, so folders go deepest
first. Each removal is reported as it happens (``FileDeleted``); a path
that cannot be removed is reported (``DeleteFailed``, with the reason) and
keeps its parent folders, and the walk goes on. The caller then ends the
receive with exit 1 (``LocalUpdateError``): like rsync's exit 23 for a
partial failure, a nightly backup must notice, but only after everything
else that should go is gone.

A dry run (``--dry-run``) walks the same way and removes nothing: it
reports each path it would remove (``ChangeFound``, ``Change.DELETE``).

Cost: one ``scandir`` per folder, the manifest's paths as one dict, and
nothing per kept file beyond a lookup: the walk must stay cheap beside the
receive of 100,000 files.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from p2pcp.blobs.collection import Manifest
from p2pcp.core.defaults import PARTIAL_DIR_PREFIX
from p2pcp.transfer import events
from p2pcp.transfer.events import LocalKind
from p2pcp.transfer.fsprobe import PROBE_PREFIX

# Names never removed nor entered, wherever they are.
PROTECTED_PREFIXES = (PARTIAL_DIR_PREFIX, PROBE_PREFIX)

_OPEN_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

Report = Callable[[object], None]


@dataclass(frozen=True)
class PruneResult:
    """What a prune removed (or, dry, would remove) and what it could not."""

    removed: int = 0
    failures: tuple[events.DeleteFailed, ...] = ()


class _Kept:
    """The manifest's paths as the walk needs them: the kind of each path
    (its folders included) and the names each folder holds."""

    def __init__(self, manifest: Manifest) -> None:
        self.kinds: dict[str, LocalKind] = {}
        self.children: dict[str, list[str]] = {}
        for entry in manifest.files:
            self._add(entry.path, LocalKind.FILE)
        for link in manifest.links:
            self._add(link.path, LocalKind.LINK)
        for folder in manifest.empty_dirs:
            self._add(folder, LocalKind.DIR)

    def _add(self, path: str, kind: LocalKind) -> None:
        known = self.kinds.get(path)
        if known is not None:
            return  # a folder already added as another path's parent
        self.kinds[path] = kind
        while True:
            parent, _slash, name = path.rpartition("/")
            self.children.setdefault(parent, []).append(name)
            if not parent or parent in self.kinds:
                return
            self.kinds[parent] = LocalKind.DIR
            path = parent


def folder_items(manifest: Manifest) -> list[str]:
    """The received top-level items that are folders: the scope of
    ``--delete`` (a single-file item has nothing under it)."""
    kept = _Kept(manifest)
    return sorted(
        name
        for name in kept.children.get("", ())
        if kept.kinds.get(name) is LocalKind.DIR and not name.startswith(PROTECTED_PREFIXES)
    )


@dataclass
class _Frame:
    """A folder being walked: its descriptor, its path (the manifest's
    spelling for a kept folder), its name in its parent, and its listing
    (reversed: popped in name order)."""

    fd: int
    path: str
    name: str
    is_extraneous: bool
    listing: list[tuple[str, bool, bool, int]]
    # Something in it stays (kept, protected, or not removable): it cannot go.
    is_blocked: bool = False
    # Inode -> manifest name, for names on disk spelled otherwise (built
    # when the first name not in the manifest is met).
    aliases: dict[int, str] | None = None
    names: set[str] = field(default_factory=set)


def _list(fd: int) -> list[tuple[str, bool, bool, int]]:
    """(name, is a folder, is a link, inode) of each entry, links not
    followed, in reverse name order."""
    listing: list[tuple[str, bool, bool, int]] = []
    with os.scandir(fd) as entries:
        for item in entries:
            is_link = item.is_symlink()
            is_dir = not is_link and item.is_dir(follow_symlinks=False)
            listing.append((item.name, is_dir, is_link, item.inode()))
    listing.sort(reverse=True)
    return listing


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


class _Walk:
    def __init__(self, manifest: Manifest, report: Report, *, is_dry_run: bool) -> None:
        self.kept = _Kept(manifest)
        self.report = report
        self.is_dry_run = is_dry_run
        self.removed = 0
        self.failures: list[events.DeleteFailed] = []

    def fail(self, path: str, kind: LocalKind, exc: OSError) -> None:
        failure = events.DeleteFailed(path, kind, _reason(exc))
        self.failures.append(failure)
        self.report(failure)

    def _removed(self, path: str, kind: LocalKind) -> None:
        self.removed += 1
        if self.is_dry_run:
            self.report(events.ChangeFound(events.Change.DELETE, path, kind=kind))
        else:
            self.report(events.FileDeleted(path, kind))

    def _remove(self, frame: _Frame, name: str, path: str, kind: LocalKind) -> bool:
        """Remove ``name`` of ``frame`` (a dry run only reports it)."""
        if not self.is_dry_run:
            try:
                if kind is LocalKind.DIR:
                    os.rmdir(name, dir_fd=frame.fd)
                else:
                    os.unlink(name, dir_fd=frame.fd)
            except FileNotFoundError:
                return True  # gone already: nothing to report
            except OSError as exc:
                self.fail(path, kind, exc)
                return False
        self._removed(path, kind)
        return True

    def _open(
        self, parent: _Frame, name: str, path: str, *, is_extraneous: bool, is_item: bool = False
    ) -> _Frame | None:
        try:
            fd = os.open(name, _OPEN_FOLDER, dir_fd=parent.fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if is_item and exc.errno in (errno.ELOOP, errno.ENOTDIR):
                return None  # not a folder (the plan refuses that): nothing under it
            self.fail(path, LocalKind.DIR, exc)
            return None
        try:
            listing = _list(fd)
        except OSError as exc:
            os.close(fd)
            self.fail(path, LocalKind.DIR, exc)
            return None
        return _Frame(fd, path, name, is_extraneous, listing)

    def _manifest_name(self, frame: _Frame, name: str, inode: int) -> str | None:
        """The manifest's name for entry ``name`` of a kept folder, or None
        when the manifest does not hold it."""
        if f"{frame.path}/{name}" in self.kept.kinds:
            return name
        if frame.aliases is None:
            frame.aliases = {}
            listed = {item[0] for item in frame.listing} | frame.names
            for kept_name in self.kept.children.get(frame.path, ()):
                if kept_name in listed:
                    continue
                # Not listed as spelled, yet the file system may find it
                # (case or normalization): then it is that entry.
                with contextlib.suppress(OSError):
                    st = os.stat(kept_name, dir_fd=frame.fd, follow_symlinks=False)
                    frame.aliases[st.st_ino] = kept_name
        return frame.aliases.get(inode)

    def item(self, out_fd: int, name: str) -> None:
        """Walk the folder item ``name`` of the output folder."""
        root = _Frame(out_fd, "", "", False, [])
        first = self._open(root, name, name, is_extraneous=False, is_item=True)
        if first is None:
            return
        stack = [first]
        while stack:
            frame = stack[-1]
            if not frame.listing:
                stack.pop()
                os.close(frame.fd)
                if frame.is_extraneous:
                    parent = stack[-1]
                    if frame.is_blocked or not self._remove(
                        parent, frame.name, frame.path, LocalKind.DIR
                    ):
                        parent.is_blocked = True
                continue
            entry_name, is_dir, is_link, inode = frame.listing.pop()
            frame.names.add(entry_name)
            path = f"{frame.path}/{entry_name}"
            if entry_name.startswith(PROTECTED_PREFIXES):
                frame.is_blocked = True
                continue
            kept_name = None
            if not frame.is_extraneous:
                kept_name = self._manifest_name(frame, entry_name, inode)
            if kept_name is not None:
                kept_path = f"{frame.path}/{kept_name}"
                if self.kept.kinds[kept_path] is LocalKind.DIR and is_dir:
                    child = self._open(frame, entry_name, kept_path, is_extraneous=False)
                    if child is not None:
                        stack.append(child)
                continue  # a file, a link, or a folder in its place: the receive checked it
            if is_dir:
                child = self._open(frame, entry_name, path, is_extraneous=True)
                if child is None:
                    frame.is_blocked = True
                else:
                    stack.append(child)
                continue
            kind = LocalKind.LINK if is_link else LocalKind.FILE
            if not self._remove(frame, entry_name, path, kind):
                frame.is_blocked = True


def prune(
    out_dir: Path, manifest: Manifest, report: Report, *, is_dry_run: bool = False
) -> PruneResult:
    """Remove (``is_dry_run``: only report) everything in the scope of
    ``--delete`` under ``out_dir`` that ``manifest`` does not hold; report
    each removal and each failure through ``report`` as it happens (on the
    calling thread). Never raises for a path it cannot remove: see
    ``PruneResult.failures``."""
    walk = _Walk(manifest, report, is_dry_run=is_dry_run)
    items = folder_items(manifest)
    if not items:
        return PruneResult()
    try:
        out_fd = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the user named it
    except FileNotFoundError:
        return PruneResult()  # a dry run into a folder not made yet
    except OSError as exc:
        walk.fail(".", LocalKind.DIR, exc)
        return PruneResult(0, tuple(walk.failures))
    try:
        for name in items:
            walk.item(out_fd, name)
    finally:
        os.close(out_fd)
    return PruneResult(walk.removed, tuple(walk.failures))
