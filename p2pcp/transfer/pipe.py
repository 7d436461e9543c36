"""Pipes, the sender's side: ``p2pcp send -`` streams standard input.

The ticket is printed at once (a stream ticket: a random stream id, no
content hash, ``stream.py`` says why). Nothing of the input is read until
the one receiver asks for the stream; then the input is read a piece of at
most ``stream.MAX_FRAME_BYTES`` at a time, each piece hashed (standard
BLAKE3) and written to the QUIC stream, whose backpressure holds the next
read back: memory stays bounded by a piece plus the stream's send window,
however long the input. At the input's end the length and BLAKE3 follow.

One receiver only: the first GET_STREAM naming the id takes the stream;
any other gets STATUS_TAKEN. The input cannot be read twice, so a taker
that goes away before it confirmed (DONE) ends the send with an error
(exit 3), and its DONE ends the send with exit 0.

Blocking reads (and, on the receiver, writes to stdout) run on a daemon
thread of their own (``FdThread``): a read of a terminal or an idle pipe
can block for ever, and a thread of asyncio's default executor would keep
the process from exiting after Ctrl-C.
"""

from __future__ import annotations

import asyncio
import os
import queue
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import blake3

from p2pcp.core.errors import ConnectionLostError, P2pcpError, StorageError
from p2pcp.core.identity import load_or_create_secret_key
from p2pcp.core.ticket import TicketKind
from p2pcp.net import Endpoint, Stream
from p2pcp.transfer import events, wire
from p2pcp.transfer.provider import Provider
from p2pcp.transfer.ratelimit import Pacer, write_paced
from p2pcp.transfer.sender import Emit, SendOptions, announce
from p2pcp.transfer.stream import (
    DEFAULT_STREAM_NAME,
    MAX_FRAME_BYTES,
    encode_end,
    encode_frame_header,
    encode_head,
)

T = TypeVar("T")

STDIN_FD = 0


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class FdThread:
    """Runs blocking calls one after another on a daemon thread of its own.

    ``await call(function, *args)`` returns the call's result (or raises its
    exception). A caller cancelled meanwhile stops waiting; the call itself
    still runs (a verified piece of data may still be written)."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...], Any] | None]
        self._jobs = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((function, args, (loop, future)))
        return await future

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            function, args, (loop, future) = job
            result: Any = None
            error: BaseException | None = None
            try:
                result = function(*args)
            except BaseException as exc:  # handed to the caller, whatever it is
                error = exc
            try:
                loop.call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:
                return  # the loop is closed: nobody waits any more

    def close(self) -> None:
        """The thread ends after the calls already asked for."""
        self._jobs.put(None)


class _Input:
    """The input read piece by piece and hashed, on the reader thread."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.hasher = blake3.blake3()
        self.length = 0

    def read(self) -> bytes:
        try:
            data = os.read(self.fd, MAX_FRAME_BYTES)
        except OSError as exc:
            raise StorageError(f"cannot read standard input: {exc.strerror}") from None
        self.hasher.update(data)
        self.length += len(data)
        return data


@dataclass
class PipeSource:
    """The stream of one ``send -``: given to the first receiver that asks."""

    name: str = DEFAULT_STREAM_NAME
    fd: int = STDIN_FD
    stream_id: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    taker: int | None = None
    """The connection id of the receiver that took the stream."""
    bytes_sent: int = 0
    ended: asyncio.Future[None] | None = None
    """Done when the send is over: result on the taker's DONE, else its error."""
    pacer: Pacer | None = None
    """Paces the stream's bytes (``--limit-rate``)."""

    def __post_init__(self) -> None:
        encode_head(self.name)  # a bad name is refused before the ticket is shown
        self._reader = FdThread("p2pcp-stdin")

    def ended_future(self) -> asyncio.Future[None]:
        if self.ended is None:
            self.ended = asyncio.get_running_loop().create_future()
        return self.ended

    def fail(self, error: P2pcpError) -> None:
        if not self.ended_future().done():
            self.ended_future().set_exception(error)

    def finished(self) -> None:
        if not self.ended_future().done():
            self.ended_future().set_result(None)

    def close(self) -> None:
        self._reader.close()

    async def answer(
        self, stream: Stream, connection_id: int, on_sent: Callable[[int], None]
    ) -> None:
        if self.taker is not None:
            await stream.write(bytes([wire.STATUS_TAKEN]))
            await stream.finish()
            return
        self.taker = connection_id
        on_sent(0)
        source = _Input(self.fd)
        try:
            await stream.write(bytes([wire.STATUS_OK]) + encode_head(self.name))
            while data := await self._reader.call(source.read):
                await stream.write(encode_frame_header(len(data)))
                await write_paced(self.pacer, stream.write, data)
                self.bytes_sent = source.length
                on_sent(source.length)
            await stream.write(encode_end(source.length, source.hasher.digest()))
            await stream.finish()
        except StorageError as exc:
            stream.reset(wire.ERROR_SHUTTING_DOWN)
            self.fail(exc)
        except P2pcpError:
            self.fail(self._lost())
            raise

    def _lost(self) -> ConnectionLostError:
        return ConnectionLostError(
            f"the receiver stopped before it had the whole stream ({self.bytes_sent} bytes "
            "sent); standard input cannot be sent again"
        )

    def watch(self, emit: Emit) -> Emit:
        """``emit``, also ending the send when the taker finishes or fails."""

        def watched(event: object) -> None:
            emit(event)
            if isinstance(event, events.ReceiverFinished) and event.connection_id == self.taker:
                self.finished()
            elif isinstance(event, events.ReceiverFailed) and event.connection_id == self.taker:
                self.fail(self._lost())

        return watched


async def run_send_stream(options: SendOptions, emit: Emit) -> None:
    """Print a stream ticket and send standard input to its one receiver
    (``options.stream_name``, its endpoint); return when that receiver
    confirmed the whole stream."""
    source = PipeSource(options.stream_name or DEFAULT_STREAM_NAME)
    source.pacer = Pacer(options.limit_rate_bps) if options.limit_rate_bps else None
    try:
        secret_key = await asyncio.to_thread(load_or_create_secret_key)
        endpoint = await Endpoint.bind(secret_key, options.endpoint)
        try:
            announce(
                endpoint,
                secret_key,
                emit,
                kind=TicketKind.STREAM,
                root=source.stream_id,
                total_size=0,
                file_count=1,
                name=source.name,
                ticket_type=options.ticket_type,
            )
            ended = source.ended_future()
            provider = Provider(None, endpoint, source.watch(emit), stream_source=source)
            serving = asyncio.ensure_future(provider.serve())
            try:
                await asyncio.wait({serving, ended}, return_when=asyncio.FIRST_COMPLETED)
                if not ended.done():
                    await serving  # the provider stops only on an error: that one
                    raise ConnectionLostError("the sender stopped serving the stream")
            finally:
                serving.cancel()
                await asyncio.gather(serving, return_exceptions=True)
            await ended
        finally:
            await endpoint.close()
    finally:
        source.close()
