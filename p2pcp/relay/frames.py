"""The relay protocol's frames, sans-IO: encode and decode, nothing else.

Relay protocol version 1 (docs/PROTOCOL.md, "Relay protocol": the table of
frames and their layouts is there). The client opens a WebSocket at
``/relay``; every WebSocket message is exactly one *binary* frame (a text
message is a protocol error). A frame is one type byte and a body; integers
are unsigned big-endian; a node id is 32 raw bytes (the Ed25519 public key).

One class per frame type: a frozen dataclass, a subclass of ``Frame``, that
carries its type byte (``TYPE``), its name in docs/PROTOCOL.md (``NAME``),
its layout in its docstring, and ``encode``/``decode`` next to each other
with their checks. Declaring the class registers it (``Frame.__init_subclass__``)
in the one table ``decode_frame`` reads, ``frame_types()``. Adding a frame
type is: its class here, the side(s) that handle it (``server.py``,
``client.py``: both ``match`` on the class), its row in docs/PROTOCOL.md and
its example in tests/unit/relay/test_relay_frames.py (a test fails while
either is missing).

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
node id. The relay forwards packet frames without decoding them
(``check_packets``, ``rewrite_send_as_receive``); the client reads received
ones with ``decode_packets``; only other frames go through ``decode_frame``.

Invariants: every decoder accepts exactly what the matching encoder
produces (byte-exact round trips), and any other input raises
``RelayProtocolError`` (a ``RemoteProtocolError``) and nothing else. No
trailing bytes are allowed in any frame.
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar, TypeVar

from p2pcp.core.errors import RemoteProtocolError

PROTOCOL_VERSION = 1

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


# Type byte -> frame class; filled by Frame.__init_subclass__, read by decode_frame.
_FRAME_TYPES: dict[int, type[Frame]] = {}


class Frame(ABC):
    """One relay frame. Each subclass is a frozen dataclass (without slots:
    ``slots=True`` would make a new class after this one registered) that sets
    ``TYPE`` and ``NAME`` and implements ``encode`` and ``decode``."""

    TYPE: ClassVar[int]
    """The type byte: the frame's first byte, unique among frame types."""
    NAME: ClassVar[str]
    """The frame's name in docs/PROTOCOL.md's table of frames."""

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        if "TYPE" not in vars(cls):
            return  # a shared base (like _Echo), not a frame type of its own
        if cls.TYPE in _FRAME_TYPES or not 0 <= cls.TYPE <= 255:
            raise TypeError(f"relay frame {cls.__name__}: type 0x{cls.TYPE:02x} is taken or bad")
        _FRAME_TYPES[cls.TYPE] = cls

    @abstractmethod
    def encode(self) -> bytes:
        """The frame's bytes, type byte first; ``RelayProtocolError`` if a field is out of range."""

    @classmethod
    @abstractmethod
    def decode(cls, frame: bytes) -> Frame:
        """The frame from its bytes (whose first byte is ``TYPE``); ``RelayProtocolError`` else."""


def frame_types() -> Mapping[int, type[Frame]]:
    """Every registered frame class by its type byte (read-only)."""
    return MappingProxyType(_FRAME_TYPES)


def decode_frame(frame: bytes) -> Frame:
    """Decode any frame (the inverse of ``Frame.encode``); ``RelayProtocolError`` if malformed."""
    if not isinstance(frame, (bytes, bytearray)):
        raise RelayProtocolError("relay frame: text messages are not part of the protocol")
    frame = bytes(frame)
    if not frame:
        raise RelayProtocolError("relay frame: empty message")
    frame_class = _FRAME_TYPES.get(frame[0])
    if frame_class is None:
        raise RelayProtocolError(f"relay frame: unknown type 0x{frame[0]:02x}")
    return frame_class.decode(frame)


def login_message(server_id: bytes, challenge: bytes, node_id: bytes) -> bytes:
    """The bytes a client signs to log in: domain, server id, challenge, its node id."""
    return _LOGIN_DOMAIN + server_id + challenge + node_id


