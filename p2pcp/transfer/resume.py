"""Resume records (sans-IO): which leaves of a partial file were verified.

A partial blob lives in the partial folder as ``<root>.part`` (its verified
leaves, in order, from byte 0) and ``<root>.resume`` (this record). The
record lists the hash of every leaf known to be durable in the data file,
so a later run can check the data it finds against it, leaf by leaf, and
fetch only what is missing, with proofs, from the sender.

Crash safety, by construction:
- The record is written only after the data it describes was fsynced, to a
  temporary file that is fsynced and renamed over the old record: it is
  either the old record or the new one, never half of each.
- A record is trusted for nothing but a list of expected leaf hashes: the
  data is re-hashed against it on resume and cut at the first leaf that
  does not match (a stale record, data lost in a power cut). A torn or
  foreign record (bad magic, checksum, root, size or leaf size) is ignored
  and the data fetched again.

Layout (version 1; integers big-endian)::

    16 bytes  magic b"p2pcp-resume-v1\\n"
    32        blob root hash
    u64       blob size
    u32       leaf size
    u64       leaf count k
    k x 32    leaf hashes of leaves 0..k-1
    32        BLAKE3 of everything above
"""

from __future__ import annotations

import struct

import blake3

from p2pcp.blobs.tree import HASH_BYTES, leaf_count

RECORD_MAGIC = b"p2pcp-resume-v1\n"
_HEAD = struct.Struct(">32sQIQ")


def encode_record(root: bytes, size: int, leaf_size: int, leaf_hashes: bytes) -> bytes:
    count = len(leaf_hashes) // HASH_BYTES
    body = RECORD_MAGIC + _HEAD.pack(root, size, leaf_size, count) + bytes(leaf_hashes)
    return body + blake3.blake3(body).digest()


def decode_record(data: bytes, *, root: bytes, size: int, leaf_size: int) -> bytes | None:
    """The recorded leaf hashes, or None if the record is torn or not this blob's."""
    head_end = len(RECORD_MAGIC) + _HEAD.size
    if len(data) < head_end + HASH_BYTES or not data.startswith(RECORD_MAGIC):
        return None
    body, checksum = data[:-HASH_BYTES], data[-HASH_BYTES:]
    if blake3.blake3(body).digest() != checksum:
        return None
    record_root, record_size, record_leaf_size, count = _HEAD.unpack_from(data, len(RECORD_MAGIC))
    if (record_root, record_size, record_leaf_size) != (root, size, leaf_size):
        return None
    hashes = body[head_end:]
    if len(hashes) != count * HASH_BYTES or count > leaf_count(size, leaf_size):
        return None
    return bytes(hashes)


def recorded_bytes(data: bytes) -> int:
    """How many bytes of its blob an intact record lists (0 if torn), for
    telling a user what a failed run kept; resuming re-checks them anyway."""
    head_end = len(RECORD_MAGIC) + _HEAD.size
    if len(data) < head_end + HASH_BYTES or not data.startswith(RECORD_MAGIC):
        return 0
    if blake3.blake3(data[:-HASH_BYTES]).digest() != data[-HASH_BYTES:]:
        return 0
    _root, size, leaf_size, count = _HEAD.unpack_from(data, len(RECORD_MAGIC))
    if len(data) != head_end + (count + 1) * HASH_BYTES:
        return 0
    return int(min(size, count * leaf_size))
