"""The relay server: WebSocket packet relay, HTTP health and metrics, STUN on UDP.

One HTTP(S) port: ``/relay`` upgrades to WebSocket and speaks the relay
protocol (``frames.py``); ``GET /health`` answers 200 and a small JSON
object; ``GET /metrics`` the Prometheus counters (``metrics.py``). The same
port number on UDP answers STUN binding requests (``stun.py``).

Per connection: the relay sends a fresh random challenge; the client must
answer with a LOGIN signed by its node key within ``login_timeout_s``.
Before that it is sent nothing else and anything it sends other than the
login closes it. After login:

- SEND_PACKETS is routed by the destination id at a fixed offset and
  forwarded as RECV_PACKETS with only the first 33 bytes rewritten; the
  batch is checked with one ``struct`` call (``frames.check_packets``), so
  there is no per-datagram Python work on this path.
- Each client has a token bucket of datagrams per second; over it, the
  batch is dropped (counted as ``rate_limited``); a client far over it for
  long (``limits.ABUSE_FACTOR``) is disconnected as flooding.
- Each client has an outbound queue, bounded in messages and bytes, drained
  by its own writer task; a full queue drops (``queue_full``), never buffers more.
- A destination that is not connected: dropped (``no_destination``) and a
  PEER_GONE to the sender, at most once per ``PEER_GONE_INTERVAL_S``; when a
  client disconnects, the clients that sent to it recently get a PEER_GONE.
- A second login with the same node id replaces the first: the old
  connection gets ERROR(replaced) and is closed.
- A client silent for ``idle_timeout_s`` is closed; malformed frames close
  the connection that sent them (ERROR(protocol)); nothing a client sends
  can stop the server.
- The mailbox frames (ALLOCATE, CLAIM, ADD, RELEASE) go to the sans-IO
  ``mailbox.Mailbox``, keyed by a token per connection; the frames it
  returns are pushed to their sessions' queues. A connection's end closes
  its nameplates; the sweeper also ends expired ones. No body is logged.

Invariant: a connection is in ``_sessions`` only after it proved its node
key, and a session receives only frames addressed to that key.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import socket
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from p2pcp import __version__
from p2pcp.core.errors import UsageError
from p2pcp.core.identity import NodeId, verify_signature
from p2pcp.relay import frames, limits, metrics
from p2pcp.relay.limits import RelayLimits
from p2pcp.relay.listen import (
    WILDCARD_HOSTS,
    StunResponder,
    bind_sockets,
    raise_open_file_limit,
    server_ssl_context,
)
from p2pcp.relay.mailbox import Mailbox, Outgoing
from p2pcp.relay.wsio import write_now

if TYPE_CHECKING:
    from websockets.asyncio.server import Server, ServerConnection
    from websockets.http11 import Request, Response

logger = logging.getLogger(__name__)
# websockets logs connection details at debug/info level; kept under ours.
_ws_logger = logging.getLogger("p2pcp.relay.websockets")
# WebSocket close codes (RFC 6455): 1000 normal, 1001 going away, 1008 policy.
_WS_NORMAL = 1000
_WS_GOING_AWAY = 1001
_WS_POLICY = 1008


@dataclass
class _Session:
    """One logged-in client. Mutated only on the event loop."""

    node_id: bytes
    connection: ServerConnection
    side: int
    tokens: float
    refilled_at: float
    last_receive: float
    queue: deque[bytes] = field(default_factory=deque)
    queued_bytes: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    excess: float = 0.0
    excess_at: float = 0.0
    is_closing: bool = False
    gone_sent: dict[bytes, float] = field(default_factory=dict)
    senders: set[bytes] = field(default_factory=set)

    def push(self, message: bytes, depth: int) -> bool:
        """Send or queue a message for this client; False (dropped) when its queue is full."""
        if not self.queue and write_now(self.connection, message, limits.WRITE_LIMIT_BYTES):
            return True
        if len(self.queue) >= depth or self.queued_bytes + len(message) > limits.MAX_QUEUE_BYTES:
            return False
        self.queue.append(message)
        self.queued_bytes += len(message)
        self.wake.set()
        return True


@dataclass(frozen=True)
class BoundPorts:
    """Where a started relay listens."""

    http_port: int
    stun_port: int | None


class RelayServer:
    """The relay: ``await start()``, then serve until ``await close()``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        relay_limits: RelayLimits | None = None,
        ssl_context: ssl.SSLContext | None = None,
        stun_host: str | None = None,
        stun_port: int | None = None,
        has_stun: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.limits = relay_limits or RelayLimits()
        self.ssl_context = ssl_context
        self.stun_host = host if stun_host is None else stun_host
        self.stun_port = stun_port
        self.has_stun = has_stun
        # Bound into every login signature: a signature made for this relay
        # process is worth nothing at another, or at this one after a restart.
        self.server_id = os.urandom(frames.SERVER_ID_BYTES)
        self.metrics = metrics.RelayMetrics()
        self.ports: BoundPorts | None = None
        self._sessions: dict[bytes, _Session] = {}
        self.mailbox = Mailbox(self.limits, self.metrics)
        # Mailbox side token -> its session (every logged-in connection, replaced ones too).
        self._sides: dict[int, _Session] = {}
        self._side_tokens = itertools.count(1)
        self._ws_server: Server | None = None
        self._stun_transport: asyncio.DatagramTransport | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._closing_tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """The relay's URL (listening on every interface: with this machine's name)."""
        if self.ports is None:
            raise UsageError("the relay is not started")
        scheme = "https" if self.ssl_context else "http"
        host = self.host
        if host in WILDCARD_HOSTS:
            host = socket.getfqdn()
            if host in ("", "localhost") or host.startswith("localhost."):
                host = socket.gethostname() or "localhost"
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.ports.http_port}"

    @property
    def is_listening_everywhere(self) -> bool:
        return self.host in WILDCARD_HOSTS

    @property
    def client_count(self) -> int:
        return len(self._sessions)

    async def start(self) -> BoundPorts:
        """Bind TCP (and UDP for STUN) and start serving; return the bound ports."""
        from websockets.asyncio.server import serve

        tcp_sock, udp_sock = bind_sockets(self.host, self.port, self.stun_host, self.stun_port)
        if not self.has_stun and udp_sock is not None:
            udp_sock.close()
            udp_sock = None
        loop = asyncio.get_running_loop()
        self._ws_server = await serve(
            self._handle,
            sock=tcp_sock,
            ssl=self.ssl_context,
            process_request=self._process_request,
            compression=None,
            open_timeout=self.limits.login_timeout_s,
            ping_interval=None,
            close_timeout=limits.CLOSE_TIMEOUT_S,
            max_size=frames.MAX_MESSAGE_BYTES,
            max_queue=limits.RECEIVE_QUEUE_MESSAGES,
            write_limit=limits.WRITE_LIMIT_BYTES,
            server_header=f"p2pcp-relay/{__version__}",
            logger=_ws_logger,
        )
        stun_port = None
        if udp_sock is not None:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: StunResponder(self.metrics), sock=udp_sock
            )
            self._stun_transport = transport
            stun_port = int(udp_sock.getsockname()[1])
        self.ports = BoundPorts(int(tcp_sock.getsockname()[1]), stun_port)
        self._sweeper = loop.create_task(self._sweep_idle())
        return self.ports

    async def close(self) -> None:
        """Tell every client the relay is stopping, close everything. Idempotent."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._stun_transport is not None:
            self._stun_transport.close()
            self._stun_transport = None
        server, self._ws_server = self._ws_server, None
        if server is not None:
            server.close(close_connections=False)
            await asyncio.gather(
                *(
                    self._shut(session, frames.ERROR_SHUTDOWN, "the relay is stopping")
                    for session in list(self._sessions.values())
                ),
                return_exceptions=True,
            )
            server.close(close_connections=True)
            await server.wait_closed()
        for task in list(self._closing_tasks):
            task.cancel()

    # -- HTTP ----------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/relay":
            if self.metrics.clients + self.metrics.connections_pending >= self.limits.max_clients:
                self.metrics.connections_rejected_total += 1
                return connection.respond(503, "the relay is full\n")
            return None
        if request.headers.get("Upgrade") is None:
            if path == "/health":
                body = {
                    "status": "ok",
                    "version": __version__,
                    "protocol": frames.PROTOCOL_VERSION,
                    "clients": self.metrics.clients,
                }
                return _respond(connection, 200, json.dumps(body) + "\n", "application/json")
            if path == "/metrics":
                return _respond(connection, 200, self.metrics.render(), "text/plain; version=0.0.4")
        return connection.respond(404, "not found: the relay serves /relay, /health, /metrics\n")

    # -- one connection --------------------------------------------------------

    async def _handle(self, connection: ServerConnection) -> None:
        from websockets.exceptions import ConnectionClosed

        self.metrics.connections_total += 1
        self.metrics.connections_pending += 1
        try:
            node_id = await self._login(connection)
        except (ConnectionClosed, OSError):
            return
        finally:
            self.metrics.connections_pending -= 1
        if node_id is None:
            return
        try:
            # Before the session is routable: LOGIN_OK is the first frame after the challenge.
            await connection.send(frames.LoginOk().encode())
        except (ConnectionClosed, OSError):
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        side = next(self._side_tokens)
        session = _Session(node_id, connection, side, self.limits.burst_datagrams, now, now)
        self._sides[side] = session
        old = self._sessions.get(node_id)
        if old is not None:
            self._close_later(old, frames.ERROR_REPLACED, "another connection logged in as you")
            self.metrics.closes_total[metrics.CLOSE_REPLACED] += 1
        self._sessions[node_id] = session
        self.metrics.clients = len(self._sessions)
        self.metrics.logins_total += 1
        logger.debug("%s logged in from %s", NodeId(node_id).short(), connection.remote_address)
        writer = loop.create_task(self._write_loop(session))
        try:
            await self._receive_loop(session)
        except (ConnectionClosed, OSError):
            pass
        finally:
            writer.cancel()
            logger.debug("%s disconnected", NodeId(node_id).short())
            if self._sessions.get(node_id) is session:
                del self._sessions[node_id]
                self.metrics.clients = len(self._sessions)
                self._tell_senders_gone(session)
            del self._sides[side]
            self._deliver(self.mailbox.disconnect(side, loop.time()))
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, OSError):
                await writer

    async def _login(self, connection: ServerConnection) -> bytes | None:
        """Challenge, verify; the node id, or None after an ERROR was sent."""
        if self.metrics.clients + self.metrics.connections_pending > self.limits.max_clients:
            self.metrics.connections_rejected_total += 1
            await self._refuse(connection, frames.ERROR_SERVER_FULL, "the relay is full")
            return None
        challenge = os.urandom(frames.CHALLENGE_BYTES)
        await connection.send(frames.Challenge(self.server_id, challenge).encode())
        try:
            message = await asyncio.wait_for(connection.recv(), self.limits.login_timeout_s)
        except asyncio.TimeoutError:
            self.metrics.login_failures_total[metrics.CLOSE_LOGIN_TIMEOUT] += 1
            await self._refuse(connection, frames.ERROR_LOGIN_TIMEOUT, "no login in time")
            return None
        try:
            if not isinstance(message, bytes):
                raise frames.RelayProtocolError("text messages are not part of the protocol")
            frame = frames.decode_frame(message)
            if not isinstance(frame, frames.Login):
                raise frames.RelayProtocolError("the first frame must be a login")
        except frames.RelayProtocolError as exc:
            self.metrics.login_failures_total["malformed"] += 1
            await self._refuse(connection, frames.ERROR_PROTOCOL, str(exc))
            return None
        if frame.version != frames.PROTOCOL_VERSION:
            self.metrics.login_failures_total["version"] += 1
            await self._refuse(
                connection,
                frames.ERROR_VERSION,
                f"this relay speaks relay protocol version {frames.PROTOCOL_VERSION}",
            )
            return None
        signed = frames.login_message(self.server_id, challenge, frame.node_id)
        if not verify_signature(NodeId(frame.node_id), signed, frame.signature):
            self.metrics.login_failures_total["bad_signature"] += 1
            await self._refuse(connection, frames.ERROR_LOGIN_FAILED, "bad login signature")
            return None
        return frame.node_id

    async def _receive_loop(self, session: _Session) -> None:
        """Route everything the client sends until it goes (the hot path)."""
        from websockets.exceptions import ConnectionClosed

        connection = session.connection
        sessions = self._sessions
        counters = self.metrics
        drops = counters.drops_total
        rate = float(self.limits.datagrams_per_s)
        burst = self.limits.burst_datagrams
        depth = self.limits.queue_depth
        source = session.node_id
        time = asyncio.get_running_loop().time
        check_packets = frames.check_packets
        rewrite = frames.rewrite_send_as_receive
        send_packets = frames.SEND_PACKETS_TYPE
        while True:
            try:
                message = await connection.recv()
            except ConnectionClosed:
                return
            if session.is_closing:
                return
            now = time()
            session.last_receive = now
            try:
                if not isinstance(message, bytes):
                    raise frames.RelayProtocolError("text messages are not part of the protocol")
                if message[:1] == send_packets:
                    # Forwarded without decoding: checked, rewritten, queued.
                    count = check_packets(message)
                    tokens = min(burst, session.tokens + (now - session.refilled_at) * rate)
                    session.refilled_at = now
                    if tokens < count:
                        session.tokens = tokens
                        drops[metrics.DROP_RATE_LIMITED] += count
                        if self._is_flooding(session, count, now, rate):
                            counters.closes_total[metrics.CLOSE_FLOODING] += 1
                            await self._shut(
                                session, frames.ERROR_FLOODING, "far over the datagram rate"
                            )
                            return
                        continue
                    session.tokens = tokens - count
                    destination = message[1:33]
                    target = sessions.get(destination)
                    if target is None:
                        drops[metrics.DROP_NO_DESTINATION] += count
                        self._tell_not_connected(session, destination, now, depth)
                        continue
                    if not target.push(rewrite(message, source), depth):
                        drops[metrics.DROP_QUEUE_FULL] += count
                        continue
                    if source not in target.senders and (
                        len(target.senders) < limits.MAX_SENDERS_TRACKED
                    ):
                        target.senders.add(source)
                    counters.messages_relayed_total += 1
                    counters.datagrams_relayed_total += count
                    counters.bytes_relayed_total += (
                        len(message) - frames.PACKETS_HEADER_BYTES - 2 * count
                    )
                    continue
                match frames.decode_frame(message):
                    case frames.Ping(payload=payload):
                        session.push(frames.Pong(payload).encode(), depth)
                    case frames.Pong():
                        pass  # it kept the session alive (last_receive), nothing more
                    case frames.Allocate(nameplate=requested):
                        self._deliver(self.mailbox.allocate(session.side, now, requested))
                    case frames.Claim(nameplate=nameplate):
                        self._deliver(self.mailbox.claim(session.side, nameplate, now))
                    case frames.Add(nameplate=nameplate, body=body):
                        self._deliver(self.mailbox.add(session.side, nameplate, body, now))
                    case frames.Release(nameplate=nameplate):
                        self._deliver(self.mailbox.release(session.side, nameplate, now))
                    case frame:
                        raise frames.RelayProtocolError(
                            f"a client may not send {type(frame).__name__} after login"
                        )
            except frames.RelayProtocolError as exc:
                counters.closes_total[metrics.CLOSE_PROTOCOL] += 1
                await self._shut(session, frames.ERROR_PROTOCOL, str(exc))
                return

    @staticmethod
    def _is_flooding(session: _Session, dropped: int, now: float, rate: float) -> bool:
        drain = rate * limits.ABUSE_FACTOR
        session.excess = max(0.0, session.excess - (now - session.excess_at) * drain) + dropped
        session.excess_at = now
        return session.excess > drain

    async def _write_loop(self, session: _Session) -> None:
        queue = session.queue
        send = session.connection.send
        wake = session.wake
        while True:
            while queue:
                message = queue.popleft()
                session.queued_bytes -= len(message)
                await send(message)
            wake.clear()
            await wake.wait()

    def _deliver(self, outgoing: list[Outgoing]) -> None:
        """Push the mailbox's frames to their sessions. A message that does not
        fit its receiver's queue ends its nameplate: a code's messages are
        never silently lost."""
        depth = self.limits.queue_depth
        for item in outgoing:
            session = self._sides.get(item.side)
            if session is None or session.is_closing:
                continue
            if not session.push(item.frame.encode(), depth) and isinstance(
                item.frame, frames.Message
            ):
                now = asyncio.get_running_loop().time()
                for closed in self.mailbox.fail(item.frame.nameplate, now):
                    target = self._sides.get(closed.side)
                    if target is not None:
                        target.push(closed.frame.encode(), depth)

    def _tell_not_connected(
        self, session: _Session, destination: bytes, now: float, depth: int
    ) -> None:
        last = session.gone_sent.get(destination)
        if last is not None and now - last < limits.PEER_GONE_INTERVAL_S:
            return
        if len(session.gone_sent) >= limits.MAX_PEER_GONE_TRACKED:
            session.gone_sent.clear()
        session.gone_sent[destination] = now
        gone = frames.PeerGone(destination, frames.GONE_NOT_CONNECTED)
        if session.push(gone.encode(), depth):
            self.metrics.peer_gone_sent_total += 1

    def _tell_senders_gone(self, gone: _Session) -> None:
        frame = frames.PeerGone(gone.node_id, frames.GONE_DISCONNECTED).encode()
        for sender in gone.senders:
            session = self._sessions.get(sender)
            if session is not None and session.push(frame, self.limits.queue_depth):
                self.metrics.peer_gone_sent_total += 1

    # -- closing ---------------------------------------------------------------

    async def _refuse(self, connection: ServerConnection, code: int, reason: str) -> None:
        from websockets.exceptions import ConnectionClosed

        with contextlib.suppress(ConnectionClosed, OSError, asyncio.TimeoutError):
            await asyncio.wait_for(
                connection.send(frames.Error(code, reason).encode()), limits.CLOSE_TIMEOUT_S
            )
        await connection.close(_WS_POLICY, reason[:100])

    async def _shut(self, session: _Session, code: int, reason: str) -> None:
        """Send ERROR(code) and close the session's connection."""
        from websockets.exceptions import ConnectionClosed

        session.is_closing = True
        ws_code = _WS_GOING_AWAY if code == frames.ERROR_SHUTDOWN else _WS_POLICY
        if code in (frames.ERROR_REPLACED, frames.ERROR_IDLE):
            ws_code = _WS_NORMAL
        with contextlib.suppress(ConnectionClosed, OSError, asyncio.TimeoutError):
            await asyncio.wait_for(
                session.connection.send(frames.Error(code, reason).encode()),
                limits.CLOSE_TIMEOUT_S,
            )
        await session.connection.close(ws_code, reason[:100])

    def _close_later(self, session: _Session, code: int, reason: str) -> None:
        session.is_closing = True
        task = asyncio.get_running_loop().create_task(self._shut(session, code, reason))
        self._closing_tasks.add(task)
        task.add_done_callback(self._closing_tasks.discard)

    async def _sweep_idle(self) -> None:
        idle_s = self.limits.idle_timeout_s
        interval_s = min(limits.IDLE_SWEEP_INTERVAL_S, idle_s / 4, self.limits.code_expiry_s / 4)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval_s)
            now = loop.time()
            self._deliver(self.mailbox.expire(now))
            for session in list(self._sessions.values()):
                if not session.is_closing and now - session.last_receive > idle_s:
                    self.metrics.closes_total[metrics.CLOSE_IDLE] += 1
                    self._close_later(session, frames.ERROR_IDLE, "idle for too long")


