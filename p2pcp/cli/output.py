"""The one Console (stderr) and the one machine-readable channel (stdout).

stdout carries only what scripts read: the ticket, or ``--json`` lines.
Everything meant for people goes to the stderr Console. Progress bars are
shown only when stderr is a terminal and neither ``--json`` nor ``--quiet``
is given.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

console = Console(stderr=True, highlight=False, soft_wrap=True)

# How long a JSON line of a burst may wait for the next ones (OutputMode.json).
JSON_GROUP_S = 0.05


@dataclass
class OutputMode:
    is_json: bool = False
    is_quiet: bool = False
    verbosity: int = 0
    _last_progress: float = field(default=0.0, repr=False)
    _is_flush_scheduled: bool = field(default=False, repr=False)

    @property
    def shows_messages(self) -> bool:
        """Plain human lines on stderr (when bars are off but not quiet)."""
        return not self.is_json and not self.is_quiet

    def json(self, event: str, **fields: Any) -> None:
        """Write one JSON object as a line on stdout (with any lines still
        waiting to be flushed)."""
        sys.stdout.write(_encode({"event": event, **fields}) + "\n")
        self.flush_json()

    def json_grouped(self, event: str, **fields: Any) -> None:
        """``json`` for a line of a burst (a file_done per small file): it
        may wait up to JSON_GROUP_S for the lines after it, so that 100,000
        of them are not 100,000 writes (a third of a small-file receive's
        event loop)."""
        sys.stdout.write(_encode({"event": event, **fields}) + "\n")
        if self._is_flush_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush_json()
        else:
            self._is_flush_scheduled = True
            loop.call_later(JSON_GROUP_S, self.flush_json)

    def flush_json(self) -> None:
        self._is_flush_scheduled = False
        sys.stdout.flush()

    def json_with_list(
        self, event: str, list_name: str, items: Iterable[dict[str, Any]], **fields: Any
    ) -> None:
        """Like ``json``, with one more field, the list ``list_name``, written
        a group of items at a time: a receive of 100,000 files must not hold
        them all as dicts and then as one string (tens of MB) just to say it
        is done."""
        write = sys.stdout.write
        head = _encode({"event": event, **fields})
        write(f"{head[:-1]},{_encode(list_name)}:[")
        encoded = map(_encode, items)
        first = next(encoded, None)
        if first is not None:
            write(first)
            while group := list(itertools.islice(encoded, 1000)):
                write("," + ",".join(group))
        write("]}\n")
        self.flush_json()

    def json_progress_due(self, interval_s: float) -> bool:
        now = time.monotonic()
        if now - self._last_progress < interval_s:
            return False
        self._last_progress = now
        return True


def _encode(value: Any) -> str:
    """Compact JSON that is always valid UTF-8. A file name that is not UTF-8
    holds surrogateescape'd bytes; written as the JSON escape "\\udcNN" the
    line stays valid UTF-8, and a reader that decodes it (json.loads, then
    os.fsencode) gets the bytes back."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def stdout_is_terminal() -> bool:
    return os.isatty(sys.stdout.fileno()) if hasattr(sys.stdout, "fileno") else False


def setup_logging(verbosity: int) -> None:
    """-v shows what the network layers log (paths, datagram sizes); -vv more."""
    if verbosity <= 0:
        return
    from rich.logging import RichHandler

    handler = RichHandler(console=console, show_path=False, show_time=verbosity > 1)
    logger = logging.getLogger("p2pcp")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbosity == 1 else logging.DEBUG)


def plural(count: int, word: str) -> str:
    """``1 file``, ``2 files``: every count in a message agrees with its noun."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(count) < 1000:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"
