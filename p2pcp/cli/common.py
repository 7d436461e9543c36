"""Pieces shared by the send and receive commands."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from p2pcp.core.errors import Interrupted, UsageError

if TYPE_CHECKING:
    from p2pcp.core.config import Config, RelayUrl
    from p2pcp.core.ticket import TicketType
    from p2pcp.net import EndpointConfig, PathPolicy
    from p2pcp.transfer.exclude import ScanFilter

T = TypeVar("T")

# Options every transfer command takes, spelled once.
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON object per line on stdout.")
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress, no messages.")]
RelayOption = Annotated[
    str | None,
    typer.Option(
        "--relay",
        metavar="URL",
        help="Relay to use (http://HOST:PORT or https://...); default: P2PCP_RELAY or the "
        "config file.",
    ),
]
NoRelayOption = Annotated[bool, typer.Option("--no-relay", help="Use no relay: direct only.")]

# The flag's word; ``endpoint_config`` turns it into net's ``Congestion``
# (importing net here would load aioquic for ``--help``).
CongestionOption = Annotated[
    str | None,
    typer.Option(
        "--congestion",
        show_default=False,
        metavar="bbr|cubic|reno",
        help="Congestion controller for the data this side sends. On the sender it paces "
        "the files, so it sets the transfer's speed; on the receiver it only paces its acks "
        "and requests. bbr (model-based: random loss does not slow it down), or aioquic's "
        "loss-based cubic or reno. Default: P2PCP_CONGESTION, the config file, or bbr.",
    ),
]
# The flag's text; ``transfer.ratelimit.parse_rate`` reads it (bytes per second).
LimitRateOption = Annotated[
    str | None,
    typer.Option(
        "--limit-rate",
        metavar="RATE",
        show_default=False,
        help="At most RATE bytes per second, e.g. 10M, 500K, 1.5M (K, M, G: 1000, 1000^2, "
        "1000^3; Ki, Mi, Gi: powers of 1024; at least 150K). Within 5% over any 5 s.",
    ),
]
# send's privacy and display options; ``ticket_type`` reads the first.
TicketTypeOption = Annotated[
    str,
    typer.Option(
        "--ticket-type",
        metavar="full|relay|addresses",
        help="What the ticket names to reach this sender: full (the relay and this machine's "
        "addresses), relay (the relay only: no IP address in the ticket; a direct path is "
        "still found through the relay) or addresses (no relay).",
    ),
]
QrOption = Annotated[
    bool,
    typer.Option("--qr", help="Also show the code (or the ticket) as a QR code on stderr."),
]
VerboseOption = Annotated[
    int, typer.Option("--verbose", "-v", count=True, help="More detail (repeat for more).")
]
# What a send or a share leaves out, and its links (transfer/exclude.py);
# ``scan_filter`` turns the first three into a ScanFilter.
ExcludeOption = Annotated[
    list[str] | None,
    typer.Option(
        "--exclude",
        metavar="PATTERN",
        show_default=False,
        help="Leave out what PATTERN matches (repeatable; gitignore syntax), matched against "
        "paths inside each sent folder as a .gitignore at its top would be: '*.tmp' anywhere, "
        "'node_modules/' folders only, '/build' only at the top, '!keep.tmp' takes a name "
        "back. An excluded folder is not read at all; a PATH given is never excluded.",
    ),
]
ExcludeFromOption = Annotated[
    Path | None,
    typer.Option(
        "--exclude-from",
        metavar="FILE",
        show_default=False,
        help="Read --exclude patterns from FILE, one a line (gitignore syntax: # comments, "
        "blank lines ignored).",
    ),
]
GitignoreOption = Annotated[
    bool,
    typer.Option(
        "--gitignore",
        help="Also leave out what the .gitignore files inside the sent folders ignore (each "
        "relative to its own folder, deeper ones overriding, ! as git does), and .git.",
    ),
]
LinksOption = Annotated[
    bool,
    typer.Option(
        "--links",
        help="Send symbolic links inside the folders as links (their target text, not "
        "followed). Without it a link to a file is sent as the file and a link to a folder "
        "is skipped. The receiver refuses a link pointing outside what it received unless "
        "it gives --unsafe-links.",
    ),
]


def endpoint_config(
    *,
    settings: Config,
    congestion: str | None,
    relay_url: RelayUrl | None,
    path_policy: PathPolicy,
    port: int = 0,
) -> EndpointConfig:
    """The one ``EndpointConfig`` of this run: the flags (``congestion`` is
    the flag's word, None when not given) over ``settings`` (environment,
    then config file: core/config.py). EndpointConfig checks every value;
    a bad one is its one-line error, prefixed with where the value came
    from (the flag, the variable or the file), so the same bad value gives
    the same message from each."""
    from p2pcp.net import Congestion, EndpointConfig, SettingError

    flags = {"port": "--port"}
    if congestion is not None:
        flags["congestion"] = "--congestion"
    try:
        word = congestion if congestion is not None else settings.congestion
        return EndpointConfig(
            port=port,
            max_datagram_size=settings.max_datagram_size,
            relay_url=relay_url,
            path_policy=path_policy,
            congestion=Congestion.parse(word) if word is not None else Congestion.BBR,
        )
    except SettingError as exc:
        where = flags.get(exc.setting) or settings.source(exc.setting)
        if not where:
            raise
        raise UsageError(f"{where}: {exc}") from None


def ticket_type(text: str, relay_url: RelayUrl | None) -> TicketType:
    """``--ticket-type``'s word; ``relay`` with no relay to name is a usage error."""
    from p2pcp.core.ticket import TicketType

    chosen = TicketType.parse(text)
    if chosen is TicketType.RELAY and relay_url is None:
        raise UsageError(
            "--ticket-type relay needs a relay (--relay URL, P2PCP_RELAY or the config file)"
        )
    return chosen


def scan_filter(
    excludes: list[str] | None, exclude_from: Path | None, gitignore: bool
) -> ScanFilter | None:
    """The ScanFilter of --exclude, --exclude-from and --gitignore (None:
    none given). A bad pattern or an unreadable --exclude-from file is a
    one-line usage error (exit 2), before anything else happens."""
    if not excludes and exclude_from is None and not gitignore:
        return None
    from p2pcp.transfer.exclude import ScanFilter

    return ScanFilter.build(excludes or (), exclude_from, use_gitignore=gitignore)


def path_argument(text: str, what: str) -> Path:
    """``text`` as a path; an empty one is a usage error, as in scp (``Path("")``
    is the current folder: an unset shell variable must not send or fill it)."""
    if not text:
        raise UsageError(f'{what} is empty ("" is not the current folder; write . for that)')
    return Path(text)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro``; SIGTERM cancels it like Ctrl-C so clean-up code runs."""

    async def wrapper() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            if task is not None:
                loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            return await coro
        except asyncio.CancelledError:
            raise Interrupted("interrupted") from None

    try:
        return asyncio.run(wrapper())
    except KeyboardInterrupt:
        raise Interrupted("interrupted") from None


def write_ticket_file(path: Path, ticket: str) -> None:
    """``--ticket-file``: the ticket and a newline, written atomically (a
    reader never sees half a ticket) and durably."""
    import os
    import tempfile

    from p2pcp.core.errors import StorageError

    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or Path("."))
        with os.fdopen(fd, "w") as handle:
            handle.write(ticket + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise StorageError(f"cannot write the ticket file {path}: {exc.strerror}") from None
