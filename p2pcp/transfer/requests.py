"""The receiver's requests, and how their answers are read.

Every receiver (``fetcher.py`` for files, ``updater.py`` for ``--update``,
``text.py``, ``pipeout.py``) sends its requests and reads the answers
with these: a request on a stream of its own (``send_request``), the
answer's status byte (``check_status``), a body read in pieces of known
lengths (``BodyReader``) or fed to a verifying decoder (``fetch_blob``),
each response watched for stalls (``watched``: no verified data for the
progress timeout is a lost connection), and a reset explained in the
receiver's words (``explain_reset``). Also the exchanges every receive of
a collection makes: the manifest with its first file asked for in the
same flight (``fetch_manifest``, ``accept_first``), and DONE at the end
(``send_done``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Literal, TypeVar, overload

from p2pcp.blobs.collection import MAX_MANIFEST_BYTES, Manifest, decode_manifest
from p2pcp.blobs.encoding import ALL, DecodeFinished, LeafReceived, LeafVerified, RangeDecoder
from p2pcp.core.defaults import PROGRESS_TIMEOUT_S
from p2pcp.core.errors import (
    ConnectionLostError,
    IntegrityError,
    NotFoundError,
    P2pcpError,
    RemoteProtocolError,
    StreamResetError,
)
from p2pcp.core.ticket import Ticket, TicketKind
from p2pcp.net import Connection, Stream
from p2pcp.transfer import wire
from p2pcp.transfer.snapshot import ContentChangedError


async def send_request(connection: Connection, request: wire.Request) -> Stream:
    stream = await connection.open_stream()
    await stream.write(wire.encode_request(request))
    await stream.finish()
    return stream


async def _read_status(stream: Stream, what: str) -> None:
    status = await stream.read_exactly(1)
    check_status(status[0], what)


async def send_done(connection: Connection, bytes_received: int) -> None:
    """Tell the sender we have everything; it may exit (--once). Everything
    is verified and in place by now, so a sender that is gone cannot make
    the receive fail: the notice is best effort."""
    with contextlib.suppress(ConnectionLostError):
        stream = await send_request(connection, wire.DoneRequest(bytes_received))
        await _read_status(stream, "the end of the transfer")


def explain_reset(exc: StreamResetError, what: str) -> P2pcpError:
    if exc.code == wire.ERROR_CONTENT_CHANGED:
        return ContentChangedError(what)
    if exc.code == wire.ERROR_SHUTTING_DOWN:
        return ConnectionLostError("the sender stopped before the transfer finished")
    return exc


def _stalled(stream: Stream, what: str, timeout_s: float) -> ConnectionLostError:
    """Give up on a response that brought no verified data for ``timeout_s``:
    stop the stream and say so (the session's retry loop takes it from here)."""
    stream.reset(wire.ERROR_CANCELLED)
    return ConnectionLostError(f"the sender sent no verified data for {what} in {timeout_s:.0f} s")


class Watchdog:
    """Cancels the current task when ``feed`` was not called for ``timeout_s``.

    A sender that trickles a byte now and then keeps QUIC from ever going
    idle; this bounds the time between verified leaves instead. ``feed`` only
    stores a float, so it costs nothing per leaf; one timer re-arms itself.
    """

    def __init__(self, timeout_s: float, what: str = "") -> None:
        self.what = what  # what the watched response brings, for its errors
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        self.timeout_s = timeout_s
        self.deadline = self.loop.time() + timeout_s
        self.has_fired = False
        self.handle = self.loop.call_at(self.deadline, self._check)

    def feed(self) -> None:
        self.deadline = self.loop.time() + self.timeout_s

    def _check(self) -> None:
        if self.loop.time() < self.deadline:
            self.handle = self.loop.call_at(self.deadline, self._check)
        elif self.task is not None:
            self.has_fired = True
            self.task.cancel()

    def close(self) -> None:
        self.handle.cancel()
        if self.has_fired and self.task is not None and hasattr(self.task, "uncancel"):
            self.task.uncancel()


@contextlib.contextmanager
def watched(stream: Stream, what: str, timeout_s: float) -> Iterator[Watchdog]:
    """A watchdog over one response, and the errors that response ends with
    in the receiver's words: a reset explained, a stall as a lost connection.
    ``watchdog.what`` names what is being fetched (a GET_MANY moves it on)."""
    watchdog = Watchdog(timeout_s, what)
    try:
        yield watchdog
    except StreamResetError as exc:
        raise explain_reset(exc, watchdog.what) from None
    except asyncio.CancelledError:
        if not watchdog.has_fired:
            raise
        raise _stalled(stream, watchdog.what, timeout_s) from None
    finally:
        watchdog.close()


def check_status(status: int, what: str) -> None:
    """A response's status byte: OK, or the error it stands for."""
    if status == wire.STATUS_NOT_FOUND:
        raise NotFoundError(f"the sender does not have {what} any more")
    if status != wire.STATUS_OK:
        raise RemoteProtocolError(f"the sender answered with unknown status {status}")


_Leaf = TypeVar("_Leaf", LeafVerified, LeafReceived)


async def fetch_blob(
    stream: Stream,
    decoder: RangeDecoder,
    on_leaf: Callable[[_Leaf], Awaitable[None]],
    what: str,
    progress_timeout_s: float = PROGRESS_TIMEOUT_S,
    *,
    has_status: bool = False,
    leaf_type: type[_Leaf],
) -> None:
    """Feed a response body into ``decoder``, handing out its leaves: verified
    ones, or ``leaf_type=LeafReceived`` from a decoder that leaves the check
    to ``on_leaf`` (``has_status``: the caller read the status byte already)."""
    with watched(stream, what, progress_timeout_s) as watchdog:
        if not has_status:
            await _read_status(stream, what)
        while True:
            chunks = await stream.read_chunks()
            if not chunks:
                break
            for chunk in chunks:
                decoder.receive_data(chunk)
            while (event := decoder.next_event()) is not None:
                if isinstance(event, leaf_type):
                    watchdog.feed()
                    await on_leaf(event)
    if not decoder.is_finished:
        if stream.is_connection_lost:
            # The sender went away (shut down, crashed): not a lie, retry.
            raise ConnectionLostError(f"the connection closed during {what}")
        raise IntegrityError(f"the sender's answer for {what} ended early")
    while (event := decoder.next_event()) is not None:
        if not isinstance(event, DecodeFinished):
            raise RemoteProtocolError("internal: decoder produced data after its end")


@overload
async def fetch_manifest(
    connection: Connection,
    ticket: Ticket,
    progress_timeout_s: float,
    on_data: Callable[[], None] = ...,
    *,
    ask_first: Literal[True] = ...,
) -> tuple[Manifest, Stream]: ...
@overload
async def fetch_manifest(
    connection: Connection,
    ticket: Ticket,
    progress_timeout_s: float,
    on_data: Callable[[], None] = ...,
    *,
    ask_first: bool,
) -> tuple[Manifest, Stream | None]: ...
async def fetch_manifest(
    connection: Connection,
    ticket: Ticket,
    progress_timeout_s: float,
    on_data: Callable[[], None] = lambda: None,
    *,
    ask_first: bool = True,
) -> tuple[Manifest, Stream | None]:
    """The verified manifest, and a stream already asking for its first file
    (GET_ITEM, sent with the manifest's GET: the file's data is on its way a
    round trip sooner than a GET sent once the manifest is here). ``on_data``
    is called with each verified piece of it. Not ``ask_first`` (``--update``:
    the first file may be here already, and its whole answer would arrive
    before the plan says so): no GET_ITEM, None."""
    data = bytearray()

    async def on_leaf(leaf: LeafVerified) -> None:
        on_data()
        data.extend(leaf.data)
        if len(data) > MAX_MANIFEST_BYTES:
            raise RemoteProtocolError("the manifest is larger than p2pcp accepts")

    stream = await send_request(connection, wire.GetRequest(ticket.root_hash, ALL))
    first = (
        await send_request(connection, wire.ItemRequest(ticket.root_hash, 0)) if ask_first else None
    )
    # max_size: a manifest larger than we accept is refused from its header.
    decoder = RangeDecoder(ticket.root_hash, ALL, max_size=MAX_MANIFEST_BYTES)
    await fetch_blob(
        stream, decoder, on_leaf, "the file list", progress_timeout_s, leaf_type=LeafVerified
    )
    manifest = decode_manifest(bytes(data))
    if manifest.is_text != (ticket.kind is TicketKind.TEXT):
        drop(first)
        raise IntegrityError("the ticket's kind (text or files) does not match the sender's")
    if manifest.total_size != ticket.total_size:
        raise IntegrityError("the ticket's total size does not match the sender's file list")
    return manifest, first


async def accept_first(stream: Stream, what: str, progress_timeout_s: float) -> bool:
    """Whether the GET_ITEM ``stream`` is being answered (its status is OK).

    A sender that does not know GET_ITEM resets it; one without the file
    says NOT_FOUND: the caller asks with a GET instead (which reports the
    error, if any, as for every file). Anything else fails as a GET would.
    """
    try:
        await asyncio.wait_for(_read_status(stream, what), progress_timeout_s)
    except NotFoundError:
        return False
    except StreamResetError as exc:
        if exc.code != wire.ERROR_BAD_REQUEST:
            raise explain_reset(exc, what) from None
        return False
    except asyncio.TimeoutError:
        raise _stalled(stream, what, progress_timeout_s) from None
    return True


class BodyReader:
    """Reads a response stream in pieces of exact lengths (GET_MANY bodies
    follow each other without framing: each length is known in advance)."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    def take_now(self, count: int) -> bytes | None:
        """``count`` bytes if they are here already, else None (no await:
        most pieces of an answer are in the buffer when asked for)."""
        if len(self.buffer) < count:
            return None
        piece = bytes(self.buffer[:count])
        del self.buffer[:count]
        return piece

    async def take(self, count: int) -> bytes:
        while len(self.buffer) < count:
            chunk = await self.stream.read()
            if not chunk:
                if self.stream.is_connection_lost:
                    raise ConnectionLostError("the connection closed during a transfer")
                raise IntegrityError("the sender's answer ended early")
            self.buffer += chunk
        piece = bytes(self.buffer[:count])
        del self.buffer[:count]
        return piece

    async def expect_end(self) -> None:
        """The answer must end here: more bytes than asked for are a lie."""
        if self.buffer or await self.stream.read():
            raise RemoteProtocolError("the sender answered with more than was asked for")


def drop(stream: Stream | None) -> None:
    """Stop a response we will not read (its data would fill the windows)."""
    if stream is not None and not stream.is_done:
        stream.reset(wire.ERROR_CANCELLED)


async def close_quietly(connection: Connection, reason: str) -> None:
    with contextlib.suppress(P2pcpError, OSError):
        await connection.close(reason)
