"""What a receive changes in the output folder beyond the files it fetches:
the ``--dry-run`` listing, and the metadata-only fixes of ``--update``.

``--dry-run`` (``find_changes``): the receive connects, fetches and
verifies the manifest, plans against the output folder exactly as a real
receive would (``Store.plan`` with ``--update`` when given, and as if
``--force`` was given so that every differing file is listed rather than
the first one stopping the plan), then reports each change it would make,
in manifest order: ``Change.ADD`` (a file not there), ``Change.UPDATE``
(a file there with other content, or something else under its name;
a symbolic link of the manifest is added or updated likewise, unless the
receive would skip it as unsafe),
``Change.TOUCH`` (``--update``: the content is there, its time or mode is
not), then ``Change.DELETE`` (``--delete``, ``prune.py``'s walk, removing
nothing), and ends with a ``DryRunFinished`` summary. The rules:
- Nothing at all is written: not the output folder, not the partial
  folder, not the file system probe (so names a case-insensitive file
  system could not hold are found only by the real receive).
- Differing files without ``--update`` or ``--force``: listed as updates,
  and the summary says the receive would stop there before writing
  anything (``would_exit`` 5). A conflict nothing resolves (a folder where
  a file goes, a link in place of a folder) stops the dry run with the
  same error as the receive (exit 5), as does too little free space.
- A dry run does not send DONE: it is not a finished receive, so
  ``send --once`` goes on waiting for the real one. Exit 0.

Metadata fixes (``fix_metadata``, ``--update`` only): a file already in
place with the right content whose modification time or permission bits
differ from what the receive would give it (``metadata.py``) gets them
in place, reported as ``FileTouched``; never rewritten.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

from p2pcp.blobs.collection import Entry, Manifest
from p2pcp.blobs.names import display_path, link_escape_reason
from p2pcp.transfer import events
from p2pcp.transfer.events import Change, LocalKind
from p2pcp.transfer.metadata import MetadataPolicy
from p2pcp.transfer.prune import prune
from p2pcp.transfer.store import Plan

Report = Callable[[object], None]


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None


def find_changes(
    out_dir: Path,
    manifest: Manifest,
    plan: Plan,
    report: Report,
    *,
    metadata: MetadataPolicy,
    is_update: bool,
    may_replace: bool,
    has_delete: bool,
    allow_unsafe_links: bool = False,
) -> events.DryRunFinished:
    """Report (through ``report``, on the calling thread) each change a
    receive of ``manifest`` into ``out_dir`` with ``plan`` would make; the
    summary. ``may_replace``: ``--update`` or ``--force`` was given."""
    fetching = {entry.path for entries in plan.to_fetch.values() for entry in entries}
    present = {entry.path for entry, _digest in plan.present}
    added = updated = touched = unchanged = 0
    bytes_added = bytes_updated = bytes_unchanged = 0
    for entry in manifest.files:
        if entry.path in fetching:
            if _lstat(out_dir / entry.path) is None:
                added += 1
                bytes_added += entry.size
                report(events.ChangeFound(Change.ADD, entry.path, entry.size))
            else:
                updated += 1
                bytes_updated += entry.size
                report(events.ChangeFound(Change.UPDATE, entry.path, entry.size))
            continue
        if entry.path not in present:
            continue
        unchanged += 1
        bytes_unchanged += entry.size
        st = _lstat(out_dir / entry.path) if is_update else None
        if st is not None and stat.S_ISREG(st.st_mode):
            is_time_off, is_mode_off = metadata.needs_fix(st, entry)
            if is_time_off or is_mode_off:
                touched += 1
                report(
                    events.ChangeFound(
                        Change.TOUCH,
                        entry.path,
                        entry.size,
                        has_new_time=is_time_off,
                        has_new_mode=is_mode_off,
                    )
                )
    targets = {link.path: link.target for link in manifest.links}
    for link in manifest.links:
        if not allow_unsafe_links and link_escape_reason(link.path, link.target, targets):
            continue  # skipped by the receive too (links.py), with a warning
        st = _lstat(out_dir / link.path)
        if st is None:
            added += 1
            report(events.ChangeFound(Change.ADD, link.path, kind=LocalKind.LINK))
        elif not stat.S_ISLNK(st.st_mode) or os.readlink(out_dir / link.path) != link.target:
            updated += 1
            report(events.ChangeFound(Change.UPDATE, link.path, kind=LocalKind.LINK))
    deleted = 0
    if has_delete:
        deleted = prune(out_dir, manifest, report, is_dry_run=True).removed
    reason = ""
    if updated and not may_replace:
        reason = (
            f"{updated} of the destinations exist with different content: without --update "
            "(or --force) the receive stops before writing anything (exit 5)"
        )
    return events.DryRunFinished(
        out_path=str(out_dir),
        files_to_add=added,
        bytes_to_add=bytes_added,
        files_to_update=updated,
        bytes_to_update=bytes_updated,
        files_to_touch=touched,
        paths_to_delete=deleted,
        files_unchanged=unchanged,
        bytes_unchanged=bytes_unchanged,
        would_exit=5 if reason else 0,
        reason=reason,
    )


def fix_metadata(
    out_dir: Path, present: Iterable[tuple[Entry, str]], metadata: MetadataPolicy, report: Report
) -> list[str]:
    """Give each file in ``present`` (its content already right) the time
    and mode ``metadata`` wants, in place; report each file changed. Returns
    one line per file that could not be fixed (the rest are done)."""
    failures: list[str] = []
    for entry, _digest in present:
        path = out_dir / entry.path
        st = _lstat(path)
        if st is None or not stat.S_ISREG(st.st_mode):
            continue
        if metadata.needs_fix(st, entry) == (False, False):
            continue
        try:
            is_time_new, is_mode_new = metadata.fix_in_place(path, entry)
        except OSError as exc:
            failures.append(f"{display_path(entry.path)}: {exc.strerror or exc}")
            continue
        if is_time_new or is_mode_new:
            report(events.FileTouched(entry.path, is_time_new, is_mode_new))
    return failures
