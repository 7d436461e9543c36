"""``receive --ticket-file FILE``: the ticket (or short code) read from a
file or from standard input (``-``) instead of the command line, where
every local user can read it (``ps``, ``/proc/PID/cmdline``).

Rules:

- The file holds one ticket or code; whitespace around it (the newline
  ``send``/``share --ticket-file`` write after the ticket, CRLF, a BOM) is
  ignored. Anything else is refused: nothing, more than one non-empty line,
  bytes that are not text, more than ``MAX_TICKET_FILE_BYTES``.
- What the file holds is checked here as TICKET is (a code is parsed, a
  ticket decoded), so an error names the file.
- No message ever holds the file's content: a ticket is a secret.
- Exit codes: 2 (usage) when the file is missing, a folder, or does not hold
  one ticket; 1 (I/O) when the system refuses to read it (permissions, I/O
  error), as for any local file p2pcp cannot read.
- A regular file that other users may read or change is used, with a
  one-line warning (the point of the option is that they cannot see the
  ticket; ssh warns likewise about an open private key). Files that
  ``send --ticket-file`` and systemd credentials write are not open (0600,
  0400), so they never warn.
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass
from typing import BinaryIO

from p2pcp.core.errors import StorageError, UsageError

MAX_TICKET_FILE_BYTES = 64 * 1024
"""Far above any ticket (core/ticket.py reads at most 2,048 characters),
and small enough that a FILE naming a disk image or ``/dev/zero`` fails at
once instead of being read whole."""

STDIN_NAME = "-"

# Group and others may read (0o044) or write (0o022) the file.
_OPEN_TO_OTHERS = 0o066


@dataclass(frozen=True)
class TicketText:
    """What a ticket file gave."""

    text: str
    """The ticket or code, stripped; checked to be one."""
    warning: str | None = None
    """A line for people (the file is open to other users), or None."""


def ticket_argument(ticket: str | None, ticket_file: str | None, *, is_quiet: bool) -> str:
    """The ticket text of ``receive``: TICKET or ``--ticket-file``'s, exactly
    one of them (both or neither is a usage error). The file's warning goes
    to stderr unless ``is_quiet``."""
    if ticket is not None and ticket_file is not None:
        raise UsageError("give the ticket as TICKET|CODE or with --ticket-file, not both")
    if ticket_file is None:
        if ticket is None:
            raise UsageError("missing TICKET|CODE (or --ticket-file FILE)")
        return ticket
    result = read_ticket_file(ticket_file)
    if result.warning is not None and not is_quiet:
        from p2pcp.cli.output import console

        console.print(result.warning, markup=False, highlight=False, style="yellow")
    return result.text


def read_ticket_file(name: str, stdin: BinaryIO | None = None) -> TicketText:
    """The ticket in the file ``name`` (``-``: ``stdin``, by default the
    process's standard input), as the module's rules say."""
    if not name:
        raise UsageError("--ticket-file is empty (give a FILE, or - for standard input)")
    if name == STDIN_NAME:
        where = "--ticket-file - (standard input)"
        return TicketText(_ticket_in(_read_stdin(stdin, where), where))
    from p2pcp.blobs.names import display_path

    where = f"--ticket-file {display_path(name)}"
    try:
        with open(name, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            data = handle.read(MAX_TICKET_FILE_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):
        raise UsageError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{where}: is a folder (give the file that holds the ticket)") from None
    except OSError as exc:
        reason = (exc.strerror or type(exc).__name__).lower()
        raise StorageError(f"{where}: cannot read it: {reason}") from None
    text = _ticket_in(data, where)
    warning = None
    if stat.S_ISREG(mode) and mode & _OPEN_TO_OTHERS:
        warning = (
            f"warning: {where} is open to other users (mode {stat.S_IMODE(mode):04o}); "
            "a ticket is a key: chmod 600 it"
        )
    return TicketText(text, warning)


def _read_stdin(stdin: BinaryIO | None, where: str) -> bytes:
    if stdin is None:
        if sys.stdin is None:
            raise UsageError(f"{where}: standard input is closed")
        stdin = sys.stdin.buffer
    try:
        return stdin.read(MAX_TICKET_FILE_BYTES + 1)
    except OSError as exc:
        reason = (exc.strerror or type(exc).__name__).lower()
        raise StorageError(f"{where}: cannot read it: {reason}") from None


def _ticket_in(data: bytes, where: str) -> str:
    """The one ticket or code in ``data``, checked; errors never quote it."""
    from p2pcp.core.ticket import decode_ticket
    from p2pcp.rendezvous.codes import looks_like_code, parse_code

    if len(data) > MAX_TICKET_FILE_BYTES:
        raise UsageError(
            f"{where}: larger than {MAX_TICKET_FILE_BYTES // 1024} KiB; is it a ticket file?"
        )
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        raise UsageError(f"{where}: not text; is it a ticket file?") from None
    if "\x00" in text:
        raise UsageError(f"{where}: not text; is it a ticket file?")
    lines = [stripped for line in text.splitlines() if (stripped := line.strip())]
    if not lines:
        raise UsageError(f"{where}: is empty (it should hold the ticket)")
    if len(lines) > 1:
        raise UsageError(f"{where}: holds {len(lines)} lines; it should hold the ticket alone")
    ticket = lines[0]
    try:
        if looks_like_code(ticket):
            parse_code(ticket)
        else:
            decode_ticket(ticket)
    except UsageError as exc:
        raise type(exc)(f"{where}: {exc}") from None
    return ticket
