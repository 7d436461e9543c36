"""What MagicSock needs of a datagram transport: the seam under the paths.

``DatagramTransport`` is the interface ``UdpSocket`` (sockets.py) offers and
MagicSock uses: send datagrams to ``(host, port)`` addresses in order, hand
received batches to a callback, say which port it has and whether it can
reach IPv6 addresses. ``TransportFactory`` binds one (``UdpSocket.bind`` is
the real one and the default everywhere). Tests pass another factory to run
endpoints over an in-memory network with no socket at all, as iroh's test
transport and httpcore's mock backend do.

Rules a transport keeps (the rest of net/ relies on them): datagrams to one
address leave in the order given (the network may still lose or reorder
them); received batches are handed over from the event loop, never from
inside ``send``; ``on_too_big`` hears of a
datagram the transport could not send for its size (``may_fragment``
datagrams excepted), ``on_refused`` of an address that refused one; after
``close`` nothing is sent or received.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

__all__ = [
    "Address",
    "DatagramTransport",
    "ReceiveCallback",
    "RefusedCallback",
    "TooBigCallback",
    "TransportFactory",
]

Address = tuple[str, int]
"""A peer's ``(host, port)``, the host as text (IPv4 or IPv6)."""
ReceiveCallback = Callable[[list[tuple[bytes, Address]]], None]
TooBigCallback = Callable[[bytes, Address], None]
RefusedCallback = Callable[[Address], None]


class DatagramTransport(Protocol):
    """One bound datagram transport (see the module doc)."""

    @property
    def local_port(self) -> int: ...

    @property
    def is_dual_stack(self) -> bool: ...

    def send(
        self, datagrams: Sequence[bytes], address: Address, *, may_fragment: bool = False
    ) -> None: ...

    def close(self) -> None: ...


class TransportFactory(Protocol):
    """Binds a transport on ``port`` (0: any) with its three callbacks."""

    def __call__(
        self,
        port: int,
        on_receive: ReceiveCallback,
        on_too_big: TooBigCallback,
        on_refused: RefusedCallback | None = None,
    ) -> DatagramTransport: ...
