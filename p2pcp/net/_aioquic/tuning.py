"""Every touch of aioquic's private attributes but the fast paths', in one place.

Tested with aioquic 1.7.2 (pyproject pins ``aioquic>=1.2,<1.8``); re-check
each function against aioquic's source before widening that range. The
attributes used:

- ``QuicConnection._loss._pacer`` (``QuicPacketPacer``): replaced by
  ``BurstPacer`` (pacing.py), identical but for a larger burst allowance and for taking
  the rate from a controller that models one (``pacing_rate``, bbr.py).
- ``QuicConnection._loss._cc``: the congestion controller, read by the pacer
  and told about datagram-size changes.
- ``QuicConnection._max_datagram_size``, ``QuicPacketRecovery._pacer
  ._max_datagram_size``, and the congestion controller's
  ``_max_datagram_size`` (Reno, Cubic) and Cubic's
  ``additive_increase_factor``: the objects that cache the datagram size in
  aioquic 1.7.2 (``QuicPacketBuilder`` is created per ``datagrams_to_send``
  call from the connection's value, so it needs nothing).
- The congestion controller's ``on_packet_acked`` / ``on_packets_lost``:
  wrapped on the instance (``install_loss_tap``) so the connection learns
  each resolved packet's size and fate (fragment.py).
- ``QuicConnection._ack_delay`` and ``QuicConnection._spaces[ONE_RTT]
  .ack_at``: how long aioquic waits before acknowledging, and when the
  pending acknowledgement is due (``set_ack_delay``, ``ack_soon``).
- ``QuicConnection.tls._peer_certificate``: the peer's certificate, for
  identity pinning (the server's) and for naming the receiver (the
  client's).
- ``QuicConnection._initialize`` and ``tls.Context._request_client_certificate``:
  a server connection's TLS context is created on the first Initial, so
  ``request_client_certificate`` wraps ``_initialize`` on the instance to
  set the flag, which makes the server send a CertificateRequest (mutual
  TLS: aioquic checks the client's CertificateVerify signature, so its key
  is proven). Without them the server just does not learn the client's key.
- ``QuicStreamSender._buffer_start`` / ``_buffer_stop``: bytes a stream still
  holds (unsent plus unacknowledged), for write backpressure.
- ``QuicStreamSender._buffer``: replaced by a SendBuffer (sendbuffer.py
  says why) on each stream that sends (``use_send_buffer``).
- ``QuicConnection._write_stream_limits`` / ``_write_connection_limits``,
  ``QuicStream.max_stream_data_local``, ``QuicStream.receiver`` and
  ``QuicConnection._local_max_data`` (its ``value`` and ``used``): the
  receive windows, which credit.py makes follow the reader
  (``install_reader_credit`` and the functions after it).
- ``QuicConnection._peer_cid`` and ``_original_destination_connection_id``:
  a client's first Destination Connection ID, which aioquic draws at the
  client's own id length; set to 8 bytes before ``connect`` when our ids are
  shorter (``set_initial_destination_cid``, RFC 9000 7.2).
- ``QuicConnection._replenish_connection_ids``: replaced by a no-op on a
  connection with zero-length ids, which must not issue more (RFC 9000 5.1;
  aioquic would send NEW_CONNECTION_ID frames with empty ids, which its own
  peers refuse); without it, zero-length ids are not used
  (``can_forgo_connection_ids``).
- ``aioquic._buffer.Buffer``: the type aioquic's header parser reads from
  (``parse_header``, for the endpoint's demultiplexing of Initials).
- ``QuicPacketRecovery._pto_count`` and ``reschedule_data``: after a path
  change, retransmit at once (what a probe timeout does) and forget the
  timer's backoff, which grew while the old path was dead.

fastpath.py, the receive fast path, reads the connection's state for one
kind of packet the way aioquic's ``receive_datagram`` does, and fastsend.py
builds the packets of a call that has nothing but stream data to send the
way ``datagrams_to_send`` does; they sit apart because they follow those
methods step by step rather than touching a value.

Invariants: each function degrades to a no-op (or a safe answer) if an
attribute is missing, so a newer aioquic loses speed, never correctness --
except ``peer_certificate``, which returns None and thereby fails pinning
closed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aioquic
from aioquic._buffer import Buffer
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicHeader, pull_quic_header
from aioquic.quic.recovery import QuicPacketPacer
from aioquic.tls import Epoch
from cryptography import x509

from p2pcp.net._aioquic.fastpath import FOLLOWS_AIOQUIC, follows_aioquic
from p2pcp.net._aioquic.pacing import BurstPacer
from p2pcp.net._aioquic.sendbuffer import SendBuffer


def _burst_pacer(quic: QuicConnection) -> BurstPacer | None:
    pacer = getattr(getattr(quic, "_loss", None), "_pacer", None)
    return pacer if isinstance(pacer, BurstPacer) else None


def _controller(quic: QuicConnection) -> Any:
    return getattr(getattr(quic, "_loss", None), "_cc", None)


def set_pacing_fragmented(quic: QuicConnection, is_fragmenting: bool) -> None:
    pacer = _burst_pacer(quic)
    if pacer is not None:
        pacer.is_fragmenting = is_fragmenting


def bytes_in_flight(quic: QuicConnection) -> int:
    return int(getattr(_controller(quic), "bytes_in_flight", 0))


def refund_pacer(quic: QuicConnection, packets: int, in_flight_bytes: int) -> None:
    """The pacer charged each of ``packets`` just sent at the full datagram
    size; only ``in_flight_bytes`` of them count (acks ride free, and whole
    datagrams among fragmented ones, or a stream's last, are smaller):
    refund the rest (``BurstPacer.refund``)."""
    pacer = _burst_pacer(quic)
    if pacer is not None:
        pacer.refund(packets * pacer._max_datagram_size - in_flight_bytes)


def install_burst_pacer(quic: QuicConnection) -> None:
    """Swap the connection's pacer for a BurstPacer (before any packet is sent)."""
    loss: Any = getattr(quic, "_loss", None)
    old = getattr(loss, "_pacer", None)
    if not isinstance(old, QuicPacketPacer):
        return
    pacer = BurstPacer(
        max_datagram_size=quic._max_datagram_size, controller=getattr(loss, "_cc", None)
    )
    pacer.bucket_max = old.bucket_max
    pacer.bucket_time = old.bucket_time
    pacer.evaluation_time = old.evaluation_time
    pacer.packet_time = old.packet_time
    loss._pacer = pacer


def install_loss_tap(quic: QuicConnection, on_resolved: Callable[[int, bool, float], None]) -> None:
    """Call ``on_resolved(size, is_lost, now)`` for every in-flight packet acked or lost."""
    loss: Any = getattr(quic, "_loss", None)
    cc: Any = getattr(loss, "_cc", None)
    acked = getattr(cc, "on_packet_acked", None)
    lost = getattr(cc, "on_packets_lost", None)
    if acked is None or lost is None:
        return

    def on_packet_acked(*, now: float, packet: Any) -> None:
        on_resolved(packet.sent_bytes, False, now)
        acked(now=now, packet=packet)

    def on_packets_lost(*, now: float, packets: Any) -> None:
        packets = list(packets)
        for packet in packets:
            on_resolved(packet.sent_bytes, True, now)
        lost(now=now, packets=packets)

    cc.on_packet_acked = on_packet_acked
    cc.on_packets_lost = on_packets_lost


def set_packet_size(quic: QuicConnection, size: int) -> None:
    """The size of the packets built next, and nothing else (pacer and
    controller keep theirs): for a few packets of another size."""
    quic._max_datagram_size = size


def congestion_window(quic: QuicConnection) -> int:
    """The congestion controller's window in bytes (0 if aioquic changed shape)."""
    return int(getattr(_controller(quic), "congestion_window", 0))


def datagram_size(quic: QuicConnection) -> int:
    return int(quic._max_datagram_size)


def set_datagram_size(quic: QuicConnection, size: int) -> None:
    """Make every object that caches the datagram size use ``size``.

    Raising it also scales the congestion window, which aioquic sized in
    packets of the old size, so the window keeps its packet count.
    """
    old = int(quic._max_datagram_size)
    if size == old:
        return
    quic._max_datagram_size = size
    loss: Any = getattr(quic, "_loss", None)
    pacer = getattr(loss, "_pacer", None)
    if pacer is not None and hasattr(pacer, "_max_datagram_size"):
        pacer._max_datagram_size = size
    cc = getattr(loss, "_cc", None)
    if cc is None:
        return
    own_setter = getattr(cc, "set_datagram_size", None)
    if own_setter is not None:
        own_setter(size)  # ours (bbr.py): a model in bytes, it knows what to scale
    else:
        if hasattr(cc, "_max_datagram_size"):
            cc._max_datagram_size = size
        if hasattr(cc, "additive_increase_factor"):
            cc.additive_increase_factor = size
        if size > old and hasattr(cc, "congestion_window"):
            cc.congestion_window = cc.congestion_window * size // old
    if pacer is not None and getattr(loss, "_rtt_initialized", False):
        pacer.update_rate(congestion_window=cc.congestion_window, smoothed_rtt=loss._rtt_smoothed)


def retransmit_now(quic: QuicConnection, now: float) -> None:
    """Act as if the probe timer fired now, without its backoff growing.

    Packets in flight on a path that died are resent on the new one at
    once, instead of after a probe timeout that doubled with every silent
    attempt (seconds, after a 2 s outage). Like a PTO it is not a congestion
    event. A no-op if aioquic changed shape.
    """
    loss: Any = getattr(quic, "_loss", None)
    reschedule = getattr(loss, "reschedule_data", None)
    if loss is None or reschedule is None or not hasattr(loss, "_pto_count"):
        return
    loss._pto_count = 0
    reschedule(now=now)


def set_ack_delay(quic: QuicConnection, seconds: float) -> None:
    """Acknowledge received packets ``seconds`` after the first unacknowledged one."""
    if hasattr(quic, "_ack_delay"):
        quic._ack_delay = seconds


def _one_rtt_space(quic: QuicConnection) -> Any:
    return getattr(quic, "_spaces", {}).get(Epoch.ONE_RTT)


def ack_soon(quic: QuicConnection, now: float) -> None:
    """Make a pending acknowledgement of 1-RTT packets due now (no-op if none)."""
    space = _one_rtt_space(quic)
    ack_at = getattr(space, "ack_at", None)
    if ack_at is not None and ack_at > now:
        space.ack_at = now


def is_ack_pending(quic: QuicConnection) -> bool:
    """Whether received 1-RTT packets wait for an acknowledgement."""
    return getattr(_one_rtt_space(quic), "ack_at", None) is not None


def peer_certificate(quic: QuicConnection) -> x509.Certificate | None:
    """The certificate the peer presented in the handshake, if any."""
    tls_context = getattr(quic, "tls", None)
    cert = getattr(tls_context, "_peer_certificate", None)
    return cert if isinstance(cert, x509.Certificate) else None


def request_client_certificate(quic: QuicConnection) -> None:
    """Make a server connection ask the client for its certificate (module doc)."""
    initialize = getattr(quic, "_initialize", None)
    if not callable(initialize):
        return

    def initialize_and_request(peer_cid: bytes) -> None:
        initialize(peer_cid)
        tls_context = getattr(quic, "tls", None)
        if hasattr(tls_context, "_request_client_certificate"):
            tls_context._request_client_certificate = True  # type: ignore[union-attr]

    quic._initialize = initialize_and_request  # type: ignore[method-assign]


def stream_buffered_bytes(quic: QuicConnection, stream_id: int) -> int:
    """Bytes a stream holds for sending: unsent plus sent-but-unacknowledged."""
    stream = quic._streams.get(stream_id)
    if stream is None:
        return 0
    sender = stream.sender
    return int(sender._buffer_stop - sender._buffer_start)


def use_send_buffer(
    quic: QuicConnection, stream_id: int, version: str = aioquic.__version__
) -> None:
    """Give a stream's sender a SendBuffer (sendbuffer.py) instead of its
    bytearray, keeping what it holds. Only on the aioquic the fast paths
    follow, whose QuicStreamSender uses its buffer only by ``+=``, slices and
    ``del buffer[:n]``; elsewhere the bytearray stays (slower, same bytes)."""
    if not version.startswith(FOLLOWS_AIOQUIC):
        return
    stream = getattr(quic, "_streams", {}).get(stream_id)
    sender = getattr(stream, "sender", None)
    buffer = getattr(sender, "_buffer", None)
    if type(buffer) is bytearray:
        sender._buffer = SendBuffer(buffer)  # type: ignore[union-attr]


def connection_buffered_bytes(quic: QuicConnection) -> int:
    """Bytes all streams of the connection hold for sending (see above)."""
    return sum(
        int(stream.sender._buffer_stop - stream.sender._buffer_start)
        for stream in quic._streams.values()
    )


def parse_header(data: bytes, host_cid_length: int) -> QuicHeader:
    """A datagram's QUIC header (ValueError if it is not one). aioquic's
    parser reads from its private ``Buffer`` type."""
    return pull_quic_header(Buffer(data=data), host_cid_length=host_cid_length)


def set_initial_destination_cid(quic: QuicConnection, cid: bytes) -> None:
    """A client's first Destination Connection ID; call before ``connect``."""
    peer_cid = getattr(quic, "_peer_cid", None)
    if (
        peer_cid is None
        or getattr(quic, "_connect_called", True)
        or getattr(quic, "_original_destination_connection_id", None) != peer_cid.cid
    ):
        return
    peer_cid.cid = cid
    quic._original_destination_connection_id = cid


def can_forgo_connection_ids() -> bool:
    """Whether ``forgo_connection_ids`` works with this aioquic."""
    return callable(getattr(QuicConnection, "_replenish_connection_ids", None))


def forgo_connection_ids(quic: QuicConnection) -> None:
    """A connection with zero-length ids: it never issues another."""
    quic._replenish_connection_ids = lambda: None  # type: ignore[method-assign]


# What install_reader_credit and the receive-limit functions read or wrap.
_CREDIT_ATTRIBUTES = (
    "_write_stream_limits",
    "_write_connection_limits",
    "_local_max_data",
    "_streams",
)


def install_reader_credit(quic: QuicConnection, version: str = aioquic.__version__) -> bool:
    """Stop aioquic from raising the receive windows by itself; True if done.

    aioquic 1.7's ``_write_stream_limits`` doubles a stream's
    ``max_stream_data_local`` once ``receiver.highest_offset * 2`` exceeds
    it, and ``_write_connection_limits`` doubles ``_local_max_data.value``
    once ``used * 2`` exceeds it; each then writes a frame whenever the
    value differs from what was sent. Those two amounts are read nowhere
    else in them, so each wrapper hides its amount (as zero) for the call:
    aioquic still writes (and, when lost, rewrites) the frame for every
    limit credit.py raises, in its own way, and never doubles one. Only on
    the aioquic the fast paths follow (``fastpath.follows_aioquic``): where
    the methods may differ, False, and the windows stay aioquic's.
    """
    if not follows_aioquic(quic, _CREDIT_ATTRIBUTES, version):
        return False
    write_stream_limits = quic._write_stream_limits
    write_connection_limits = quic._write_connection_limits

    def write_stream_limits_as_set(builder: Any, space: Any, stream: Any) -> None:
        receiver = stream.receiver
        highest = receiver.highest_offset
        receiver.highest_offset = 0
        try:
            write_stream_limits(builder=builder, space=space, stream=stream)
        finally:
            receiver.highest_offset = highest

    def write_connection_limits_as_set(builder: Any, space: Any) -> None:
        max_data = quic._local_max_data
        used = max_data.used
        max_data.used = 0
        try:
            write_connection_limits(builder=builder, space=space)
        finally:
            max_data.used = used

    quic._write_stream_limits = write_stream_limits_as_set  # type: ignore[method-assign]
    quic._write_connection_limits = write_connection_limits_as_set  # type: ignore[method-assign]
    return True


def stream_receive_limit(quic: QuicConnection, stream_id: int) -> int | None:
    """The receive limit (MAX_STREAM_DATA) of a stream; None once aioquic
    dropped the stream (or never had it)."""
    stream = quic._streams.get(stream_id)
    return None if stream is None else int(stream.max_stream_data_local)


def raise_stream_receive_limit(quic: QuicConnection, stream_id: int, limit: int) -> None:
    """Let the peer send on the stream up to ``limit`` (never lowers it); the
    next packet that has room carries the MAX_STREAM_DATA frame."""
    stream = quic._streams.get(stream_id)
    if stream is not None and limit > stream.max_stream_data_local:
        stream.max_stream_data_local = limit


def connection_receive_limit(quic: QuicConnection) -> int:
    """The connection's receive limit (MAX_DATA)."""
    return int(quic._local_max_data.value)


def connection_received_bytes(quic: QuicConnection) -> int:
    """Bytes the connection's limit counts as received: on each stream up to
    the highest offset seen (a reset stream: its final size)."""
    return int(quic._local_max_data.used)


def raise_connection_receive_limit(quic: QuicConnection, limit: int) -> None:
    """Let the peer send up to ``limit`` in all (never lowers it)."""
    max_data = quic._local_max_data
    max_data.value = max(max_data.value, limit)


def out_of_order_bytes(quic: QuicConnection) -> int:
    """Bytes counted as received that aioquic holds behind a gap (not yet
    delivered), on streams still receiving."""
    held = 0
    for stream in quic._streams.values():
        receiver = stream.receiver
        if not receiver.is_finished:
            held += receiver.highest_offset - receiver.starting_offset()
    return held
