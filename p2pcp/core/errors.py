"""The one exception tree of p2pcp.

Every error that p2pcp reports on purpose is a :class:`P2pcpError`; each
subclass carries the process exit code the CLI uses for it. Lower layers
raise these; only ``cli/app.py`` turns them into one line on stderr and an
exit code. Messages never contain secrets (keys, tickets' private parts).

Exit codes (stable, documented in the README and ``--help``):

====  ==========================================================
0     success
1     unexpected error (a bug, or an I/O error such as a full disk)
2     usage error or bad ticket
3     cannot reach the peer
4     verification failed (corrupt or changed data, wrong peer key)
5     would overwrite a different existing file
130   interrupted (Ctrl-C)
====  ==========================================================

Protocol errors are split the way h11 splits them: ``Local*`` means we
misused a machine (a bug on our side), ``Remote*`` means the peer sent
something malformed or over a limit. A sans-IO machine that raised stays in
an error state.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTEGRITY = 4
EXIT_WOULD_OVERWRITE = 5
EXIT_INTERRUPTED = 130


class P2pcpError(Exception):
    """Base of every error p2pcp raises on purpose."""

    exit_code: int = EXIT_UNEXPECTED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(P2pcpError):
    """The command line asks for something impossible."""

    exit_code = EXIT_USAGE


class TicketError(UsageError):
    """A ticket is truncated, extended, mistyped or of an unknown version."""


class ConfigError(UsageError):
    """The configuration file or an environment variable is malformed."""


class CodeError(UsageError):
    """A short code cannot be used: wrong, unknown, already used or expired.

    Raised by the rendezvous (a wrong code found by the PAKE) and by the relay
    client's mailbox ("no such code (nameplate 7)", "code already used", "code
    expired"). The message never contains the code's words.
    """


class AccessDeniedError(UsageError):
    """A share refused this receiver: its secret is unknown (the share's ticket
    changed, e.g. ``share --rotate``) or this receiver's node id is not on the
    share's ``--allow`` list. The message says what to do."""


class ConnectError(P2pcpError):
    """The peer cannot be reached (no address answered, handshake failed)."""

    exit_code = EXIT_UNREACHABLE


class ConnectionLostError(ConnectError):
    """An established connection closed before the transfer finished."""


class IntegrityError(P2pcpError):
    """Data or a proof does not match the content hash it must match."""

    exit_code = EXIT_INTEGRITY


class PeerIdentityError(IntegrityError):
    """The peer's key is not the node id we expected."""


class WouldOverwriteError(P2pcpError):
    """A destination exists with different content and --force was not given."""

    exit_code = EXIT_WOULD_OVERWRITE


class Interrupted(P2pcpError):
    """Ctrl-C or SIGTERM stopped the command."""

    exit_code = EXIT_INTERRUPTED


class StorageError(P2pcpError):
    """Reading or writing local files failed (permissions, disk full, ...)."""

    exit_code = EXIT_UNEXPECTED


class LocalUpdateError(StorageError):
    """Everything received is verified and in place, but a local change
    after it failed: a path ``--delete`` should remove, or the metadata
    ``--update`` should fix (the others were done). Exit 1: a backup must
    notice."""


class ProtocolError(P2pcpError):
    """A protocol machine was misused or fed bad input."""

    exit_code = EXIT_UNEXPECTED


class LocalProtocolError(ProtocolError):
    """We misused a protocol machine: a bug on our side."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something malformed or over one of our limits."""

    exit_code = EXIT_INTEGRITY


class UnsafePathError(RemoteProtocolError):
    """A manifest names a path that could escape or clobber the output folder."""


class NotFoundError(RemoteProtocolError):
    """The peer does not have the content we asked for."""


class StreamResetError(ConnectionLostError):
    """The peer aborted one stream; ``code`` is its application error code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code
