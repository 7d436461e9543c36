"""STUN binding requests and responses (RFC 5389), sans-IO.

A node sends a binding request to the relay's UDP port (the same number as
its HTTP port); the relay answers with the source address it saw, so the
node learns its public (NAT-mapped) address. Only the binding method is
spoken; the relay answers nothing else.

Layout (network byte order)::

    header      type u16 | length u16 (bytes after the header) |
                magic cookie u32 = 0x2112A442 | transaction id (12)
    attribute   type u16 | length u16 | value, zero-padded to 4 bytes

- binding request: type 0x0001; we send one FINGERPRINT attribute.
- binding success response: type 0x0101; we send XOR-MAPPED-ADDRESS
  (0x0020: 0 u8 | family u8 (1 IPv4, 2 IPv6) | port XOR the cookie's top
  16 bits | address XOR the cookie (IPv4) or the cookie || transaction id
  (IPv6)), then FINGERPRINT (0x8028: CRC-32 of the message before it,
  with the header length already counting it, XOR 0x5354554E).
- decoders accept other attributes (skipped), MAPPED-ADDRESS (0x0001) when
  XOR-MAPPED-ADDRESS is absent, and check FINGERPRINT when present.

``is_stun_packet`` tells STUN apart from QUIC and p2pcp's control packets
on a shared socket: the top two bits of a STUN packet are zero (QUIC's
fixed bit 0x40 is set), it carries the magic cookie, and its length field
matches. Invariant: the decoders raise ``StunError`` (a
``RemoteProtocolError``) for any input they do not accept, nothing else.
"""

from __future__ import annotations

import ipaddress
import os
import struct
import zlib
from dataclasses import dataclass

from p2pcp.core.errors import RemoteProtocolError

MAGIC_COOKIE = 0x2112A442
HEADER_BYTES = 20
TRANSACTION_ID_BYTES = 12
TYPE_BINDING_REQUEST = 0x0001
TYPE_BINDING_RESPONSE = 0x0101
ATTR_MAPPED_ADDRESS = 0x0001
ATTR_XOR_MAPPED_ADDRESS = 0x0020
ATTR_FINGERPRINT = 0x8028
FINGERPRINT_XOR = 0x5354554E
FAMILY_IPV4 = 0x01
FAMILY_IPV6 = 0x02
# A binding message is small; anything longer is not one of ours (and a
# relay need not parse it). 548 bytes is RFC 5389's guidance for UDP without
# path MTU knowledge.
MAX_MESSAGE_BYTES = 548

_HEADER = struct.Struct(">HHI12s")
_ATTRIBUTE = struct.Struct(">HH")
_COOKIE_BYTES = struct.pack(">I", MAGIC_COOKIE)

Address = tuple[str, int]


class StunError(RemoteProtocolError):
    """A packet is not a well-formed STUN binding message."""


@dataclass(frozen=True)
class BindingResponse:
    transaction_id: bytes
    address: Address


def is_stun_packet(data: bytes) -> bool:
    """True when ``data`` looks like a STUN message (cheap; for socket demux)."""
    return (
        len(data) >= HEADER_BYTES
        and data[0] & 0xC0 == 0
        and data[4:8] == _COOKIE_BYTES
        and (len(data) - HEADER_BYTES) % 4 == 0
        and int.from_bytes(data[2:4], "big") == len(data) - HEADER_BYTES
    )


def new_transaction_id() -> bytes:
    return os.urandom(TRANSACTION_ID_BYTES)


def unmap_address(address: Address) -> Address:
    """An IPv4-mapped IPv6 address (from a dual-stack socket) as plain IPv4."""
    host, port = address[0], address[1]
    try:
        parsed = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return (host, port)
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return (str(parsed.ipv4_mapped), port)
    return (str(parsed), port)


def _attribute(kind: int, value: bytes) -> bytes:
    return _ATTRIBUTE.pack(kind, len(value)) + value + b"\x00" * (-len(value) % 4)


