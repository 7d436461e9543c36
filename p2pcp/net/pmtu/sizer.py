"""The datagram-size policy of one connection, sans-IO: when to probe, what size to use.

The connection driver (net/quic/connection.py) feeds it what happened and
applies what it decides through the aioquic adapters; this module has no
I/O, no clock of its own (what needs the time takes ``now``)
and knows nothing of aioquic. It joins the prober (probe.py: which sizes
the path carries) and the fragment guard (fragment.py: whether fragmented
datagrams may carry data).

Rules:

- A connection starts at ``FLOOR_BYTES`` (1200), which every path carries,
  and stays there until the handshake completes: the path may still move
  and only an established peer echoes probes.
- After the handshake, and after every later path change, the size starts
  again from the floor and the new path is probed: over the relay, through
  it, up to ``RELAY_DATAGRAM_BYTES`` (the relay carries datagrams in a TCP
  stream: no IP fragments, and its own 64 KiB limit is above every rung);
  on a direct path, to that address, with one more rung that may leave in
  IP fragments; a path with no direct address yet (every candidate sprayed
  at once) is not probed: the change that picks an address will be.
- A size only grows when a probe of that size is echoed on the current
  path (``DatagramSizeProber.size``).
- When the peer echoes a fragmented probe larger than the whole size
  proven, a ``FragmentGuard`` decides per transmit between the whole and
  the fragmented size (``transmit_sizes``), judging from the fate of every
  packet (``packet_resolved``); a whole echo of that size or more ends it.
- Our own stack refusing a QUIC datagram (EMSGSIZE: the local route's MTU
  shrank under us) puts the connection back on the floor and stops
  fragmenting until the path changes or a probe proves a larger size; a
  refused probe rules out its rung and every larger one.
- The size never exceeds ``cap`` (the user's ``--max-datagram-size``).

Inputs: ``handshake_completed(...)``, ``path_changed(...)``,
``probe_acked(nonce, size)``, ``datagram_refused(datagram)``,
``packet_resolved(size, is_lost, now)``, ``handle_timer(now)``.

Outputs: ``probes_to_send(now)``, ``get_timer()``, ``transmit_sizes(now)``
(None while no guard runs), ``next_event()`` (``SizeChanged``,
``FragmentsCarried``, ``FragmentsAbandoned``), and ``size``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

from p2pcp.net.pmtu.fragment import FragmentGuard
from p2pcp.net.pmtu.probe import (
    FLOOR_BYTES,
    HEADER_BYTES,
    MAX_DATAGRAM_BYTES,
    DatagramSizeProber,
    Probe,
    is_control_packet,
)

# Datagram size over a relay: aioquic's ceiling. The relay carries datagrams
# of up to 64 KiB inside TCP, so nothing on that path limits the size, and
# every datagram is one relay frame: the bigger, the fewer.
RELAY_DATAGRAM_BYTES = MAX_DATAGRAM_BYTES

# Where a probe carries its nonce (probe.py's header: MAGIC(6) | TYPE(1) | nonce(8)).
_NONCE_SLICE = slice(7, 15)


@dataclass(frozen=True)
class SizeChanged:
    """The connection's datagram size is now ``size``; ``is_refusal``: because
    our stack refused a datagram (EMSGSIZE), not because the path changed or a
    probe was echoed."""

    size: int
    is_refusal: bool = False


@dataclass(frozen=True)
class FragmentsCarried:
    """The path carried a ``fragmented``-byte datagram in IP fragments while
    whole ones are proven up to ``whole``: a guard now decides per transmit
    (the driver must report every packet's fate to ``packet_resolved``)."""

    fragmented: int
    whole: int


@dataclass(frozen=True)
class FragmentsAbandoned:
    """The guard fell back to whole ``whole``-byte datagrams: fragmented ones
    lost ``fragmented_loss`` against ``whole_loss`` (fragment.py's rules)."""

    fragmented_loss: float
    whole_loss: float
    whole: int


SizerEvent = SizeChanged | FragmentsCarried | FragmentsAbandoned


class TransmitSizes(NamedTuple):
    """The sizes for one transmit while a fragment guard runs."""

    settled: int
    """The connection's datagram size (what its pacer and controller count in)."""
    packet: int
    """The size this transmit's datagrams are built at (whole one time in
    fragment.WHOLE_EVERY while fragmenting)."""
    is_fragmenting: bool
    """Fragmented datagrams carry data now (the pacer then paces by bytes)."""
    may_fragment: bool
    """The datagrams are larger than the whole size: send them with the
    don't-fragment bit clear."""


class DatagramSizer:
    """Chooses one connection's datagram size (see the module doc for the rules)."""

    def __init__(self, *, cap: int | None = None) -> None:
        self._cap = cap
        self._size = FLOOR_BYTES
        self._is_started = False
        self._prober: DatagramSizeProber | None = None
        self._guard: FragmentGuard | None = None
        self._events: deque[SizerEvent] = deque()

    # -- outputs -------------------------------------------------------------

    @property
    def size(self) -> int:
        """The whole datagram size in use (the floor until a probe proves more)."""
        return self._size

    @property
    def fragmented_size(self) -> int | None:
        """The size fragmented datagrams would have, while a guard runs."""
        return self._guard.fragmented if self._guard is not None else None

    @property
    def is_fragmenting(self) -> bool:
        """Fragmented datagrams carry data now."""
        return self._guard is not None and self._guard.is_fragmenting

    @property
    def is_probing(self) -> bool:
        """Probes are still out or due on the current path."""
        return self._prober is not None and not self._prober.is_finished

    def next_event(self) -> SizerEvent | None:
        """The next decision for the driver to apply (or log), oldest first."""
        return self._events.popleft() if self._events else None

    def probes_to_send(self, now: float) -> list[Probe]:
        """Probes due at ``now`` (first attempts and retries); send each with
        ``encode_probe(probe.nonce, probe.size)``."""
        if self._prober is None or self._prober.is_finished:
            return []
        return self._prober.probes_to_send(now)

    def get_timer(self) -> float | None:
        """When ``handle_timer`` next has work, or None."""
        return self._prober.get_timer() if self._prober is not None else None

    def transmit_sizes(self, now: float) -> TransmitSizes | None:
        """The sizes for the transmit about to happen; None while no guard runs
        (then every datagram has the connection's size). Call once per transmit:
        the guard counts transmits to interleave whole datagrams."""
        guard = self._guard
        if guard is None:
            return None
        packet = guard.next_size(now)
        is_fragmenting = guard.is_fragmenting
        settled = guard.fragmented if is_fragmenting else guard.whole
        return TransmitSizes(settled, packet, is_fragmenting, packet > guard.whole)

    # -- inputs --------------------------------------------------------------

    def handshake_completed(self, *, is_relay: bool, has_direct_address: bool) -> None:
        """The handshake is done: fit the size to the path it runs on."""
        self._is_started = True
        self._fit_to_path(is_relay=is_relay, has_direct_address=has_direct_address)

    def path_changed(self, *, is_relay: bool, has_direct_address: bool) -> None:
        """The connection's datagrams take another path: start again from the
        floor (before the handshake nothing changes: the handshake fits it)."""
        if self._is_started:
            self._fit_to_path(is_relay=is_relay, has_direct_address=has_direct_address)

    def probe_acked(self, nonce: int, size: int) -> None:
        """The peer echoed a probe (unknown and stale nonces are ignored)."""
        prober = self._prober
        if prober is None:
            return
        if prober.receive_ack(nonce, size):
            self._set_size(prober.size)
        fragmented = prober.fragmented_size
        if fragmented is None:
            self._guard = None
        elif self._guard is None or self._guard.whole != prober.size:
            self._guard = FragmentGuard(whole=prober.size, fragmented=fragmented)
            self._events.append(FragmentsCarried(fragmented=fragmented, whole=prober.size))

    def datagram_refused(self, datagram: bytes) -> None:
        """Our stack refused to send ``datagram`` (EMSGSIZE): a probe rules out
        its rung; a QUIC datagram sends the connection back to the floor."""
        if is_control_packet(datagram):
            if self._prober is not None and len(datagram) >= HEADER_BYTES:
                self._prober.receive_too_big(int.from_bytes(datagram[_NONCE_SLICE], "big"))
            return
        if self._size > FLOOR_BYTES or self._guard is not None:
            self._guard = None
            self._size = FLOOR_BYTES
            self._events.append(SizeChanged(FLOOR_BYTES, is_refusal=True))

    def packet_resolved(self, size: int, is_lost: bool, now: float) -> None:
        """Loss detection settled one packet of ``size`` bytes (needed only
        while a guard runs; see ``FragmentsCarried``)."""
        guard = self._guard
        if guard is None:
            return
        was_fragmenting = guard.is_fragmenting
        guard.packet_resolved(size, is_lost, now)
        if was_fragmenting and not guard.is_fragmenting and guard.verdict is not None:
            fragmented_loss, whole_loss = guard.verdict
            self._events.append(FragmentsAbandoned(fragmented_loss, whole_loss, guard.whole))

    def handle_timer(self, now: float) -> None:
        """Time passed: rungs whose last attempt went unanswered are given up
        (retries are in the next ``probes_to_send``)."""
        if self._prober is not None:
            self._prober.handle_timer(now)

    # -- internals -----------------------------------------------------------

    def _set_size(self, size: int) -> None:
        self._size = size
        self._events.append(SizeChanged(size))

    def _fit_to_path(self, *, is_relay: bool, has_direct_address: bool) -> None:
        self._guard = None
        self._set_size(FLOOR_BYTES)
        cap = self._cap
        if is_relay:
            relay_cap = RELAY_DATAGRAM_BYTES if cap is None else min(cap, RELAY_DATAGRAM_BYTES)
            self._prober = DatagramSizeProber(cap=relay_cap)
        elif not has_direct_address:
            self._prober = None
        else:
            self._prober = DatagramSizeProber(cap=cap, fragment=True)
