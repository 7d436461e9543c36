"""Disco messages, sans-IO: the codec and the NaCl box around it.

Disco ("discovery") messages are how two nodes find and confirm direct UDP
paths between them: ``Ping`` (a transaction id), ``Pong`` (the ping's
transaction id and the source address the ping was seen coming from) and
``CallMeMaybe`` (the sender's candidate addresses: "ping me there"). They
travel as single UDP datagrams on the QUIC socket and, unchanged, as relay
datagrams.

Wire format (version 1; docs/PROTOCOL.md, "Disco message"; integers big-endian)::

    offset  size  field
    0       6     MAGIC = 00 70 32 70 63 70 ("\\0p2pcp", shared with probe.py)
    6       1     TYPE_DISCO = 0x03
    7       1     DISCO_VERSION = 1
    8       32    sender node id (Ed25519 public key), in clear
    40      24    box nonce (random)
    64      ...   crypto_box(plaintext): 16-byte MAC || encrypted plaintext

    plaintext: u8 message type, then
      0x01 ping           tx id (12 bytes)
      0x02 pong           tx id (12 bytes) || address (the pinger's source)
      0x03 call-me-maybe  u8 count (<= MAX_CALL_ME_MAYBE_ADDRESSES) || count addresses
    address: u8 family (4 or 6) || 4 or 16 address bytes || u16 port

The box is NaCl's ``crypto_box`` (Curve25519 + XSalsa20-Poly1305) between
the Curve25519 forms of the two nodes' Ed25519 keys. The sender's id is in
clear so the receiver knows which key opens the box; a box that opens proves
the sender holds that node's key (or is the receiver itself), so the header's
node id is authenticated and the ping need not repeat it.

Invariants: ``DiscoBox.open`` raises ``RemoteProtocolError`` for anything it
does not accept (wrong magic or version, a box that does not open, a
malformed or over-long message, trailing bytes) and nothing else; callers
drop such packets silently. Nothing here touches sockets, clocks or asyncio.
"""

from __future__ import annotations

import ipaddress
import os
import struct
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from nacl.bindings import (
    crypto_sign_ed25519_pk_to_curve25519,
    crypto_sign_ed25519_sk_to_curve25519,
)
from nacl.exceptions import CryptoError
from nacl.public import Box, PrivateKey, PublicKey

from p2pcp.core.errors import RemoteProtocolError
from p2pcp.core.identity import NODE_ID_BYTES, NodeId, SecretKey
from p2pcp.net.pmtu.probe import MAGIC

Address = tuple[str, int]

TYPE_DISCO = 0x03
DISCO_VERSION = 1
PREFIX = MAGIC + bytes([TYPE_DISCO])
NONCE_BYTES = Box.NONCE_SIZE  # 24
MAC_BYTES = 16
HEADER_BYTES = len(PREFIX) + 1 + NODE_ID_BYTES  # 40
TX_ID_BYTES = 12

MSG_PING = 0x01
MSG_PONG = 0x02
MSG_CALL_ME_MAYBE = 0x03

# As many as a ticket may carry: a node's interfaces plus its public address.
MAX_CALL_ME_MAYBE_ADDRESSES = 16

# Precomputed shared keys kept (one Curve25519 scalar multiplication, ~50 us,
# each); a node talks to a handful of peers, so this bounds memory, not speed.
MAX_CACHED_BOXES = 256


@dataclass(frozen=True)
class Ping:
    """ "Are you there at this address?" Answered with a Pong to its source."""

    tx_id: bytes


@dataclass(frozen=True)
class Pong:
    """The answer to a Ping; ``observed`` is where the ping came from."""

    tx_id: bytes
    observed: Address


@dataclass(frozen=True)
class CallMeMaybe:
    """The sender's candidate addresses: ping them (this opens the receiver's NAT)."""

    addresses: tuple[Address, ...]


DiscoMessage = Ping | Pong | CallMeMaybe


def new_tx_id() -> bytes:
    return os.urandom(TX_ID_BYTES)


def is_disco_packet(data: bytes) -> bool:
    """True when ``data`` starts like a disco packet (cheap; does not open it)."""
    return data[: len(PREFIX)] == PREFIX


def encode_address(address: Address) -> bytes:
    host, port = address
    ip = ipaddress.ip_address(host)
    family = 4 if ip.version == 4 else 6
    return bytes([family]) + ip.packed + struct.pack("!H", port)


def _decode_address(data: bytes, offset: int) -> tuple[Address, int]:
    if offset >= len(data):
        raise RemoteProtocolError("disco address truncated")
    family = data[offset]
    if family == 4:
        size = 4
    elif family == 6:
        size = 16
    else:
        raise RemoteProtocolError(f"disco address family {family}")
    end = offset + 1 + size + 2
    if end > len(data):
        raise RemoteProtocolError("disco address truncated")
    raw = data[offset + 1 : offset + 1 + size]
    host = str(ipaddress.IPv4Address(raw) if size == 4 else ipaddress.IPv6Address(raw))
    (port,) = struct.unpack_from("!H", data, offset + 1 + size)
    return (host, port), end


