"""The relay client: one node's connection to its home relay.

API (used by ``net/paths/magicsock.py``; keep it stable)::

    client = RelayClient(url, secret_key, on_packets=..., on_peer_gone=..., on_connected=...)
    await client.start(timeout_s=5.0)   # True once logged in; reconnects in the background
    await client.try_now(timeout_s=5.0) # not connected: attempt at once, True once logged in
    client.send(destination, [datagram, ...])   # never blocks; False = dropped
    client.is_connected, client.url, client.stun_address, client.last_error
    client.bytes_sent, client.bytes_received    # datagram payload bytes
    await client.close()

    # The mailbox (short codes; docs/PROTOCOL.md, "Mailbox"):
    nameplate = await client.allocate_nameplate(timeout_s)   # -> int, we are its first side
    await client.claim_nameplate(nameplate, timeout_s)       # we are its second side
    client.mailbox_send(nameplate, body)                     # never blocks; body <= 4 KiB
    body = await client.mailbox_receive(nameplate, timeout_s)  # the other side's next message
    client.release_nameplate(nameplate)                      # idempotent


- ``url`` is ``http://HOST:PORT`` or ``https://HOST:PORT``, checked and tidied
  by ``core.config.normalize_relay_url`` (a bad one raises ``UsageError``;
  a URL without a port means 3340, the relay's default). The client speaks
  WebSocket to ``ws(s)://HOST:PORT/relay``; https verifies the relay's
  certificate with ``ssl.create_default_context()`` (honours
  ``SSL_CERT_FILE``).
- ``stun_address`` is ``(IP, PORT)``: the relay answers STUN on UDP at the
  URL's port. It is known at once for a URL with an IP address, else from
  the first connection (the address the WebSocket reached). Relays behind a
  TLS proxy must answer STUN on the UDP port of their public URL
  (README.md, running a relay behind a TLS proxy).
- Callbacks run on the event loop, in order, and must not block or raise
  (an exception is logged and the connection is restarted):
  ``on_packets(source, datagrams)`` for each received batch;
  ``on_peer_gone(node)`` when the relay says a node we sent to is not
  connected (at most once a second per node); ``on_connected(True/False)``
  when the login succeeds and when that connection ends (also on close()).
- ``send`` queues one WebSocket message per batch (``frames.split_batches``
  cuts only lists over a frame's limits). It returns False, dropping the
  datagrams, while not connected or when ``SEND_QUEUE_BYTES`` are queued:
  like UDP, loss is the back-pressure, and QUIC's congestion control reacts.
- After ``start()`` the client reconnects whenever the connection ends, with
  exponential backoff and jitter between ``BACKOFF_MIN_S`` and
  ``BACKOFF_MAX_S``. ``last_error`` holds why the last attempt failed, or
  why the last connection ended (the relay's own reason when it said
  goodbye), as a ``ConnectError``; ``start`` itself raises nothing for an
  unreachable relay, and returns as soon as the first attempt fails (a
  refused connection costs no wait; a relay that never answers costs at most
  ``timeout_s``). ``try_now`` cuts the backoff short: a caller that needs the
  relay now learns within one attempt whether it is there.
- Mailbox: ``allocate_nameplate`` and ``claim_nameplate`` connect first
  (``start`` or ``try_now``) and raise ``ConnectError`` when the relay cannot
  be reached or does not answer within ``timeout_s``. A nameplate that is
  unknown, already used, expired, or closed by the other side raises
  ``CodeError`` (exit 2) with a one-line reason ("no such code (nameplate
  7)", "code already used", "code expired"), from the call that meets it;
  messages that arrived before the end are still received first.
  ``mailbox_receive`` raises ``ConnectError`` on a timeout. A lost relay
  connection ends every nameplate of this client (the relay closes them
  too): ``ConnectError``. Bodies are never logged.
- Nothing here lets a library's traceback reach a user: a connection that
  ends in any way is an ordinary event (``last_error`` says how), and
  unexpected failures are logged at debug level only (``-vv`` shows them).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import random
import ssl
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from p2pcp import __version__
from p2pcp.core.config import normalize_relay_url
from p2pcp.core.errors import CodeError, ConnectError, LocalProtocolError, P2pcpError
from p2pcp.core.identity import NodeId, SecretKey
from p2pcp.relay import frames
from p2pcp.relay.wsio import write_now

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection


class _NameplateTaken(CodeError):
    """A refused ALLOCATE of a requested nameplate (CLOSED(0, used));
    ``allocate_nameplate`` names the nameplate in the error it raises."""


logger = logging.getLogger(__name__)
# websockets logs through this logger; without a handler of its own, Python's
# last-resort handler would print its warnings and tracebacks to stderr
# whenever the CLI runs without -v. The NullHandler keeps them for -v only.
_ws_logger = logging.getLogger("p2pcp.relay.websockets")
_ws_logger.addHandler(logging.NullHandler())

# WebSocket opening handshake plus login: a relay across the world answers
# in well under a second; ten leaves room for a slow TLS handshake.
CONNECT_TIMEOUT_S = 10.0
# Reconnect delays: fast after a blip, at most 10 s so a relay that comes
# back is used again soon, jittered so that a relay's restart does not bring
# every client back in the same instant.
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 10.0
# A connection that lasted this long resets the backoff.
STABLE_CONNECTION_S = 5.0
# A PING this often keeps NATs and proxies from dropping an idle TCP flow
# (common idle timeouts are 60 s and up) and the relay's idle timeout away.
KEEPALIVE_INTERVAL_S = 15.0
# Nothing received (not even a PONG) for this long: the connection is dead.
KEEPALIVE_TIMEOUT_S = 45.0
# Datagrams waiting for the socket. 4 MiB is ~40 ms at 100 MB/s: enough to
# absorb a QUIC burst, small enough not to bloat the round-trip time.
SEND_QUEUE_BYTES = 4 * 1024 * 1024
# websockets' write buffer high-water mark: above it, sending waits.
WRITE_LIMIT_BYTES = 512 * 1024
# Received messages websockets buffers before it stops reading the socket.
RECEIVE_QUEUE_MESSAGES = 32
# Waiting for the close handshake when a connection ends.
CLOSE_TIMEOUT_S = 2.0
# Node ids of senders kept as NodeId objects (cleared when full).
_NODE_CACHE_SIZE = 1024
# Mailbox messages received and not yet read, per nameplate: the relay passes
# at most 64 in a nameplate's life; more means a broken relay.
MAILBOX_INBOX_MESSAGES = 64

_T = TypeVar("_T")

PacketsCallback = Callable[[NodeId, list[bytes]], None]
PeerGoneCallback = Callable[[NodeId], None]
ConnectedCallback = Callable[[bool], None]


@dataclass
class _Nameplate:
    """A nameplate this client is a side of: what arrived, and how it ended."""

    inbox: deque[bytes] = field(default_factory=deque)
    error: P2pcpError | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)


def websocket_url(url: str) -> str:
    """``ws(s)://HOST:PORT/relay`` for a normalized relay URL."""
    parts = urlsplit(url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}/relay"


