"""Ticket codec (sans-IO): everything a receiver needs to fetch and verify.

Text form (version 1)::

    "p2pcp" + base32(record || checksum)      lowercase, no padding

``checksum`` is the first 4 bytes of BLAKE3("p2pcp ticket v1" || record), so
a truncated, extended or mistyped ticket is refused (a random change passes
with probability 2^-32). Decoding ignores white space and case, because
tickets are pasted from chat and read aloud.

Binary record (version 1; integers are unsigned LEB128 varints)::

    u8      version = 1
    32      node id (Ed25519 public key of the sender)
    32      root hash (hash of the collection's manifest blob)
    varint  total size in bytes of all files
    varint  relay URL length, then that many UTF-8 bytes (0: no relay)
    varint  address count (<= MAX_ADDRESSES), then per address:
            u8 family (4 or 6), 4 or 16 address bytes, u16 big-endian port

Anything after the last address, or a record that ends early, is refused.

Record version 2 is version 1 with one more byte after the version, the
ticket's kind: 0 files (written as version 1, so older receivers read every
file ticket), 1 a text message (``send --text``), 2 a stream
(``send -``), 3 a share (``p2pcp share``). A stream's content hash cannot
be known when its ticket is printed: its 32-byte root field is a random
stream id instead, and its total size is 0. A share's content changes
while its ticket stays: its root field is the share's capability secret
(random, asked for with GET_SNAPSHOT, which answers the current root), and
its total size is 0; the secret is the one part of a ticket that must not
be shown apart from it. An older p2pcp refuses version 2 with "update
p2pcp".

A ticket's type (``--ticket-type``) is how it says to reach the sender,
read from what it names (no field of its own, so every ticket has one):
``full`` names a relay and addresses, ``relay`` a relay and no IP address
(the direct path is then found through the relay), ``addresses``
addresses and no relay.
"""

from __future__ import annotations

import base64
import binascii
import enum
import ipaddress
import re
from dataclasses import dataclass

from p2pcp.core.errors import TicketError, UsageError

TICKET_PREFIX = "p2pcp"
TICKET_VERSION = 1
# Text and stream tickets: version 1 with a kind byte (module docstring).
TICKET_VERSION_KIND = 2
CHECKSUM_BYTES = 4
HASH_BYTES = 32
# A ticket lists the sender's interface addresses; 16 covers a busy laptop
# (wired, wireless, VPNs, IPv4 + IPv6) and keeps the ticket pasteable.
MAX_ADDRESSES = 16
# RFC 9110 recommends supporting URLs of 8000 octets; a relay URL is short,
# and this bounds the ticket's length.
MAX_RELAY_URL_BYTES = 255
# No valid ticket comes near this; it bounds work on hostile input.
MAX_TICKET_CHARS = 2048
# Sizes are u63 everywhere in p2pcp.
MAX_TOTAL_SIZE = 2**63 - 1
_CHECKSUM_CONTEXT = b"p2pcp ticket v1"
_WHITESPACE = re.compile(r"\s+")


class TicketKind(enum.Enum):
    """What a ticket offers; the value is its byte in a version 2 record."""

    FILES = 0
    TEXT = 1
    STREAM = 2
    SHARE = 3

    def __str__(self) -> str:
        return self.name.lower()


class TicketType(str, enum.Enum):
    """How a ticket says to reach its sender; ``str()`` is the word."""

    FULL = "full"
    """A relay and addresses."""
    RELAY = "relay"
    """A relay and no IP address: private, found through the relay."""
    ADDRESSES = "addresses"
    """Addresses and no relay: no third party."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @classmethod
    def parse(cls, text: str) -> TicketType:
        """``--ticket-type``'s word; a one-line UsageError (exit 2) otherwise."""
        try:
            return cls(text.strip().lower())
        except ValueError:
            words = ", ".join(member.value for member in cls)
            raise UsageError(f"--ticket-type must be one of {words}, not {text!r}") from None


@dataclass(frozen=True)
class Ticket:
    node_id: bytes
    relay_url: str | None
    addresses: tuple[tuple[str, int], ...]
    root_hash: bytes
    """The manifest's root; for a STREAM ticket, the stream's random id;
    for a SHARE ticket, the share's capability secret (never shown alone)."""
    total_size: int
    kind: TicketKind = TicketKind.FILES

    @property
    def type(self) -> TicketType | None:
        """How it says to reach the sender (module doc); None when it names
        neither a relay nor an address (no receiver can use it)."""
        if self.relay_url is not None and self.addresses:
            return TicketType.FULL
        if self.relay_url is not None:
            return TicketType.RELAY
        return TicketType.ADDRESSES if self.addresses else None


def _checksum(record: bytes) -> bytes:
    import blake3

    return bytes(blake3.blake3(_CHECKSUM_CONTEXT + record).digest()[:CHECKSUM_BYTES])


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, count: int) -> bytes:
        if self.pos + count > len(self.data):
            raise TicketError("ticket is truncated")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def varint(self) -> int:
        value = 0
        for shift in range(0, 70, 7):
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if byte == 0 and shift:
                    raise TicketError("ticket has a non-canonical number")
                return value
        raise TicketError("ticket has a number that is too long")


