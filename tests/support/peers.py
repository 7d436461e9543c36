"""Misbehaving peers, built from p2pcp's own sans-IO parts (test-only).

Two sides:

- ``HostileSender``: a real ``Endpoint`` on loopback that answers
  ``p2pcp/1`` requests with whatever an ``Answer`` says: the honest
  verified stream (``blobs.encoding``), or that stream corrupted, cut,
  extended, stalled, trickled, reset, or a body for a blob of any declared
  size built lazily (``LazyBlob``: 1 PB costs nothing to offer). The real
  Fetcher (``fetch``) is the honest receiver it lies to.
- hostile receivers are plain ``Endpoint.connect`` connections (``client``)
  that write raw request bytes (``raw_request``) to a real ``Provider``
  (``start_provider``) or the real ``p2pcp send`` process.

Manifests that break the rules are written by ``raw_manifest``, which
restates the manifest layout of ``blobs.collection`` without its checks.

Every helper that waits takes or uses a timeout, so a defence that is
missing shows up as a failed test, never as a hung run.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from p2pcp.blobs.collection import MANIFEST_MAGIC, MANIFEST_VERSION, Manifest, encode_manifest
from p2pcp.blobs.encoding import ALL, Header, LeafRef, Parents, encode_bytes, encode_plan
from p2pcp.blobs.tree import LEAF_SIZE, Outboard, hash_leaf, hash_parent, hash_root, split_point
from p2pcp.core.errors import P2pcpError, StreamResetError
from p2pcp.core.identity import NodeId, SecretKey
from p2pcp.core.ticket import Ticket
from p2pcp.net import EndpointConfig, PathPolicy
from p2pcp.net.quic.endpoint import Connection, Endpoint, Stream
from p2pcp.transfer import events, wire
from p2pcp.transfer.fetcher import Fetcher, FetchOptions
from p2pcp.transfer.provider import Provider, ProviderLimits
from p2pcp.transfer.source import import_scan, scan_paths

# Seeded keys (CONVENTIONS 11): the sender the ticket names, an impostor, a receiver.
SENDER_KEY = SecretKey(bytes(range(32)))
IMPOSTOR_KEY = SecretKey(bytes(range(100, 132)))
RECEIVER_KEY = SecretKey(bytes(range(1, 33)))

# Every fetch, connection and subprocess here is bounded by this.
STEP_TIMEOUT_S = 20.0
# Body bytes gathered into one stream write.
_WRITE_BYTES = 256 * 1024


# -- blobs and manifests ----------------------------------------------------------


@dataclass(frozen=True)
class Blob:
    """An in-memory blob and its outboard tree."""

    data: bytes
    outboard: Outboard

    @classmethod
    def of(cls, data: bytes) -> Blob:
        return cls(data, Outboard.from_bytes(data))

    @property
    def root(self) -> bytes:
        return bytes(self.outboard.root)

    def body(self, ranges: tuple[tuple[int, int], ...] = ALL) -> bytes:
        """The honest verified-stream body for ``ranges``."""
        return encode_bytes(self.outboard, self.data, ranges)


class LazyBlob:
    """A blob of any declared ``size`` (a multiple of LEAF_SIZE): ``head`` then
    zeros. Its tree is computed from one zero-leaf hash, so offering a
    petabyte costs a few hashes; leaves are made only when sent.

    Duck-types the parts of ``Outboard`` that ``encode_plan`` reads.
    """

    leaf_size = LEAF_SIZE

    def __init__(self, head: bytes, size: int) -> None:
        if size % LEAF_SIZE or size < LEAF_SIZE or len(head) > LEAF_SIZE:
            raise ValueError("LazyBlob: size a multiple of LEAF_SIZE, head within one leaf")
        self.size = size
        self.leaf_count = size // LEAF_SIZE
        self.first_leaf = head + bytes(LEAF_SIZE - len(head))
        self.zero_leaf = bytes(LEAF_SIZE)
        self._zero_hashes: dict[int, bytes] = {}
        self.top = self.node_hash(0, self.leaf_count)
        self.root = hash_root(self.top, size)

    def node_hash(self, start: int, count: int) -> bytes:
        """Hash of the node over leaves ``[start, start + count)``."""
        if start != 0:
            return self._zero_hash(count)  # off the left spine: all zero leaves
        if count == 1:
            return hash_leaf(self.first_leaf)
        left = split_point(count)
        return hash_parent(self.node_hash(0, left), self._zero_hash(count - left))

    def _zero_hash(self, count: int) -> bytes:
        known = self._zero_hashes.get(count)
        if known is None:
            if count == 1:
                known = hash_leaf(self.zero_leaf)
            else:
                left = split_point(count)
                known = hash_parent(self._zero_hash(left), self._zero_hash(count - left))
            self._zero_hashes[count] = known
        return known

    def leaf(self, ref: LeafRef) -> bytes:
        return self.first_leaf if ref.index == 0 else self.zero_leaf


def manifest_blob(manifest: Manifest) -> Blob:
    return Blob.of(encode_manifest(manifest))


def raw_manifest(
    name: str,
    files: Sequence[tuple[str, int, bytes]] = (),
    dirs: Sequence[str] = (),
    *,
    flags: int = 0,
    file_count: int | None = None,
    dir_count: int | None = None,
    version: int = MANIFEST_VERSION,
    mode: int = 0o644,
) -> bytes:
    """Manifest bytes exactly as given: no sorting, no path checks, counts
    overridable (layout: blobs/collection.py). Paths are the strings'
    bytes with surrogates passed through as UTF-8 would not. Version 2
    files carry ``mode`` and mtime 0; version 1 files flags 0."""

    def text(value: str) -> bytes:
        try:
            data = value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            data = value.encode("utf-8", "surrogatepass")
        return struct.pack("<H", len(data)) + data

    out = bytearray(struct.pack("<8sBB", MANIFEST_MAGIC, version, flags))
    out += text(name)
    out += struct.pack(
        "<II",
        len(files) if file_count is None else file_count,
        len(dirs) if dir_count is None else dir_count,
    )
    for path, size, root in files:
        if version == 1:
            out += text(path) + struct.pack("<Q32sB", size, root, 0)
        else:
            out += text(path) + struct.pack("<Q32sHq", size, root, mode, 0)
    for path in dirs:
        out += text(path)
    return bytes(out)


def flip(body: bytes, position: int) -> bytes:
    """``body`` with one bit of the byte at ``position`` flipped."""
    position %= len(body)
    return body[:position] + bytes([body[position] ^ 0x01]) + body[position + 1 :]


# -- the misbehaving sender -------------------------------------------------------

# An answer writes the whole response (status byte included) to a request stream.
Answer = Callable[[Stream, wire.GetRequest], Awaitable[None]]


def body_answer(body: bytes, *, status: int = wire.STATUS_OK, finish: bool = True) -> Answer:
    """Send ``status`` then ``body`` (any bytes: honest, corrupted, cut, extended)."""

    async def answer(stream: Stream, request: wire.GetRequest) -> None:
        await stream.write(bytes([status]) + body)
        if finish:
            await stream.finish()

    return answer


def blob_answer(blob: Blob) -> Answer:
    """The honest answer for ``blob``, for whatever ranges were asked."""

    async def answer(stream: Stream, request: wire.GetRequest) -> None:
        await stream.write(bytes([wire.STATUS_OK]) + blob.body(request.ranges))
        await stream.finish()

    return answer


def lazy_answer(blob: LazyBlob, counter: dict[str, int]) -> Answer:
    """Stream ``blob`` for the requested ranges; count body bytes written in
    ``counter["bytes"]`` (how far the receiver let us get)."""

    async def answer(stream: Stream, request: wire.GetRequest) -> None:
        pending = bytearray([wire.STATUS_OK])
        for item in encode_plan(blob, request.ranges):  # type: ignore[arg-type]
            pending += item.data if isinstance(item, (Header, Parents)) else blob.leaf(item)
            if len(pending) >= _WRITE_BYTES:
                counter["bytes"] = counter.get("bytes", 0) + len(pending)
                await stream.write(bytes(pending))
                pending.clear()
        counter["bytes"] = counter.get("bytes", 0) + len(pending)
        await stream.write(bytes(pending))
        await stream.finish()

    return answer


def stall_answer(prefix: bytes = b"") -> Answer:
    """Send ``prefix`` (e.g. the status byte and the header), then nothing, ever."""

    async def answer(stream: Stream, request: wire.GetRequest) -> None:
        if prefix:
            await stream.write(prefix)
        await asyncio.Event().wait()

    return answer


def trickle_answer(body: bytes, interval_s: float) -> Answer:
    """Send the response one byte every ``interval_s``: the connection never
    goes idle, the response never ends in any useful time."""

    async def answer(stream: Stream, request: wire.GetRequest) -> None:
        for byte in bytes([wire.STATUS_OK]) + body:
            await stream.write(bytes([byte]))
            await asyncio.sleep(interval_s)
        await stream.finish()

    return answer


def stream_answer(
    data: bytes,
    *,
    announced_length: int | None = None,
    announced_blake3: bytes | None = None,
    name: str = "stdin",
) -> Callable[[Stream, wire.StreamRequest], Awaitable[None]]:
    """Answer GET_STREAM with ``data`` in honest frames (``transfer/stream.py``)
    and an end that announces ``announced_length`` and ``announced_blake3``
    (by default the true ones; give either to lie)."""
    import blake3

    from p2pcp.transfer.stream import encode_end, encode_frame_header, encode_head

    async def answer(stream: Stream, request: wire.StreamRequest) -> None:
        await stream.write(bytes([wire.STATUS_OK]) + encode_head(name))
        for at in range(0, len(data), _WRITE_BYTES):
            piece = data[at : at + _WRITE_BYTES]
            await stream.write(encode_frame_header(len(piece)) + piece)
        length = len(data) if announced_length is None else announced_length
        digest = blake3.blake3(data).digest() if announced_blake3 is None else announced_blake3
        await stream.write(encode_end(length, digest))
        await stream.finish()

    return answer


def reset_answer(code: int) -> Answer:
    async def answer(stream: Stream, request: wire.GetRequest) -> None:
        stream.reset(code)

    return answer


@dataclass
class HostileSender:
    """A sender on loopback that answers each blob hash as told.

    ``answers`` maps a hash to an ``Answer``; a hash not in it gets NOT_FOUND.
    ``requests`` records every GET (hash, ranges) in order.
    """

    endpoint: Endpoint
    key: SecretKey
    answers: dict[bytes, Answer] = field(default_factory=dict)
    requests: list[wire.GetRequest] = field(default_factory=list)
    done_delay_s: float = 0.0  # how long it takes to answer DONE
    # GET_ITEM (the first file, asked for beside the manifest): by default
    # answered as a sender without it does (reset, ERROR_BAD_REQUEST); maps
    # an index to the blob hash whose ``answers`` entry answers it.
    items: dict[int, bytes] | None = None
    item_requests: list[wire.ItemRequest] = field(default_factory=list)
    # GET_MANY (small files): answered as a sender without it does (reset,
    # ERROR_BAD_REQUEST) unless ``many`` is set, which then answers the
    # whole request from its hash list (a hostile answer of any shape).
    many: Callable[[Stream, wire.ManyRequest], Awaitable[None]] | None = None
    many_requests: list[wire.ManyRequest] = field(default_factory=list)
    # GET_STREAM (a stream ticket): NOT_FOUND unless ``stream`` answers it.
    stream: Callable[[Stream, wire.StreamRequest], Awaitable[None]] | None = None
    # GET_TREE (receive --update): answered as a sender without it does
    # (reset, ERROR_BAD_REQUEST) unless ``trees`` maps the blob hash to the
    # whole answer to send (status byte included: honest or not).
    trees: dict[bytes, bytes] | None = None
    tree_requests: list[wire.TreeRequest] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.endpoint.local_port)

    def ticket(self, root: bytes, total_size: int, *, node_key: SecretKey = SENDER_KEY) -> Ticket:
        return Ticket(
            node_id=bytes(node_key.public),
            relay_url=None,
            addresses=(self.address,),
            root_hash=root,
            total_size=total_size,
        )

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept_loop(self) -> None:
        while True:
            connection = await self.endpoint.accept()
            self._spawn(self._serve(connection))

    async def _serve(self, connection: Connection) -> None:
        with contextlib.suppress(P2pcpError):
            while True:
                stream = await connection.accept_stream()
                self._spawn(self._answer(stream))

    async def _answer(self, stream: Stream) -> None:
        with contextlib.suppress(P2pcpError):
            request = wire.decode_request(await read_all(stream))
            if isinstance(request, wire.DoneRequest):
                await asyncio.sleep(self.done_delay_s)
                await stream.write(bytes([wire.STATUS_OK]))
                await stream.finish()
                return
            if isinstance(request, wire.ManyRequest):
                self.many_requests.append(request)
                if self.many is None:
                    stream.reset(wire.ERROR_BAD_REQUEST)
                else:
                    await self.many(stream, request)
                return
            if isinstance(request, wire.TreeRequest):
                self.tree_requests.append(request)
                if self.trees is None:
                    stream.reset(wire.ERROR_BAD_REQUEST)
                    return
                answer_bytes = self.trees.get(request.blob_hash, bytes([wire.STATUS_NOT_FOUND]))
                await stream.write(answer_bytes)
                await stream.finish()
                return
            if isinstance(request, wire.StreamRequest):
                if self.stream is None:
                    await stream.write(bytes([wire.STATUS_NOT_FOUND]))
                    await stream.finish()
                else:
                    await self.stream(stream, request)
                return
            if isinstance(request, wire.ItemRequest):
                self.item_requests.append(request)
                if self.items is None:
                    stream.reset(wire.ERROR_BAD_REQUEST)
                    return
                blob_hash = self.items.get(request.index, bytes(32))
                request = wire.GetRequest(blob_hash, ALL)
            else:
                self.requests.append(request)
            answer = self.answers.get(request.blob_hash)
            if answer is None:
                await stream.write(bytes([wire.STATUS_NOT_FOUND]))
                await stream.finish()
                return
            await answer(stream, request)


@contextlib.asynccontextmanager
async def hostile_sender(key: SecretKey = SENDER_KEY) -> AsyncIterator[HostileSender]:
    endpoint = await Endpoint.bind(key)
    sender = HostileSender(endpoint, key)
    sender._spawn(sender._accept_loop())
    try:
        yield sender
    finally:
        for task in list(sender._tasks):
            task.cancel()
        await asyncio.gather(*sender._tasks, return_exceptions=True)
        await endpoint.close()


def tree_answer(blob: Blob) -> bytes:
    """The honest GET_TREE answer for ``blob``: status, size, leaf hashes."""
    size = blob.outboard.size.to_bytes(wire.TREE_SIZE_BYTES, "big")
    return bytes([wire.STATUS_OK]) + size + blob.outboard.leaf_hashes


def single_file(sender: HostileSender, name: str, content: bytes) -> tuple[Blob, Blob]:
    """Offer ``content`` as one file honestly; return (manifest blob, file blob)."""
    file_blob = Blob.of(content)
    manifest = manifest_blob(Manifest.single_file(name, len(content), file_blob.root))
    sender.answers[manifest.root] = blob_answer(manifest)
    sender.answers[file_blob.root] = blob_answer(file_blob)
    return manifest, file_blob


# -- the honest receiver ----------------------------------------------------------


# Loopback peers that never join a relay.
DIRECT_ONLY = EndpointConfig(path_policy=PathPolicy.DIRECT_ONLY)


def fetch_options(out: Path, **overrides: object) -> FetchOptions:
    """Receiver options for these tests: loopback, no relay, no retries unless asked."""
    values: dict[str, object] = {"out_dir": out, "endpoint": DIRECT_ONLY, "retry_for_s": 0.0}
    values.update(overrides)
    return FetchOptions(**values)  # type: ignore[arg-type]


async def fetch(
    ticket: Ticket, out: Path, *, timeout_s: float = STEP_TIMEOUT_S, **overrides: object
) -> events.TransferFinished:
    """Run the real Fetcher in this loop, bounded by ``timeout_s``."""
    fetcher = Fetcher(ticket, fetch_options(out, **overrides), lambda event: None)
    return await asyncio.wait_for(fetcher.run(RECEIVER_KEY), timeout_s)


# -- the real sender, for hostile receivers -------------------------------------


@dataclass
class RunningProvider:
    provider: Provider
    endpoint: Endpoint
    ticket: Ticket
    events: list[object]
    serving: asyncio.Future[None]


@contextlib.asynccontextmanager
async def start_provider(
    paths: list[Path], limits: ProviderLimits | None = None, *, once: bool = False
) -> AsyncIterator[RunningProvider]:
    """The real Provider in this loop, serving ``paths`` on loopback."""
    scan = await asyncio.to_thread(scan_paths, paths)
    collection = await asyncio.to_thread(import_scan, scan)
    endpoint = await Endpoint.bind(SENDER_KEY)
    seen: list[object] = []
    provider = Provider(collection, endpoint, seen.append, limits)
    ticket = Ticket(
        node_id=bytes(SENDER_KEY.public),
        relay_url=None,
        addresses=(("127.0.0.1", endpoint.local_port),),
        root_hash=collection.root,
        total_size=collection.manifest.total_size,
    )
    serving = asyncio.ensure_future(provider.serve(once=once))
    try:
        yield RunningProvider(provider, endpoint, ticket, seen, serving)
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        await endpoint.close()


@contextlib.asynccontextmanager
async def client(ticket: Ticket, key: SecretKey = RECEIVER_KEY) -> AsyncIterator[Connection]:
    """A bare connection to the ticket's sender, for writing raw requests."""
    endpoint = await Endpoint.bind(key, DIRECT_ONLY)
    try:
        yield await endpoint.connect(
            NodeId(ticket.node_id), list(ticket.addresses), timeout_s=STEP_TIMEOUT_S
        )
    finally:
        await endpoint.close()


