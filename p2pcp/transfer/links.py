"""The receiver's symbolic links (the manifest's links section, ``send --links``).

Rules (the promise of the store, kept for links):
- Planned with the files, before anything is written (``plan_links``):
  every link's folders must be real folders where they exist (a link or a
  file in their place is exit 5, even with ``--force``: nothing is ever
  written through a link); a folder at the link's path is exit 5; another
  file or link there is exit 5 unless ``replace`` (``--force``, and
  ``--update``, which for a link means the same); the same link (same
  target text) is kept as it is. Link names go through the output file
  system's probe with the files' (``Store.plan``'s one probe:
  ``store.check_names_fit``), so a link never lands on a file's name that
  the file system folds into one.
- Unsafe targets are refused, not followed: a target that is absolute, or
  that, resolved lexically from the link's folder (following the
  manifest's own links), leaves the received top-level item
  (``blobs.names.link_escape_reason``) is skipped and reported
  (``LinkSkipped``) unless ``allow_unsafe`` (``--unsafe-links``). A
  refused link writes nothing and is not a failure: the files arrived.
- Placed after every file is verified and in place (``place_links``): a
  link is created under a temporary name in its own folder, then renamed
  over its final name, so the name is either absent, the old entry, or
  the whole new link; the rename replaces a link itself, never what it
  points to. Each folder that got a link is fsynced once.
- Names in messages go through ``display_path``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from p2pcp.blobs.collection import Link, Manifest
from p2pcp.blobs.names import display_path, link_escape_reason
from p2pcp.core.errors import StorageError, WouldOverwriteError
from p2pcp.transfer import events
from p2pcp.transfer.store import folder_exists, lstat_or_none

Emit = Callable[[object], None]

# The temporary name a link is created under before its rename (hidden, in
# the link's own folder, so the rename is atomic).
TEMPORARY_PREFIX = ".p2pcp-link-"


@dataclass
class LinkPlan:
    """What to do with the manifest's links."""

    to_place: list[Link] = field(default_factory=list)
    present: list[Link] = field(default_factory=list)
    """Already there, as the same link."""
    refused: list[tuple[Link, str]] = field(default_factory=list)
    """Unsafe targets, with why (skipped unless --unsafe-links)."""


def _shown(path: Path) -> str:
    return display_path(str(path))


def plan_links(out_dir: Path, manifest: Manifest, *, replace: bool, allow_unsafe: bool) -> LinkPlan:
    """Check every link's destination (the module's rules); raises
    WouldOverwriteError (exit 5) or StorageError before anything is written."""
    plan = LinkPlan()
    if not manifest.links:
        return plan
    # The names were checked against the output file system with the
    # files' (Store.plan's one probe); the folders are inspected as theirs.
    targets = {link.path: link.target for link in manifest.links}
    known: dict[str, bool] = {"": out_dir.is_dir()}
    for link in manifest.links:
        reason = None if allow_unsafe else link_escape_reason(link.path, link.target, targets)
        if reason is not None:
            plan.refused.append((link, reason))
            continue
        dest = out_dir / link.path
        parent = link.path.rpartition("/")[0]
        st = lstat_or_none(dest) if folder_exists(out_dir, parent, known) else None
        if st is None:
            plan.to_place.append(link)
        elif stat.S_ISLNK(st.st_mode) and _readlink(dest) == link.target:
            plan.present.append(link)
        elif stat.S_ISDIR(st.st_mode):
            raise WouldOverwriteError(
                f"{_shown(dest)} is a folder; the sender's link of that name would replace it"
            )
        elif not replace:
            what = "a different link" if stat.S_ISLNK(st.st_mode) else "a file"
            raise WouldOverwriteError(
                f"{_shown(dest)} exists as {what} where the sender has a link "
                "(use --force to replace it)"
            )
        else:
            plan.to_place.append(link)
    return plan


def _readlink(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def place_links(out_dir: Path, plan: LinkPlan, emit: Emit) -> None:
    """Create the planned links (after every file is in place) and report
    each link: placed, already there, or refused."""
    for link, reason in plan.refused:
        emit(events.LinkSkipped(link.path, link.target, reason))
    for link in plan.present:
        emit(events.LinkPlaced(link.path, link.target, was_present=True))
    touched: set[Path] = set()
    for link in plan.to_place:
        dest = out_dir / link.path
        _make_folders(out_dir, link.path)
        temporary = dest.parent / f"{TEMPORARY_PREFIX}{secrets.token_hex(8)}"
        try:
            os.symlink(link.target, temporary)
            os.replace(temporary, dest)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise StorageError(
                f"cannot create the link {display_path(link.path)}: {exc.strerror}"
            ) from None
        touched.add(dest.parent)
        emit(events.LinkPlaced(link.path, link.target))
    for folder in touched:
        _fsync_folder(folder)


def _make_folders(out_dir: Path, rel: str) -> None:
    """Create the folders of ``rel`` level by level, checking again that
    none is a link (the plan checked them; this is the moment that counts)."""
    current = out_dir
    for part in rel.split("/")[:-1]:
        current = current / part
        try:
            current.mkdir()
        except FileExistsError:
            st = lstat_or_none(current)
            if st is None or not stat.S_ISDIR(st.st_mode):
                raise WouldOverwriteError(
                    f"{_shown(current)} is not a folder (it changed during the receive); "
                    "p2pcp never writes through a link"
                ) from None
        except OSError as exc:
            raise StorageError(f"cannot create {_shown(current)}: {exc.strerror}") from None


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
