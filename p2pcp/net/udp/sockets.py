"""The UDP socket driver: one non-blocking socket, batched receive and send.

What this module owns:

- ``UdpSocket``: a dual-stack socket (IPv6 with IPV6_V6ONLY=0, falling back
  to IPv4), registered with ``loop.add_reader``. On readability it drains
  the socket until ``BlockingIOError`` (bounded per wake-up so the loop stays
  fair), splitting GRO-coalesced buffers into datagrams, and hands the whole
  batch to one callback. Sending groups equal-size datagrams to one address
  into UDP GSO batches (``sendmsg`` + ``UDP_SEGMENT``) where Linux has it.
- ``public_address`` / ``wire_address``: conversion between the addresses the
  rest of p2pcp uses, ``(host, port)`` with plain IPv4 text, and what this
  socket needs (IPv4-mapped IPv6 on a dual-stack socket).

Invariants:

- Datagrams are never reordered by this module; when the kernel pushes back
  (EAGAIN) the rest of a send is queued and flushed in order when the socket
  is writable; ENOBUFS retries after a short delay. Nothing ever spins.
- The queue is bounded (``MAX_QUEUED_DATAGRAMS``); beyond it datagrams are
  dropped, which QUIC treats as loss (as the network itself would).
- EMSGSIZE (a datagram above the path MTU: sockets set IP_PMTUDISC_DO so the
  kernel never fragments) is reported to ``on_too_big`` and the datagram
  dropped. ``send(..., may_fragment=True)`` is the one exception: those
  datagrams go out one by one (GSO cannot segment above the MTU) with
  IP_PMTUDISC_DONT set just for them, so the kernel fragments them
  (fragment.py decides when that is wise). Linux only; elsewhere the flag
  is ignored.
- Receive coalescing: a wake-up that read fewer than ``COALESCE_BELOW``
  datagrams stops watching the socket for ``COALESCE_S`` (asyncio sleeps at
  least 1 ms), so that datagrams paced out over a moderate-rate link are read
  several per wake-up instead of one: each wake-up costs the Python driver
  ~100-200 us, so a 100 Mbit/s link (~8,500 datagrams a second) read one
  datagram at a time would cost most of a core. The first datagram after a
  quiet spell is read at once; the rest wait at most ~1.5 ms in the
  kernel's buffer.
- ``UDP_SEGMENT``/``UDP_GRO`` are switched off for the socket's life at the
  first sign the kernel or device refuses them.
- Refusals: an unconnected UDP socket hears of an ICMP "port unreachable"
  only with IP_RECVERR/IPV6_RECVERR set (Linux), and then through its error
  queue, which names the destination the refused datagram went to. The
  queue is drained whenever a read or a send meets an error or a wake-up
  finds nothing to read (a non-empty queue keeps the socket "readable", so
  leaving it would spin); each refusal is reported to ``on_refused(address)``
  so that a peer that is gone is noticed at once instead of after a timeout.
  A send that fails only because it picked up an earlier refusal is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
import sys
from collections import deque
from collections.abc import Sequence

from p2pcp.net.udp.transport import Address, ReceiveCallback, RefusedCallback, TooBigCallback

logger = logging.getLogger(__name__)

# Linux socket options that Python 3.11's socket module does not name (the
# numbers mean other things elsewhere, so they are only used on Linux).
_IS_LINUX = sys.platform == "linux"
_SOL_UDP = 17
_UDP_SEGMENT = 103
_UDP_GRO = 104
_IP_MTU_DISCOVER = 10
_IP_PMTUDISC_DO = 2
_IP_PMTUDISC_DONT = 0
_IPV6_MTU_DISCOVER = 23
_IPV6_PMTUDISC_DO = 2
_IPV6_PMTUDISC_DONT = 0
_IP_RECVERR = 11
_IPV6_RECVERR = 25
_MSG_ERRQUEUE = 0x2000
# struct sock_extended_err starts with ee_errno (u32); the cmsg is this long.
_EXTENDED_ERR_BYTES = 16
# Error-queue entries read per drain (each is one refused datagram).
MAX_ERRORS_PER_DRAIN = 64
# Errors a send can pick up from the socket that belong to an earlier datagram.
_PENDING_ERRORS = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH)

# A UDP datagram (and a GRO-coalesced buffer) is at most 64 KiB.
RECEIVE_BUFFER_BYTES = 65535

# Kernel socket buffers. Large enough to absorb a pacer burst of 64 packets of
# 16,000 bytes from the peer while we are busy in aioquic (~1 MiB), with room.
# The kernel caps SO_RCVBUF/SO_SNDBUF at net.core.rmem_max/wmem_max (often
# 208 KiB-4 MiB); a process allowed to (CAP_NET_ADMIN, e.g. root) asks with
# the FORCE options, which ignore that cap, as quic-go does. A busy receiver
# on a fast link otherwise drops datagrams it would have read a moment later.
SOCKET_BUFFER_BYTES = 8 * 1024 * 1024
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
_SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)

# Datagrams read per wake-up before giving the loop back (timers, writers):
# about 10-20 ms of aioquic work at ~18 us per packet.
MAX_DATAGRAMS_PER_WAKEUP = 512

# Receive coalescing (module doc): after a wake-up that read fewer datagrams
# than this, pause reading for COALESCE_S. ~1 ms of delay is within the ack
# delay the connection already allows itself (3 ms, connection.py), and 16
# datagrams are ~2 ms of a 100 Mbit/s link at 1472 bytes.
COALESCE_BELOW = 16
COALESCE_S = 0.0005

# The kernel takes at most 64 segments per GSO send (UDP_MAX_SEGMENTS), and
# a GSO buffer is one UDP datagram to it, so it must stay under 64 KiB.
MAX_GSO_SEGMENTS = 64
MAX_GSO_BYTES = 65000

# Datagrams queued while the kernel pushes back. A congestion window's worth
# at 1200 bytes is far less; beyond this we drop (QUIC sees loss).
MAX_QUEUED_DATAGRAMS = 8192

# Retry delay after ENOBUFS, which has no readiness notification.
ENOBUFS_RETRY_S = 0.001

_CMSG_INT_SPACE = socket.CMSG_SPACE(4)
_U16 = struct.Struct("=H")
_INT = struct.Struct("=i")

WireAddress = tuple[object, ...]


def public_address(wire: WireAddress) -> Address:
    """``(host, port)`` with IPv4-mapped IPv6 shown as plain IPv4."""
    host = str(wire[0])
    port = int(str(wire[1]))
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, port


def set_buffer_sizes(sock: socket.socket, size: int) -> None:
    """Ask for ``size``-byte kernel buffers: past the sysctl cap where allowed."""
    pairs = ((socket.SO_RCVBUF, _SO_RCVBUFFORCE), (socket.SO_SNDBUF, _SO_SNDBUFFORCE))
    for plain, force in pairs:
        if _IS_LINUX:
            try:
                sock.setsockopt(socket.SOL_SOCKET, force, size)
                continue
            except OSError:
                pass  # EPERM without CAP_NET_ADMIN: the capped request below
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, plain, size)


class UdpSocket:
    """One bound UDP socket driven by the running loop (see module doc)."""

    def __init__(
        self,
        sock: socket.socket,
        on_receive: ReceiveCallback,
        on_too_big: TooBigCallback,
        on_refused: RefusedCallback | None = None,
    ) -> None:
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._on_receive = on_receive
        self._on_too_big = on_too_big
        self._on_refused = on_refused
        self.has_error_queue = _IS_LINUX and _enable_error_queue(sock)
        self.is_dual_stack = sock.family == socket.AF_INET6
        self.has_gso = _IS_LINUX
        self.has_gro = _IS_LINUX and _enable_gro(sock)
        self._queue: deque[tuple[list[bytes], Address, bool]] = deque()
        self._queued_datagrams = 0
        self._is_writer_armed = False
        self._is_retry_armed = False
        self._is_closed = False
        self._loop.add_reader(sock.fileno(), self._read_ready)

    @classmethod
    def bind(
        cls,
        port: int,
        on_receive: ReceiveCallback,
        on_too_big: TooBigCallback,
        on_refused: RefusedCallback | None = None,
    ) -> UdpSocket:
        """Bind a dual-stack socket on ``port`` (0: any), else an IPv4 one."""
        sock: socket.socket | None = None
        if socket.has_ipv6:
            try:
                sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                sock.bind(("::", port))
            except OSError:
                if sock is not None:
                    sock.close()
                sock = None
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                sock.close()
                raise
        sock.setblocking(False)
        set_buffer_sizes(sock, SOCKET_BUFFER_BYTES)
        # Never let the kernel fragment: a datagram above the path MTU must
        # fail (EMSGSIZE or loss), which is what the size prober relies on.
        if _IS_LINUX:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER, _IP_PMTUDISC_DO)
            if sock.family == socket.AF_INET6:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_MTU_DISCOVER, _IPV6_PMTUDISC_DO)
        return cls(sock, on_receive, on_too_big, on_refused)

    @property
    def local_port(self) -> int:
        return int(self._sock.getsockname()[1])

    def wire_address(self, address: Address) -> WireAddress:
        """The form of ``address`` this socket's sendto/sendmsg accept."""
        host, port = address
        if self.is_dual_stack and ":" not in host:
            return ("::ffff:" + host, port)
        return (host, port)

    def close(self) -> None:
        if self._is_closed:
            return
        self._is_closed = True
        self._loop.remove_reader(self._sock.fileno())
        if self._is_writer_armed:
            self._loop.remove_writer(self._sock.fileno())
        self._queue.clear()
        self._sock.close()

    # -- receive ---------------------------------------------------------

    def _read_ready(self) -> None:
        batch: list[tuple[bytes, Address]] = []
        sock = self._sock
        try:
            if self.has_gro:
                while len(batch) < MAX_DATAGRAMS_PER_WAKEUP:
                    data, ancdata, _flags, wire = sock.recvmsg(
                        RECEIVE_BUFFER_BYTES, _CMSG_INT_SPACE
                    )
                    addr = public_address(wire)
                    segment = 0
                    for level, kind, value in ancdata:
                        if level == _SOL_UDP and kind == _UDP_GRO:
                            segment = _INT.unpack_from(value)[0] if len(value) >= 4 else 0
                    if segment and len(data) > segment:
                        view = memoryview(data)
                        for start in range(0, len(data), segment):
                            batch.append((bytes(view[start : start + segment]), addr))
                    else:
                        batch.append((data, addr))
            else:
                while len(batch) < MAX_DATAGRAMS_PER_WAKEUP:
                    data, wire = sock.recvfrom(RECEIVE_BUFFER_BYTES)
                    batch.append((data, public_address(wire)))
        except (BlockingIOError, InterruptedError):
            if not batch:
                self._drain_errors()  # woken by the error queue alone
        except OSError as exc:
            # An ICMP error (IP_RECVERR): read which datagram it was about.
            logger.debug("udp receive error: %s", exc)
            self._drain_errors()
        if batch:
            if len(batch) < COALESCE_BELOW and not self._is_closed:
                self._loop.remove_reader(sock.fileno())
                self._loop.call_later(COALESCE_S, self._resume_reading)
            self._on_receive(batch)

    def _drain_errors(self) -> None:
        """Read the error queue; report each refused destination (module doc)."""
        if not self.has_error_queue or self._is_closed:
            return
        refused: list[Address] = []
        for _ in range(MAX_ERRORS_PER_DRAIN):
            try:
                _data, ancdata, _flags, wire = self._sock.recvmsg(1, 512, _MSG_ERRQUEUE)
            except OSError:
                break  # EAGAIN: empty
            for level, kind, value in ancdata:
                is_error = (level, kind) in (
                    (socket.IPPROTO_IP, _IP_RECVERR),
                    (socket.IPPROTO_IPV6, _IPV6_RECVERR),
                )
                if not is_error or len(value) < _EXTENDED_ERR_BYTES:
                    continue
                if _INT.unpack_from(value)[0] == errno.ECONNREFUSED and wire:
                    refused.append(public_address(wire))
        if self._on_refused is not None:
            for address in dict.fromkeys(refused):
                self._on_refused(address)

    def _resume_reading(self) -> None:
        if self._is_closed:
            return
        self._loop.add_reader(self._sock.fileno(), self._read_ready)
        self._read_ready()

    # -- send --------------------------------------------------------------

    def send(
        self, datagrams: Sequence[bytes], address: Address, *, may_fragment: bool = False
    ) -> None:
        """Send ``datagrams`` in order to ``address`` (queued if the kernel pushes back).

        ``may_fragment``: the kernel may fragment them (see the module doc).
        """
        if self._is_closed or not datagrams:
            return
        may_fragment = may_fragment and _IS_LINUX
        if self._queue:
            self._enqueue(list(datagrams), address, may_fragment)
            return
        rest = self._send(datagrams, address, may_fragment)
        if rest:
            self._enqueue(rest, address, may_fragment)

    def _enqueue(self, datagrams: list[bytes], address: Address, may_fragment: bool) -> None:
        room = MAX_QUEUED_DATAGRAMS - self._queued_datagrams
        if room <= 0:
            return
        if len(datagrams) > room:
            datagrams = datagrams[:room]
        self._queue.append((datagrams, address, may_fragment))
        self._queued_datagrams += len(datagrams)

    def _send(
        self, datagrams: Sequence[bytes], address: Address, may_fragment: bool
    ) -> list[bytes]:
        if not may_fragment:
            return self._send_now(datagrams, address)
        self._set_fragmenting(address, _IP_PMTUDISC_DONT, _IPV6_PMTUDISC_DONT)
        try:
            return self._send_now(datagrams, address, use_gso=False)
        finally:
            self._set_fragmenting(address, _IP_PMTUDISC_DO, _IPV6_PMTUDISC_DO)

    def _set_fragmenting(self, address: Address, ipv4_mode: int, ipv6_mode: int) -> None:
        with contextlib.suppress(OSError):
            if ":" in address[0]:
                self._sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_MTU_DISCOVER, ipv6_mode)
            else:
                self._sock.setsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER, ipv4_mode)

    def _send_now(
        self, datagrams: Sequence[bytes], address: Address, *, use_gso: bool = True
    ) -> list[bytes]:
        """Send as much as the kernel takes; returns what is left on EAGAIN/ENOBUFS."""
        wire = self.wire_address(address)
        sock = self._sock
        index = 0
        count = len(datagrams)
        retried = False
        while index < count:
            first = datagrams[index]
            size = len(first)
            end = index + 1
            if self.has_gso and use_gso:
                total = size
                limit = min(count, index + MAX_GSO_SEGMENTS)
                while end < limit:
                    next_size = len(datagrams[end])
                    if next_size > size or total + next_size > MAX_GSO_BYTES:
                        break
                    total += next_size
                    end += 1
                    if next_size < size:
                        break  # a shorter segment may only come last
            try:
                if end - index > 1:
                    sock.sendmsg(
                        [b"".join(datagrams[index:end])],
                        [(_SOL_UDP, _UDP_SEGMENT, _U16.pack(size))],
                        0,
                        wire,
                    )
                else:
                    sock.sendto(first, wire)
            except (BlockingIOError, InterruptedError):
                self._arm_writer()
                return list(datagrams[index:])
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self._arm_retry()
                    return list(datagrams[index:])
                if exc.errno in _PENDING_ERRORS and self.has_error_queue and not retried:
                    # Most likely an earlier datagram's refusal, reported on
                    # this send: learn where from, then send this one again.
                    retried = True
                    self._drain_errors()
                    continue
                if exc.errno == errno.EMSGSIZE:
                    for datagram in datagrams[index:end]:
                        self._on_too_big(datagram, address)
                elif end - index > 1 and exc.errno in (errno.EIO, errno.EINVAL, errno.EOPNOTSUPP):
                    self._disable_gso(exc)
                    continue
                else:
                    # Unreachable network, refused: this path is dead for now;
                    # QUIC sees loss and MagicSock may pick another path.
                    logger.debug("udp send to %s failed: %s", address, exc)
            index = end
        return []

    def _disable_gso(self, exc: OSError) -> None:
        logger.debug("UDP GSO disabled: %s", exc)
        self.has_gso = False

    def _arm_writer(self) -> None:
        if not self._is_writer_armed and not self._is_closed:
            self._is_writer_armed = True
            self._loop.add_writer(self._sock.fileno(), self._flush_queue)

    def _arm_retry(self) -> None:
        if not self._is_retry_armed and not self._is_closed:
            self._is_retry_armed = True
            self._loop.call_later(ENOBUFS_RETRY_S, self._retry_ready)

    def _retry_ready(self) -> None:
        self._is_retry_armed = False
        self._flush_queue()

    def _flush_queue(self) -> None:
        if self._is_writer_armed:
            self._is_writer_armed = False
            self._loop.remove_writer(self._sock.fileno())
        if self._is_closed:
            return
        while self._queue:
            datagrams, address, may_fragment = self._queue.popleft()
            self._queued_datagrams -= len(datagrams)
            rest = self._send(datagrams, address, may_fragment)
            if rest:
                self._queue.appendleft((rest, address, may_fragment))
                self._queued_datagrams += len(rest)
                return


def _enable_error_queue(sock: socket.socket) -> bool:
    """Ask for ICMP errors on the error queue (IPv4 and, on a dual-stack
    socket, IPv6: IPv4-mapped peers report through the IPv4 option)."""
    try:
        sock.setsockopt(socket.IPPROTO_IP, _IP_RECVERR, 1)
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVERR, 1)
    except OSError:
        return False
    return True


def _enable_gro(sock: socket.socket) -> bool:
    try:
        sock.setsockopt(_SOL_UDP, _UDP_GRO, 1)
    except OSError:
        return False
    return True