def _check_length(name: str, value: bytes, length: int) -> None:
    if len(value) != length:
        raise RelayProtocolError(f"relay frame: {name} must be {length} bytes, not {len(value)}")


def _check_byte(name: str, value: int) -> None:
    if not 0 <= value <= 255:
        raise RelayProtocolError(f"relay frame: {name} is one byte")


def _exact(frame: bytes, length: int, name: str) -> None:
    if len(frame) != length:
        raise RelayProtocolError(f"relay frame: a {name} frame has {length} bytes")


# -- login -----------------------------------------------------------------------


@dataclass(frozen=True)
class Challenge(Frame):
    """CHALLENGE, relay -> client: ``0x01 | version u8 | server id (32) | challenge (32)``."""

    TYPE: ClassVar[int] = 0x01
    NAME: ClassVar[str] = "CHALLENGE"

    server_id: bytes
    challenge: bytes
    version: int = PROTOCOL_VERSION

    def encode(self) -> bytes:
        _check_byte("a version", self.version)
        _check_length("server id", self.server_id, SERVER_ID_BYTES)
        _check_length("challenge", self.challenge, CHALLENGE_BYTES)
        return bytes((self.TYPE, self.version)) + self.server_id + self.challenge

    @classmethod
    def decode(cls, frame: bytes) -> Challenge:
        _exact(frame, 2 + SERVER_ID_BYTES + CHALLENGE_BYTES, "challenge")
        return cls(frame[2 : 2 + SERVER_ID_BYTES], frame[2 + SERVER_ID_BYTES :], frame[1])


@dataclass(frozen=True)
class Login(Frame):
    """LOGIN, client -> relay: ``0x02 | version u8 | node id (32) | signature (64)``."""

    TYPE: ClassVar[int] = 0x02
    NAME: ClassVar[str] = "LOGIN"

    node_id: bytes
    signature: bytes
    version: int = PROTOCOL_VERSION

    def encode(self) -> bytes:
        _check_byte("a version", self.version)
        _check_length("node id", self.node_id, NODE_ID_BYTES)
        _check_length("signature", self.signature, SIGNATURE_BYTES)
        return bytes((self.TYPE, self.version)) + self.node_id + self.signature

    @classmethod
    def decode(cls, frame: bytes) -> Login:
        _exact(frame, 2 + NODE_ID_BYTES + SIGNATURE_BYTES, "login")
        return cls(frame[2 : 2 + NODE_ID_BYTES], frame[2 + NODE_ID_BYTES :], frame[1])


@dataclass(frozen=True)
class LoginOk(Frame):
    """LOGIN_OK, relay -> client: ``0x03`` (no body)."""

    TYPE: ClassVar[int] = 0x03
    NAME: ClassVar[str] = "LOGIN_OK"

    def encode(self) -> bytes:
        return bytes((self.TYPE,))

    @classmethod
    def decode(cls, frame: bytes) -> LoginOk:
        _exact(frame, 1, "login-ok")
        return cls()


# -- packets (the relay forwards these without decoding them) ---------------------


@dataclass(frozen=True)
class SendPackets(Frame):
    """SEND_PACKETS, client -> relay:
    ``0x10 | destination (32) | count u16 | count x length u16 | payloads``.

    The batch must fit one frame (``split_batches`` cuts longer lists)."""

    TYPE: ClassVar[int] = 0x10
    NAME: ClassVar[str] = "SEND_PACKETS"

    destination: bytes
    datagrams: Sequence[bytes]

    def encode(self) -> bytes:
        _check_length("node id", self.destination, NODE_ID_BYTES)
        return _encode_packets(self.TYPE, self.destination, self.datagrams)

    @classmethod
    def decode(cls, frame: bytes) -> SendPackets:
        return cls(*decode_packets(frame))


