"""Short codes on a LAN with no server: multicast DNS to find, TCP to talk.

The sender (:func:`announce`) listens on a TCP port and announces its
nameplate by multicast DNS as the service ``<nameplate>._p2pcp-code._tcp.local.``
with that port and its IPv4 addresses; nothing else is in the announcement (no
host name: the record's server is a random name, no TXT properties), and
nothing in it is secret: the code's words, the SPAKE2 password, never leave
the process. The receiver (:func:`find`) asks for that one service name,
connects to the address it got and claims the nameplate. Both then run the
code exchange's messages over the connection (docs/PROTOCOL.md, "Short codes
on the LAN"); the exchange, not this channel, decides whether the other side
knew the code, so a LAN host that answers for someone else's nameplate gets
one wrong guess and learns nothing.

Rules:

- The sender picks its nameplate at random in ``NAMEPLATE_RANGE``; multicast
  DNS's own probing refuses a name that another host already answers for, and
  the sender then picks another (``ANNOUNCE_ATTEMPTS`` tries).
- One exchange per nameplate: the first connection that claims the nameplate
  gets it; every later claim is answered "used" and closed, so the receiver
  says the code was already used. A connection that does not claim this
  nameplate within ``CLAIM_TIMEOUT_S`` (a port scanner, a stray client) is
  closed without burning it; at most ``MAX_PENDING_CONNECTIONS`` wait at once.
- Frames are a 2-byte big-endian length and that many bytes, 1 to
  ``MAX_FRAME_BYTES``; at most ``MAX_FRAMES`` arrive per connection. A frame
  over either bound, a connection that ends, or a channel that was closed is a
  :class:`CodeError` (exit 2); silence past the caller's timeout is a
  :class:`ConnectError` (exit 3).
- Messages the sender sends before anyone claimed wait in the channel (at most
  ``MAX_FRAMES``) and go out, in order, right after the claim, as the relay's
  mailbox keeps them.
- ``LanConfig.interface`` keeps everything (multicast, the listener, the
  addresses announced) on one IPv4 interface address: the tests use
  127.0.0.1 so that nothing leaves the machine; ``None`` means every
  interface, and then loopback addresses are not announced (another host
  would reach its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import secrets
import struct
from dataclasses import dataclass

import ifaddr
from zeroconf import InterfaceChoice, IPVersion, NonUniqueNameException
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from p2pcp.core.errors import CodeError, ConfigError, ConnectError, LocalProtocolError
from p2pcp.rendezvous.channel import MAX_MESSAGE_BYTES

SERVICE_TYPE = "_p2pcp-code._tcp.local."
# Nameplates a LAN sender picks from: one or two digits to read out; a LAN
# has few senders at once, and probing moves a sender off a taken one.
NAMEPLATE_RANGE = range(1, 100)
# Names tried before giving up (each probe takes about a second).
ANNOUNCE_ATTEMPTS = 5
# Every channel's message bound (the relay's mailbox's): the exchange's
# largest message, a sealed ticket, is well under it.
MAX_FRAME_BYTES = MAX_MESSAGE_BYTES
# Frames each way on one connection: the claim and its answer, then the
# exchange's few messages; anything more is not a code exchange.
MAX_FRAMES = 16
# How long a receiver asks for the nameplate before saying nobody has it:
# a responder on the same LAN answers within a few hundred milliseconds.
FIND_TIMEOUT_S = 3.0
# Connecting to the sender, and its answer to the claim, on the same LAN.
CONNECT_TIMEOUT_S = 5.0
# How long a new connection may take to claim before it is dropped.
CLAIM_TIMEOUT_S = 5.0
# Connections that have not claimed yet; more are closed at once.
MAX_PENDING_CONNECTIONS = 8

_LENGTH = struct.Struct(">H")
_CLAIM_PREFIX = b"p2pcp-lan v1 claim "
ANSWER_OK = b"p2pcp-lan v1 ok"
ANSWER_USED = b"p2pcp-lan v1 used"


def service_name(nameplate: int) -> str:
    """The multicast DNS instance that announces nameplate."""
    return f"{nameplate}.{SERVICE_TYPE}"


def claim_message(nameplate: int) -> bytes:
    """The receiver's first frame: it claims nameplate."""
    return _CLAIM_PREFIX + str(nameplate).encode("ascii")


def encode_frame(message: bytes) -> bytes:
    """One frame: a 2-byte big-endian length, then message (1..4096 bytes)."""
    if not 0 < len(message) <= MAX_FRAME_BYTES:
        raise LocalProtocolError(
            f"a LAN code message must be 1 to {MAX_FRAME_BYTES} bytes, not {len(message)}"
        )
    return _LENGTH.pack(len(message)) + message


