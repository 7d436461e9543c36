"""The sender's sessions: answer verified-range requests for one collection.

One ``Provider`` serves one collection to any number of receivers, one
after another or at once, until cancelled, or (``once``) until the first
receiver reports that it has everything verified.

Per request stream: read the request (bounded), look the hash up, answer
with the verified-stream body of ``blobs.encoding``; a GET_MANY is answered
blob after blob on its one stream (status, body), each file opened only
while its body is written, so a request of 256 blobs holds one file open. Leaves are read from
disk at serve time and re-hashed: a file that changed after the ticket was
made is never sent as if it were the original; the stream is reset with
``ERROR_CONTENT_CHANGED`` and the receiver stops with a clear reason.

Hostile receivers (anyone who can reach the port may connect; only holders
of the ticket's hashes get data) are bounded by ``ProviderLimits``:

- a request must arrive whole within ``request_timeout_s``, else the stream
  is reset with ``ERROR_BAD_REQUEST``; a malformed or oversized request is
  reset the same way; an unknown hash is answered NOT_FOUND;
- a GET_MANY names at most ``wire.MAX_MANY_BLOBS`` blobs, each of at most
  one leaf (a larger known blob is refused, ERROR_BAD_REQUEST), so one
  request answers at most 64 MiB;
- a connection has at most ``max_requests_per_connection`` requests in
  progress; a stream beyond that is reset before it is read (QUIC's own
  stream limit, 128 open streams, bounds what queues below us);
- at most ``max_connections`` receivers are served at once: a new one closes
  the connection idle longest (no request in progress), or is itself closed
  when every connection is busy;
- ``DONE`` ends ``serve(once=True)`` only from a connection that fetched
  something (a GET of a hash we serve), so a stranger cannot stop a
  ``send --once`` before the real receiver has its files.

GET_TREE (``receive --update``) is answered from the outboard in memory:
the size and the leaf hashes of a file blob larger than one leaf.

Besides a collection (or instead of one, ``collection=None``) a provider
may serve blobs held in memory (a text message: ``text.py``) and one
stream (``send -``: a ``StreamSource``, ``pipe.py``), asked for by its id
with GET_STREAM; the source decides who gets it (one receiver).

A share (``p2pcp share``: a ``SnapshotSource``, ``share.py``) serves no
fixed collection but snapshots: GET_SNAPSHOT with the share's secret from a
receiver the source allows makes a fresh one (the source rescans; requests
that arrive during a scan share the next one) and answers its root. The
provider keeps the snapshots receivers may still be fetching
(``_KeptSnapshots``: the newest few, and older ones while a connection that
was given them is open, at most MAX_KEPT_SNAPSHOTS). Authorization is per
connection: blob requests on a share's connection are answered only once
that connection was given a snapshot, and only for blobs of kept snapshots
(anything else is NOT FOUND); a wrong secret is NOT FOUND, a receiver not
on the allow list DENIED (and told nothing else), each reported as a
``ShareRefused`` event while the share keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from p2pcp.blobs.encoding import ALL, Header, LeafRef, Parents, encode_plan
from p2pcp.blobs.tree import LEAF_SIZE, Outboard, hash_leaf, hash_root
from p2pcp.core.defaults import (
    MAX_RECEIVER_CONNECTIONS,
    MAX_REQUESTS_PER_CONNECTION,
    REQUEST_READ_TIMEOUT_S,
)
from p2pcp.core.errors import ConnectionLostError, P2pcpError, RemoteProtocolError
from p2pcp.core.identity import NodeId
from p2pcp.net import Connection, Endpoint, Stream
from p2pcp.transfer import events, wire
from p2pcp.transfer.ratelimit import Pacer, write_paced
from p2pcp.transfer.source import Collection

Emit = Callable[[object], None]

# Parent hashes and headers are gathered into one write up to this size,
# so a leaf and the proof nodes before it leave in one call.
_COALESCE_BYTES = 256 * 1024
# Plan items (leaves and the proof nodes between them) read per thread job:
# up to 8 leaves, 2 MiB. Reading and checking each leaf on the event loop
# took ~10% of the sender's loop on a 1 GiB file; one thread job per leaf
# would cost nearly as much in hand-offs.
_READ_GROUP_ITEMS = 16

# A share keeps its newest snapshots this many (a receiver that asked just
# before a change, or that reconnects after one, still finds its own), and
# older ones while a connection that was given them is open, but never more
# than MAX_KEPT_SNAPSHOTS in all: each holds a manifest and its blob index
# in memory (a receiver whose snapshot went gets NOT FOUND and asks anew).
KEEP_RECENT_SNAPSHOTS = 2
MAX_KEPT_SNAPSHOTS = 8

# A node id in a message: enough characters to tell a few receivers apart
# (10 base32 characters are 50 bits), short enough for one line.
SHORT_NODE_ID_CHARS = 10


class _ContentChangedError(P2pcpError):
    pass


async def _in_thread(
    read: Callable[[list[LeafRef]], list[bytes]], refs: list[LeafRef]
) -> list[bytes]:
    """``read(refs)`` on a thread. A caller cancelled meanwhile still waits
    for the thread to finish: the reader's fd must not be closed under it."""
    job = asyncio.ensure_future(asyncio.to_thread(read, refs))
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        await asyncio.wait([job])
        raise


