"""The relay protocol's frames, sans-IO: encode and decode, nothing else.

Relay protocol version 1 (docs/PROTOCOL.md, "Relay protocol"). The client opens a
WebSocket at ``/relay``; every WebSocket message is exactly one *binary*
frame (a text message is a protocol error). A frame is one type byte and a
body; integers are unsigned big-endian; a node id is 32 raw bytes (the
Ed25519 public key)::

    0x01 CHALLENGE     s->c  version u8 = 1 | server id (32) | challenge (32)
    0x02 LOGIN         c->s  version u8 = 1 | node id (32) | signature (64)
    0x03 LOGIN_OK      s->c  (empty)
    0x10 SEND_PACKETS  c->s  destination (32) | count u16 | count x length u16 | payloads
    0x11 RECV_PACKETS  s->c  source (32)      | count u16 | count x length u16 | payloads
    0x20 PING          both  payload (8)
    0x21 PONG          both  payload (8), echoing the PING's
    0x30 PEER_GONE     s->c  node id (32) | reason u8 (1 not connected, 2 disconnected)
    0x7F ERROR         s->c  code u8 | reason (UTF-8, at most 120 bytes)

Login: the signature is ``SecretKey.sign(login_message(server id,
challenge, node id))``; the message starts with a domain-separation string,
so a login signature can never be mistaken for any other p2pcp signature.

Packets: a SEND_PACKETS/RECV_PACKETS frame carries a *batch* of 1 to
``MAX_BATCH_DATAGRAMS`` datagrams for one node, each 1 to
``MAX_DATAGRAM_BYTES`` long, at most ``MAX_BATCH_PAYLOAD_BYTES`` in all. The
lengths come first, then the payloads back to back, so that the relay checks
a batch with one ``struct`` call and a ``sum`` (no per-datagram Python work)
and turns a SEND into a RECV by rewriting the first 33 bytes only
(``rewrite_send_as_receive``): both forms have the same layout after the
node id.

Invariants: every decoder accepts exactly what the matching encoder
produces (byte-exact round trips), and any other input raises
``RelayProtocolError`` (a ``RemoteProtocolError``) and nothing else. No
trailing bytes are allowed in any frame.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from p2pcp.core.errors import RemoteProtocolError

PROTOCOL_VERSION = 1

TYPE_CHALLENGE = 0x01
TYPE_LOGIN = 0x02
TYPE_LOGIN_OK = 0x03
TYPE_SEND_PACKETS = 0x10
TYPE_RECV_PACKETS = 0x11
TYPE_PING = 0x20
TYPE_PONG = 0x21
TYPE_PEER_GONE = 0x30
TYPE_ERROR = 0x7F

NODE_ID_BYTES = 32
SERVER_ID_BYTES = 32
# 32 random bytes: a challenge never repeats, so a signature never replays.
CHALLENGE_BYTES = 32
SIGNATURE_BYTES = 64
PING_BYTES = 8

# The largest UDP payload is 65,527 bytes (IPv6; 65,507 over IPv4): 65,535,
# the most a u16 length carries, refuses no real datagram.
MAX_DATAGRAM_BYTES = 65535
# Enough datagrams per message that per-message costs vanish: at 16,000-byte
# datagrams (the net layer's largest) 8 fill a batch; at 1,200 bytes, 64.
MAX_BATCH_DATAGRAMS = 64
# Bounds one message (and so the relay's per-message memory): two of the
# largest datagrams, or eight 16,000-byte ones.
MAX_BATCH_PAYLOAD_BYTES = 128 * 1024
# Header of a packets frame: type, node id, count.
PACKETS_HEADER_BYTES = 1 + NODE_ID_BYTES + 2
# The largest frame of any type: websockets' ``max_size`` on both ends.
MAX_MESSAGE_BYTES = PACKETS_HEADER_BYTES + 2 * MAX_BATCH_DATAGRAMS + MAX_BATCH_PAYLOAD_BYTES
# An ERROR frame's reason is short, like a WebSocket close reason (123 bytes).
MAX_ERROR_REASON_BYTES = 120

# PEER_GONE reasons.
GONE_NOT_CONNECTED = 1
GONE_DISCONNECTED = 2

# ERROR codes (the relay sends one, then closes the connection).
ERROR_PROTOCOL = 1  # a malformed frame, a text message, or a frame out of order
ERROR_VERSION = 2  # the client speaks a protocol version the relay does not
ERROR_LOGIN_FAILED = 3  # bad signature
ERROR_LOGIN_TIMEOUT = 4  # no login within the login timeout
ERROR_REPLACED = 5  # another connection logged in with the same node id
ERROR_IDLE = 6  # nothing received within the idle timeout
ERROR_SERVER_FULL = 7  # the relay holds its maximum number of clients
ERROR_FLOODING = 8  # the client kept sending far above its rate limit
ERROR_SHUTDOWN = 9  # the relay is stopping

_LOGIN_DOMAIN = b"p2pcp relay login v1\x00"

_COUNT = struct.Struct(">H")
# One struct per batch size, so checking a batch is one C call.
_LENGTHS = [struct.Struct(f">{count}H") for count in range(MAX_BATCH_DATAGRAMS + 1)]


class RelayProtocolError(RemoteProtocolError):
    """A relay frame is malformed, of an unknown type or version, or over a limit."""


@dataclass(frozen=True)
class Challenge:
    version: int
    server_id: bytes
    challenge: bytes


@dataclass(frozen=True)
class Login:
    version: int
    node_id: bytes
    signature: bytes


@dataclass(frozen=True)
class LoginOk:
    pass


@dataclass(frozen=True)
class SendPackets:
    destination: bytes
    datagrams: list[bytes]


@dataclass(frozen=True)
class ReceivePackets:
    source: bytes
    datagrams: list[bytes]


@dataclass(frozen=True)
class Ping:
    payload: bytes


@dataclass(frozen=True)
class Pong:
    payload: bytes


@dataclass(frozen=True)
class PeerGone:
    node_id: bytes
    reason: int


@dataclass(frozen=True)
class Error:
    code: int
    reason: str


Frame = Challenge | Login | LoginOk | SendPackets | ReceivePackets | Ping | Pong | PeerGone | Error


def login_message(server_id: bytes, challenge: bytes, node_id: bytes) -> bytes:
    """The bytes a client signs to log in: domain, server id, challenge, its node id."""
    return _LOGIN_DOMAIN + server_id + challenge + node_id


def _check_length(name: str, value: bytes, length: int) -> None:
    if len(value) != length:
        raise RelayProtocolError(f"relay frame: {name} must be {length} bytes, not {len(value)}")


def _check_byte(name: str, value: int) -> None:
    if not 0 <= value <= 255:
        raise RelayProtocolError(f"relay frame: {name} is one byte")


def encode_challenge(server_id: bytes, challenge: bytes, version: int = PROTOCOL_VERSION) -> bytes:
    _check_byte("a version", version)
    _check_length("server id", server_id, SERVER_ID_BYTES)
    _check_length("challenge", challenge, CHALLENGE_BYTES)
    return bytes((TYPE_CHALLENGE, version)) + server_id + challenge


def encode_login(node_id: bytes, signature: bytes, version: int = PROTOCOL_VERSION) -> bytes:
    _check_byte("a version", version)
    _check_length("node id", node_id, NODE_ID_BYTES)
    _check_length("signature", signature, SIGNATURE_BYTES)
    return bytes((TYPE_LOGIN, version)) + node_id + signature


def encode_login_ok() -> bytes:
    return bytes((TYPE_LOGIN_OK,))


def encode_ping(payload: bytes) -> bytes:
    _check_length("ping payload", payload, PING_BYTES)
    return bytes((TYPE_PING,)) + payload


def encode_pong(payload: bytes) -> bytes:
    _check_length("pong payload", payload, PING_BYTES)
    return bytes((TYPE_PONG,)) + payload


def encode_peer_gone(node_id: bytes, reason: int) -> bytes:
    _check_length("node id", node_id, NODE_ID_BYTES)
    _check_byte("a peer-gone reason", reason)
    return bytes((TYPE_PEER_GONE,)) + node_id + bytes((reason,))


def encode_error(code: int, reason: str) -> bytes:
    """An ERROR frame; the reason is cut to ``MAX_ERROR_REASON_BYTES`` (on a character)."""
    _check_byte("an error code", code)
    raw = reason.encode("utf-8")[:MAX_ERROR_REASON_BYTES].decode("utf-8", "ignore")
    return bytes((TYPE_ERROR, code)) + raw.encode("utf-8")


def _encode_packets(frame_type: int, node_id: bytes, datagrams: Sequence[bytes]) -> bytes:
    count = len(datagrams)
    lengths = [len(datagram) for datagram in datagrams]
    if not 1 <= count <= MAX_BATCH_DATAGRAMS:
        raise RelayProtocolError(f"relay frame: a batch has 1 to {MAX_BATCH_DATAGRAMS} datagrams")
    if min(lengths) < 1 or max(lengths) > MAX_DATAGRAM_BYTES:
        raise RelayProtocolError(f"relay frame: a datagram has 1 to {MAX_DATAGRAM_BYTES} bytes")
    if sum(lengths) > MAX_BATCH_PAYLOAD_BYTES:
        raise RelayProtocolError("relay frame: a batch is over its byte limit")
    return b"".join(
        (
            bytes((frame_type,)),
            node_id,
            _COUNT.pack(count),
            _LENGTHS[count].pack(*lengths),
            *datagrams,
        )
    )


def encode_send_packets(destination: bytes, datagrams: Sequence[bytes]) -> bytes:
    """One SEND_PACKETS frame; the batch must fit (see ``split_batches``)."""
    _check_length("node id", destination, NODE_ID_BYTES)
    return _encode_packets(TYPE_SEND_PACKETS, destination, datagrams)


def encode_receive_packets(source: bytes, datagrams: Sequence[bytes]) -> bytes:
    _check_length("node id", source, NODE_ID_BYTES)
    return _encode_packets(TYPE_RECV_PACKETS, source, datagrams)


def split_batches(datagrams: Sequence[bytes]) -> Iterator[Sequence[bytes]]:
    """Cut datagrams (each 1..MAX_DATAGRAM_BYTES long) into batches that fit one frame.

    Order is kept; one batch when they fit, which is the common case.
    """
    count = len(datagrams)
    if count <= MAX_BATCH_DATAGRAMS and sum(map(len, datagrams)) <= MAX_BATCH_PAYLOAD_BYTES:
        if count:
            yield datagrams
        return
    start = 0
    size = 0
    for index, datagram in enumerate(datagrams):
        if index > start and (
            index - start == MAX_BATCH_DATAGRAMS or size + len(datagram) > MAX_BATCH_PAYLOAD_BYTES
        ):
            yield datagrams[start:index]
            start, size = index, 0
        size += len(datagram)
    yield datagrams[start:]


def check_packets(frame: bytes) -> int:
    """Validate a SEND_PACKETS or RECV_PACKETS frame's layout; return its datagram count.

    The relay's hot path: a few C-level calls whatever the batch size. The
    caller has checked the type byte.
    """
    size = len(frame)
    if size < PACKETS_HEADER_BYTES:
        raise RelayProtocolError("relay frame: a packets frame is too short")
    count = _COUNT.unpack_from(frame, PACKETS_HEADER_BYTES - 2)[0]
    if not 1 <= count <= MAX_BATCH_DATAGRAMS:
        raise RelayProtocolError(f"relay frame: a batch has 1 to {MAX_BATCH_DATAGRAMS} datagrams")
    payload_start = PACKETS_HEADER_BYTES + 2 * count
    if size < payload_start:
        raise RelayProtocolError("relay frame: a packets frame is too short")
    lengths = _LENGTHS[count].unpack_from(frame, PACKETS_HEADER_BYTES)
    payload_bytes = size - payload_start
    if sum(lengths) != payload_bytes or min(lengths) == 0:
        raise RelayProtocolError("relay frame: datagram lengths do not match the frame")
    if payload_bytes > MAX_BATCH_PAYLOAD_BYTES:
        raise RelayProtocolError("relay frame: a batch is over its byte limit")
    return int(count)


def rewrite_send_as_receive(frame: bytes, source: bytes) -> bytes:
    """Turn a checked SEND_PACKETS frame into the RECV_PACKETS frame for its destination.

    Only the type byte and the node id change; the rest is copied as is.
    """
    return b"\x11" + source + frame[1 + NODE_ID_BYTES :]


def decode_packets(frame: bytes) -> tuple[bytes, list[bytes]]:
    """The node id and datagrams of a SEND_PACKETS or RECV_PACKETS frame."""
    count = check_packets(frame)
    lengths = _LENGTHS[count].unpack_from(frame, PACKETS_HEADER_BYTES)
    node_id = frame[1 : PACKETS_HEADER_BYTES - 2]
    offset = PACKETS_HEADER_BYTES + 2 * count
    if count == 1:
        return node_id, [frame[offset:]]
    datagrams = []
    for length in lengths:
        datagrams.append(frame[offset : offset + length])
        offset += length
    return node_id, datagrams


def _exact(frame: bytes, length: int, name: str) -> None:
    if len(frame) != length:
        raise RelayProtocolError(f"relay frame: a {name} frame has {length} bytes")


def decode_frame(frame: bytes) -> Frame:
    """Decode any frame; raise ``RelayProtocolError`` for anything malformed."""
    if not isinstance(frame, (bytes, bytearray)):
        raise RelayProtocolError("relay frame: text messages are not part of the protocol")
    frame = bytes(frame)
    if not frame:
        raise RelayProtocolError("relay frame: empty message")
    frame_type = frame[0]
    if frame_type == TYPE_RECV_PACKETS:
        source, datagrams = decode_packets(frame)
        return ReceivePackets(source, datagrams)
    if frame_type == TYPE_SEND_PACKETS:
        destination, datagrams = decode_packets(frame)
        return SendPackets(destination, datagrams)
    if frame_type == TYPE_CHALLENGE:
        _exact(frame, 2 + SERVER_ID_BYTES + CHALLENGE_BYTES, "challenge")
        return Challenge(frame[1], frame[2:34], frame[34:])
    if frame_type == TYPE_LOGIN:
        _exact(frame, 2 + NODE_ID_BYTES + SIGNATURE_BYTES, "login")
        return Login(frame[1], frame[2:34], frame[34:])
    if frame_type == TYPE_LOGIN_OK:
        _exact(frame, 1, "login-ok")
        return LoginOk()
    if frame_type in (TYPE_PING, TYPE_PONG):
        _exact(frame, 1 + PING_BYTES, "ping")
        return Ping(frame[1:]) if frame_type == TYPE_PING else Pong(frame[1:])
    if frame_type == TYPE_PEER_GONE:
        _exact(frame, 2 + NODE_ID_BYTES, "peer-gone")
        return PeerGone(frame[1:33], frame[33])
    if frame_type == TYPE_ERROR:
        if not 2 <= len(frame) <= 2 + MAX_ERROR_REASON_BYTES:
            raise RelayProtocolError("relay frame: an error frame has a code and a short reason")
        try:
            reason = frame[2:].decode("utf-8")
        except UnicodeDecodeError:
            raise RelayProtocolError("relay frame: an error reason is not UTF-8") from None
        return Error(frame[1], reason)
    raise RelayProtocolError(f"relay frame: unknown type 0x{frame_type:02x}")


def encode_frame(frame: Frame) -> bytes:
    """Encode any frame (the inverse of ``decode_frame``)."""
    if isinstance(frame, Challenge):
        return encode_challenge(frame.server_id, frame.challenge, frame.version)
    if isinstance(frame, Login):
        return encode_login(frame.node_id, frame.signature, frame.version)
    if isinstance(frame, LoginOk):
        return encode_login_ok()
    if isinstance(frame, SendPackets):
        return encode_send_packets(frame.destination, frame.datagrams)
    if isinstance(frame, ReceivePackets):
        return encode_receive_packets(frame.source, frame.datagrams)
    if isinstance(frame, Ping):
        return encode_ping(frame.payload)
    if isinstance(frame, Pong):
        return encode_pong(frame.payload)
    if isinstance(frame, PeerGone):
        return encode_peer_gone(frame.node_id, frame.reason)
    return encode_error(frame.code, frame.reason)
