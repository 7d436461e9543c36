"""Transfer request/response framing (sans-IO), protocol ``p2pcp/1``.

One bidirectional QUIC stream per request. The receiver writes one request
and finishes its side; the sender answers with one status byte and, for
``GET``, the verified-stream body of ``blobs.encoding``, then finishes.

Request layout (version 1; integers big-endian)::

    u8      kind: 0x01 GET, 0x02 DONE, 0x03 GET_ITEM, 0x04 GET_MANY,
            0x05 GET_STREAM, 0x06 GET_TREE, 0x07 GET_SNAPSHOT
    GET:    32 bytes blob hash
            u16 range count (1..MAX_RANGES)
            per range: u64 start leaf, u64 end leaf (half-open, sorted,
            non-empty, non-overlapping)
    DONE:   u64 bytes the receiver fetched in this session (informational)
    GET_ITEM: 32 bytes collection (manifest) hash
            u32 index of a file in that manifest
            (the whole blob of that file: a receiver sends it beside the
            GET of the manifest, before it knows the file's hash, and checks
            the answer against the hash the manifest then gives it)
    GET_MANY: u16 blob count (1..MAX_MANY_BLOBS)
            count times a 32-byte blob hash, no hash twice
            (each whole blob, answered back to back in the order asked)
    GET_STREAM: 32 bytes stream id (a stream ticket's: ``send -``),
            answered with the stream's frames (``transfer/stream.py``);
            a stream is given to one receiver: another gets STATUS_TAKEN
    GET_TREE: 32 bytes blob hash, of a blob larger than one leaf (a
            smaller one is refused: reset ERROR_BAD_REQUEST). Answer: u8
            status, then for OK: u64 size || every leaf hash (32 bytes
            each, leaf_count(size) of them, in order). The receiver checks
            them against the blob hash before it trusts one (``patch.py``)
    GET_SNAPSHOT: 32 bytes share secret (a share ticket's: ``p2pcp
            share``). Answer: u8 status, then for OK: 32 bytes manifest
            root || u64 total size || u32 file count (``encode_snapshot``);
            NOT_FOUND: no share with that secret (rotated or wrong);
            STATUS_DENIED: this receiver's node id is not on the allow
            list. A sender that cannot make a snapshot now (its folder is
            gone) resets the stream with ERROR_NOT_FOUND.

Response: u8 status (0x00 OK, 0x01 NOT_FOUND) then, for an OK GET or
GET_ITEM, the body. GET_MANY is answered per blob, in order: u8 status,
then for OK that blob's whole body (its length follows from the size in
its header, so bodies need no framing); a blob the sender does not have is
answered NOT_FOUND and the next one follows. A sender refuses (resets with
ERROR_BAD_REQUEST) a GET_MANY whose known blobs total more than
MAX_MANY_BYTES. A sender that does not know a request kind resets the
stream with ERROR_BAD_REQUEST (a receiver falls back to GET).
A sender that must abort mid-body resets the stream with one of the
application error codes below.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from p2pcp.blobs.encoding import MAX_LEAF_INDEX  # u64 on the wire, at most 2^62
from p2pcp.core.errors import RemoteProtocolError

REQUEST_GET = 0x01
REQUEST_DONE = 0x02
REQUEST_GET_ITEM = 0x03
REQUEST_GET_MANY = 0x04
REQUEST_GET_STREAM = 0x05
STATUS_OK = 0x00
STATUS_NOT_FOUND = 0x01
STATUS_TAKEN = 0x02  # GET_STREAM: another receiver has (or had) the stream
REQUEST_GET_SNAPSHOT = 0x07
REQUEST_GET_TREE = 0x06
STATUS_DENIED = 0x03  # GET_SNAPSHOT: this receiver is not on the share's allow list

# Application error codes for RESET_STREAM / STOP_SENDING.
ERROR_NOT_FOUND = 0x10
ERROR_CONTENT_CHANGED = 0x11
ERROR_BAD_REQUEST = 0x12
ERROR_SHUTTING_DOWN = 0x13
ERROR_CANCELLED = 0x14

# A receiver asks for at most this many disjoint ranges in one request;
# resume needs a few dozen; more is abuse.
MAX_RANGES = 1024
HASH_BYTES = 32
MAX_REQUEST_BYTES = 1 + HASH_BYTES + 2 + MAX_RANGES * 16

# GET_MANY bounds. 256 blobs of 8 KiB are 2 MiB: one request then costs ~5 ms
# of transfer on loopback, so the round trip it saves is small next to it,
# and the request (8 KiB) fits under MAX_REQUEST_BYTES. The byte bound keeps
# one request from tying up the sender's stream for long (other receivers
# and other requests share it fairly); a receiver asks only for blobs of
# one leaf, so 256 of them stay under it (256 x 256 KiB = 64 MiB).
MAX_MANY_BLOBS = 256
MAX_MANY_BYTES = 64 * 1024 * 1024

_RANGE = struct.Struct(">QQ")


@dataclass(frozen=True)
class GetRequest:
    blob_hash: bytes
    ranges: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class DoneRequest:
    bytes_fetched: int


@dataclass(frozen=True)
class ItemRequest:
    """The whole blob of file ``index`` of the manifest ``collection_hash``."""

    collection_hash: bytes
    index: int


@dataclass(frozen=True)
class ManyRequest:
    """The whole blobs ``blob_hashes``, answered back to back in this order."""

    blob_hashes: tuple[bytes, ...]


@dataclass(frozen=True)
class StreamRequest:
    """The stream of a stream ticket (its random id), from its first byte."""

    stream_id: bytes


@dataclass(frozen=True)
class TreeRequest:
    """The leaf hashes of a blob larger than one leaf (``receive --update``)."""

    blob_hash: bytes


# An OK GET_TREE answer starts with the blob's size, then its leaf hashes.
TREE_SIZE_BYTES = 8


@dataclass(frozen=True)
class SnapshotRequest:
    """The current snapshot of the share whose capability secret this is."""

    secret: bytes

    def __repr__(self) -> str:  # the secret is never shown
        return "SnapshotRequest(<secret>)"


@dataclass(frozen=True)
class Snapshot:
    """An OK answer to GET_SNAPSHOT: what the share holds now."""

    root: bytes
    total_size: int
    file_count: int


SNAPSHOT_ANSWER_BYTES = HASH_BYTES + 8 + 4

Request = (
    GetRequest
    | DoneRequest
    | ItemRequest
    | ManyRequest
    | StreamRequest
    | SnapshotRequest
    | TreeRequest
)

_ITEM_REQUEST_BYTES = 1 + HASH_BYTES + 4


def encode_request(request: Request) -> bytes:
    if isinstance(request, ManyRequest):
        _check_many(request.blob_hashes)
        count = len(request.blob_hashes).to_bytes(2, "big")
        return bytes([REQUEST_GET_MANY]) + count + b"".join(request.blob_hashes)
    if isinstance(request, DoneRequest):
        return bytes([REQUEST_DONE]) + request.bytes_fetched.to_bytes(8, "big")
    if isinstance(request, StreamRequest):
        if len(request.stream_id) != HASH_BYTES:
            raise RemoteProtocolError("stream id must have 32 bytes")
        return bytes([REQUEST_GET_STREAM]) + request.stream_id
    if isinstance(request, TreeRequest):
        if len(request.blob_hash) != HASH_BYTES:
            raise RemoteProtocolError("blob hash must have 32 bytes")
        return bytes([REQUEST_GET_TREE]) + request.blob_hash
    if isinstance(request, SnapshotRequest):
        if len(request.secret) != HASH_BYTES:
            raise RemoteProtocolError("share secret must have 32 bytes")
        return bytes([REQUEST_GET_SNAPSHOT]) + request.secret
    if isinstance(request, ItemRequest):
        if len(request.collection_hash) != HASH_BYTES:
            raise RemoteProtocolError("collection hash must have 32 bytes")
        if not 0 <= request.index < 2**32:
            raise RemoteProtocolError(f"item index {request.index} out of range")
        return (
            bytes([REQUEST_GET_ITEM]) + request.collection_hash + request.index.to_bytes(4, "big")
        )
    _check_ranges(request.ranges)
    if len(request.blob_hash) != HASH_BYTES:
        raise RemoteProtocolError("blob hash must have 32 bytes")
    out = bytearray([REQUEST_GET])
    out += request.blob_hash
    out += len(request.ranges).to_bytes(2, "big")
    for start, end in request.ranges:
        out += _RANGE.pack(start, end)
    return bytes(out)


def decode_request(data: bytes) -> Request:
    """Decode one complete request; raise RemoteProtocolError if malformed."""
    if not data:
        raise RemoteProtocolError("empty request")
    if len(data) > MAX_REQUEST_BYTES:
        raise RemoteProtocolError("request too large")
    kind = data[0]
    if kind == REQUEST_DONE:
        if len(data) != 9:
            raise RemoteProtocolError("malformed DONE request")
        return DoneRequest(int.from_bytes(data[1:9], "big"))
    if kind == REQUEST_GET_ITEM:
        if len(data) != _ITEM_REQUEST_BYTES:
            raise RemoteProtocolError("malformed GET_ITEM request")
        index = int.from_bytes(data[1 + HASH_BYTES :], "big")
        return ItemRequest(bytes(data[1 : 1 + HASH_BYTES]), index)
    if kind == REQUEST_GET_MANY:
        return _decode_many(data)
    if kind == REQUEST_GET_STREAM:
        if len(data) != 1 + HASH_BYTES:
            raise RemoteProtocolError("malformed GET_STREAM request")
        return StreamRequest(bytes(data[1:]))
    if kind == REQUEST_GET_TREE:
        if len(data) != 1 + HASH_BYTES:
            raise RemoteProtocolError("malformed GET_TREE request")
        return TreeRequest(bytes(data[1:]))
    if kind == REQUEST_GET_SNAPSHOT:
        if len(data) != 1 + HASH_BYTES:
            raise RemoteProtocolError("malformed GET_SNAPSHOT request")
        return SnapshotRequest(bytes(data[1:]))
    if kind != REQUEST_GET:
        raise RemoteProtocolError(f"unknown request kind 0x{kind:02x}")
    if len(data) < 1 + HASH_BYTES + 2:
        raise RemoteProtocolError("truncated GET request")
    blob_hash = data[1 : 1 + HASH_BYTES]
    count = int.from_bytes(data[1 + HASH_BYTES : 3 + HASH_BYTES], "big")
    body = data[3 + HASH_BYTES :]
    if len(body) != count * _RANGE.size:
        raise RemoteProtocolError("GET request length does not match its range count")
    ranges = tuple(_RANGE.unpack_from(body, i * _RANGE.size) for i in range(count))
    _check_ranges(ranges)
    return GetRequest(blob_hash, ranges)


def _check_ranges(ranges: tuple[tuple[int, int], ...]) -> None:
    if not 1 <= len(ranges) <= MAX_RANGES:
        raise RemoteProtocolError(f"a request has 1 to {MAX_RANGES} ranges")
    previous_end = -1
    for start, end in ranges:
        if not 0 <= start < end <= MAX_LEAF_INDEX:
            raise RemoteProtocolError(f"bad leaf range {start}..{end}")
        if start <= previous_end:
            raise RemoteProtocolError("leaf ranges must be sorted and disjoint")
        previous_end = end


def _decode_many(data: bytes) -> ManyRequest:
    if len(data) < 3:
        raise RemoteProtocolError("truncated GET_MANY request")
    count = int.from_bytes(data[1:3], "big")
    if len(data) != 3 + count * HASH_BYTES:
        raise RemoteProtocolError("GET_MANY request length does not match its blob count")
    hashes = tuple(bytes(data[at : at + HASH_BYTES]) for at in range(3, len(data), HASH_BYTES))
    _check_many(hashes)
    return ManyRequest(hashes)


def _check_many(hashes: tuple[bytes, ...]) -> None:
    if not 1 <= len(hashes) <= MAX_MANY_BLOBS:
        raise RemoteProtocolError(f"a GET_MANY request names 1 to {MAX_MANY_BLOBS} blobs")
    if any(len(blob_hash) != HASH_BYTES for blob_hash in hashes):
        raise RemoteProtocolError("blob hash must have 32 bytes")
    if len(set(hashes)) != len(hashes):
        raise RemoteProtocolError("a GET_MANY request names a blob twice")


def encode_snapshot(snapshot: Snapshot) -> bytes:
    """The body of an OK GET_SNAPSHOT answer (after its status byte)."""
    if len(snapshot.root) != HASH_BYTES:
        raise RemoteProtocolError("manifest root must have 32 bytes")
    if not 0 <= snapshot.total_size < 2**63 or not 0 <= snapshot.file_count < 2**32:
        raise RemoteProtocolError("snapshot size or file count out of range")
    return (
        snapshot.root
        + snapshot.total_size.to_bytes(8, "big")
        + snapshot.file_count.to_bytes(4, "big")
    )


def decode_snapshot(data: bytes) -> Snapshot:
    """The body of an OK GET_SNAPSHOT answer; RemoteProtocolError if malformed."""
    if len(data) != SNAPSHOT_ANSWER_BYTES:
        raise RemoteProtocolError("malformed GET_SNAPSHOT answer")
    total_size = int.from_bytes(data[HASH_BYTES : HASH_BYTES + 8], "big")
    if total_size >= 2**63:
        raise RemoteProtocolError("GET_SNAPSHOT answer has a total size out of range")
    return Snapshot(
        bytes(data[:HASH_BYTES]), total_size, int.from_bytes(data[HASH_BYTES + 8 :], "big")
    )