def encode_message(message: DiscoMessage) -> bytes:
    """The plaintext of ``message`` (before boxing)."""
    if isinstance(message, Ping):
        _check_tx_id(message.tx_id)
        return bytes([MSG_PING]) + message.tx_id
    if isinstance(message, Pong):
        _check_tx_id(message.tx_id)
        return bytes([MSG_PONG]) + message.tx_id + encode_address(message.observed)
    addresses = message.addresses
    if len(addresses) > MAX_CALL_ME_MAYBE_ADDRESSES:
        raise ValueError(f"call-me-maybe with {len(addresses)} addresses")
    return bytes([MSG_CALL_ME_MAYBE, len(addresses)]) + b"".join(
        encode_address(a) for a in addresses
    )


def _check_tx_id(tx_id: bytes) -> None:
    if len(tx_id) != TX_ID_BYTES:
        raise ValueError(f"a disco tx id has {TX_ID_BYTES} bytes")


def decode_message(plain: bytes) -> DiscoMessage:
    """Parse a plaintext; RemoteProtocolError for anything malformed."""
    if not plain:
        raise RemoteProtocolError("empty disco message")
    kind = plain[0]
    if kind in (MSG_PING, MSG_PONG):
        if len(plain) < 1 + TX_ID_BYTES:
            raise RemoteProtocolError("disco message truncated")
        tx_id = plain[1 : 1 + TX_ID_BYTES]
        if kind == MSG_PING:
            end = 1 + TX_ID_BYTES
            message: DiscoMessage = Ping(tx_id)
        else:
            observed, end = _decode_address(plain, 1 + TX_ID_BYTES)
            message = Pong(tx_id, observed)
    elif kind == MSG_CALL_ME_MAYBE:
        if len(plain) < 2:
            raise RemoteProtocolError("disco message truncated")
        count = plain[1]
        if count > MAX_CALL_ME_MAYBE_ADDRESSES:
            raise RemoteProtocolError(f"call-me-maybe with {count} addresses")
        end = 2
        addresses = []
        for _ in range(count):
            address, end = _decode_address(plain, end)
            addresses.append(address)
        message = CallMeMaybe(tuple(addresses))
    else:
        raise RemoteProtocolError(f"unknown disco message type {kind}")
    if end != len(plain):
        raise RemoteProtocolError("trailing bytes after a disco message")
    return message


class DiscoBox:
    """Seals and opens disco packets for one node (our key; peers' by id).

    Inputs: ``seal(peer, message)`` and ``open(packet)``; no other state than
    a bounded cache of per-peer shared keys.
    """

    def __init__(self, secret_key: SecretKey) -> None:
        self.node_id = secret_key.public
        ed_secret = secret_key.seed_bytes() + bytes(self.node_id)  # libsodium's 64-byte form
        self._private = PrivateKey(crypto_sign_ed25519_sk_to_curve25519(ed_secret))
        self._header = PREFIX + bytes([DISCO_VERSION]) + bytes(self.node_id)
        self._boxes: OrderedDict[bytes, Box] = OrderedDict()

    def _box(self, peer: bytes) -> Box:
        box = self._boxes.get(peer)
        if box is not None:
            self._boxes.move_to_end(peer)
            return box
        try:
            public = PublicKey(crypto_sign_ed25519_pk_to_curve25519(peer))
            box = Box(self._private, public)
        except (CryptoError, ValueError, TypeError) as exc:
            raise RemoteProtocolError("disco sender is not a valid Ed25519 key") from exc
        self._boxes[peer] = box
        if len(self._boxes) > MAX_CACHED_BOXES:
            self._boxes.popitem(last=False)
        return box

    def seal(self, peer: NodeId, message: DiscoMessage) -> bytes:
        """One disco packet for ``peer``."""
        sealed = self._box(bytes(peer)).encrypt(encode_message(message))
        return self._header + bytes(sealed)  # nonce || MAC || ciphertext

    def open(self, packet: bytes) -> tuple[NodeId, DiscoMessage]:
        """The sender and the message; RemoteProtocolError if it is not a good one."""
        if len(packet) < HEADER_BYTES + NONCE_BYTES + MAC_BYTES + 1 or not is_disco_packet(packet):
            raise RemoteProtocolError("not a disco packet")
        if packet[len(PREFIX)] != DISCO_VERSION:
            raise RemoteProtocolError(f"disco version {packet[len(PREFIX)]} (update p2pcp)")
        sender = packet[len(PREFIX) + 1 : HEADER_BYTES]
        box = self._box(sender)
        try:
            plain = box.decrypt(packet[HEADER_BYTES:])
        except CryptoError as exc:
            raise RemoteProtocolError("disco box does not open") from exc
        return NodeId(sender), decode_message(plain)


def addresses_for_call_me_maybe(addresses: Sequence[Address]) -> tuple[Address, ...]:
    """The first addresses that fit one call-me-maybe, deduplicated."""
    unique = list(dict.fromkeys(addresses))
    return tuple(unique[:MAX_CALL_ME_MAYBE_ADDRESSES])