async def read_all(stream: Stream) -> bytes:
    data = bytearray()
    while chunk := await stream.read():
        data += chunk
    return bytes(data)


@dataclass(frozen=True)
class Reply:
    """What a raw request got: the whole response, or the reset code."""

    data: bytes = b""
    reset_code: int | None = None

    @property
    def status(self) -> int | None:
        return self.data[0] if self.data else None


async def raw_request(
    connection: Connection, payload: bytes, *, finish: bool = True, timeout_s: float = 10.0
) -> Reply:
    """Write ``payload`` on a new stream (then FIN, unless told not to) and
    read the answer to its end or its reset."""
    stream = await connection.open_stream()
    await stream.write(payload)
    if finish:
        await stream.finish()
    try:
        return Reply(await asyncio.wait_for(read_all(stream), timeout_s))
    except StreamResetError as exc:
        return Reply(reset_code=exc.code)


def get_payload(blob_hash: bytes, ranges: list[tuple[int, int]]) -> bytes:
    """A GET request with any ranges at all (the encoder would refuse bad ones)."""
    out = bytearray([wire.REQUEST_GET]) + blob_hash + len(ranges).to_bytes(2, "big")
    for start, end in ranges:
        out += start.to_bytes(8, "big") + end.to_bytes(8, "big")
    return bytes(out)