@dataclass(frozen=True)
class ReceivePackets(Frame):
    """RECV_PACKETS, relay -> client:
    ``0x11 | source (32) | count u16 | count x length u16 | payloads``.

    The same layout as SEND_PACKETS after the node id."""

    TYPE: ClassVar[int] = 0x11
    NAME: ClassVar[str] = "RECV_PACKETS"

    source: bytes
    datagrams: Sequence[bytes]

    def encode(self) -> bytes:
        _check_length("node id", self.source, NODE_ID_BYTES)
        return _encode_packets(self.TYPE, self.source, self.datagrams)

    @classmethod
    def decode(cls, frame: bytes) -> ReceivePackets:
        return cls(*decode_packets(frame))


# The packet frames' type bytes as one-byte strings, for the forwarding paths'
# ``message[:1] ==`` test.
SEND_PACKETS_TYPE = bytes((SendPackets.TYPE,))
RECV_PACKETS_TYPE = bytes((ReceivePackets.TYPE,))


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
    return RECV_PACKETS_TYPE + source + frame[1 + NODE_ID_BYTES :]


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


# -- keep-alive and close ----------------------------------------------------------


_E = TypeVar("_E", bound="_Echo")


@dataclass(frozen=True)
class _Echo(Frame):
    """PING and PONG: ``type | payload (8)``."""

    payload: bytes

    def encode(self) -> bytes:
        _check_length(f"{self.NAME.lower()} payload", self.payload, PING_BYTES)
        return bytes((self.TYPE,)) + self.payload

    @classmethod
    def decode(cls: type[_E], frame: bytes) -> _E:
        _exact(frame, 1 + PING_BYTES, cls.NAME.lower())
        return cls(frame[1:])


@dataclass(frozen=True)
class Ping(_Echo):
    """PING, either way: ``0x20 | payload (8)``; answered by a PONG with the same payload."""

    TYPE: ClassVar[int] = 0x20
    NAME: ClassVar[str] = "PING"


@dataclass(frozen=True)
class Pong(_Echo):
    """PONG, either way: ``0x21 | payload (8)``, the PING's."""

    TYPE: ClassVar[int] = 0x21
    NAME: ClassVar[str] = "PONG"


@dataclass(frozen=True)
class PeerGone(Frame):
    """PEER_GONE, relay -> client: ``0x30 | node id (32) | reason u8`` (``GONE_*``)."""

    TYPE: ClassVar[int] = 0x30
    NAME: ClassVar[str] = "PEER_GONE"

    node_id: bytes
    reason: int

    def encode(self) -> bytes:
        _check_length("node id", self.node_id, NODE_ID_BYTES)
        _check_byte("a peer-gone reason", self.reason)
        return bytes((self.TYPE,)) + self.node_id + bytes((self.reason,))

    @classmethod
    def decode(cls, frame: bytes) -> PeerGone:
        _exact(frame, 2 + NODE_ID_BYTES, "peer-gone")
        return cls(frame[1 : 1 + NODE_ID_BYTES], frame[1 + NODE_ID_BYTES])


@dataclass(frozen=True)
class Error(Frame):
    """ERROR, relay -> client: ``0x7F | code u8 (ERROR_*) | reason (UTF-8, at most 120 bytes)``.

    ``encode`` cuts the reason to ``MAX_ERROR_REASON_BYTES`` (on a character)."""

    TYPE: ClassVar[int] = 0x7F
    NAME: ClassVar[str] = "ERROR"

    code: int
    reason: str

    def encode(self) -> bytes:
        _check_byte("an error code", self.code)
        raw = self.reason.encode("utf-8")[:MAX_ERROR_REASON_BYTES].decode("utf-8", "ignore")
        return bytes((self.TYPE, self.code)) + raw.encode("utf-8")

    @classmethod
    def decode(cls, frame: bytes) -> Error:
        if not 2 <= len(frame) <= 2 + MAX_ERROR_REASON_BYTES:
            raise RelayProtocolError("relay frame: an error frame has a code and a short reason")
        try:
            reason = frame[2:].decode("utf-8")
        except UnicodeDecodeError:
            raise RelayProtocolError("relay frame: an error reason is not UTF-8") from None
        return cls(frame[1], reason)


