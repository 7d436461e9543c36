"""Connection: drives one aioquic ``QuicConnection`` inside the asyncio loop.

The Endpoint feeds it datagrams (``receive_datagram`` for each datagram of a
receive batch, then ``after_receive`` once); the Connection turns aioquic's
events into Stream calls and sends what aioquic wants to send through the
MagicSock. The driver shape is aioquic's own: feed, drain events, transmit,
re-arm one timer -- but batched: ``datagrams_to_send`` runs once per batch of
received datagrams, not once per datagram (aioquic's own asyncio protocol
transmits after every datagram, and that glue costs a receiver more CPU
than anything else per packet, so it runs once per batch).

Invariants:

- One timer per connection, re-armed lazily: only moved earlier, never
  later; a timer that fires early just re-arms.
- Application writes never transmit inline: they schedule one transmit pass
  with ``call_soon``, so many writes in one loop iteration cost one pass.
- After ``HandshakeCompleted`` a client checks the server's certificate key
  against the node id it dialled before anything else happens on the
  connection; a mismatch closes it and fails ``connect`` with
  PeerIdentityError.
- The datagram size is the sizer's (net/pmtu/sizer.py: 1200 until a probe
  of a larger size is echoed on the current path, again after every path
  change, and whether fragmented datagrams may carry data); the connection
  feeds it the handshake, path changes, probe echoes, EMSGSIZE and, while
  a fragment guard runs, the fate of every packet
  (``tuning.install_loss_tap``), sends the probes it asks for, and applies
  the sizes it chooses through the adapters.
- A path change that may have lost packets (leaving a direct path, or the
  relay coming back) makes aioquic retransmit at once instead of waiting
  for its backed-off probe timer; the QUIC address never changes, so aioquic
  sees no migration.
- Acknowledgements: once the handshake is done, aioquic's 1 ms ack delay
  becomes ``ACK_DELAY_S``, and an ack is sent at once after every
  ``ACK_EVERY_DATAGRAMS`` datagrams received since the last one went: a
  sender at tens of thousands of packets a second would otherwise get an
  ack every few packets, and each costs it ~150-250 us of Python.
- ``bytes_by_path`` counts UDP payload bytes (QUIC datagrams, not disco or
  probes) sent and received, by the kind of path that carried them.
- Once terminated, every pending and later operation raises the
  connection's error (ConnectionLostError unless closed cleanly).
- A peer that is gone is noticed in seconds, not at QUIC's idle timeout:
  the path says when nothing can reach the peer any more (refused, relay
  gone: ``path_failed``), and on a client (the receiver, which waits for
  data) while streams are open and nothing arrives for ``SILENCE_PING_S``
  the connection sends a QUIC PING (any live peer
  acknowledges it at once, however busy its application is); after
  ``SILENCE_LIMIT_S`` of unanswered silence with no relay to fall back on,
  the connection is given up (the receiver's retry loop takes over). Once
  a PING is answered the peer is alive and pinging stops until stream data
  arrives again; a live peer that stalls then meets the idle timeout,
  counted from the last packet before the PINGs (the PINGs' answers would
  otherwise keep QUIC from idling), as it did without the probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Protocol

from aioquic.quic import events
from aioquic.quic.connection import QuicConnection, stream_is_unidirectional

from p2pcp.core.errors import (
    ConnectError,
    ConnectionLostError,
    P2pcpError,
    PeerIdentityError,
)
from p2pcp.core.identity import NodeId
from p2pcp.net._aioquic import fastpath, fastsend, tuning
from p2pcp.net.kinds import PathKind, Route
from p2pcp.net.paths.magicsock import MagicSock, PeerPath
from p2pcp.net.paths.pathstate import KIND_DIRECT, KIND_RELAY
from p2pcp.net.pmtu.probe import encode_probe
from p2pcp.net.pmtu.sizer import (
    DatagramSizer,
    FragmentsAbandoned,
    FragmentsCarried,
    SizeChanged,
)
from p2pcp.net.quic.credit import ReceiveCredit
from p2pcp.net.quic.identity import certificate_node_key, check_peer_certificate
from p2pcp.net.quic.stream import Stream
from p2pcp.net.udp.transport import Address

logger = logging.getLogger(__name__)

# How long close() waits for the peer to acknowledge data still in flight
# before it sends CONNECTION_CLOSE anyway (which discards that data). A few
# RTTs of any real path; the peer's idle timeout covers the rest.
CLOSE_LINGER_S = 3.0
_LINGER_POLL_S = 0.01

# Application close code of an aborted connection (endpoint closing, connect
# given up): the peer reports it as lost, unlike a clean close (code 0).
ABORT_ERROR_CODE = 0x1

# QUIC transport error code for "the peer is not who we dialled"
# (CRYPTO_ERROR range 0x0100-0x01ff: 0x0100 + TLS alert 42, bad_certificate).
_BAD_CERTIFICATE_ERROR = 0x100 + 42

# Backpressure (``Connection.may_write``, the one place the rule is written).
# Send-side bytes one stream may hold whatever the connection holds. Above
# the bandwidth-delay product of the paths p2pcp targets (400 MB/s x 1 ms on
# loopback, 50 MB/s x 40 ms across a continent is 2 MB) and of the relay
# path, whose TCP buffers add tens of ms of queueing: relayed transfers need
# 8 MiB (4 MiB held them to ~78 MB/s, 8 MiB carries ~120 MB/s, 16 MiB no
# more). Small enough that the fetcher's 8 parallel streams stay under 64 MiB.
HIGH_WATER_BYTES = 8 * 1024 * 1024
# The connection's send budget: this many congestion windows -- one in
# flight, one held behind a lost packet until its retransmission is
# acknowledged, the rest queued for the pacer -- but never less than one
# stream's HIGH_WATER_BYTES nor more than MAX_SEND_BUDGET_BYTES. 8 MiB held
# one stream to ~25 MB/s on a 1 Gbit/s, 100 ms, 0.1%-loss path.
SEND_BUDGET_WINDOWS = 4
MAX_SEND_BUDGET_BYTES = 64 * 1024 * 1024
# A blocked writer wakes once the amounts fall to this share of their
# limits, so it queues a large batch per wake-up instead of a packet's worth.
WAKE_FRACTION = 0.5

# Acknowledgement pacing (module doc). Every 10 datagrams, as TCP's delayed
# acks (every 2 segments) would be for 16 KB datagrams and as QUIC stacks
# tuned for throughput do (RFC 9000 suggests 2; the ack-frequency draft
# lets a peer ask for more); 3 ms bounds what an ack delay adds to the RTT
# the peer measures, and is well under the 25 ms max_ack_delay that aioquic
# advertises, so the peer's loss timers already allow for it.
ACK_EVERY_DATAGRAMS = 10
ACK_DELAY_S = 0.003

# Silence (module doc): PING after this long without a packet while streams
# are open, check that often, and give up after SILENCE_LIMIT_S: ten PINGs
# and their acknowledgements all lost means the path or the peer is gone,
# while a live peer's QUIC stack answers each within its ack delay.
SILENCE_PING_S = 1.0
SILENCE_CHECK_S = 0.5
SILENCE_LIMIT_S = 5.0

PathListener = Callable[[Route], None]


def send_budget_bytes(congestion_window: int) -> int:
    """What all streams of a connection may hold for sending together, for a
    congestion window of ``congestion_window`` bytes (constants above)."""
    window = SEND_BUDGET_WINDOWS * congestion_window
    return min(MAX_SEND_BUDGET_BYTES, max(HIGH_WATER_BYTES, window))


class ConnectionOwner(Protocol):
    """What a Connection needs from its Endpoint."""

    magicsock: MagicSock

    def register_cid(self, cid: bytes, connection: Connection) -> None: ...
    def unregister_cid(self, cid: bytes) -> None: ...
    def register_probe(self, nonce: int, connection: Connection) -> None: ...
    def connection_ready(self, connection: Connection) -> None: ...
    def connection_terminated(self, connection: Connection) -> None: ...


class Connection:
    """A QUIC connection to one peer (public API: docs/ARCHITECTURE.md, "The public
    API between transfer/ and net/")."""

    def __init__(
        self,
        owner: ConnectionOwner,
        quic: QuicConnection,
        path: PeerPath,
        *,
        expected_node_id: bytes | None,
        peer_name: str,
        datagram_size_cap: int | None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self._owner = owner
        self._magicsock = owner.magicsock
        self._quic = quic
        self._path = path
        self._is_client = quic.configuration.is_client
        self._expected_node_id = expected_node_id
        self.peer_name = peer_name
        # Streams that can still receive events; a stream leaves when done
        # (stream_ended), so a long session of many requests stays small.
        self._streams: dict[int, Stream] = {}
        # Streams whose writer waits for room: checked after every receive batch.
        self._blocked_writers: set[Stream] = set()
        self._highest_peer_stream_id = -1
        self._incoming: deque[Stream] = deque()
        self._accept_waiters: list[asyncio.Future[None]] = []
        self._handshake_done: asyncio.Future[None] = self.loop.create_future()
        self._handshake_error: P2pcpError | None = None
        self._terminated = asyncio.Event()
        self._error: P2pcpError | None = None
        self._is_closing_locally = False
        self._is_terminated = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._is_transmit_scheduled = False
        self._sizer = DatagramSizer(cap=datagram_size_cap)
        # The loss tap costs a call per packet: installed with the first
        # fragment guard (sizer.FragmentsCarried).
        self._has_loss_tap = False
        self.cids: set[bytes] = set()
        self._direct_bytes = 0
        self._relay_bytes = 0
        self._datagrams_since_ack = 0
        self._last_receive_at = self.loop.time()
        self._silence_timer: asyncio.TimerHandle | None = None
        self._ping_uid = 0
        # A PING was answered since the last stream data arrived (module doc),
        # and when the last packet before the PINGs came.
        self._is_proven_alive = False
        self._silence_since: float | None = None
        self._peer_node_id: NodeId | None = None
        self._path_listener: PathListener | None = None
        self._reported_route = path.route
        tuning.install_burst_pacer(quic)
        self._credit = ReceiveCredit(quic)
        # While aioquic's events are drained, the bytes it counted as received
        # are not all queued yet: the connection's credit is checked after.
        self._is_draining_events = False
        self._is_credit_check_due = False
        self._fast_receive = fastpath.is_supported(quic)
        self._fast_send = fastsend.is_supported(quic)
        self._add_cid(quic.host_cid)
        # A server looks for direct paths at once; a client once connect()
        # returns (Endpoint.connect), so its first path is the one reported.
        path.attach(self, self.loop.time(), is_discovering=not self._is_client)

    # -- public API ----------------------------------------------------------

    @property
    def peer_address(self) -> Address:
        """The direct address in use (else the first candidate, else ("", 0))."""
        if self._path.chosen is not None:
            return self._path.chosen
        return self._path.candidates[0] if self._path.candidates else ("", 0)

    @property
    def peer_node_id(self) -> NodeId | None:
        """The key the peer proved in the handshake: on a client, the node id
        it dialled (checked against the server's certificate); on a server,
        the receiver's key from its client certificate. None before the
        handshake, and on a server whose peer presented no certificate."""
        return self._peer_node_id

    @property
    def peer_path(self) -> PeerPath:
        """The path this connection's datagrams take (MagicSock's object)."""
        return self._path

    @property
    def path_kind(self) -> PathKind:
        """DIRECT or RELAY: how our datagrams to the peer travel now."""
        return self._path.kind

    @property
    def route(self) -> Route:
        """Where our datagrams to the peer go now, as values (kinds.py)."""
        return self._path.route

    @property
    def path_description(self) -> str:
        """E.g. "direct 198.18.0.5:4433" or "relay http://198.18.0.1:3340"."""
        return self._path.description

    @property
    def bytes_by_path(self) -> dict[PathKind, int]:
        """UDP payload bytes sent plus received: ``{"direct": n, "relay": m}``."""
        return {KIND_DIRECT: self._direct_bytes, KIND_RELAY: self._relay_bytes}

    def set_path_listener(self, callback: PathListener | None) -> None:
        """Call ``callback(route)`` on every later path switch.

        A client connection never switches before ``connect()`` returns
        (direct discovery starts then), so reading ``path_kind`` and setting
        the listener right after it misses nothing.
        """
        self._path_listener = callback

    @property
    def max_datagram_size(self) -> int:
        return tuning.datagram_size(self._quic)

    @property
    def is_closed(self) -> bool:
        return self._is_closing_locally or self._is_terminated

    async def open_stream(self) -> Stream:
        """A new bidirectional stream (nothing is sent until the first write)."""
        self._raise_if_closed()
        stream_id = self._quic.get_next_available_stream_id(is_unidirectional=False)
        # An empty write makes aioquic create the stream, so the next call
        # gets a new id.
        self._quic.send_stream_data(stream_id, b"", end_stream=False)
        return self._new_stream(stream_id)

    async def accept_stream(self) -> Stream:
        """The next bidirectional stream the peer opened."""
        while not self._incoming:
            self._raise_if_closed()
            waiter = self.loop.create_future()
            self._accept_waiters.append(waiter)
            try:
                await waiter
            finally:
                self._accept_waiters.remove(waiter)
        return self._incoming.popleft()

    async def close(self, reason: str = "") -> None:
        """Close cleanly, after the peer acknowledged what we sent (bounded linger)."""
        if self.is_closed:
            return
        deadline = self.loop.time() + CLOSE_LINGER_S
        while self._has_unacked_data() and not self._is_terminated:
            if self.loop.time() >= deadline:
                break
            await asyncio.sleep(_LINGER_POLL_S)
        if self.is_closed:
            return
        self._is_closing_locally = True
        self._quic.close(error_code=0, reason_phrase=reason)
        self._transmit()
        self._fail_everything(ConnectionLostError("connection closed locally"))

    async def wait_closed(self) -> None:
        """Wait until the connection ends; ConnectionLostError unless it ended cleanly."""
        await self._terminated.wait()
        if self._error is not None:
            raise self._error

    def __repr__(self) -> str:
        return f"Connection({self.peer_name}, {self.path_description})"

    # -- used by Stream (stream.StreamOwner) -----------------------------------

    def send_stream_data(self, stream_id: int, data: bytes, *, end_stream: bool) -> None:
        self._raise_if_closed()
        self._quic.send_stream_data(stream_id, data, end_stream=end_stream)
        tuning.use_send_buffer(self._quic, stream_id)  # once per stream; then a type check
        self._schedule_transmit()

    def reset_stream(self, stream_id: int, code: int) -> None:
        if self.is_closed:
            return
        self._quic.reset_stream(stream_id, code)
        if not stream_is_unidirectional(stream_id):
            # ValueError: aioquic already discarded the receiving side.
            with contextlib.suppress(ValueError):
                self._quic.stop_stream(stream_id, code)
        self._schedule_transmit()

    def receive_queued(self, nbytes: int) -> None:
        """A stream queued ``nbytes`` for its reader (credit.py)."""
        self._credit.queued(nbytes)

    def receive_consumed(self, stream_id: int, nbytes: int, read_offset: int | None) -> None:
        """A stream's reader took (or the stream dropped) ``nbytes`` of its
        queue; ``read_offset``: where its reader is, None once it wants no
        more. Raises the receive windows when due (credit.py)."""
        is_draining = self._is_draining_events
        if is_draining:
            self._is_credit_check_due = True
        if self._credit.consumed(stream_id, nbytes, read_offset, check_connection=not is_draining):
            self._schedule_transmit()

    def receive_dropped(self) -> None:
        """Data or a reset arrived that no reader will take: it may free credit."""
        if self._is_draining_events:
            self._is_credit_check_due = True
        elif self._credit.check_connection():
            self._schedule_transmit()

    def stream_buffered_bytes(self, stream_id: int) -> int:
        return tuning.stream_buffered_bytes(self._quic, stream_id)

    @property
    def send_budget(self) -> int:
        """Bytes all streams together may hold for sending (``may_write``)."""
        return send_budget_bytes(tuning.congestion_window(self._quic))

    def may_write(self, stream_id: int, *, is_waking: bool = False) -> bool:
        """The backpressure rule: may this stream queue more data now?

        Yes while the stream holds at most ``HIGH_WATER_BYTES`` of unsent plus
        unacknowledged data, or the whole connection at most its send budget
        (``send_budget_bytes``). aioquic's own send buffer is unbounded, so a
        fast producer cannot fill memory, yet one stream alone can keep a long
        fat path full while a lost packet holds up the acknowledged edge of
        its buffer. ``is_waking``: whether a blocked writer may go on, which
        needs the amounts down to ``WAKE_FRACTION`` of those limits.
        """
        fraction = WAKE_FRACTION if is_waking else 1.0
        if tuning.stream_buffered_bytes(self._quic, stream_id) <= fraction * HIGH_WATER_BYTES:
            return True
        return tuning.connection_buffered_bytes(self._quic) <= fraction * self.send_budget

    def writer_blocked(self, stream: Stream) -> None:
        """``stream``'s writer waits for ``may_write``: woken after acknowledgements."""
        self._blocked_writers.add(stream)

    def writer_unblocked(self, stream: Stream) -> None:
        self._blocked_writers.discard(stream)

    def stream_ended(self, stream: Stream) -> None:
        """``stream`` is done: no event can matter to it, so forget it."""
        self._streams.pop(stream.stream_id, None)

    # -- driver: called by the Endpoint --------------------------------------

    async def wait_handshake(self) -> None:
        """Wait for the handshake (and, on a client, the identity check)."""
        await asyncio.shield(self._handshake_done)
        if self._handshake_error is not None:
            raise self._handshake_error

    def start_client(self, now: float) -> None:
        self._quic.connect(self._path.quic_address, now=now)
        self._transmit(now)

    def receive_datagram(self, data: bytes, address: Address | None, now: float) -> None:
        """Feed one datagram (``address`` None: it came over the relay).

        Call ``after_receive`` once after the batch.
        """
        path = self._path
        if address is None:
            self._relay_bytes += len(data)
        else:
            self._direct_bytes += len(data)
            if address != path.state.direct_address:
                path.receive_direct(address, now)
        if self._fast_receive:
            fastpath.receive(self._quic, data, path.quic_address, now)
        else:
            self._quic.receive_datagram(data, path.quic_address, now)
        self._datagrams_since_ack += 1

    def path_changed(self, kind: PathKind, old_kind: PathKind) -> None:
        """The path moved (PathUser): fit the datagram size, resend, tell the listener."""
        if self._is_terminated:
            return
        now = self.loop.time()
        self._fit_datagram_size_to_path(now)  # the sizer waits for the handshake
        if not (old_kind == KIND_RELAY and kind == KIND_DIRECT) or self._handshake_pending:
            # Packets sent on the path we left may be lost (a relay that does
            # not lead to the peer loses the handshake): resend now.
            tuning.retransmit_now(self._quic, now)
        self._schedule_transmit()
        route = self._path.route
        if route != self._reported_route:
            self._reported_route = route
            logger.info("%r: path now %s", self, route)
            if self._path_listener is not None:
                self._path_listener(route)

    def path_failed(self, reason: str) -> None:
        """Nothing can reach the peer any more (PathUser): fail now, with why."""
        if self._is_terminated or self._is_closing_locally:
            return
        if self._handshake_pending:
            self.abort(ConnectError(reason))
        else:
            self.abort(ConnectionLostError(f"connection to {self.peer_name} lost: {reason}"))

    def after_receive(self, now: float) -> None:
        self._last_receive_at = now
        if self._datagrams_since_ack >= ACK_EVERY_DATAGRAMS:
            tuning.ack_soon(self._quic, now)  # the count restarts once it went
        self._process_events()
        self._transmit(now)
        for stream in list(self._blocked_writers):
            if self.may_write(stream.stream_id, is_waking=True):
                stream.wake_writer()

    def receive_probe_ack(self, nonce: int, size: int) -> None:
        if self._is_terminated:
            return
        self._sizer.probe_acked(nonce, size)
        self._apply_sizer_events()

    def datagram_too_big(self, datagram: bytes) -> None:
        """Our stack refused a datagram (EMSGSIZE): the path shrank."""
        self._sizer.datagram_refused(datagram)
        self._apply_sizer_events()

    def abort(self, error: P2pcpError) -> None:
        """Give up on the connection at once (connect timeout, endpoint closing)."""
        if self._is_terminated:
            return
        self._quic.close(error_code=ABORT_ERROR_CODE, reason_phrase=str(error)[:100])
        self._transmit()
        self._terminate(error)

    # -- internals -------------------------------------------------------------

    def _raise_if_closed(self) -> None:
        if self._is_terminated:
            raise self._error or ConnectionLostError("connection closed")
        if self._is_closing_locally:
            raise ConnectionLostError("connection closed locally")

    def _has_unacked_data(self) -> bool:
        return tuning.connection_buffered_bytes(self._quic) > 0

    def _set_datagram_size(self, size: int) -> None:
        if size != tuning.datagram_size(self._quic):
            tuning.set_datagram_size(self._quic, size)
            logger.info("%r: datagram size now %d", self, size)

    def _fit_datagram_size_to_path(self, now: float, *, is_handshake: bool = False) -> None:
        """Tell the sizer where the datagrams go now; send the probes it asks for."""
        state = self._path.state
        is_relay = state.kind == KIND_RELAY
        has_direct_address = state.direct_address is not None
        if is_handshake:
            self._sizer.handshake_completed(
                is_relay=is_relay, has_direct_address=has_direct_address
            )
        else:
            self._sizer.path_changed(is_relay=is_relay, has_direct_address=has_direct_address)
        self._apply_sizer_events()
        self._send_probes(now)

    def _apply_sizer_events(self) -> None:
        """Apply the sizer's decisions (pmtu/sizer.py) through the adapters."""
        sizer = self._sizer
        while (event := sizer.next_event()) is not None:
            if isinstance(event, SizeChanged):
                if event.is_refusal:
                    logger.info("%r: datagram refused by the path, back to %d", self, event.size)
                self._set_datagram_size(event.size)
            elif isinstance(event, FragmentsCarried):
                if not self._has_loss_tap:
                    self._has_loss_tap = True
                    tuning.install_loss_tap(self._quic, sizer.packet_resolved)
                logger.info(
                    "%r: the path carries %d-byte datagrams in fragments; whole up to %d",
                    self,
                    event.fragmented,
                    event.whole,
                )
            elif isinstance(event, FragmentsAbandoned):
                logger.info(
                    "%r: fragmented datagrams lost %.2f%% against %.2f%% whole: back to %d bytes",
                    self,
                    100 * event.fragmented_loss,
                    100 * event.whole_loss,
                    event.whole,
                )

    def _add_cid(self, cid: bytes) -> None:
        self.cids.add(cid)
        self._owner.register_cid(cid, self)

    def _schedule_transmit(self) -> None:
        if not self._is_transmit_scheduled:
            self._is_transmit_scheduled = True
            self.loop.call_soon(self._scheduled_transmit)

    def _scheduled_transmit(self) -> None:
        self._is_transmit_scheduled = False
        self._transmit()

    def _transmit(self, now: float | None = None) -> None:
        if self._is_terminated:
            return
        if now is None:
            now = self.loop.time()
        sizes = self._sizer.transmit_sizes(now)
        may_fragment = False
        if sizes is None:
            datagrams = self._datagrams_to_send(now)
        else:
            self._apply_sizer_events()  # a fall-back the loss tap saw since
            settled, size, fragmenting, may_fragment = sizes
            self._set_datagram_size(settled)
            tuning.set_pacing_fragmented(self._quic, fragmenting)
            if size != settled:
                tuning.set_packet_size(self._quic, size)
            in_flight = tuning.bytes_in_flight(self._quic) if fragmenting else 0
            datagrams = self._datagrams_to_send(now)
            if size != settled:
                tuning.set_packet_size(self._quic, settled)
            if fragmenting and datagrams:
                # the pacer kept exact charged full datagrams (pacing.BurstPacer)
                sent = tuning.bytes_in_flight(self._quic) - in_flight
                tuning.refund_pacer(self._quic, len(datagrams), sent)
        if datagrams:
            payloads = [data for data, _addr in datagrams]
            kind = self._magicsock.send(self._path, payloads, may_fragment=may_fragment)
            if kind == KIND_DIRECT:
                self._direct_bytes += sum(map(len, payloads))
            elif kind == KIND_RELAY:
                self._relay_bytes += sum(map(len, payloads))
        if self._datagrams_since_ack and not tuning.is_ack_pending(self._quic):
            self._datagrams_since_ack = 0
        self._arm_timer()

    def _datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        if self._fast_send:
            return fastsend.datagrams_to_send(
                self._quic, now, has_reader_credit=self._credit.is_active
            )
        return self._quic.datagrams_to_send(now=now)

    def _arm_timer(self) -> None:
        at = self._quic.get_timer()
        probe_at = self._sizer.get_timer()
        if probe_at is not None and (at is None or probe_at < at):
            at = probe_at
        if at is None:
            return
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()
        self._timer_at = at
        self._timer = self.loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._is_terminated:
            return
        now = self.loop.time()
        due = self._quic.get_timer()
        if due is not None and now >= due:
            self._quic.handle_timer(now=now)
        self._sizer.handle_timer(now)
        self._send_probes(now)
        self._process_events()
        self._transmit(now)

    def _send_probes(self, now: float) -> None:
        for probe in self._sizer.probes_to_send(now):
            self._owner.register_probe(probe.nonce, self)
            self._magicsock.send_control(
                self._path,
                encode_probe(probe.nonce, probe.size),
                may_fragment=probe.may_fragment,
            )

    def _check_silence(self) -> None:
        """Module doc: PING a silent peer while requests wait; give up on it."""
        self._silence_timer = None
        if self._is_terminated or self._is_closing_locally:
            return
        now = self.loop.time()
        if self._streams:
            silent_s = now - self._last_receive_at
            if self._is_proven_alive:
                # Only our PINGs' answers since the data stopped: measure the
                # idle time from where it started, as QUIC would have.
                idle_s = now - (self._silence_since or now)
                if idle_s >= self._quic.configuration.idle_timeout:
                    self.abort(
                        ConnectionLostError(
                            f"connection to {self.peer_name} lost: no data for {idle_s:.0f} s"
                        )
                    )
                    return
            elif silent_s >= SILENCE_PING_S:
                if silent_s >= SILENCE_LIMIT_S and not self._path.is_relay_carrying:
                    self.abort(
                        ConnectionLostError(
                            f"{self.peer_name} went silent: nothing came back for {silent_s:.0f} s"
                        )
                    )
                    return
                if self._silence_since is None:
                    self._silence_since = self._last_receive_at
                self._ping_uid += 1
                self._quic.send_ping(self._ping_uid)
                self._transmit(now)
        self._silence_timer = self.loop.call_later(SILENCE_CHECK_S, self._check_silence)

    def _process_events(self) -> None:
        self._is_draining_events = True
        try:
            self._drain_events()
        finally:
            self._is_draining_events = False
        if self._is_credit_check_due:
            self._is_credit_check_due = False
            if self._credit.check_connection():
                self._schedule_transmit()

    def _drain_events(self) -> None:
        quic = self._quic
        while not self._is_terminated:
            event = quic.next_event()
            if event is None:
                return
            if isinstance(event, events.StreamDataReceived):
                self._is_proven_alive = False
                self._silence_since = None
                stream = self._stream_for_peer_data(event.stream_id)
                if stream is not None:
                    stream.receive_data(event.data, event.end_stream)
                else:
                    self.receive_dropped()
            elif isinstance(event, events.StreamReset):
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream.receive_reset(event.error_code)
                else:
                    self.receive_dropped()
            elif isinstance(event, events.StopSendingReceived):
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream.receive_stop_sending(event.error_code)
            elif isinstance(event, events.HandshakeCompleted):
                self._on_handshake_completed()
            elif isinstance(event, events.ConnectionIdIssued):
                self._add_cid(event.connection_id)
            elif isinstance(event, events.ConnectionIdRetired):
                self.cids.discard(event.connection_id)
                self._owner.unregister_cid(event.connection_id)
            elif isinstance(event, events.ConnectionTerminated):
                self._on_terminated(event)
                return
            elif isinstance(event, events.PingAcknowledged):
                self._is_proven_alive = True

    def _new_stream(self, stream_id: int) -> Stream:
        """A stream of this connection, registered until it ends (``stream_ended``)."""
        stream = Stream(self, stream_id)
        self._streams[stream_id] = stream
        return stream

    def _stream_for_peer_data(self, stream_id: int) -> Stream | None:
        stream = self._streams.get(stream_id)
        if stream is not None:
            return stream
        is_peer_initiated = (stream_id & 1 == 0) != self._is_client
        if not is_peer_initiated or stream_id <= self._highest_peer_stream_id:
            return None  # a stream we already dropped
        if stream_is_unidirectional(stream_id) or self.is_closed:
            return None  # p2pcp/1 uses bidirectional streams only
        self._highest_peer_stream_id = stream_id
        stream = self._new_stream(stream_id)
        self._incoming.append(stream)
        self._wake_acceptors()
        return stream

    def _on_handshake_completed(self) -> None:
        if self._is_client and self._expected_node_id is not None:
            try:
                check_peer_certificate(
                    tuning.peer_certificate(self._quic),
                    self._expected_node_id,
                    peer_name=self.peer_name,
                )
                self._peer_node_id = NodeId(self._expected_node_id)
            except PeerIdentityError as exc:
                self._handshake_error = exc
                self._quic.close(error_code=_BAD_CERTIFICATE_ERROR, reason_phrase="wrong peer key")
                self._transmit()
                self._terminate(exc)
                return
        if not self._is_client:
            key = certificate_node_key(tuning.peer_certificate(self._quic))
            self._peer_node_id = NodeId(key) if key is not None else None
        if not self._handshake_done.done():
            self._handshake_done.set_result(None)
        tuning.set_ack_delay(self._quic, ACK_DELAY_S)
        self._last_receive_at = self.loop.time()
        if self._is_client:  # the receiver: the side that waits for data
            self._silence_timer = self.loop.call_later(SILENCE_CHECK_S, self._check_silence)
        self._fit_datagram_size_to_path(self.loop.time(), is_handshake=True)
        if not self._is_client:
            self._owner.connection_ready(self)

    def _on_terminated(self, event: events.ConnectionTerminated) -> None:
        if self._is_closing_locally or (event.error_code == 0 and not self._handshake_pending):
            error: P2pcpError = ConnectionLostError("connection closed")
            self._terminate(error, is_clean=True)
            return
        reason = event.reason_phrase or f"error {event.error_code:#x}"
        if self._handshake_pending:
            error = ConnectError(f"handshake with {self.peer_name} failed: {reason}")
        else:
            error = ConnectionLostError(f"connection to {self.peer_name} lost: {reason}")
        self._terminate(error)

    @property
    def _handshake_pending(self) -> bool:
        return not self._handshake_done.done()

    def _terminate(self, error: P2pcpError, *, is_clean: bool = False) -> None:
        """Final state: fail everything, release the timer and the ids."""
        if self._is_terminated:
            return
        self._is_terminated = True
        if not is_clean:
            self._error = error
        if self._handshake_error is None and self._handshake_pending:
            self._handshake_error = error
        if not self._handshake_done.done():
            self._handshake_done.set_result(None)
        self._fail_everything(error)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._silence_timer is not None:
            self._silence_timer.cancel()
            self._silence_timer = None
        self._terminated.set()
        self._path.detach(self, self.loop.time())
        self._owner.connection_terminated(self)

    def _fail_everything(self, error: P2pcpError) -> None:
        for stream in list(self._streams.values()):
            stream.fail(error)
        self._wake_acceptors()

    def _wake_acceptors(self) -> None:
        for waiter in self._accept_waiters:
            if not waiter.done():
                waiter.set_result(None)
