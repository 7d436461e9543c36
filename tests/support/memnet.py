"""An in-memory datagram network: endpoints and MagicSock without sockets.

``MemoryNetwork`` hands out transport factories (``network.transport(host)``)
that ``Endpoint.bind(..., transport=...)`` and ``MagicSock.bind(port,
transport)`` accept in place of real UDP (p2pcp/net/udp/transport.py states
the interface). A datagram sent to ``(host, port)`` reaches the transport
bound there, with the sender's ``(host, port)`` as its source, after what
the link between the two hosts does to it:

- ``loss``: the chance a datagram is dropped;
- ``delay_s`` and ``jitter_s``: one-way delay, plus a uniform random extra
  up to ``jitter_s`` drawn per datagram (so datagrams overtake each other:
  reordering);
- ``rate_bytes_per_s`` and ``queue_bytes``: a bottleneck that serialises
  datagrams and tail-drops what would wait beyond ``queue_bytes``;
- ``max_datagram_bytes``: larger datagrams are lost (a path whose MTU is
  smaller than what was sent), unless sent with ``may_fragment``.

Every random draw comes from one ``random.Random(seed)``, so a run's losses
are the same each time for the same sequence of sends. A datagram to a
known host where nothing is bound is refused (the sender's ``on_refused``
hears of it after the link's delay, as an ICMP port unreachable would
come back); a datagram to an unknown host is dropped silently (no route).
Received datagrams are delivered from the event loop (``call_soon`` or
``call_later``), never from inside ``send``.

``sockets_forbidden()`` makes creating any IPv4 or IPv6 socket raise, so a
test can prove it ran with no network socket at all (the event loop's own
wake-up pipe is a Unix socket pair and stays allowed).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import random
import socket
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from p2pcp.net.udp.transport import (
    Address,
    ReceiveCallback,
    RefusedCallback,
    TooBigCallback,
    TransportFactory,
)

# Ports handed out for ``port=0``, per host (the usual ephemeral range).
FIRST_EPHEMERAL_PORT = 49152


@dataclass(frozen=True)
class LinkShape:
    """What a one-way link does to datagrams (see the module doc)."""

    loss: float = 0.0
    delay_s: float = 0.0
    jitter_s: float = 0.0
    rate_bytes_per_s: float | None = None
    queue_bytes: int = 1 << 20
    max_datagram_bytes: int | None = None


@dataclass
class _Direction:
    """The bottleneck queue of one (source host, destination host) direction."""

    free_at: float = 0.0


class MemoryTransport:
    """One bound transport on a ``MemoryNetwork`` (a DatagramTransport)."""

    is_dual_stack = True

    def __init__(
        self,
        network: MemoryNetwork,
        address: Address,
        on_receive: ReceiveCallback,
        on_too_big: TooBigCallback,
        on_refused: RefusedCallback | None,
    ) -> None:
        self.network = network
        self.address = address
        self._on_receive = on_receive
        self._on_too_big = on_too_big
        self._on_refused = on_refused
        self.is_closed = False
        self.datagrams_sent = 0
        self.datagrams_received = 0

    @property
    def local_port(self) -> int:
        return self.address[1]

    def send(
        self, datagrams: Sequence[bytes], address: Address, *, may_fragment: bool = False
    ) -> None:
        if self.is_closed or not datagrams:
            return
        self.datagrams_sent += len(datagrams)
        self.network._carry(self, list(datagrams), address, may_fragment)

    def close(self) -> None:
        if not self.is_closed:
            self.is_closed = True
            self.network._unbind(self)

    def _deliver(self, batch: list[tuple[bytes, Address]]) -> None:
        if not self.is_closed:
            self.datagrams_received += len(batch)
            self._on_receive(batch)

    def _refused(self, address: Address) -> None:
        if not self.is_closed and self._on_refused is not None:
            self._on_refused(address)


class MemoryNetwork:
    """Hosts (IP address strings) joined by links; see the module doc."""

    def __init__(self, *, seed: int = 0, shape: LinkShape | None = None) -> None:
        self.rng = random.Random(seed)
        self.default_shape = shape or LinkShape()
        self.counts: Counter[str] = Counter()
        self.transports: list[MemoryTransport] = []
        self._hosts: set[str] = set()
        self._bound: dict[Address, MemoryTransport] = {}
        self._next_port: dict[str, int] = {}
        self._shapes: dict[tuple[str, str], LinkShape] = {}
        self._directions: dict[tuple[str, str], _Direction] = {}

    def add_host(self, host: str) -> str:
        """Make ``host`` known (so that its unbound ports refuse); returns it."""
        self._hosts.add(host)
        return host

    def set_shape(self, source: str, destination: str, shape: LinkShape) -> None:
        """The link from host ``source`` to host ``destination`` (one way)."""
        self._shapes[(source, destination)] = shape

    def shape(self, source: str, destination: str) -> LinkShape:
        return self._shapes.get((source, destination), self.default_shape)

    def transport(self, host: str) -> TransportFactory:
        """A factory that binds transports on ``host``."""
        self.add_host(host)

        def bind(
            port: int,
            on_receive: ReceiveCallback,
            on_too_big: TooBigCallback,
            on_refused: RefusedCallback | None = None,
        ) -> MemoryTransport:
            return self.bind(host, port, on_receive, on_too_big, on_refused)

        return bind

    def bind(
        self,
        host: str,
        port: int,
        on_receive: ReceiveCallback,
        on_too_big: TooBigCallback,
        on_refused: RefusedCallback | None = None,
    ) -> MemoryTransport:
        self.add_host(host)
        if port == 0:
            port = self._next_port.get(host, FIRST_EPHEMERAL_PORT)
            while (host, port) in self._bound:
                port += 1
            self._next_port[host] = port + 1
        elif (host, port) in self._bound:
            raise OSError(errno.EADDRINUSE, "Address already in use")
        transport = MemoryTransport(self, (host, port), on_receive, on_too_big, on_refused)
        self._bound[(host, port)] = transport
        self.transports.append(transport)
        return transport

    def crash(self, address: Address) -> None:
        """The transport at ``address`` vanishes as a killed process's socket
        does: its owner is not told, and datagrams to it are refused."""
        transport = self._bound.get(address)
        if transport is not None:
            transport.close()

    def _unbind(self, transport: MemoryTransport) -> None:
        if self._bound.get(transport.address) is transport:
            del self._bound[transport.address]

    def _carry(
        self,
        source: MemoryTransport,
        datagrams: list[bytes],
        address: Address,
        may_fragment: bool,
    ) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        shape = self.shape(source.address[0], address[0])
        self.counts["sent"] += len(datagrams)
        destination = self._bound.get(address)
        if destination is None:
            if address[0] in self._hosts and shape.loss < 1.0:
                self.counts["refused"] += len(datagrams)
                loop.call_later(2 * shape.delay_s, source._refused, address)
            else:
                self.counts["unroutable"] += len(datagrams)
            return
        direction = self._directions.setdefault((source.address[0], address[0]), _Direction())
        # Datagrams arriving at the same moment travel as one batch.
        arrivals: dict[float, list[tuple[bytes, Address]]] = {}
        for data in datagrams:
            if (
                shape.max_datagram_bytes is not None
                and len(data) > shape.max_datagram_bytes
                and not may_fragment
            ):
                self.counts["too_big"] += 1
                continue
            if shape.loss and self.rng.random() < shape.loss:
                self.counts["lost"] += 1
                continue
            leaves = now
            if shape.rate_bytes_per_s is not None:
                start = max(now, direction.free_at)
                if (start - now) * shape.rate_bytes_per_s > shape.queue_bytes:
                    self.counts["queue_full"] += 1
                    continue
                direction.free_at = leaves = start + len(data) / shape.rate_bytes_per_s
            at = leaves + shape.delay_s
            if shape.jitter_s:
                at += self.rng.uniform(0.0, shape.jitter_s)
            arrivals.setdefault(at, []).append((data, source.address))
        for at, batch in arrivals.items():
            self.counts["carried"] += len(batch)
            if at <= now:
                loop.call_soon(destination._deliver, batch)
            else:
                loop.call_at(at, destination._deliver, batch)


class _GuardedSocket(socket.socket):
    def __init__(
        self,
        family: int = -1,
        type: int = -1,
        proto: int = -1,
        fileno: int | None = None,
    ) -> None:
        if family in (socket.AF_INET, socket.AF_INET6) or (family == -1 and fileno is None):
            raise OSError(errno.EACCES, "no network sockets in this test (memnet)")
        super().__init__(family, type, proto, fileno)


@contextlib.contextmanager
def sockets_forbidden() -> Iterator[None]:
    """Creating an IPv4 or IPv6 socket raises inside this block (module doc)."""
    original = socket.socket
    socket.socket = _GuardedSocket  # type: ignore[misc]
    try:
        yield
    finally:
        socket.socket = original  # type: ignore[misc]
