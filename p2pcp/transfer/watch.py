"""A share's PATHs watched for changes, so that what changed is hashed
before the next receive asks for it (``p2pcp share``, share.py).

A receive's snapshot is always scanned after its request arrives
(share.py's ``ShareSource`` says why), and this watcher never answers one.
It does the costly part of that scan ahead of time: once changes under the
PATHs have settled, it runs a scan that hashes what changed into the hash
cache, so the scan a request then makes finds every file in the cache and
reads none. In bench/backup.py's nightly change (a 1 GiB file with 1 MiB
changed, 20 files rewritten, 10 added), that is 0.3 s of hashing a pull no
longer waits for.

Changes come from watchfiles (inotify on Linux, FSEvents on macOS,
ReadDirectoryChangesW on Windows; one thread). A batch is handed over once
no change came for ``SETTLE_MS``; the scan starts once the last change is
older than the hash cache's racy margin (a file changed within it would
not be cached). One scan at a time, and never more than about a tenth of
the time: the next waits ``WARM_PAUSE_FACTOR`` times as long as the last
took (at least ``MIN_WARM_INTERVAL_S``), so a file that is written all day
(a log, a disk image) costs a tenth of a core, not a whole one.

Best effort by design: where no watch can be made (no watchfiles, more
folders than inotify allows watches, a file system without events), the
watcher stops with one note and every request hashes what changed, as it
would without it. A change the watch API misses (a write through a shared
mapping, a network file system) is found by the request's own scan.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from p2pcp.transfer import events
from p2pcp.transfer.hashcache import RACY_MARGIN_NS

Emit = Callable[[object], None]

# A batch of changes is handed over once none came for this long.
SETTLE_MS = 50
# ... or, under a stream of changes, after this long at most.
MAX_BATCH_MS = 1600
# The racy margin of the hash cache, and a little more: a file changed
# within it is hashed but not remembered, so the request would hash it again.
_AFTER_CHANGE_S = RACY_MARGIN_NS / 1e9 + 0.02
MIN_WARM_INTERVAL_S = 1.0
WARM_PAUSE_FACTOR = 9.0
# How often the watch thread looks at the stop flag (ms).
_POLL_MS = 200


async def watch_and_warm(
    paths: tuple[Path, ...], warm: Callable[[], Awaitable[None]], emit: Emit
) -> None:
    """Call ``warm()`` after each settled batch of changes under ``paths``,
    until cancelled. Never raises but CancelledError: a watch that cannot
    be made or breaks is reported once (events.ShareWatchStopped)."""
    stop = asyncio.Event()
    next_allowed = 0.0
    try:
        # On a thread: importing it (and anyio) takes ~0.1 s.
        watchfiles = await asyncio.to_thread(importlib.import_module, "watchfiles")
        # Its INFO lines ("3 changes detected") are not ours to print.
        logging.getLogger("watchfiles").setLevel(logging.WARNING)
        batches = watchfiles.awatch(
            *paths,
            watch_filter=None,
            debounce=MAX_BATCH_MS,
            step=SETTLE_MS,
            stop_event=stop,
            rust_timeout=_POLL_MS,
            ignore_permission_denied=True,
        )
        async with contextlib.aclosing(batches):
            async for _changes in batches:
                await asyncio.sleep(max(_AFTER_CHANGE_S, next_allowed - time.monotonic()))
                started = time.monotonic()
                await warm()
                ended = time.monotonic()
                took = ended - started
                next_allowed = ended + max(MIN_WARM_INTERVAL_S, WARM_PAUSE_FACTOR * took)
    except asyncio.CancelledError:
        stop.set()  # the watch thread ends at its next poll
        raise
    except Exception as exc:  # best effort (module doc): never the share's end
        emit(events.ShareWatchStopped(_reason(exc)))


def _reason(exc: BaseException) -> str:
    """One line: the error's first, and what to do about inotify's limit."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    lowered = text.lower()
    if "inotify" in lowered and ("limit" in lowered or "space" in lowered):
        return f"{text} (raise fs.inotify.max_user_watches)"
    return text