def encode_ticket(ticket: Ticket) -> str:
    """Encode a ticket to its text form. Raises TicketError on bad fields."""
    if len(ticket.node_id) != HASH_BYTES or len(ticket.root_hash) != HASH_BYTES:
        raise TicketError("node id and root hash must have 32 bytes")
    if not 0 <= ticket.total_size <= MAX_TOTAL_SIZE:
        raise TicketError("total size out of range")
    if len(ticket.addresses) > MAX_ADDRESSES:
        raise TicketError(f"a ticket holds at most {MAX_ADDRESSES} addresses")
    url = (ticket.relay_url or "").encode("utf-8")
    if len(url) > MAX_RELAY_URL_BYTES:
        raise TicketError("relay URL is too long")
    if ticket.kind is TicketKind.FILES:
        record = bytearray([TICKET_VERSION])
    else:
        record = bytearray([TICKET_VERSION_KIND, ticket.kind.value])
    record += ticket.node_id + ticket.root_hash
    record += _encode_varint(ticket.total_size)
    record += _encode_varint(len(url)) + url
    record += _encode_varint(len(ticket.addresses))
    for host, port in ticket.addresses:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise TicketError(f"not an IP address: {host!r}") from None
        if not 0 < port < 65536:
            raise TicketError(f"bad port {port}")
        record += bytes([ip.version]) + ip.packed + port.to_bytes(2, "big")
    body = bytes(record) + _checksum(bytes(record))
    return TICKET_PREFIX + base64.b32encode(body).decode("ascii").rstrip("=").lower()


def decode_ticket(text: str) -> Ticket:
    """Decode and check a ticket's text form; raise TicketError if it is not one."""
    if len(text) > MAX_TICKET_CHARS:
        raise TicketError("that is not a p2pcp ticket (too long)")
    cleaned = _WHITESPACE.sub("", text).lower()
    if not cleaned.startswith(TICKET_PREFIX):
        raise TicketError(f"that is not a p2pcp ticket (it should start with {TICKET_PREFIX!r})")
    payload = cleaned[len(TICKET_PREFIX) :].upper()
    if not payload or not re.fullmatch(r"[A-Z2-7]+", payload):
        raise TicketError("ticket has characters that base32 does not use")
    if len(payload) % 8 in (1, 3, 6):
        raise TicketError("ticket is truncated or has extra characters")
    try:
        body = base64.b32decode(payload + "=" * (-len(payload) % 8))
    except binascii.Error:
        raise TicketError("ticket is truncated or has extra characters") from None
    if len(body) <= CHECKSUM_BYTES:
        raise TicketError("ticket is truncated")
    record, checksum = body[:-CHECKSUM_BYTES], body[-CHECKSUM_BYTES:]
    if _checksum(record) != checksum:
        raise TicketError("ticket checksum does not match: it was truncated or mistyped")
    return _decode_record(record)


def _decode_record(record: bytes) -> Ticket:
    reader = _Reader(record)
    version = reader.take(1)[0]
    if version not in (TICKET_VERSION, TICKET_VERSION_KIND):
        raise TicketError(
            f"ticket version {version} is not supported by this p2pcp (it reads versions "
            f"{TICKET_VERSION} and {TICKET_VERSION_KIND}); update p2pcp"
        )
    kind = TicketKind.FILES
    if version == TICKET_VERSION_KIND:
        try:
            kind = TicketKind(reader.take(1)[0])
        except ValueError:
            raise TicketError(
                "ticket is of a kind this p2pcp does not know; update p2pcp"
            ) from None
    node_id = reader.take(HASH_BYTES)
    root_hash = reader.take(HASH_BYTES)
    total_size = reader.varint()
    if total_size > MAX_TOTAL_SIZE:
        raise TicketError("ticket total size out of range")
    url_len = reader.varint()
    if url_len > MAX_RELAY_URL_BYTES:
        raise TicketError("ticket relay URL is too long")
    try:
        relay_url = reader.take(url_len).decode("utf-8") or None
    except UnicodeDecodeError:
        raise TicketError("ticket relay URL is not UTF-8") from None
    count = reader.varint()
    if count > MAX_ADDRESSES:
        raise TicketError("ticket has too many addresses")
    addresses = []
    for _ in range(count):
        family = reader.take(1)[0]
        if family == 4:
            host = str(ipaddress.IPv4Address(reader.take(4)))
        elif family == 6:
            host = str(ipaddress.IPv6Address(reader.take(16)))
        else:
            raise TicketError("ticket has an address of unknown family")
        port = int.from_bytes(reader.take(2), "big")
        if port == 0:
            raise TicketError("ticket has an address with port 0")
        addresses.append((host, port))
    if reader.pos != len(record):
        raise TicketError("ticket has extra bytes at the end")
    return Ticket(
        node_id=node_id,
        relay_url=relay_url,
        addresses=tuple(addresses),
        root_hash=root_hash,
        total_size=total_size,
        kind=kind,
    )