class _BlobReader:
    """Reads leaves of one blob from disk or memory and checks them.

    ``is_file``: the blob is a file's (its bytes count as sent), not the
    manifest's."""

    def __init__(
        self, outboard: Outboard, path: str | None, data: bytes | None, *, is_file: bool = True
    ) -> None:
        self.outboard = outboard
        self.path = path
        self.data = data
        self.is_file = is_file
        self.fd: int | None = None
        if path is not None:
            try:
                self.fd = os.open(path, os.O_RDONLY)
            except OSError as exc:
                raise _ContentChangedError(f"cannot open {path}: {exc.strerror}") from None

    def read_leaf(self, ref: LeafRef) -> bytes:
        if self.data is not None:
            chunk = self.data[ref.offset : ref.offset + ref.length]
        else:
            assert self.fd is not None  # set whenever data is None
            try:
                chunk = os.pread(self.fd, ref.length, ref.offset)
            except OSError as exc:
                raise _ContentChangedError(f"cannot read {self.path}: {exc.strerror}") from None
        if len(chunk) != ref.length or hash_leaf(chunk) != self.outboard.leaf_hash(ref.index):
            raise _ContentChangedError(f"{self.path} changed since the ticket was made")
        return chunk

    def read_leaves(self, refs: list[LeafRef]) -> list[bytes]:
        """``read_leaf`` of each (for a thread: pread and blake3 release the GIL)."""
        return [self.read_leaf(ref) for ref in refs]

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    @classmethod
    def small(cls, root: bytes, path: str) -> _BlobReader:
        """A blob of one leaf, read now: its outboard is its leaf's hash,
        and ``hash_root(leaf hash, size) == root`` checks bytes and size."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise _ContentChangedError(f"cannot open {path}: {exc.strerror}") from None
        try:
            data = os.read(fd, LEAF_SIZE + 1)
        except OSError as exc:
            raise _ContentChangedError(f"cannot read {path}: {exc.strerror}") from None
        finally:
            os.close(fd)
        top = hash_leaf(data)
        if len(data) > LEAF_SIZE or hash_root(top, len(data)) != root:
            raise _ContentChangedError(f"{path} changed since the ticket was made")
        return cls(Outboard(len(data), (top,), None), path, data)


@dataclass(frozen=True)
class ProviderLimits:
    """What one receiver connection may cost the sender (reasons: core/defaults.py)."""

    request_timeout_s: float = REQUEST_READ_TIMEOUT_S
    max_requests_per_connection: int = MAX_REQUESTS_PER_CONNECTION
    max_connections: int = MAX_RECEIVER_CONNECTIONS


class StreamSource(Protocol):
    """A stream served to GET_STREAM requests naming ``stream_id``."""

    @property
    def stream_id(self) -> bytes: ...

    async def answer(
        self, stream: Stream, connection_id: int, on_sent: Callable[[int], None]
    ) -> None:
        """Write the whole answer (status included). ``on_sent(0)`` says this
        connection was given the stream (only its DONE then counts), then
        ``on_sent(total)`` as stream bytes go out."""


class SnapshotSource(Protocol):
    """A share's files, snapshotted on request (``share.py``)."""

    def matches(self, secret: bytes) -> bool:
        """Whether ``secret`` is the share's (compared in constant time)."""

    def is_allowed(self, node_id: NodeId | None) -> bool:
        """Whether the receiver that proved ``node_id`` may have snapshots."""

    async def snapshot(self) -> Collection:
        """A snapshot made after this call began (one scan serves every
        request that arrived while the previous one ran); a P2pcpError when
        none can be made now (the folder is gone)."""