def _with_fingerprint(message_type: int, transaction_id: bytes, attributes: bytes) -> bytes:
    if len(transaction_id) != TRANSACTION_ID_BYTES:
        raise StunError(f"a STUN transaction id has {TRANSACTION_ID_BYTES} bytes")
    length = len(attributes) + 8
    head = _HEADER.pack(message_type, length, MAGIC_COOKIE, transaction_id) + attributes
    crc = (zlib.crc32(head) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
    return head + _attribute(ATTR_FINGERPRINT, struct.pack(">I", crc))


def encode_binding_request(transaction_id: bytes) -> bytes:
    return _with_fingerprint(TYPE_BINDING_REQUEST, transaction_id, b"")


def encode_binding_response(transaction_id: bytes, address: Address) -> bytes:
    """A success response telling the requester ``address`` (its observed source)."""
    host, port = unmap_address(address)
    if not 0 <= port <= 0xFFFF:
        raise StunError("a port is 0 to 65535")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise StunError(f"not an IP address: {host!r}") from None
    family = FAMILY_IPV4 if ip.version == 4 else FAMILY_IPV6
    mask = _COOKIE_BYTES if family == FAMILY_IPV4 else _COOKIE_BYTES + transaction_id
    xored = bytes(a ^ b for a, b in zip(ip.packed, mask[: len(ip.packed)], strict=True))
    value = struct.pack(">BBH", 0, family, port ^ (MAGIC_COOKIE >> 16)) + xored
    return _with_fingerprint(
        TYPE_BINDING_RESPONSE, transaction_id, _attribute(ATTR_XOR_MAPPED_ADDRESS, value)
    )


def _parse(data: bytes, expected_type: int) -> tuple[bytes, dict[int, bytes]]:
    """Check the header, attributes and fingerprint; return the id and first value of each."""
    if len(data) > MAX_MESSAGE_BYTES or not is_stun_packet(data):
        raise StunError("not a STUN message")
    message_type, _, _, transaction_id = _HEADER.unpack_from(data)
    if message_type != expected_type:
        raise StunError(f"not a STUN binding message of type 0x{expected_type:04x}")
    attributes: dict[int, bytes] = {}
    offset = HEADER_BYTES
    while offset < len(data):
        if offset + 4 > len(data):
            raise StunError("a STUN attribute is truncated")
        kind, length = _ATTRIBUTE.unpack_from(data, offset)
        end = offset + 4 + length
        if end + (-length % 4) > len(data):
            raise StunError("a STUN attribute is truncated")
        value = data[offset + 4 : end]
        if kind == ATTR_FINGERPRINT:
            if length != 4 or end != len(data):
                raise StunError("a STUN fingerprint must be the last 4-byte attribute")
            crc = (zlib.crc32(data[:offset]) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
            if struct.unpack(">I", value)[0] != crc:
                raise StunError("a STUN fingerprint does not match")
        attributes.setdefault(kind, value)
        offset = end + (-length % 4)
    return bytes(transaction_id), attributes


def decode_binding_request(data: bytes) -> bytes:
    """The transaction id of a binding request."""
    transaction_id, _ = _parse(data, TYPE_BINDING_REQUEST)
    return transaction_id


def _decode_address(value: bytes, mask: bytes | None) -> Address:
    if len(value) < 4:
        raise StunError("a STUN address attribute is too short")
    _, family, port = struct.unpack_from(">BBH", value)
    raw = value[4:]
    if (family, len(raw)) not in ((FAMILY_IPV4, 4), (FAMILY_IPV6, 16)):
        raise StunError("a STUN address has an unknown family or a wrong length")
    if mask is not None:
        port ^= MAGIC_COOKIE >> 16
        raw = bytes(a ^ b for a, b in zip(raw, mask[: len(raw)], strict=True))
    return (str(ipaddress.ip_address(raw)), port)


def decode_binding_response(data: bytes) -> BindingResponse:
    """The transaction id and mapped address of a binding success response."""
    transaction_id, attributes = _parse(data, TYPE_BINDING_RESPONSE)
    if ATTR_XOR_MAPPED_ADDRESS in attributes:
        value = attributes[ATTR_XOR_MAPPED_ADDRESS]
        mask = _COOKIE_BYTES + transaction_id
        return BindingResponse(transaction_id, _decode_address(value, mask))
    if ATTR_MAPPED_ADDRESS in attributes:
        return BindingResponse(
            transaction_id, _decode_address(attributes[ATTR_MAPPED_ADDRESS], None)
        )
    raise StunError("a STUN binding response carries no mapped address")
