"""Stream: one bidirectional QUIC stream as the transfer layer sees it.

The connection driver (connection.py) creates each Stream, feeds it with
``receive_data`` / ``receive_reset`` / ``receive_stop_sending`` /
``fail`` and calls ``wake_writer`` after acknowledgements; the
application calls ``read`` / ``read_exactly`` / ``write`` / ``finish`` /
``reset``. A Stream reaches its connection only through ``StreamOwner``
(the methods below), and tells it once when it is done (``stream_ended``).

Invariants:

- ``write`` returns only once the connection's backpressure rule lets the
  stream queue more (``Connection.may_write``, the one place that rule is
  written: aioquic's own send buffer is unbounded); while it does not, the
  writer waits, registered with the connection (``writer_blocked``), which
  wakes it after acknowledgements once there is room again.
- Received data is handed out in order, exactly once; ``read`` returns
  ``b""`` only after the peer's FIN and every byte before it.
- Once a stream has failed (peer reset, connection lost) every later
  ``read``/``write`` raises the same error; the first error wins.
- One task reads and one task writes a stream at a time (the waiters are
  single futures); several tasks may use several streams freely.
- Receiving is flow-controlled by the reader (credit.py): the stream's
  window moves with ``read_offset``, the bytes the reader has taken, so a
  reader slower than the network holds at most a stream window here
  (``configuration.MAX_STREAM_DATA_BYTES``) and slows the sender. Every
  byte leaves the queue through ``_take`` or a reset, which report it to
  the connection; while the stream still receives, its queued bytes count
  against the connection's window, and once its end has arrived they no
  longer do (no more can come, and a reader may drop such a stream unread).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

from p2pcp.core.errors import (
    ConnectionLostError,
    P2pcpError,
    RemoteProtocolError,
    StreamResetError,
)

# read() joins queued chunks (one per QUIC frame, 1-16 KB) up to this size,
# so a reader costs one call per ~256 KiB rather than one per packet.
READ_JOIN_BYTES = 256 * 1024


class StreamOwner(Protocol):
    """What a Stream needs from its connection (connection.py's Connection)."""

    loop: asyncio.AbstractEventLoop

    @property
    def is_closed(self) -> bool:
        """The connection is closing or gone."""

    def send_stream_data(self, stream_id: int, data: bytes, *, end_stream: bool) -> None:
        """Queue ``data`` (and the FIN) for sending."""

    def reset_stream(self, stream_id: int, code: int) -> None:
        """Send RESET_STREAM and STOP_SENDING with ``code``."""

    def receive_queued(self, nbytes: int) -> None:
        """``nbytes`` more wait in a stream's queue for its reader (credit.py)."""

    def receive_consumed(self, stream_id: int, nbytes: int, read_offset: int | None) -> None:
        """The reader took (or the stream dropped) ``nbytes`` of its queue;
        ``read_offset`` None: it wants no more (credit.py)."""

    def receive_dropped(self) -> None:
        """Data or a reset arrived that no reader will take."""

    def may_write(self, stream_id: int) -> bool:
        """The backpressure rule: may this stream queue more now?"""

    def writer_blocked(self, stream: Stream) -> None:
        """``stream``'s writer waits for room: ``wake_writer`` it when there is."""

    def writer_unblocked(self, stream: Stream) -> None:
        """``stream``'s writer stopped waiting."""

    def stream_ended(self, stream: Stream) -> None:
        """``stream`` is done (``is_done``): no event can matter to it any more."""


class Stream:
    """A bidirectional stream (see module doc for the rules)."""

    def __init__(self, connection: StreamOwner, stream_id: int) -> None:
        self._connection = connection
        self.stream_id = stream_id
        self._chunks: deque[bytes] = deque()
        # bytes the reader has taken (the stream's window follows it)
        self.read_offset = 0
        self._queued_bytes = 0
        self._is_eof = False
        self._read_error: P2pcpError | None = None
        self._write_error: P2pcpError | None = None
        self._read_waiter: asyncio.Future[None] | None = None
        self._write_waiter: asyncio.Future[None] | None = None
        self._is_fin_queued = False
        self._is_ended = False

    def __repr__(self) -> str:
        return f"Stream({self.stream_id})"

    # -- application side --------------------------------------------------

    async def read(self) -> bytes:
        """The next chunk of data; ``b""`` at the end of the stream."""
        if not await self._wait_readable():
            return b""
        chunks = self._chunks
        first = chunks.popleft()
        if not chunks or len(first) >= READ_JOIN_BYTES:
            self._take(len(first))
            return first
        parts = [first]
        total = len(first)
        while chunks and total < READ_JOIN_BYTES:
            chunk = chunks.popleft()
            parts.append(chunk)
            total += len(chunk)
        self._take(total)
        return b"".join(parts)

    async def read_chunks(self) -> list[bytes]:
        """The queued chunks as they arrived, up to ~READ_JOIN_BYTES (at least
        one); ``[]`` at the end of the stream. For a reader that keeps chunks
        (the range decoder) a join would be a copy for nothing."""
        if not await self._wait_readable():
            return []
        chunks = self._chunks
        parts = [chunks.popleft()]
        total = len(parts[0])
        while chunks and total < READ_JOIN_BYTES:
            chunk = chunks.popleft()
            parts.append(chunk)
            total += len(chunk)
        self._take(total)
        return parts

    async def read_exactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes, or RemoteProtocolError if the stream ends first."""
        parts: list[bytes] = []
        need = n
        while need > 0:
            if not await self._wait_readable():
                raise RemoteProtocolError(f"stream ended after {n - need} of {n} expected bytes")
            chunk = self._chunks.popleft()
            if len(chunk) > need:
                self._chunks.appendleft(chunk[need:])
                chunk = chunk[:need]
            parts.append(chunk)
            need -= len(chunk)
        self._take(n)
        return b"".join(parts)

    async def _wait_readable(self) -> bool:
        """Wait for queued data: True when there is some, False at the end."""
        while not self._chunks:
            if self._read_error is not None:
                raise self._read_error
            if self._is_eof:
                return False
            self._read_waiter = self._connection.loop.create_future()
            try:
                await self._read_waiter
            finally:
                self._read_waiter = None
        return True

    def _take(self, nbytes: int) -> None:
        """The reader took ``nbytes`` from the queue: credit for the peer."""
        self.read_offset += nbytes
        self._queued_bytes -= nbytes
        if not self._is_eof and self._read_error is None:
            self._connection.receive_consumed(self.stream_id, nbytes, self.read_offset)

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data``; wait while the connection's backpressure rule says so."""
        if self._write_error is not None:
            raise self._write_error
        if self._is_fin_queued:
            raise ConnectionLostError("write after finish() on a stream")
        if data:
            self._connection.send_stream_data(self.stream_id, bytes(data), end_stream=False)
        await self._wait_for_room()

    async def finish(self) -> None:
        """Send FIN after everything written so far."""
        if self._write_error is not None:
            raise self._write_error
        if self._is_fin_queued:
            return
        self._is_fin_queued = True
        self._connection.send_stream_data(self.stream_id, b"", end_stream=True)
        self._end_if_done()
        await self._wait_for_room()

    def reset(self, code: int) -> None:
        """Abort both directions: RESET_STREAM and STOP_SENDING with ``code``."""
        error = StreamResetError(f"stream reset locally (code {code:#x})", code)
        self._connection.reset_stream(self.stream_id, code)
        self._drop_queue()  # nobody will read it
        self.fail(error)

    # -- driver side -------------------------------------------------------

    @property
    def is_done(self) -> bool:
        """No more events can matter: both directions ended (cleanly or not)."""
        is_read_done = self._is_eof or self._read_error is not None
        is_write_done = self._is_fin_queued or self._write_error is not None
        return is_read_done and is_write_done

    @property
    def queued_bytes(self) -> int:
        """Bytes received and not yet read (at most a stream window)."""
        return self._queued_bytes

    @property
    def is_connection_lost(self) -> bool:
        """The connection under this stream has ended (for telling a peer that
        went away from one that ended a response early on purpose)."""
        return bool(self._connection.is_closed)

    def receive_data(self, data: bytes, end_stream: bool) -> None:
        if self._read_error is not None:
            self._connection.receive_dropped()  # nobody will read it
            return
        if data:
            self._chunks.append(data)
            self._queued_bytes += len(data)
            if not end_stream:
                self._connection.receive_queued(len(data))
        if end_stream:
            # The end is here: what the queue holds leaves the connection's
            # count (module doc); the reader drains it without more credit.
            self._is_eof = True
            queued_before = self._queued_bytes - len(data)
            self._connection.receive_consumed(self.stream_id, queued_before, None)
            self._end_if_done()
        self._wake_reader()

    def receive_reset(self, code: int) -> None:
        """The peer aborted its sending side: reads fail with StreamResetError."""
        if self._read_error is None:
            self._read_error = StreamResetError(f"peer reset the stream (code {code:#x})", code)
            self._drop_queue()
            self._end_if_done()
        else:
            self._connection.receive_dropped()  # its final size may free credit
        self._wake_reader()

    def receive_stop_sending(self, code: int) -> None:
        """The peer does not want our data: writes fail (aioquic resets our side)."""
        if self._write_error is None:
            self._write_error = StreamResetError(
                f"peer stopped reading the stream (code {code:#x})", code
            )
            self._end_if_done()
        self._wake_writer_now()

    def fail(self, error: P2pcpError) -> None:
        """Fail both directions (connection lost, or a local reset)."""
        if self._read_error is None and not self._is_eof:
            self._read_error = error
        if self._write_error is None:
            self._write_error = error
        self._end_if_done()
        self._wake_reader()
        self._wake_writer_now()

    def _drop_queue(self) -> None:
        """Discard what the reader will never take, and give its credit back."""
        dropped = self._queued_bytes
        self._chunks.clear()
        self._queued_bytes = 0
        if self._is_eof:
            return  # no longer counted (module doc)
        self._connection.receive_consumed(self.stream_id, dropped, None)

    def _end_if_done(self) -> None:
        """Tell the connection, once, that no event can matter any more."""
        if not self._is_ended and self.is_done:
            self._is_ended = True
            self._connection.stream_ended(self)

    def wake_writer(self) -> None:
        """Called by the driver after ACKs once the stream may write again."""
        self._wake_writer_now()

    def _wake_reader(self) -> None:
        waiter = self._read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_writer_now(self) -> None:
        waiter = self._write_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait_for_room(self) -> None:
        connection = self._connection
        while not connection.may_write(self.stream_id):
            if self._write_error is not None:
                raise self._write_error
            self._write_waiter = connection.loop.create_future()
            connection.writer_blocked(self)
            try:
                await self._write_waiter
            finally:
                self._write_waiter = None
                connection.writer_unblocked(self)
        if self._write_error is not None:
            raise self._write_error