class _KeptSnapshots:
    """The snapshots receivers may still fetch from, newest last (module
    doc), and how many open connections were given each."""

    def __init__(self) -> None:
        self._kept: OrderedDict[bytes, Collection] = OrderedDict()
        self._users: Counter[bytes] = Counter()

    def add(self, collection: Collection) -> None:
        """Keep ``collection`` as the newest (an unchanged tree has the
        same root: it replaces its twin)."""
        self._kept[collection.root] = collection
        self._kept.move_to_end(collection.root)
        self._evict()

    def hold(self, root: bytes) -> None:
        self._users[root] += 1

    def release(self, root: bytes) -> None:
        self._users[root] -= 1
        if self._users[root] <= 0:
            del self._users[root]
        self._evict()

    def newest_first(self) -> Sequence[Collection]:
        return list(reversed(self._kept.values()))

    def _evict(self) -> None:
        """Drop the older snapshots no connection holds, then the oldest
        ones beyond MAX_KEPT_SNAPSHOTS even if held."""
        older = list(self._kept)[:-KEEP_RECENT_SNAPSHOTS]
        for root in older:
            if not self._users[root]:
                del self._kept[root]
        for root in older:
            if len(self._kept) <= MAX_KEPT_SNAPSHOTS:
                return
            self._kept.pop(root, None)


class Provider:
    def __init__(
        self,
        collection: Collection | None,
        endpoint: Endpoint,
        emit: Emit,
        limits: ProviderLimits | None = None,
        *,
        memory_blobs: Mapping[bytes, bytes] | None = None,
        stream_source: StreamSource | None = None,
        pacer: Pacer | None = None,
        share: SnapshotSource | None = None,
    ) -> None:
        self.collection = collection
        self.share = share
        """Serve this share's snapshots (``collection`` is then None)."""
        self.snapshots = _KeptSnapshots()
        self.pacer = pacer
        """Paces the answers' bytes (``--limit-rate``), all receivers together."""
        self.endpoint = endpoint
        self.emit = emit
        self.limits = limits or ProviderLimits()
        self.memory_blobs = memory_blobs or {}
        self.stream_source = stream_source
        self._ids = itertools.count(1)
        self._finished = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sessions: dict[int, _Session] = {}

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def serve(self, *, once: bool = False) -> None:
        """Serve receivers until cancelled, or until one finished if ``once``."""
        accept_task = asyncio.ensure_future(self._accept_loop())
        try:
            if once:
                await self._finished.wait()
                # Let the receiver's close reach us, then stop.
                await asyncio.sleep(0)
            else:
                await accept_task
        finally:
            accept_task.cancel()
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, P2pcpError):
                await accept_task
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept_loop(self) -> None:
        while True:
            connection = await self.endpoint.accept()
            session = _Session(next(self._ids), self, connection, time.monotonic())
            if not self._make_room():
                self._spawn(session.refuse("too many receivers at once, all busy"))
                continue
            self._sessions[session.connection_id] = session
            self._spawn(self._serve_connection(session))

    def _make_room(self) -> bool:
        """Below max_connections, or made so by closing the idlest connection."""
        if len(self._sessions) < self.limits.max_connections:
            return True
        idle = [session for session in self._sessions.values() if not session.active_requests]
        if not idle:
            return False
        victim = min(idle, key=lambda session: session.last_active)
        del self._sessions[victim.connection_id]
        self._spawn(victim.refuse("closed to make room: too many receivers at once"))
        return True

    async def _serve_connection(self, session: _Session) -> None:
        connection_id, connection = session.connection_id, session.connection
        self.emit(
            events.ReceiverConnected(connection_id, connection.route, _short_peer_id(connection))
        )
        connection.set_path_listener(
            lambda route: self.emit(events.ReceiverPathChanged(connection_id, route))
        )
        try:
            while True:
                stream = await connection.accept_stream()
                if session.active_requests >= self.limits.max_requests_per_connection:
                    stream.reset(wire.ERROR_BAD_REQUEST)
                    continue
                session.active_requests += 1
                session.last_active = time.monotonic()
                self._spawn(session.serve_stream(stream))
        except ConnectionLostError as exc:
            if not session.is_done and not session.is_refused:
                self.emit(session.failed(str(exc)))
        except asyncio.CancelledError:
            with contextlib.suppress(P2pcpError):
                await connection.close("sender shutting down")
            raise
        finally:
            self._sessions.pop(connection_id, None)
            session.is_open = False
            for root in session.snapshot_roots:
                self.snapshots.release(root)


