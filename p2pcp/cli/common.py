"""Pieces shared by the send and receive commands."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from p2pcp.core.errors import Interrupted, UsageError

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


class Congestion(str, enum.Enum):
    """The names of net/quic/configuration.py's CONGESTION_CONTROLLERS (a test keeps them equal)."""

    bbr = "bbr"
    cubic = "cubic"
    reno = "reno"


CongestionOption = Annotated[
    Congestion,
    typer.Option(
        "--congestion",
        envvar="P2PCP_CONGESTION",
        case_sensitive=False,
        metavar="bbr|cubic|reno",
        help="Congestion controller for the data this side sends. On the sender it paces "
        "the files, so it sets the transfer's speed; on the receiver it only paces its acks "
        "and requests. bbr (model-based: random loss does not slow it down), or aioquic's "
        "loss-based cubic or reno.",
    ),
]
VerboseOption = Annotated[
    int, typer.Option("--verbose", "-v", count=True, help="More detail (repeat for more).")
]


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
