"""A stream's send buffer that never copies what it keeps (sans-IO).

aioquic's ``QuicStreamSender`` keeps the bytes of a stream that are unsent
or unacknowledged in one ``bytearray``: ``+=`` for each write, a slice for
each STREAM frame, ``del buffer[:n]`` as the front is acknowledged. CPython
moves a bytearray's whole content whenever it grows past its allocation
after the front was deleted, and again when it shrinks below half of it.
With the front always being deleted and the end always growing, that is a
copy of the whole buffer every ~1/8 of its size appended: ~8 bytes copied
per byte sent. At the several MiB a stream holds for sending, that took
0.35-0.7 s per GiB of the sender's event loop (the loop that also builds
and encrypts every packet).

``SendBuffer`` offers exactly those three operations over the chunks it was
given, kept as they are: appending stores a reference, deleting the front
drops whole chunks (an offset into the first), and a slice inside one chunk
(nearly every STREAM frame: frames are <= 16 KB, writes are ~256 KiB) is a
copy of just the frame, as before. ``tuning.use_send_buffer`` installs it on
a stream of the aioquic the fast paths follow.
"""

from __future__ import annotations

import bisect

Buffer = bytes | bytearray | memoryview

# Dropped chunks are removed from the lists once this many have piled up at
# the front (each costs a list slot until then).
_COMPACT_AFTER = 64


class SendBuffer:
    """Bytes appended at the end, read by slices and dropped from the front,
    with ``bytearray``'s meaning for ``+=``, ``len``, ``buffer[a:b]`` and
    ``del buffer[:n]``."""

    __slots__ = ("_chunks", "_dropped", "_end", "_head", "_starts")

    def __init__(self, data: Buffer = b"") -> None:
        self._chunks: list[bytes] = []
        self._starts: list[int] = []  # each chunk's position in the whole stream of appends
        self._head = 0  # first chunk still (partly) held
        self._dropped = 0  # bytes deleted from the front so far
        self._end = 0  # bytes appended so far
        if data:
            self += data

    def __len__(self) -> int:
        return self._end - self._dropped

    def __bool__(self) -> bool:
        return self._end > self._dropped

    def __iadd__(self, data: Buffer) -> SendBuffer:
        if len(data):
            chunk = data if type(data) is bytes else bytes(data)
            self._chunks.append(chunk)
            self._starts.append(self._end)
            self._end += len(chunk)
        return self

    def __getitem__(self, key: slice) -> bytes:
        start, stop, step = key.indices(len(self))
        if step != 1:
            raise ValueError("SendBuffer slices have no step")
        if stop <= start:
            return b""
        start += self._dropped
        stop += self._dropped
        index = bisect.bisect_right(self._starts, start, self._head) - 1
        chunk = self._chunks[index]
        at = start - self._starts[index]
        if at + (stop - start) <= len(chunk):
            return chunk[at : at + (stop - start)]
        parts = [memoryview(chunk)[at:]]
        need = stop - start - (len(chunk) - at)
        while need > 0:
            index += 1
            chunk = self._chunks[index]
            parts.append(memoryview(chunk)[:need])
            need -= len(chunk)
        return b"".join(parts)

    def __delitem__(self, key: slice) -> None:
        start, stop, step = key.indices(len(self))
        if start != 0 or step != 1:
            raise ValueError("SendBuffer deletes only from the front")
        if stop <= 0:
            return
        self._dropped += stop
        chunks, starts = self._chunks, self._starts
        head = self._head
        while head < len(chunks) and starts[head] + len(chunks[head]) <= self._dropped:
            chunks[head] = b""  # its memory goes now, its slot at the next compaction
            head += 1
        if head >= _COMPACT_AFTER and head * 2 >= len(chunks):
            del chunks[:head]
            del starts[:head]
            head = 0
        self._head = head