def _respond(connection: ServerConnection, status: int, body: str, content_type: str) -> Response:
    response = connection.respond(status, body)
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = content_type
    return response


@dataclass(frozen=True)
class RelayOptions:
    """What ``p2pcp relay`` asks for."""

    host: str
    port: int
    tls_cert: Path | None = None
    tls_key: Path | None = None
    relay_limits: RelayLimits = field(default_factory=RelayLimits)
    stun_host: str | None = None
    stun_port: int | None = None
    has_stun: bool = True


async def run_relay(options: RelayOptions, on_started: Callable[[RelayServer], None]) -> None:
    """Serve until SIGTERM (returns) or cancellation (Ctrl-C); close cleanly either way."""
    if (options.tls_cert is None) != (options.tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    context = None
    if options.tls_cert is not None and options.tls_key is not None:
        context = server_ssl_context(options.tls_cert, options.tls_key)
    open_files = raise_open_file_limit()
    if open_files < options.relay_limits.max_clients + 64:
        logger.warning(
            "only %d open files allowed: fewer clients than --max-clients %d fit",
            open_files,
            options.relay_limits.max_clients,
        )
    server = RelayServer(
        options.host,
        options.port,
        relay_limits=options.relay_limits,
        ssl_context=context,
        stun_host=options.stun_host,
        stun_port=options.stun_port,
        has_stun=options.has_stun,
    )
    await server.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    try:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, stop.set)
        on_started(server)
        await stop.wait()
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGTERM)
        await server.close()