@dataclass(frozen=True)
class LanConfig:
    """Where the LAN rendezvous runs and how long it looks."""

    interface: str | None = None
    """One IPv4 address whose interface alone is used (tests: 127.0.0.1);
    None: every interface."""
    find_timeout_s: float = FIND_TIMEOUT_S
    """How long the receiver asks for the nameplate before giving up."""


def lan_settings() -> LanConfig | None:
    """The LAN rendezvous the settings allow (config key ``lan``, ``P2PCP_LAN``):
    every interface by default, one interface for an IPv4 address, None for
    "off". A value that is none of these is a ConfigError naming its source."""
    from p2pcp.core.config import load_config

    config = load_config()
    text = (config.lan or "on").strip().lower()
    if text == "on":
        return LanConfig()
    if text == "off":
        return None
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        raise ConfigError(
            f'{config.source("lan")}: lan must be "on", "off" or an IPv4 address, not {text!r}'
        ) from None
    return LanConfig(interface=str(address))


class LanRendezvous:
    """The sender's rendezvous on the LAN (session.py's SenderRendezvous):
    each nameplate is a new announcement of its own."""

    def __init__(self, config: LanConfig) -> None:
        self.config = config

    async def allocate(self, timeout_s: float, nameplate: int | None = None) -> LanChannel:
        """A new nameplate (``nameplate`` when given: a code the user chose;
        CodeError when another host announces it), announced; timeout_s
        bounds the announcement."""
        try:
            return await asyncio.wait_for(announce(self.config, nameplate), timeout_s)
        except asyncio.TimeoutError:
            raise ConnectError(f"announcing a code on the LAN took over {timeout_s:g} s") from None

    async def close(self) -> None:
        return None  # every channel withdraws its own announcement


