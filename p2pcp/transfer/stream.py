"""The answer to GET_STREAM (sans-IO): a byte stream of unknown length.

``p2pcp send -`` prints its ticket before it has read its input, so no
content hash can be in the ticket. What authenticates the bytes is the
QUIC connection: it is pinned to the ticket's node id, so every byte the
receiver reads on it was sent by the holder of the sender's key. What the
sender commits to at the end is the standard BLAKE3 and the length of the
whole stream, which the receiver checks against what it received.

Answer layout (after the status byte OK; integers big-endian)::

    u8      name length (1..255) || name (one path component, UTF-8):
            the file name the receiver uses when it writes to a folder
    frames, each:
        u32 length (1..MAX_FRAME_BYTES) || that many bytes of the stream
    end:
        u32 0 || u64 total length || 32 bytes BLAKE3 (standard, as b3sum)
    then the sender finishes the QUIC stream: nothing follows the end.

``StreamDecoder`` takes the answer's bytes as they come
(``receive_data``) and hands out events (``next_event``): ``StreamHead``
once, then ``StreamData`` in order (only bytes that arrived on the
authenticated connection; a frame is handed out as its pieces come, so
memory is bounded by what one ``receive_data`` brings), then
``StreamEnded`` once the end matched. A wrong length or BLAKE3 at the end
raises IntegrityError; a malformed answer RemoteProtocolError; bytes after
the end RemoteProtocolError. A decoder that raised stays failed.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

import blake3

from p2pcp.blobs.names import check_relative_path, display_path
from p2pcp.core.errors import IntegrityError, LocalProtocolError, RemoteProtocolError

# One frame carries at most this much. The sender reads its input in
# pieces of at most this size and sends each as one frame: the whole stream
# is never held, one piece at a time is.
MAX_FRAME_BYTES = 1024 * 1024
MAX_NAME_BYTES = 255
# The name a stream is written under when the sender gave none.
DEFAULT_STREAM_NAME = "stdin"

_LENGTH = struct.Struct(">I")
_END = struct.Struct(">Q32s")


@dataclass(frozen=True)
class StreamHead:
    """The stream's name (checked: one safe path component)."""

    name: str


@dataclass(frozen=True)
class StreamData:
    data: bytes


@dataclass(frozen=True)
class StreamEnded:
    """The end matched: ``length`` bytes, whose BLAKE3 is ``blake3``."""

    length: int
    blake3: bytes


StreamEvent = StreamHead | StreamData | StreamEnded


def check_stream_name(name: str) -> str:
    """``name`` if it is one path component safe anywhere, else
    RemoteProtocolError (it comes from the peer)."""
    encoded = name.encode("utf-8", "surrogateescape")
    if not 0 < len(encoded) <= MAX_NAME_BYTES or "/" in name:
        raise RemoteProtocolError(f"stream name '{display_path(name)}' is not one short name")
    check_relative_path(name)
    return name


def encode_head(name: str) -> bytes:
    try:
        check_stream_name(name)
    except RemoteProtocolError as exc:
        raise LocalProtocolError(str(exc)) from None
    encoded = name.encode("utf-8", "surrogateescape")
    return bytes([len(encoded)]) + encoded


def encode_frame_header(length: int) -> bytes:
    """The 4 bytes before a frame of ``length`` (1..MAX_FRAME_BYTES) bytes."""
    if not 0 < length <= MAX_FRAME_BYTES:
        raise LocalProtocolError(f"a stream frame has 1 to {MAX_FRAME_BYTES} bytes")
    return _LENGTH.pack(length)


def encode_end(length: int, digest: bytes) -> bytes:
    return _LENGTH.pack(0) + _END.pack(length, digest)


class StreamDecoder:
    """Inputs: ``receive_data(bytes)``, ``receive_end()`` (the QUIC stream
    finished). Outputs: ``next_event()``; ``is_finished`` after StreamEnded."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._events: deque[StreamEvent] = deque()
        self._hasher = blake3.blake3()
        self._length = 0
        self._frame_left = 0  # bytes of the current frame still to come
        self._has_head = False
        self.is_finished = False
        self._error: Exception | None = None

    @property
    def length(self) -> int:
        """Stream bytes handed out so far."""
        return self._length

    def next_event(self) -> StreamEvent | None:
        return self._events.popleft() if self._events else None

    def receive_data(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        try:
            self._receive(data)
        except (RemoteProtocolError, IntegrityError) as exc:
            self._error = exc
            raise

    def receive_end(self) -> None:
        """The answer ended: it must have ended exactly after the end frame."""
        if self._error is not None:
            raise self._error
        if not self.is_finished:
            self._error = IntegrityError(
                f"the stream ended after {self._length} bytes without its end mark"
            )
            raise self._error

    def _receive(self, data: bytes) -> None:
        if self.is_finished:
            if data:
                raise RemoteProtocolError("the sender sent bytes after the end of the stream")
            return
        view = memoryview(data)
        if self._frame_left and not self._buffer:
            view = self._take_frame(view)  # the common case: no copy
        self._buffer += view
        while not self.is_finished:
            if self._frame_left:
                rest = self._take_frame(memoryview(bytes(self._buffer)))
                self._buffer = bytearray(rest)
                if self._frame_left:
                    return
                continue
            if not self._has_head:
                if not self._buffer or len(self._buffer) < 1 + self._buffer[0]:
                    return
                size = self._buffer[0]
                name = bytes(self._buffer[1 : 1 + size]).decode("utf-8", "surrogateescape")
                del self._buffer[: 1 + size]
                self._has_head = True
                self._events.append(StreamHead(check_stream_name(name)))
                continue
            if len(self._buffer) < _LENGTH.size:
                return
            (length,) = _LENGTH.unpack_from(self._buffer)
            if length > MAX_FRAME_BYTES:
                raise RemoteProtocolError(f"a stream frame of {length} bytes is too large")
            if length:
                del self._buffer[: _LENGTH.size]
                self._frame_left = length
                continue
            if len(self._buffer) < _LENGTH.size + _END.size:
                return
            total, digest = _END.unpack_from(self._buffer, _LENGTH.size)
            del self._buffer[: _LENGTH.size + _END.size]
            self._check_end(total, digest)
            if self._buffer:
                raise RemoteProtocolError("the sender sent bytes after the end of the stream")

    def _take_frame(self, view: memoryview) -> memoryview:
        """Hand out the current frame's bytes from ``view``; return the rest."""
        piece = view[: self._frame_left]
        if piece:
            data = bytes(piece)
            self._hasher.update(data)
            self._length += len(data)
            self._frame_left -= len(data)
            self._events.append(StreamData(data))
        return view[len(piece) :]

    def _check_end(self, total: int, digest: bytes) -> None:
        if total != self._length:
            raise IntegrityError(
                f"the stream's length does not match: {self._length} bytes received, "
                f"the sender announced {total}"
            )
        if self._hasher.digest() != digest:
            raise IntegrityError("the stream's BLAKE3 does not match what the sender announced")
        self.is_finished = True
        self._events.append(StreamEnded(total, digest))
