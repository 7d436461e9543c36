"""The relay's sockets: TCP and UDP binding, the TLS context, the STUN responder.

- ``bind_sockets`` binds the HTTP(S) port on TCP and, for STUN, the same
  port number on UDP (or ``--stun-host``/``--stun-port``). "::" means
  dual-stack (IPv6 with ``IPV6_V6ONLY`` off, so IPv4 clients arrive as
  mapped addresses), or every IPv4 interface where IPv6 is missing. With
  port 0 it retries until one port is free on both.
- ``StunResponder`` answers STUN binding requests with the source address it
  saw (IPv4-mapped addresses reported as IPv4) and ignores everything else;
  answers are rate-limited server-wide (``limits.STUN_RESPONSES_PER_S``), so
  the relay is never an amplifier for a flood of forged requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
from pathlib import Path
from typing import Any, cast

from p2pcp.core.errors import UsageError
from p2pcp.relay import limits, metrics, stun

logger = logging.getLogger(__name__)

WILDCARD_HOSTS = ("", "::", "0.0.0.0")
# Tries to find a port free on both TCP and UDP when asked for port 0.
BIND_ATTEMPTS = 50


class StunResponder(asyncio.DatagramProtocol):
    """Answers STUN binding requests with the observed source address; ignores the rest."""

    def __init__(self, counters: metrics.RelayMetrics) -> None:
        self.metrics = counters
        self.transport: asyncio.DatagramTransport | None = None
        self._tokens = float(limits.STUN_RESPONSES_PER_S)
        self._refilled_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's UDP transport does not subclass DatagramTransport (3.11).
        self.transport = cast("asyncio.DatagramTransport", transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if not stun.is_stun_packet(data):
            self.metrics.stun_dropped_total["not_stun"] += 1
            return
        try:
            transaction_id = stun.decode_binding_request(data)
        except stun.StunError:
            self.metrics.stun_dropped_total["malformed"] += 1
            return
        now = asyncio.get_running_loop().time()
        rate = float(limits.STUN_RESPONSES_PER_S)
        self._tokens = min(rate, self._tokens + (now - self._refilled_at) * rate)
        self._refilled_at = now
        if self._tokens < 1:
            self.metrics.stun_dropped_total["rate_limited"] += 1
            return
        self._tokens -= 1
        observed = (str(addr[0]), int(addr[1]))
        self.metrics.stun_requests_total += 1
        if self.transport is not None:
            self.transport.sendto(stun.encode_binding_response(transaction_id, observed), addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for earlier answers (the asker went away): nothing to do.
        logger.debug("STUN socket: %s", exc)


def _socket_for(host: str, kind: socket.SocketKind, port: int) -> socket.socket:
    """A bound socket: dual-stack for "::", else of the host's address family."""
    if host in ("", "::") and not socket.has_dualstack_ipv6():
        host = "0.0.0.0"  # no IPv6 here: all IPv4 interfaces
    if host in ("", "::"):
        family = socket.AF_INET6
        address: tuple[str, int] = ("::", port)
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=kind, flags=socket.AI_PASSIVE)
        except socket.gaierror as exc:
            raise UsageError(f"cannot listen on {host!r}: {exc.strerror}") from None
        family, address = infos[0][0], (str(infos[0][4][0]), port)
    sock = socket.socket(family, kind)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        if kind == socket.SOCK_STREAM:
            sock.listen(limits.LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_sockets(
    host: str, port: int, stun_host: str, stun_port: int | None
) -> tuple[socket.socket, socket.socket | None]:
    """Bind TCP ``host:port`` and UDP ``stun_host:(stun_port or the TCP port)``."""
    attempts = BIND_ATTEMPTS if port == 0 and stun_port is None else 1
    for attempt in range(attempts):
        try:
            tcp = _socket_for(host, socket.SOCK_STREAM, port)
        except OSError as exc:
            raise UsageError(f"cannot listen on TCP {host} port {port}: {exc.strerror}") from None
        bound = int(tcp.getsockname()[1])
        try:
            udp = _socket_for(
                stun_host, socket.SOCK_DGRAM, bound if stun_port is None else stun_port
            )
        except OSError as exc:
            tcp.close()
            if exc.errno == errno.EADDRINUSE and attempt + 1 < attempts:
                continue
            raise UsageError(
                f"cannot listen on UDP {stun_host} port {stun_port or bound} for STUN: "
                f"{exc.strerror}"
            ) from None
        return tcp, udp
    raise UsageError("found no port free on both TCP and UDP")  # pragma: no cover


def server_ssl_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A TLS server context from PEM files; UsageError if they do not load."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UsageError(
            f"cannot load the TLS certificate {cert} and key {key}: {reason}"
        ) from None
    return context


def raise_open_file_limit() -> int:
    """Raise the soft limit on open files to the hard limit; return it (one fd per client)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return int(soft)
