"""What ``send`` sends (paths, a text, or standard input) and where
``receive`` writes (a folder, or standard output): the command line's
rules for text and pipes, checked before any network activity.

- ``send PATH...``: files and folders; ``send -``: standard input as a
  stream (alone: ``-`` among other paths is a usage error); ``send --text
  TEXT`` (``--text -``: standard input, at most 1 MiB, UTF-8): a message,
  with no PATH. ``--name`` names a stream only.
- ``receive --out -``: the data on stdout, so nothing else may go there:
  ``--json`` with it is a usage error (the JSON lines would mix with the
  data); messages and progress go to stderr as always.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from p2pcp.core.errors import UsageError

STDIO = "-"


@dataclass(frozen=True)
class WhatToSend:
    paths: tuple[str, ...] = ()
    text: str | None = None
    stream_name: str | None = None
    """Set for ``send -``: the name a receiver writing to a folder uses."""


def what_to_send(paths: list[str] | None, text: str | None, name: str | None) -> WhatToSend:
    """The checked choice among paths, ``-`` and ``--text`` (UsageError, exit 2)."""
    from p2pcp.transfer.stream import DEFAULT_STREAM_NAME

    paths = paths or []
    is_stream = STDIO in paths
    if text is not None and paths:
        raise UsageError("--text sends a message, not PATHs: give one or the other")
    if is_stream and len(paths) > 1:
        raise UsageError("- (standard input) is sent alone, not with other PATHs")
    if name is not None and not is_stream:
        raise UsageError("--name names a stream: use it with 'p2pcp send -'")
    if text is not None:
        return WhatToSend(text=read_text(text))
    if not paths:
        raise UsageError("give a PATH to send, - for standard input, or --text")
    if is_stream:
        stream_name = DEFAULT_STREAM_NAME if name is None else name
        _check_name(stream_name)
        return WhatToSend(stream_name=stream_name)
    return WhatToSend(paths=tuple(paths))


def _check_name(name: str) -> None:
    from p2pcp.core.errors import ProtocolError
    from p2pcp.transfer.stream import check_stream_name

    try:
        check_stream_name(name)
    except ProtocolError as exc:
        raise UsageError(f"--name: {exc}") from None


def read_text(value: str) -> str:
    """``--text``'s message: the value, or standard input for ``-``."""
    from p2pcp.blobs.collection import MAX_TEXT_BYTES
    from p2pcp.transfer.text import check_text_size

    if value != STDIO:
        try:
            data = value.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError("--text: the text is not UTF-8") from None
    else:
        data = sys.stdin.buffer.read(MAX_TEXT_BYTES + 1)
    check_text_size(data)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(
            "--text -: standard input is not UTF-8 text (send it with 'p2pcp send -')"
        ) from None


def check_stdout_out(out: str, *, as_json: bool) -> bool:
    """Whether ``--out`` is standard output; with ``--json`` a usage error."""
    if out != STDIO:
        return False
    if as_json:
        raise UsageError(
            "--json and --out - both want stdout: --out - writes the data there (messages "
            "go to stderr)"
        )
    return True
