"""MagicSock: the layer between QUIC and the network.

QUIC (aioquic) sees one stable, made-up address per remote peer
(``PeerPath.quic_address``) and never a real one; MagicSock decides where
that peer's datagrams really go. This is the seam that lets a relay path be
added later without QUIC noticing: a relay would be one more way for
``MagicSock.send`` to deliver a ``PeerPath``'s datagrams, and
``PeerPath.chosen`` would name it.

This version has one kind of path, direct UDP:

- A client path starts with the candidate addresses of the peer's ticket and
  no chosen one. Until a datagram comes back, every datagram goes to every
  candidate ("try all of the ticket's addresses at once"). The first
  candidate that answers (a QUIC packet for this connection, which only the
  peer can produce) becomes ``chosen`` and gets everything from then on.
- A server path is created from the first datagram of a client and starts
  with that source address chosen.
- Later datagrams from a different address move the path there (NAT
  rebinding). The connection id that routed the datagram, 8 random bytes,
  proves the sender is on the path.

MagicSock also owns the non-QUIC packets on the socket (first byte with the
QUIC fixed bit 0x40 clear, see probe.py): it answers datagram-size probes
itself (stateless: the echo is shorter than the probe, so no amplification)
and hands probe echoes to ``on_probe_ack``. Disco messages will go here too.

Invariants: ``quic_address`` never changes for a path's life; ``chosen`` is
None or an address a datagram of this connection came from.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence

from p2pcp.core.errors import RemoteProtocolError
from p2pcp.net.probe import (
    TYPE_PROBE,
    TYPE_PROBE_ACK,
    decode_control,
    encode_probe_ack,
)
from p2pcp.net.udp import Address, UdpSocket

logger = logging.getLogger(__name__)

QuicAddress = tuple[str, int]
QuicBatchCallback = Callable[[list[tuple[bytes, Address]]], None]
ProbeAckCallback = Callable[[int, int, Address], None]
TooBigCallback = Callable[[bytes, Address], None]

_path_numbers = itertools.count(1)


class PeerPath:
    """How one remote peer is reached. QUIC only ever sees ``quic_address``."""

    __slots__ = ("candidates", "chosen", "quic_address")

    def __init__(self, candidates: Sequence[Address], chosen: Address | None = None) -> None:
        # A made-up address, unique per path, that aioquic uses as the peer's
        # address: it only compares it, never sends to it.
        self.quic_address: QuicAddress = (f"p2pcp-path-{next(_path_numbers)}", 0)
        self.candidates: tuple[Address, ...] = tuple(candidates)
        self.chosen: Address | None = chosen

    @property
    def description(self) -> str:
        if self.chosen is not None:
            return f"direct {format_address(self.chosen)}"
        return f"direct (trying {len(self.candidates)} addresses)"

    def receive_from(self, address: Address) -> None:
        """A datagram of this path's connection came from ``address``."""
        if address != self.chosen:
            if self.chosen is not None:
                logger.info("path %s moved to %s", self.chosen, address)
            self.chosen = address


def format_address(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class MagicSock:
    """Owns the UDP socket; routes QUIC datagrams by PeerPath (see module doc)."""

    def __init__(
        self,
        on_quic_batch: QuicBatchCallback,
        on_probe_ack: ProbeAckCallback,
        on_too_big: TooBigCallback,
    ) -> None:
        self._on_quic_batch = on_quic_batch
        self._on_probe_ack = on_probe_ack
        self._on_too_big = on_too_big
        self._udp: UdpSocket | None = None

    def bind(self, port: int) -> None:
        self._udp = UdpSocket.bind(port, self._receive_batch, self._on_too_big)

    @property
    def udp(self) -> UdpSocket:
        if self._udp is None:
            raise RuntimeError("MagicSock is not bound")
        return self._udp

    @property
    def local_port(self) -> int:
        return self.udp.local_port

    @property
    def is_dual_stack(self) -> bool:
        return self.udp.is_dual_stack

    def close(self) -> None:
        if self._udp is not None:
            self._udp.close()

    def send(self, path: PeerPath, datagrams: Sequence[bytes]) -> None:
        """Send a connection's datagrams by its path (all candidates until one answers)."""
        udp = self.udp
        if path.chosen is not None:
            udp.send(datagrams, path.chosen)
            return
        for candidate in path.candidates:
            if self._is_sendable(candidate):
                udp.send(datagrams, candidate)

    def send_control(self, path: PeerPath, packet: bytes) -> None:
        """Send a p2pcp control packet on the path in use (dropped if none yet)."""
        if path.chosen is not None:
            self.udp.send([packet], path.chosen)

    def _is_sendable(self, address: Address) -> bool:
        # An IPv4-only socket cannot reach IPv6 candidates.
        return self.udp.is_dual_stack or ":" not in address[0]

    def _receive_batch(self, batch: list[tuple[bytes, Address]]) -> None:
        quic: list[tuple[bytes, Address]] = []
        for item in batch:
            data = item[0]
            if data and data[0] & 0x40:
                quic.append(item)
            else:
                self._receive_control(data, item[1])
        if quic:
            self._on_quic_batch(quic)

    def _receive_control(self, data: bytes, address: Address) -> None:
        try:
            packet = decode_control(data)
        except RemoteProtocolError:
            return  # not ours, or damaged: drop silently, as for bad QUIC packets
        if packet.kind == TYPE_PROBE:
            self.udp.send([encode_probe_ack(packet.nonce, packet.size)], address)
        elif packet.kind == TYPE_PROBE_ACK:
            self._on_probe_ack(packet.nonce, packet.size, address)