# -- mailbox (short codes' rendezvous; docs/PROTOCOL.md, "Mailbox") ----------------

# A mailbox message's body: a SPAKE2 message or a sealed ticket fits many times.
MAX_MAILBOX_BODY_BYTES = 4096
# Nameplates are 1 .. 2**32 - 1; 0 in a CLOSED frame answers a refused ALLOCATE.
MAX_NAMEPLATE = 0xFFFF_FFFF
# A nameplate a client asks for (a code the user chose): a number people type.
MAX_REQUESTED_NAMEPLATE = 999_999

# CLOSED reasons: why a nameplate ended, or why a request about one was refused.
CLOSED_RELEASED = 1  # a side released it
CLOSED_DISCONNECTED = 2  # the other side's connection ended
CLOSED_EXPIRED = 3  # unclaimed or idle for the code expiry
CLOSED_UNKNOWN = 4  # no such nameplate (or not one of yours)
CLOSED_USED = 5  # it already has two sides
CLOSED_TOO_MANY = 6  # this client holds its maximum number of nameplates
CLOSED_FULL = 7  # the relay holds its maximum number of nameplates
CLOSED_OVER_LIMIT = 8  # too many messages or bytes for one nameplate

_NAMEPLATE = struct.Struct(">I")


def _check_nameplate(nameplate: int, *, zero_ok: bool = False) -> None:
    if not (0 if zero_ok else 1) <= nameplate <= MAX_NAMEPLATE:
        raise RelayProtocolError("relay frame: a nameplate is 1 to 2**32 - 1")


def _decode_nameplate(frame: bytes, name: str, *, zero_ok: bool = False) -> int:
    nameplate = int(_NAMEPLATE.unpack_from(frame, 1)[0])
    if nameplate == 0 and not zero_ok:
        raise RelayProtocolError(f"relay frame: a {name} frame names nameplate 0")
    return nameplate


_N = TypeVar("_N", bound="_NameplateOnly")


@dataclass(frozen=True)
class _NameplateOnly(Frame):
    """ALLOCATED, CLAIM, CLAIMED and RELEASE: ``type | nameplate u32`` (1 or more)."""

    nameplate: int

    def encode(self) -> bytes:
        _check_nameplate(self.nameplate)
        return bytes((self.TYPE,)) + _NAMEPLATE.pack(self.nameplate)

    @classmethod
    def decode(cls: type[_N], frame: bytes) -> _N:
        _exact(frame, 5, cls.NAME.lower())
        return cls(_decode_nameplate(frame, cls.NAME.lower()))


@dataclass(frozen=True)
class Allocate(Frame):
    """ALLOCATE, client -> relay: ``0x40`` (no body: any free nameplate) or
    ``0x40 | nameplate u32`` (1 to ``MAX_REQUESTED_NAMEPLATE``: that one, for
    a code the user chose); answered by ALLOCATED, or CLOSED with nameplate 0
    when refused. Answers come in the order asked."""

    TYPE: ClassVar[int] = 0x40
    NAME: ClassVar[str] = "ALLOCATE"

    nameplate: int | None = None

    def encode(self) -> bytes:
        if self.nameplate is None:
            return bytes((self.TYPE,))
        _check_requested(self.nameplate)
        return bytes((self.TYPE,)) + _NAMEPLATE.pack(self.nameplate)

    @classmethod
    def decode(cls, frame: bytes) -> Allocate:
        if len(frame) == 1:
            return cls()
        _exact(frame, 5, "allocate")
        nameplate = int(_NAMEPLATE.unpack_from(frame, 1)[0])
        _check_requested(nameplate)
        return cls(nameplate)


def _check_requested(nameplate: int) -> None:
    if not 1 <= nameplate <= MAX_REQUESTED_NAMEPLATE:
        raise RelayProtocolError(
            f"relay frame: a requested nameplate is 1 to {MAX_REQUESTED_NAMEPLATE:,}"
        )


