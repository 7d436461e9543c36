"""Datagram-size probing, sans-IO: the codec and the prober state machine.

aioquic has no path MTU discovery, and the per-packet cost of Python QUIC
makes the datagram size the biggest lever on throughput (measured: ~70 MB/s
at 1452 bytes, ~400 MB/s at 16,000 on loopback; ~20 us of Python per packet).
Every connection starts at 1200 bytes, which every path carries; this module
finds a larger size that the path carries too, by sending padded p2pcp control packets (not QUIC) of
each candidate size and waiting for the peer's short echo.

Wire format (docs/PROTOCOL.md, "Control packets"; all integers big-endian)::

    probe: MAGIC(6) | TYPE_PROBE(1)     | nonce(8) | size(2) | zero padding to `size` bytes
    ack:   MAGIC(6) | TYPE_PROBE_ACK(1) | nonce(8) | size(2)

``MAGIC`` starts with a byte whose QUIC fixed bit (0x40) is clear, so the
socket demux can never confuse a control packet with a QUIC packet. A probe
must be exactly ``size`` bytes long, so a truncated one is never echoed.

The prober (``DatagramSizeProber``) has no I/O and no clock:

- inputs: ``probes_to_send(now)`` (also starts it), ``receive_ack(nonce, size)``,
  ``receive_too_big(nonce)`` (the local stack refused the size: EMSGSIZE),
  ``handle_timer(now)``;
- outputs: the ``Probe`` list from ``probes_to_send``, ``get_timer()``,
  ``size`` (the largest size proven so far, never below ``floor``),
  ``fragmented_size`` and ``is_finished``.

Fragmentation (RFC 8899 keeps to whole datagrams; we may not, because 16 KB
datagrams fragmented by the kernel carried 2-4x what whole 1452-byte ones
did over a clean 1500-MTU link, the per-packet Python being the limit): with
``fragment=True`` one more rung, ``MAX_DATAGRAM_BYTES`` sent with the
don't-fragment bit clear (``Probe.may_fragment``), asks whether the
kernel's and the path's IP fragmentation carry a datagram larger than the
path MTU. Its echo sets ``fragmented_size`` and proves nothing about whole
sizes; a whole rung of the same size makes it moot. Whether fragmented
datagrams may then carry data is ``fragment.FragmentGuard``'s call.

Invariants: ``size`` only grows; it is always ``floor`` or a rung the peer
echoed; every rung is at most ``cap``; each rung is tried at most
``MAX_ATTEMPTS`` times, so probing ends within
``MAX_ATTEMPTS * PROBE_TIMEOUT_S`` of its start whatever the path does.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from p2pcp.core.errors import RemoteProtocolError

# Control packets begin with this. First byte 0x00: the QUIC fixed bit is
# clear. The rest makes a stray datagram unlikely to parse as ours.
MAGIC = b"\x00p2pcp"
TYPE_PROBE = 0x01
TYPE_PROBE_ACK = 0x02

_HEADER = struct.Struct("!6sBQH")
HEADER_BYTES = _HEADER.size  # 17

# The smallest datagram every IPv6 path must carry (RFC 9000 section 14).
FLOOR_BYTES = 1200

# aioquic encodes STREAM frame lengths in 2 bytes (at most 16,383 with the
# varint form it uses), so datagrams much above 16 KB fail inside aioquic.
MAX_DATAGRAM_BYTES = 16000

# The sizes worth trying, each the UDP payload of a common MTU (MTU - 40 - 8
# over IPv6, MTU - 20 - 8 over IPv4): 1400 (cloud VMs, tunnels such as
# WireGuard's 1420), 1500 (Ethernet: 1452 / 1472), 9000 (jumbo frames:
# 8952 / 8972); then aioquic's ceiling. They are probed at once, so an extra
# rung costs one small datagram, not time; 1472 instead of 1452 is 1.4% less
# header per byte on IPv4 paths.
LADDER_BYTES = (1352, 1452, 1472, 8952, 8972, MAX_DATAGRAM_BYTES)

# Echo wait per attempt. Longer than any RTT p2pcp is used over (a
# continent-crossing path is ~300 ms) so a slow peer is not mistaken for a
# small MTU.
PROBE_TIMEOUT_S = 0.5

# A rung fails after this many unanswered probes: one loss is not an MTU.
MAX_ATTEMPTS = 3


def encode_probe(nonce: int, size: int) -> bytes:
    """A probe datagram of exactly ``size`` bytes."""
    if not HEADER_BYTES <= size <= 0xFFFF:
        raise ValueError(f"probe size out of range: {size}")
    header = _HEADER.pack(MAGIC, TYPE_PROBE, nonce, size)
    return header + bytes(size - HEADER_BYTES)


def encode_probe_ack(nonce: int, size: int) -> bytes:
    """The echo of a probe: short, so it crosses any path."""
    return _HEADER.pack(MAGIC, TYPE_PROBE_ACK, nonce, size)


@dataclass(frozen=True)
class ControlPacket:
    """A decoded control packet: ``kind`` is TYPE_PROBE or TYPE_PROBE_ACK."""

    kind: int
    nonce: int
    size: int


def is_control_packet(data: bytes) -> bool:
    """True for datagrams that are not QUIC (fixed bit 0x40 clear)."""
    return bool(data) and not data[0] & 0x40


def decode_control(data: bytes) -> ControlPacket:
    """Parse a control packet; RemoteProtocolError for anything malformed."""
    if len(data) < HEADER_BYTES:
        raise RemoteProtocolError("control packet too short")
    magic, kind, nonce, size = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise RemoteProtocolError("control packet with unknown magic")
    if kind == TYPE_PROBE:
        if size != len(data):
            raise RemoteProtocolError("probe length does not match its size field")
    elif kind == TYPE_PROBE_ACK:
        if len(data) != HEADER_BYTES:
            raise RemoteProtocolError("probe ack with trailing bytes")
    else:
        raise RemoteProtocolError(f"unknown control packet type {kind}")
    return ControlPacket(kind=kind, nonce=nonce, size=size)


def ladder_for(cap: int | None) -> tuple[int, ...]:
    """The rungs to try under ``cap`` (None: up to MAX_DATAGRAM_BYTES).

    A cap between rungs is itself a rung, so ``cap=4000`` tries 1452 and 4000.
    """
    top = MAX_DATAGRAM_BYTES if cap is None else min(cap, MAX_DATAGRAM_BYTES)
    if top <= FLOOR_BYTES:
        return ()
    rungs = {rung for rung in LADDER_BYTES if rung < top}
    rungs.add(top)
    return tuple(sorted(rungs))


@dataclass(frozen=True)
class Probe:
    """One probe to send now: ``encode_probe(nonce, size)``."""

    nonce: int
    size: int
    may_fragment: bool = False


@dataclass
class _Rung:
    size: int
    may_fragment: bool = False
    attempts: int = 0
    nonce: int | None = None
    deadline: float | None = None
    is_done: bool = False


class DatagramSizeProber:
    """Finds the largest rung of the ladder the path carries (see module doc).

    All rungs are probed at once, so a good path is known after one round
    trip. A rung is settled when echoed, refused locally, tried MAX_ATTEMPTS
    times in vain, or made moot by a larger echoed rung.
    """

    def __init__(
        self,
        *,
        cap: int | None = None,
        fragment: bool = False,
        timeout_s: float = PROBE_TIMEOUT_S,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        ladder = ladder_for(cap)
        self._rungs = [_Rung(size) for size in ladder]
        if fragment and ladder:
            self._rungs.append(_Rung(ladder[-1], may_fragment=True))
        self._timeout_s = timeout_s
        self._max_attempts = max_attempts
        self._size = FLOOR_BYTES
        self._fragmented_size: int | None = None
        self._by_nonce: dict[int, _Rung] = {}

    @property
    def size(self) -> int:
        """The largest whole datagram proven on this path (at least FLOOR_BYTES)."""
        return self._size

    @property
    def fragmented_size(self) -> int | None:
        """A larger size the path carried in fragments (None: none, or not needed)."""
        return self._fragmented_size

    @property
    def is_finished(self) -> bool:
        return all(rung.is_done for rung in self._rungs)

    def probes_to_send(self, now: float) -> list[Probe]:
        """Probes due at ``now``: first attempts, and retries of timed-out ones."""
        probes = []
        for rung in self._rungs:
            if rung.is_done or (rung.deadline is not None and now < rung.deadline):
                continue
            if rung.attempts >= self._max_attempts:
                self._settle(rung)
                continue
            if rung.nonce is not None:
                del self._by_nonce[rung.nonce]
            rung.attempts += 1
            rung.nonce = int.from_bytes(os.urandom(8), "big")
            rung.deadline = now + self._timeout_s
            self._by_nonce[rung.nonce] = rung
            probes.append(Probe(nonce=rung.nonce, size=rung.size, may_fragment=rung.may_fragment))
        return probes

    def handle_timer(self, now: float) -> None:
        """Give up on rungs whose last attempt timed out (retries go out via probes_to_send)."""
        for rung in self._rungs:
            if (
                not rung.is_done
                and rung.deadline is not None
                and now >= rung.deadline
                and rung.attempts >= self._max_attempts
            ):
                self._settle(rung)

    def get_timer(self) -> float | None:
        """When ``handle_timer`` / ``probes_to_send`` next has work, or None."""
        deadlines = [r.deadline for r in self._rungs if not r.is_done and r.deadline is not None]
        return min(deadlines) if deadlines else None

    def receive_ack(self, nonce: int, size: int) -> bool:
        """The peer echoed a probe. Returns True if ``size`` grew.

        Unknown or stale nonces (an old attempt, a forged echo) are ignored:
        only the nonce of a rung's current attempt counts.
        """
        rung = self._by_nonce.get(nonce)
        if rung is None or rung.size != size or rung.is_done:
            return False
        self._settle(rung)
        if rung.may_fragment:
            if size > self._size:
                self._fragmented_size = size
            return False
        grew = False
        if size > self._size:
            self._size = size
            grew = True
        # Smaller rungs are proven by this one (and fragments are no longer needed).
        for other in self._rungs:
            if other.size <= size and not other.is_done:
                self._settle(other)
        if self._fragmented_size is not None and self._fragmented_size <= size:
            self._fragmented_size = None
        return grew

    def receive_too_big(self, nonce: int) -> None:
        """Our own stack refused to send this probe (EMSGSIZE): the rung and
        every larger one cannot work."""
        rung = self._by_nonce.get(nonce)
        if rung is None:
            return
        for other in self._rungs:
            if other.size >= rung.size and other.may_fragment == rung.may_fragment:
                self._settle(other)

    def _settle(self, rung: _Rung) -> None:
        rung.is_done = True
        rung.deadline = None
        if rung.nonce is not None:
            self._by_nonce.pop(rung.nonce, None)
            rung.nonce = None