def _short_peer_id(connection: Connection) -> str | None:
    """The first characters of the node id the receiver proved, if it
    proved one (a receiver without a client certificate proves none)."""
    node_id = connection.peer_node_id
    return None if node_id is None else str(node_id)[:SHORT_NODE_ID_CHARS]


class _Session:
    """One receiver's connection: its byte count, requests in progress, and
    whether it is done."""

    def __init__(
        self, connection_id: int, provider: Provider, connection: Connection, started: float
    ) -> None:
        self.connection_id = connection_id
        self.provider = provider
        self.connection = connection
        self.started = started
        self.bytes_sent = 0
        self.is_done = False
        self.is_refused = False
        # True once this connection asked for a hash we serve: it holds the ticket.
        self.has_fetched = False
        # The share's snapshots given to this connection (held while it is open).
        self.snapshot_roots: set[bytes] = set()
        self.is_open = True
        self.active_requests = 0
        self.last_active = started

    def failed(self, reason: str) -> events.ReceiverFailed:
        """The event for this receiver stopping early: why, and what it got."""
        seconds = time.monotonic() - self.started
        return events.ReceiverFailed(self.connection_id, reason, self.bytes_sent, seconds)

    async def refuse(self, reason: str) -> None:
        """Close this connection (over a limit), saying why in the events."""
        self.is_refused = True
        self.provider.emit(self.failed(reason))
        with contextlib.suppress(P2pcpError):
            await self.connection.close(reason)

    async def serve_stream(self, stream: Stream) -> None:
        try:
            await self._serve_stream(stream)
        finally:
            self.active_requests -= 1
            self.last_active = time.monotonic()

    async def _serve_stream(self, stream: Stream) -> None:
        try:
            try:
                request = await asyncio.wait_for(
                    self._read_request(stream), self.provider.limits.request_timeout_s
                )
            except asyncio.TimeoutError:
                raise RemoteProtocolError("the request did not arrive in time") from None
            if isinstance(request, wire.DoneRequest):
                await stream.write(bytes([wire.STATUS_OK]))
                await stream.finish()
                if not self.has_fetched:
                    return  # a stranger's DONE: it must not end `send --once`
                self.is_done = True
                seconds = time.monotonic() - self.started
                self.provider.emit(
                    events.ReceiverFinished(self.connection_id, self.bytes_sent, seconds)
                )
                self.provider._finished.set()
                return
            if isinstance(request, wire.ManyRequest):
                await self._answer_many(stream, request)
            elif isinstance(request, wire.StreamRequest):
                await self._answer_stream(stream, request)
            elif isinstance(request, wire.SnapshotRequest):
                await self._answer_snapshot(stream, request)
            elif isinstance(request, wire.TreeRequest):
                await self._answer_tree(stream, request)
            else:
                await self._answer_get(stream, request)
        except RemoteProtocolError:
            stream.reset(wire.ERROR_BAD_REQUEST)
        except _ContentChangedError as exc:
            stream.reset(wire.ERROR_CONTENT_CHANGED)
            self.provider.emit(self.failed(str(exc)))
        except ConnectionLostError:
            pass  # the receiver went away or cancelled this request

    async def _read_request(self, stream: Stream) -> wire.Request:
        data = bytearray()
        while True:
            chunk = await stream.read()
            if not chunk:
                return wire.decode_request(bytes(data))
            data += chunk
            if len(data) > wire.MAX_REQUEST_BYTES:
                raise RemoteProtocolError("request too large")

    def _collections(self) -> Sequence[Collection]:
        """The collections this connection may fetch from: the one sent, or
        a share's kept snapshots once this connection was given one."""
        provider = self.provider
        if provider.share is not None:
            return provider.snapshots.newest_first() if self.snapshot_roots else ()
        return () if provider.collection is None else (provider.collection,)

    def _reader(self, blob_hash: bytes | None) -> _BlobReader | None:
        """A reader of a blob we serve, or None if we do not have it."""
        if blob_hash is None:
            return None
        data = self.provider.memory_blobs.get(blob_hash)
        if data is not None:
            return _BlobReader(Outboard.from_bytes(data), None, data)
        for collection in self._collections():
            if blob_hash == collection.root:
                return _BlobReader(
                    collection.manifest_outboard, None, collection.manifest_bytes, is_file=False
                )
            path = collection.blobs.small_path(blob_hash)
            if path is not None:
                return _BlobReader.small(blob_hash, path)
            blob = collection.blobs.get(blob_hash)
            if blob is not None:
                return _BlobReader(blob.outboard, blob.path, None)
        return None

    def _size_of(self, blob_hash: bytes) -> int | None:
        """A blob's size when it is larger than one leaf, 0 if it fits one
        (small files are not stat'ed: one leaf is all GET_MANY needs to
        know), None if we do not have it."""
        data = self.provider.memory_blobs.get(blob_hash)
        if data is not None:
            return len(data)
        for collection in self._collections():
            if blob_hash == collection.root:
                return len(collection.manifest_bytes)
            blob = collection.blobs.get(blob_hash)
            if blob is not None:
                return blob.outboard.size
            if blob_hash in collection.blobs:
                return 0
        return None

    def _outboard(self, blob_hash: bytes) -> Outboard | None:
        """The tree of a file blob larger than one leaf that we serve, else None."""
        for collection in self._collections():
            blob = collection.blobs.get(blob_hash)
            if blob is not None:
                return blob.outboard
        return None

    async def _answer_tree(self, stream: Stream, request: wire.TreeRequest) -> None:
        """GET_TREE: the size and every leaf hash of a large blob (wire.py),
        from the outboard in memory (nothing is read from disk). A known
        blob of one leaf is refused: its root is all there is to know."""
        outboard = self._outboard(request.blob_hash)
        if outboard is None:
            if self._size_of(request.blob_hash) is not None:
                raise RemoteProtocolError("GET_TREE is for file blobs larger than one leaf")
            await stream.write(bytes([wire.STATUS_NOT_FOUND]))
            await stream.finish()
            return
        self.has_fetched = True
        hashes = memoryview(outboard.leaf_hashes)
        head = bytes([wire.STATUS_OK]) + outboard.size.to_bytes(wire.TREE_SIZE_BYTES, "big")
        await write_paced(self.provider.pacer, stream.write, head)
        for at in range(0, len(hashes), _COALESCE_BYTES):
            piece = bytes(hashes[at : at + _COALESCE_BYTES])
            await write_paced(self.provider.pacer, stream.write, piece)
        await stream.finish()

    async def _answer_get(
        self, stream: Stream, request: wire.GetRequest | wire.ItemRequest
    ) -> None:
        blob_hash: bytes | None
        if isinstance(request, wire.ItemRequest):
            blob_hash = None
            for collection in self._collections():
                if request.collection_hash == collection.root:
                    files = collection.manifest.files
                    blob_hash = files[request.index].root if request.index < len(files) else None
                    break
            ranges: tuple[tuple[int, int], ...] = ALL
        else:
            blob_hash, ranges = request.blob_hash, request.ranges
        reader = self._reader(blob_hash)
        if reader is None:
            await stream.write(bytes([wire.STATUS_NOT_FOUND]))
            await stream.finish()
            return
        self.has_fetched = True
        pending = bytearray()
        try:
            await self._write_body(stream, reader, ranges, pending)
        finally:
            reader.close()
        await self._flush(stream, pending)
        await stream.finish()

    async def _answer_snapshot(self, stream: Stream, request: wire.SnapshotRequest) -> None:
        """Make a snapshot for an allowed holder of the share's secret and
        commit to its root; refuse anyone else (module doc)."""
        provider, share = self.provider, self.provider.share
        status = wire.STATUS_OK
        if share is None or not share.matches(request.secret):
            status = wire.STATUS_NOT_FOUND
        elif not share.is_allowed(self.connection.peer_node_id):
            status = wire.STATUS_DENIED
        if share is None or status != wire.STATUS_OK:
            if share is not None:
                node_id = self.connection.peer_node_id
                provider.emit(
                    events.ShareRefused(
                        self.connection_id,
                        None if node_id is None else str(node_id),
                        is_unknown_ticket=status == wire.STATUS_NOT_FOUND,
                    )
                )
            await stream.write(bytes([status]))
            await stream.finish()
            return
        try:
            collection = await share.snapshot()
        except P2pcpError:  # the share reported why; this receiver is told "none now"
            stream.reset(wire.ERROR_NOT_FOUND)
            return
        provider.snapshots.add(collection)
        if self.is_open and collection.root not in self.snapshot_roots:
            self.snapshot_roots.add(collection.root)
            provider.snapshots.hold(collection.root)
        self.has_fetched = True
        answer = wire.Snapshot(
            collection.root, collection.manifest.total_size, len(collection.manifest.files)
        )
        await stream.write(bytes([wire.STATUS_OK]) + wire.encode_snapshot(answer))
        await stream.finish()

    async def _answer_stream(self, stream: Stream, request: wire.StreamRequest) -> None:
        source = self.provider.stream_source
        if source is None or request.stream_id != source.stream_id:
            await stream.write(bytes([wire.STATUS_NOT_FOUND]))
            await stream.finish()
            return

        def on_sent(total: int) -> None:
            self.has_fetched = True
            self.bytes_sent = total
            self.provider.emit(events.ReceiverProgressed(self.connection_id, total))

        await source.answer(stream, self.connection_id, on_sent)

    async def _answer_many(self, stream: Stream, request: wire.ManyRequest) -> None:
        """Each blob in turn: status, then its whole body. Small bodies are
        gathered into writes of up to _COALESCE_BYTES, as proof nodes are."""
        sizes = [self._size_of(blob_hash) for blob_hash in request.blob_hashes]
        if any(size is not None and size > LEAF_SIZE for size in sizes):
            raise RemoteProtocolError("GET_MANY asks for a blob larger than one leaf")
        if any(size is not None for size in sizes):
            self.has_fetched = True
        pending = bytearray()
        for blob_hash in request.blob_hashes:
            reader = self._reader(blob_hash)
            if reader is None:
                pending.append(wire.STATUS_NOT_FOUND)
                continue
            try:
                await self._write_body(stream, reader, ALL, pending)
            finally:
                reader.close()
        await self._flush(stream, pending)
        await stream.finish()

    async def _write_body(
        self,
        stream: Stream,
        reader: _BlobReader,
        ranges: tuple[tuple[int, int], ...],
        pending: bytearray,
    ) -> None:
        """Append status OK and the body of ``reader``'s blob to ``pending``,
        writing it out whenever it holds _COALESCE_BYTES; the caller writes
        what is left. One leaf's bytes are read at a time."""
        pending.append(wire.STATUS_OK)
        if reader.data is None:
            await self._write_file_body(stream, reader, ranges, pending)
            return
        for item in encode_plan(reader.outboard, ranges):
            if isinstance(item, (Header, Parents)):
                pending += item.data
            else:
                pending += reader.read_leaf(item)
                if reader.is_file:
                    self.bytes_sent += item.length
            if len(pending) >= _COALESCE_BYTES:
                await self._flush(stream, pending)

    async def _write_file_body(
        self,
        stream: Stream,
        reader: _BlobReader,
        ranges: tuple[tuple[int, int], ...],
        pending: bytearray,
    ) -> None:
        """``_write_body`` for a blob read from disk: its leaves are read and
        checked on a thread, _READ_GROUP_ITEMS plan items at a time, while
        the event loop goes on sending what is already written to the
        stream. Each leaf is written as it was read (the stream keeps it
        without a copy); the proof nodes before it go out in one write."""
        items = encode_plan(reader.outboard, ranges)
        while True:
            group = list(itertools.islice(items, _READ_GROUP_ITEMS))
            if not group:
                return
            refs = [item for item in group if isinstance(item, LeafRef)]
            leaves = iter(await _in_thread(reader.read_leaves, refs) if refs else ())
            for item in group:
                if isinstance(item, (Header, Parents)):
                    pending += item.data
                    continue
                leaf = next(leaves)
                if reader.is_file:
                    self.bytes_sent += item.length
                if len(leaf) < _COALESCE_BYTES // 4:  # a short last leaf: with the rest
                    pending += leaf
                    if len(pending) >= _COALESCE_BYTES:
                        await self._flush(stream, pending)
                    continue
                if pending:  # the proof nodes before the leaf
                    await write_paced(self.provider.pacer, stream.write, bytes(pending))
                    pending.clear()
                await write_paced(self.provider.pacer, stream.write, leaf)
                self.provider.emit(events.ReceiverProgressed(self.connection_id, self.bytes_sent))

    async def _flush(self, stream: Stream, pending: bytearray) -> None:
        """Write ``pending`` out and say how far this receiver got (once per
        write, not per small file: a view redrawn per file costs more than
        sending it)."""
        if pending:
            await write_paced(self.provider.pacer, stream.write, bytes(pending))
            pending.clear()
            self.provider.emit(events.ReceiverProgressed(self.connection_id, self.bytes_sent))