@dataclass(frozen=True)
class Allocated(_NameplateOnly):
    """ALLOCATED, relay -> client: ``0x41 | nameplate u32``; the client is its first side."""

    TYPE: ClassVar[int] = 0x41
    NAME: ClassVar[str] = "ALLOCATED"


@dataclass(frozen=True)
class Claim(_NameplateOnly):
    """CLAIM, client -> relay: ``0x42 | nameplate u32``; answered by CLAIMED or CLOSED."""

    TYPE: ClassVar[int] = 0x42
    NAME: ClassVar[str] = "CLAIM"


@dataclass(frozen=True)
class Claimed(_NameplateOnly):
    """CLAIMED, relay -> client: ``0x43 | nameplate u32``; the client is its second side.

    The messages the first side added so far follow as MESSAGE frames."""

    TYPE: ClassVar[int] = 0x43
    NAME: ClassVar[str] = "CLAIMED"


_B = TypeVar("_B", bound="_NameplateBody")


@dataclass(frozen=True)
class _NameplateBody(Frame):
    """ADD and MESSAGE: ``type | nameplate u32 | body (0 to 4,096 bytes)``."""

    nameplate: int
    body: bytes

    def encode(self) -> bytes:
        _check_nameplate(self.nameplate)
        if len(self.body) > MAX_MAILBOX_BODY_BYTES:
            raise RelayProtocolError(
                f"relay frame: a mailbox message has at most {MAX_MAILBOX_BODY_BYTES} bytes"
            )
        return bytes((self.TYPE,)) + _NAMEPLATE.pack(self.nameplate) + bytes(self.body)

    @classmethod
    def decode(cls: type[_B], frame: bytes) -> _B:
        name = cls.NAME.lower()
        if not 5 <= len(frame) <= 5 + MAX_MAILBOX_BODY_BYTES:
            raise RelayProtocolError(
                f"relay frame: a {name} frame has a nameplate and at most "
                f"{MAX_MAILBOX_BODY_BYTES} bytes"
            )
        return cls(_decode_nameplate(frame, name), frame[5:])


@dataclass(frozen=True)
class Add(_NameplateBody):
    """ADD, client -> relay: ``0x44 | nameplate u32 | body (at most 4,096 bytes)``;
    the relay passes the body on to the nameplate's other side (queued until
    it claims)."""

    TYPE: ClassVar[int] = 0x44
    NAME: ClassVar[str] = "ADD"


@dataclass(frozen=True)
class Message(_NameplateBody):
    """MESSAGE, relay -> client: ``0x45 | nameplate u32 | body``: the other side's ADD."""

    TYPE: ClassVar[int] = 0x45
    NAME: ClassVar[str] = "MESSAGE"


@dataclass(frozen=True)
class Release(_NameplateOnly):
    """RELEASE, client -> relay: ``0x46 | nameplate u32``; the nameplate ends
    (the other side gets CLOSED, reason 1). Not answered."""

    TYPE: ClassVar[int] = 0x46
    NAME: ClassVar[str] = "RELEASE"


@dataclass(frozen=True)
class Closed(Frame):
    """CLOSED, relay -> client: ``0x47 | nameplate u32 | reason u8`` (``CLOSED_*``).

    The nameplate ended for this client, or its ALLOCATE (nameplate 0), CLAIM
    or ADD was refused."""

    TYPE: ClassVar[int] = 0x47
    NAME: ClassVar[str] = "CLOSED"

    nameplate: int
    reason: int

    def encode(self) -> bytes:
        _check_nameplate(self.nameplate, zero_ok=True)
        _check_byte("a closed reason", self.reason)
        return bytes((self.TYPE,)) + _NAMEPLATE.pack(self.nameplate) + bytes((self.reason,))

    @classmethod
    def decode(cls, frame: bytes) -> Closed:
        _exact(frame, 6, "closed")
        return cls(_decode_nameplate(frame, "closed", zero_ok=True), frame[5])
