"""The one Console (stderr) and the one machine-readable channel (stdout).

stdout carries only what scripts read: the ticket, or ``--json`` lines.
Everything meant for people goes to the stderr Console. Progress bars are
shown only when stderr is a terminal and neither ``--json`` nor ``--quiet``
is given.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

console = Console(stderr=True, highlight=False, soft_wrap=True)


@dataclass
class OutputMode:
    is_json: bool = False
    is_quiet: bool = False
    verbosity: int = 0
    _last_progress: float = field(default=0.0, repr=False)

    @property
    def shows_messages(self) -> bool:
        """Plain human lines on stderr (when bars are off but not quiet)."""
        return not self.is_json and not self.is_quiet

    def json(self, event: str, **fields: Any) -> None:
        """Write one JSON object as a line on stdout."""
        line = json.dumps({"event": event, **fields}, ensure_ascii=False, separators=(",", ":"))
        # A file name that is not UTF-8 holds surrogateescape'd bytes; written
        # as the JSON escape "\udcNN" the line stays valid UTF-8, and a reader
        # that decodes it (json.loads, then os.fsencode) gets the bytes back.
        line = line.encode("utf-8", "backslashreplace").decode("utf-8")
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def json_progress_due(self, interval_s: float) -> bool:
        now = time.monotonic()
        if now - self._last_progress < interval_s:
            return False
        self._last_progress = now
        return True


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