class RelayClient:
    """A connection to one relay that logs in with this node's key and keeps itself up."""

    def __init__(
        self,
        url: str,
        secret_key: SecretKey,
        *,
        on_packets: PacketsCallback,
        on_peer_gone: PeerGoneCallback | None = None,
        on_connected: ConnectedCallback | None = None,
    ) -> None:
        self.url = normalize_relay_url(url)
        parts = urlsplit(self.url)
        self._is_tls = parts.scheme == "https"
        self._ws_url = websocket_url(self.url)
        self._port = int(parts.port or 0)
        self._secret_key = secret_key
        self._node_id = bytes(secret_key.public)
        self._on_packets = on_packets
        self._on_peer_gone = on_peer_gone
        self._on_connected = on_connected
        self.stun_address: tuple[str, int] | None = None
        host = parts.hostname or ""
        with contextlib.suppress(ValueError):
            self.stun_address = (str(ipaddress.ip_address(host)), self._port)
        self.is_connected = False
        self.bytes_sent = 0
        self.bytes_received = 0
        self.datagrams_dropped = 0
        self.last_error: P2pcpError | None = None
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._wake = asyncio.Event()
        self._connected = asyncio.Event()
        # Set to cut the backoff sleep short (try_now).
        self._retry_now = asyncio.Event()
        # Resolved with the outcome (True: logged in) of the attempt under way.
        self._attempt_waiters: list[asyncio.Future[bool]] = []
        self._run_task: asyncio.Task[None] | None = None
        self._connection: ClientConnection | None = None
        self._last_receive = 0.0
        self._node_ids: dict[bytes, NodeId] = {}
        self._is_closing = False
        # Mailbox: ALLOCATE answers come in order (a timed-out one stays, cancelled).
        self._allocating: deque[asyncio.Future[int]] = deque()
        self._claiming: dict[int, asyncio.Future[None]] = {}
        self._nameplates: dict[int, _Nameplate] = {}

    def __repr__(self) -> str:
        return f"RelayClient({self.url}, connected={self.is_connected})"

    async def start(self, *, timeout_s: float) -> bool:
        """Connect and log in; True if that happened within ``timeout_s``.

        Either way the client keeps (re)connecting in the background until
        ``close()``.
        """
        if self._is_closing:
            raise LocalProtocolError("RelayClient.start() after close()")
        if self._run_task is None:
            self._run_task = asyncio.get_running_loop().create_task(
                self._run(), name=f"relay client {self.url}"
            )
        return await self._next_outcome(timeout_s)

    async def try_now(self, *, timeout_s: float) -> bool:
        """Connected, or attempt at once (no backoff wait): True once logged in
        within ``timeout_s``; False when that attempt failed (``last_error``
        says why) or took longer."""
        if self.is_connected:
            return True
        if self._run_task is None or self._is_closing:
            return False
        self._retry_now.set()
        return await self._next_outcome(timeout_s)

    async def _next_outcome(self, timeout_s: float) -> bool:
        if self.is_connected:
            return True
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._attempt_waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout_s)
        except asyncio.TimeoutError:
            pass
        finally:
            if waiter in self._attempt_waiters:
                self._attempt_waiters.remove(waiter)
        return self.is_connected

    def _attempt_finished(self, is_connected: bool) -> None:
        waiters, self._attempt_waiters = self._attempt_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(is_connected)

    def send(self, destination: NodeId, datagrams: Sequence[bytes]) -> bool:
        """Queue datagrams for ``destination``; False (dropped) if not connected or full.

        Each datagram is 1 to 65,535 bytes (LocalProtocolError otherwise).
        """
        if not datagrams:
            return True
        if not self.is_connected:
            self.datagrams_dropped += len(datagrams)
            return False
        target = bytes(destination)
        try:
            messages = [
                frames.SendPackets(target, batch).encode()
                for batch in frames.split_batches(datagrams)
            ]
        except frames.RelayProtocolError as exc:
            raise LocalProtocolError(str(exc)) from None
        size = sum(map(len, messages))
        if self._queued_bytes + size > SEND_QUEUE_BYTES:
            self.datagrams_dropped += len(datagrams)
            return False
        self.bytes_sent += sum(map(len, datagrams))
        connection = self._connection
        for index, message in enumerate(messages):
            if (
                self._queue
                or connection is None
                or not write_now(connection, message, WRITE_LIMIT_BYTES)
            ):
                rest = messages[index:]
                self._queue.extend(rest)
                self._queued_bytes += sum(map(len, rest))
                self._wake.set()
                break
        return True

    # -- the mailbox ------------------------------------------------------------

    async def allocate_nameplate(self, timeout_s: float, nameplate: int | None = None) -> int:
        """A new nameplate from the relay, with this client as its first side:
        ``nameplate`` when given (1 to ``frames.MAX_REQUESTED_NAMEPLATE``; a
        CodeError when it is open or recently ended there), else any free one."""
        if nameplate is not None and not 1 <= nameplate <= frames.MAX_REQUESTED_NAMEPLATE:
            raise CodeError(
                f"nameplate {nameplate} is out of range (1 to {frames.MAX_REQUESTED_NAMEPLATE:,})"
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        await self._ensure_connected(timeout_s)
        future: asyncio.Future[int] = loop.create_future()
        self._allocating.append(future)
        self._send_mailbox(frames.Allocate(nameplate).encode())
        try:
            return await self._answer(future, deadline - loop.time())
        except _NameplateTaken:
            raise CodeError(
                f"nameplate {nameplate} is in use on the relay {self.url} (or was used in "
                "the last 10 minutes): choose another code"
            ) from None

    async def claim_nameplate(self, nameplate: int, timeout_s: float) -> None:
        """Become the second side of ``nameplate``; its waiting messages follow."""
        if not 1 <= nameplate <= frames.MAX_NAMEPLATE:
            raise CodeError(f"no such code (nameplate {nameplate})")
        if nameplate in self._nameplates or nameplate in self._claiming:
            raise CodeError("code already used")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        await self._ensure_connected(timeout_s)
        future: asyncio.Future[None] = loop.create_future()
        self._claiming[nameplate] = future
        try:
            self._send_mailbox(frames.Claim(nameplate).encode())
            await self._answer(future, deadline - loop.time())
        finally:
            if self._claiming.get(nameplate) is future:
                del self._claiming[nameplate]

    def mailbox_send(self, nameplate: int, body: bytes) -> None:
        """Queue ``body`` (at most 4 KiB) for the other side of ``nameplate``."""
        state = self._nameplates.get(nameplate)
        if state is None:
            raise CodeError(f"no such code (nameplate {nameplate})")
        if state.error is not None:
            raise state.error
        if len(body) > frames.MAX_MAILBOX_BODY_BYTES:
            raise LocalProtocolError(
                f"a mailbox message has at most {frames.MAX_MAILBOX_BODY_BYTES} bytes"
            )
        self._send_mailbox(frames.Add(nameplate, bytes(body)).encode())

    async def mailbox_receive(self, nameplate: int, timeout_s: float) -> bytes:
        """The other side's next message; CodeError once the nameplate ended and
        every message before the end was read; ConnectError after ``timeout_s``."""
        state = self._nameplates.get(nameplate)
        if state is None:
            raise CodeError(f"no such code (nameplate {nameplate})")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            if state.inbox:
                return state.inbox.popleft()
            if state.error is not None:
                raise state.error
            state.changed.clear()
            try:
                await asyncio.wait_for(state.changed.wait(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise ConnectError(
                    f"no answer through the relay {self.url} within {timeout_s:g} s"
                ) from None

    def release_nameplate(self, nameplate: int) -> None:
        """Leave ``nameplate``: the relay ends it and tells the other side. Idempotent."""
        state = self._nameplates.pop(nameplate, None)
        if state is not None and state.error is None and self.is_connected:
            self._send_mailbox(frames.Release(nameplate).encode())

    async def _ensure_connected(self, timeout_s: float) -> None:
        if self.is_connected:
            return
        if self._is_closing:
            raise LocalProtocolError("RelayClient used after close()")
        if self._run_task is None:
            is_connected = await self.start(timeout_s=timeout_s)
        else:
            is_connected = await self.try_now(timeout_s=timeout_s)
        if not is_connected:
            raise self.last_error or ConnectError(f"cannot reach the relay {self.url}")

    async def _answer(self, future: asyncio.Future[_T], timeout_s: float) -> _T:
        """The relay's answer to a mailbox request, or ConnectError after ``timeout_s``."""
        try:
            return await asyncio.wait_for(asyncio.shield(future), max(0.0, timeout_s))
        except asyncio.TimeoutError:
            future.cancel()
            raise ConnectError(f"the relay {self.url} did not answer in time") from None

    def _send_mailbox(self, message: bytes) -> None:
        """Queue a mailbox frame in order (never dropped: the relay bounds them)."""
        connection = self._connection
        if (
            self._queue
            or connection is None
            or not write_now(connection, message, WRITE_LIMIT_BYTES)
        ):
            self._queue.append(message)
            self._queued_bytes += len(message)
            self._wake.set()

    def _on_mailbox(self, frame: frames.Frame) -> None:
        match frame:
            case frames.Allocated(nameplate=nameplate):
                waiter = self._allocating.popleft() if self._allocating else None
                if waiter is None or waiter.done():
                    self._send_mailbox(frames.Release(nameplate).encode())  # asked, gave up
                    return
                self._nameplates[nameplate] = _Nameplate()
                waiter.set_result(nameplate)
            case frames.Claimed(nameplate=nameplate):
                claim = self._claiming.pop(nameplate, None)
                if claim is None or claim.done():
                    self._send_mailbox(frames.Release(nameplate).encode())
                    return
                self._nameplates[nameplate] = _Nameplate()
                claim.set_result(None)
            case frames.Message(nameplate=nameplate, body=body):
                state = self._nameplates.get(nameplate)
                if state is None or state.error is not None:
                    return
                if len(state.inbox) >= MAILBOX_INBOX_MESSAGES:
                    state.error = CodeError(
                        f"too many messages for the code (nameplate {nameplate})"
                    )
                else:
                    state.inbox.append(body)
                state.changed.set()
            case frames.Closed(nameplate=0, reason=reason):
                waiter = self._allocating.popleft() if self._allocating else None
                if waiter is not None and not waiter.done():
                    waiter.set_exception(self._mailbox_error(0, reason))
            case frames.Closed(nameplate=nameplate, reason=reason):
                claim = self._claiming.pop(nameplate, None)
                if claim is not None and not claim.done():
                    claim.set_exception(self._mailbox_error(nameplate, reason))
                    return
                state = self._nameplates.get(nameplate)
                if state is not None and state.error is None:
                    state.error = self._mailbox_error(nameplate, reason)
                    state.changed.set()

    def _mailbox_error(self, nameplate: int, reason: int) -> P2pcpError:
        """The one-line error for a CLOSED reason."""
        if nameplate == 0 and reason == frames.CLOSED_USED:
            return _NameplateTaken("the nameplate asked for is in use")
        match reason:
            case frames.CLOSED_UNKNOWN:
                return CodeError(f"no such code (nameplate {nameplate})")
            case frames.CLOSED_USED:
                return CodeError("code already used")
            case frames.CLOSED_EXPIRED:
                return CodeError("code expired")
            case frames.CLOSED_RELEASED:
                return CodeError(f"the other side closed the code (nameplate {nameplate})")
            case frames.CLOSED_DISCONNECTED:
                return CodeError(f"the other side of the code went away (nameplate {nameplate})")
            case frames.CLOSED_TOO_MANY:
                return CodeError(f"the relay {self.url} holds too many codes of this client")
            case frames.CLOSED_FULL:
                return ConnectError(f"the relay {self.url} holds too many codes: try again later")
            case frames.CLOSED_OVER_LIMIT:
                return CodeError(f"too many messages for the code (nameplate {nameplate})")
        return CodeError(f"the relay closed the code (nameplate {nameplate}, reason {reason})")

    def _mailbox_lost(self) -> None:
        """The connection ended: so did every nameplate and request of ours."""
        lost = self.last_error
        if not isinstance(lost, ConnectError):
            lost = ConnectError(f"the connection to the relay {self.url} was lost")
        waiters: list[asyncio.Future[int] | asyncio.Future[None]] = [
            *self._allocating,
            *self._claiming.values(),
        ]
        self._allocating.clear()
        self._claiming.clear()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(lost)
        for state in self._nameplates.values():
            if state.error is None:
                state.error = lost
                state.changed.set()

    async def close(self) -> None:
        """Stop: close the connection and stop reconnecting. Idempotent."""
        self._is_closing = True
        task, self._run_task = self._run_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- the background task -------------------------------------------------

    async def _run(self) -> None:
        backoff_s = BACKOFF_MIN_S
        loop = asyncio.get_running_loop()
        while True:
            self._retry_now.clear()
            try:
                connection = await self._connect()
            except ConnectError as exc:
                self.last_error = exc
                logger.info("%s", exc)
                self._attempt_finished(False)
            else:
                started = loop.time()
                error_code = await self._serve(connection)
                if loop.time() - started >= STABLE_CONNECTION_S:
                    backoff_s = BACKOFF_MIN_S
                if error_code == frames.ERROR_REPLACED:
                    # Another process logged in with our key: do not fight it.
                    backoff_s = BACKOFF_MAX_S
            delay_s = random.uniform(backoff_s / 2, backoff_s)
            backoff_s = min(backoff_s * 2, BACKOFF_MAX_S)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._retry_now.wait(), delay_s)

    async def _connect(self) -> ClientConnection:
        """Open the WebSocket and log in; ConnectError for every failure."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidHandshake, InvalidURI, WebSocketException

        ssl_context = ssl.create_default_context() if self._is_tls else None
        try:
            connection = await connect(
                self._ws_url,
                ssl=ssl_context,
                compression=None,
                open_timeout=CONNECT_TIMEOUT_S,
                ping_interval=None,
                close_timeout=CLOSE_TIMEOUT_S,
                max_size=frames.MAX_MESSAGE_BYTES,
                max_queue=RECEIVE_QUEUE_MESSAGES,
                write_limit=WRITE_LIMIT_BYTES,
                user_agent_header=f"p2pcp/{__version__}",
                logger=logging.getLogger("p2pcp.relay.websockets"),
            )
        except (OSError, asyncio.TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise ConnectError(f"cannot reach the relay {self.url}: {_describe(exc)}") from None
        try:
            await asyncio.wait_for(self._login(connection), CONNECT_TIMEOUT_S)
        except BaseException as exc:
            await connection.close()
            if isinstance(exc, ConnectError):
                raise
            if isinstance(exc, (OSError, asyncio.TimeoutError, WebSocketException, P2pcpError)):
                raise ConnectError(
                    f"cannot log in to the relay {self.url}: {_describe(exc)}"
                ) from None
            raise
        peer = connection.transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self.stun_address = (str(peer[0]), self._port)
        return connection

    async def _login(self, connection: ClientConnection) -> None:
        frame = frames.decode_frame(await connection.recv(decode=False))
        if isinstance(frame, frames.Error):
            raise ConnectError(f"the relay {self.url} refused the connection: {frame.reason}")
        if not isinstance(frame, frames.Challenge):
            raise frames.RelayProtocolError("the relay did not start with a challenge")
        if frame.version != frames.PROTOCOL_VERSION:
            raise ConnectError(
                f"the relay {self.url} speaks relay protocol version {frame.version}, "
                f"this p2pcp speaks {frames.PROTOCOL_VERSION}: update p2pcp"
            )
        message = frames.login_message(frame.server_id, frame.challenge, self._node_id)
        await connection.send(frames.Login(self._node_id, self._secret_key.sign(message)).encode())
        reply = frames.decode_frame(await connection.recv(decode=False))
        if isinstance(reply, frames.Error):
            raise ConnectError(f"the relay {self.url} refused the login: {reply.reason}")
        if not isinstance(reply, frames.LoginOk):
            raise frames.RelayProtocolError("the relay did not answer the login")

    async def _serve(self, connection: ClientConnection) -> int | None:
        """Run one logged-in connection until it ends; return the relay's error code, if any."""
        loop = asyncio.get_running_loop()
        self._last_receive = loop.time()
        self._queue.clear()
        self._queued_bytes = 0
        self._connection = connection
        self.is_connected = True
        self.last_error = None
        self._connected.set()
        self._attempt_finished(True)
        logger.info("connected to the relay %s", self.url)
        error_code: list[int] = []
        tasks = [
            loop.create_task(self._read_loop(connection, error_code)),
            loop.create_task(self._write_loop(connection)),
            loop.create_task(self._keepalive(connection)),
        ]
        try:
            self._tell_connected(True)
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = None if task.cancelled() else task.exception()
                if exc is not None:
                    if isinstance(exc, P2pcpError):
                        self.last_error = ConnectError(f"relay {self.url}: {exc}")
                        logger.info("relay %s: %s", self.url, exc)
                    else:
                        # Not a user's error to read: say it in one line and
                        # keep the traceback for -vv.
                        self.last_error = ConnectError(
                            f"the connection to the relay {self.url} failed: {_describe(exc)}"
                        )
                        logger.debug("relay client %s failed", self.url, exc_info=exc)
        finally:
            self.is_connected = False
            self._connection = None
            self._connected.clear()
            self._mailbox_lost()
            if self.last_error is None:
                self.last_error = ConnectError(f"the connection to the relay {self.url} ended")
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._queue.clear()
            self._queued_bytes = 0
            with contextlib.suppress(Exception):
                await connection.close()
            logger.info("disconnected from the relay %s", self.url)
            self._tell_connected(False)
        return error_code[0] if error_code else None

    async def _read_loop(self, connection: ClientConnection, error_code: list[int]) -> None:
        from websockets.exceptions import ConnectionClosed

        loop = asyncio.get_running_loop()
        on_packets = self._on_packets
        receive_packets = frames.RECV_PACKETS_TYPE
        try:
            while True:
                message = await connection.recv(decode=False)
                self._last_receive = loop.time()
                if message[:1] == receive_packets:
                    source, datagrams = frames.decode_packets(message)
                    self.bytes_received += len(message) - (
                        frames.PACKETS_HEADER_BYTES + 2 * len(datagrams)
                    )
                    on_packets(self._node(source), datagrams)
                    continue
                match frames.decode_frame(message):
                    case frames.Ping(payload=payload):
                        self._queue_control(frames.Pong(payload).encode())
                    case frames.PeerGone(node_id=node_id):
                        if self._on_peer_gone is not None:
                            self._on_peer_gone(self._node(node_id))
                    case frames.Error(code=code, reason=reason):
                        error_code.append(code)
                        self.last_error = ConnectError(f"the relay {self.url} closed: {reason}")
                        logger.info("%s", self.last_error)
                    case frames.Pong():
                        pass  # it kept the connection alive (_last_receive), nothing more
                    case (
                        frames.Allocated() | frames.Claimed() | frames.Message() | frames.Closed()
                    ) as mail:
                        self._on_mailbox(mail)
                    case frame:
                        raise frames.RelayProtocolError(
                            f"unexpected {type(frame).__name__} frame after login"
                        )
        except ConnectionClosed as exc:
            if not error_code:
                self.last_error = self._closed_error(exc)
            return

    async def _write_loop(self, connection: ClientConnection) -> None:
        from websockets.exceptions import ConnectionClosed

        queue = self._queue
        try:
            while True:
                while queue:
                    message = queue.popleft()
                    self._queued_bytes -= len(message)
                    await connection.send(message)
                self._wake.clear()
                await self._wake.wait()
        except ConnectionClosed as exc:
            # The relay went away while we were sending: an ordinary end.
            if self.last_error is None:
                self.last_error = self._closed_error(exc)

    def _closed_error(self, exc: Exception) -> ConnectError:
        """Why the relay connection ended, in the relay's words when it gave any."""
        received = getattr(exc, "rcvd", None)
        reason = getattr(received, "reason", "") if received is not None else ""
        if reason:
            return ConnectError(f"the relay {self.url} closed: {reason}")
        return ConnectError(f"the connection to the relay {self.url} was lost")

    async def _keepalive(self, connection: ClientConnection) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(KEEPALIVE_INTERVAL_S)
            silent_s = loop.time() - self._last_receive
            if silent_s > KEEPALIVE_TIMEOUT_S:
                self.last_error = ConnectError(
                    f"the relay {self.url} was silent for {silent_s:.0f} s"
                )
                logger.info("%s", self.last_error)
                return
            self._queue_control(frames.Ping(os.urandom(frames.PING_BYTES)).encode())

    def _queue_control(self, message: bytes) -> None:
        """Queue a small control frame ahead of the datagrams (never dropped)."""
        self._queue.appendleft(message)
        self._queued_bytes += len(message)
        self._wake.set()

    def _tell_connected(self, is_connected: bool) -> None:
        if self._on_connected is None:
            return
        try:
            self._on_connected(is_connected)
        except Exception:
            # A bug in the caller's callback must not stop the reconnect loop.
            logger.debug("on_connected callback of the relay client failed", exc_info=True)

    def _node(self, raw: bytes) -> NodeId:
        node = self._node_ids.get(raw)
        if node is None:
            if len(self._node_ids) >= _NODE_CACHE_SIZE:
                self._node_ids.clear()
            node = self._node_ids[raw] = NodeId(raw)
        return node


def _describe(exc: BaseException) -> str:
    """A short reason for a connection failure, without a traceback."""
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({exc.verify_message})"
    if isinstance(exc, OSError) and exc.errno:
        # asyncio's "Connect call failed (...)" hides the reason in errno.
        return os.strerror(exc.errno).lower()
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    text = str(exc)
    return text or type(exc).__name__