class _Connection:
    """One TCP connection carrying frames; a reader task queues what arrives.

    Reading happens in one task so that a caller's timeout never cuts a
    frame in half; the queue ends with the error that ended the reading.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._frames: asyncio.Queue[bytes | CodeError] = asyncio.Queue()
        self._sent = 0
        self._task = asyncio.get_running_loop().create_task(self._read_frames())

    async def _read_frames(self) -> None:
        count = 0
        try:
            while True:
                header = await self._reader.readexactly(_LENGTH.size)
                (size,) = _LENGTH.unpack(header)
                if not 0 < size <= MAX_FRAME_BYTES:
                    raise CodeError(
                        f"the other side sent a {size}-byte message over the LAN "
                        f"(at most {MAX_FRAME_BYTES}): it is not a p2pcp code exchange"
                    )
                count += 1
                if count > MAX_FRAMES:
                    raise CodeError(
                        f"the other side sent more than {MAX_FRAMES} messages over the LAN: "
                        "it is not a p2pcp code exchange"
                    )
                self._frames.put_nowait(await self._reader.readexactly(size))
        except CodeError as error:
            self._frames.put_nowait(error)
        except (asyncio.IncompleteReadError, OSError):
            self._frames.put_nowait(CodeError("the other side closed the LAN connection"))
        self.abort()

    async def receive(self, timeout_s: float, *, waited_s: float | None = None) -> bytes:
        """The next frame within timeout_s (the error names waited_s, the
        caller's whole wait, when given)."""
        try:
            item = await asyncio.wait_for(self._frames.get(), timeout_s)
        except asyncio.TimeoutError:
            waited_s = timeout_s if waited_s is None else waited_s
            raise ConnectError(
                f"the other side sent nothing over the LAN for {waited_s:g} s"
            ) from None
        if isinstance(item, CodeError):
            self._frames.put_nowait(item)  # every later receive says the same
            raise CodeError(item.message)
        return item

    async def send(self, message: bytes) -> None:
        self._sent += 1
        if self._sent > MAX_FRAMES:
            raise LocalProtocolError(f"more than {MAX_FRAMES} messages on one LAN connection")
        frame = encode_frame(message)
        try:
            self._writer.write(frame)
            await asyncio.wait_for(self._writer.drain(), CONNECT_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise ConnectError("the other side stopped reading the LAN connection") from None
        except OSError:
            raise CodeError("the other side closed the LAN connection") from None

    def abort(self) -> None:
        """Close the socket now (nothing is left to flush that matters)."""
        self._writer.close()

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        self._writer.close()
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await asyncio.wait_for(self._writer.wait_closed(), CONNECT_TIMEOUT_S)


class LanChannel:
    """A code exchange's Channel (channel.py) over one LAN connection.

    On the receiver it is connected from the start (:func:`find`). On the
    sender (:func:`announce`) it also owns the listener and the announcement
    and waits for the claim: ``send`` keeps the messages until then,
    ``receive`` waits for the claim within its timeout. ``nameplate`` is the
    nameplate announced or found.
    """

    def __init__(self, nameplate: int) -> None:
        self.nameplate = nameplate
        self._claimed: asyncio.Future[_Connection] = asyncio.get_running_loop().create_future()
        self._is_taken = False  # a claim was accepted (set before its answer is sent)
        self._is_closed = False
        self._waiting: list[bytes] = []
        self._pending = 0
        self._server: asyncio.Server | None = None
        self._zeroconf: AsyncZeroconf | None = None
        self._info: AsyncServiceInfo | None = None

    @classmethod
    def _connected(cls, nameplate: int, connection: _Connection) -> LanChannel:
        channel = cls(nameplate)
        channel._is_taken = True
        channel._claimed.set_result(connection)
        return channel

    @property
    def is_claimed(self) -> bool:
        """Whether a receiver holds the nameplate (always, on the receiver)."""
        return self._is_taken

    async def send(self, message: bytes) -> None:
        if self._is_closed:
            raise CodeError("the LAN code channel is closed")
        if not self._claimed.done():
            encode_frame(message)  # the same bounds as on the wire
            if len(self._waiting) >= MAX_FRAMES:
                raise LocalProtocolError(f"more than {MAX_FRAMES} LAN messages waiting")
            self._waiting.append(message)
            return
        await self._claimed.result().send(message)

    async def receive(self, timeout_s: float) -> bytes:
        if self._is_closed:
            raise CodeError("the LAN code channel is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        if not self._claimed.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._claimed), timeout_s)
            except asyncio.TimeoutError:
                raise ConnectError(
                    f"no one on the LAN claimed nameplate {self.nameplate} within {timeout_s:g} s"
                ) from None
        remaining_s = max(0.0, deadline - loop.time())
        return await self._claimed.result().receive(remaining_s, waited_s=timeout_s)

    async def close(self) -> None:
        """Withdraw the announcement, stop listening, close the connection."""
        if self._is_closed:
            return
        self._is_closed = True
        if self._server is not None:
            self._server.close()
        if self._zeroconf is not None:
            with contextlib.suppress(Exception):  # a network gone at exit is no error
                if self._info is not None:
                    await self._zeroconf.async_unregister_service(self._info)
                await self._zeroconf.async_close()
        if self._claimed.done():
            await self._claimed.result().close()
        else:  # a receive still waiting for the claim hears that the channel closed
            self._claimed.set_result(_FailedConnection("the LAN code channel is closed"))

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """The listener's handler: the first claim for our nameplate takes it."""
        if self._pending >= MAX_PENDING_CONNECTIONS or self._is_closed:
            writer.close()
            return
        self._pending += 1
        connection = _Connection(reader, writer)
        is_handed_over = False
        try:
            claim = await connection.receive(CLAIM_TIMEOUT_S)
            if claim != claim_message(self.nameplate):
                return  # not a claim for this nameplate: not ours to answer
            if self._is_taken or self._is_closed:
                await connection.send(ANSWER_USED)
                return
            self._is_taken = True
            await connection.send(ANSWER_OK)
            while self._waiting:  # until none is left (a send may add one meanwhile)
                await connection.send(self._waiting.pop(0))
            if self._claimed.done():
                return  # the channel was closed meanwhile
            self._claimed.set_result(connection)
            is_handed_over = True
        except (CodeError, ConnectError) as error:
            if self._is_taken and not self._claimed.done():
                failed = _FailedConnection(f"the receiver's LAN connection failed: {error}")
                self._claimed.set_result(failed)
        finally:
            self._pending -= 1
            if not is_handed_over:
                await connection.close()


class _FailedConnection(_Connection):
    """No connection will come: the claimed one failed (the nameplate is
    burnt) or the channel was closed. Every call says why."""

    def __init__(self, message: str) -> None:
        self._error = CodeError(message)

    async def receive(self, timeout_s: float, *, waited_s: float | None = None) -> bytes:
        raise CodeError(self._error.message)

    async def send(self, message: bytes) -> None:
        raise CodeError(self._error.message)

    async def close(self) -> None:
        return None


# -- the sender: listen, announce, hand the channel to the first claim --------


async def announce(config: LanConfig, nameplate: int | None = None) -> LanChannel:
    """Listen on TCP and announce a nameplate on the LAN; return the sender's channel.

    nameplate None picks a free one at random; a given nameplate (a code the
    user chose) that another host already announces is a CodeError.
    """
    channel = LanChannel(nameplate or 0)
    try:
        channel._server = await asyncio.start_server(
            channel._on_connection, host=config.interface or "0.0.0.0", port=0
        )
        port = channel._server.sockets[0].getsockname()[1]
        addresses = _addresses_to_announce(config)
        if not addresses:
            raise ConnectError("this machine has no IPv4 address on a LAN to announce a code on")
        zeroconf = channel._zeroconf = _open_zeroconf(config)
        candidates = [nameplate] if nameplate is not None else _random_nameplates()
        for candidate in candidates:
            info = AsyncServiceInfo(
                SERVICE_TYPE,
                service_name(candidate),
                port=port,
                parsed_addresses=addresses,
                server=f"p2pcp-{secrets.token_hex(6)}.local.",
                properties={},
            )
            channel.nameplate = candidate
            try:
                await zeroconf.async_register_service(info)
            except NonUniqueNameException:
                continue
            except OSError as error:
                raise ConnectError(f"cannot announce on the LAN: {error.strerror}") from None
            channel._info = info
            return channel
        if nameplate is not None:
            raise CodeError(
                f"another host on this LAN already announces nameplate {nameplate}: "
                "choose another code"
            )
        raise CodeError(f"{ANNOUNCE_ATTEMPTS} nameplates in a row are taken on this LAN: try again")
    except BaseException:
        await channel.close()
        raise


def _random_nameplates() -> list[int]:
    choices = list(NAMEPLATE_RANGE)
    return [choices.pop(secrets.randbelow(len(choices))) for _ in range(ANNOUNCE_ATTEMPTS)]


# -- the receiver: find the nameplate, connect, claim -------------------------


async def find(config: LanConfig, nameplate: int) -> LanChannel:
    """Find nameplate on the LAN, connect and claim it; return the receiver's channel.

    Nobody announcing it within ``config.find_timeout_s`` and a nameplate
    already claimed are CodeErrors; an announced sender that does not answer
    is a ConnectError.
    """
    zeroconf = _open_zeroconf(config)
    try:
        info = AsyncServiceInfo(SERVICE_TYPE, service_name(nameplate))
        try:
            is_found = await info.async_request(
                zeroconf.zeroconf, int(config.find_timeout_s * 1000)
            )
        except OSError as error:
            raise ConnectError(f"cannot ask the LAN for the code: {error.strerror}") from None
    finally:
        with contextlib.suppress(Exception):
            await zeroconf.async_close()
    addresses = info.parsed_addresses(IPVersion.V4Only) if is_found else []
    if not addresses or not info.port:
        raise CodeError(
            f"no sender on this LAN announces nameplate {nameplate} "
            f"(looked for {config.find_timeout_s:g} s): check the code, or receive "
            "through the relay the sender uses"
        )
    connection = await _connect(addresses, info.port)
    try:
        await connection.send(claim_message(nameplate))
        answer = await connection.receive(CONNECT_TIMEOUT_S)
        if answer == ANSWER_USED:
            raise CodeError(
                f"code already used: nameplate {nameplate} was claimed by another receiver; "
                "ask the sender for a new code"
            )
        if answer != ANSWER_OK:
            raise CodeError(f"the host answering for nameplate {nameplate} is not a p2pcp sender")
    except BaseException:
        await connection.close()
        raise
    return LanChannel._connected(nameplate, connection)


async def _connect(addresses: list[str], port: int) -> _Connection:
    for address in addresses:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(address, port), CONNECT_TIMEOUT_S
            )
        except (OSError, asyncio.TimeoutError):
            continue
        return _Connection(reader, writer)
    tried = ", ".join(f"{address}:{port}" for address in addresses)
    raise ConnectError(f"the sender found on the LAN does not answer at {tried}")


# -- multicast DNS ------------------------------------------------------------


def _open_zeroconf(config: LanConfig) -> AsyncZeroconf:
    """An AsyncZeroconf on the configured interface (or every one), IPv4 only."""
    interfaces: list[str] | InterfaceChoice = (
        [config.interface] if config.interface else InterfaceChoice.All
    )
    try:
        return AsyncZeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
    except OSError as error:
        raise ConnectError(f"cannot use multicast DNS on this machine: {error.strerror}") from None


def _addresses_to_announce(config: LanConfig) -> list[str]:
    if config.interface:
        return [config.interface]
    return [
        ip.ip
        for adapter in ifaddr.get_adapters()
        for ip in adapter.ips
        if isinstance(ip.ip, str) and not ipaddress.ip_address(ip.ip).is_loopback
    ]
