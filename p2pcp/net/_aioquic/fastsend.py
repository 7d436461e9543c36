"""A faster ``QuicConnection.datagrams_to_send`` for the packets that carry a transfer.

Why: a sender's CPU goes mostly to aioquic's per-packet Python work, which
caps what one event loop can send (docs/design-notes.md, "Fast paths"). For
every packet aioquic's ``_write_application`` builds through a generic
packet builder and asks a dozen rarely-used frame kinds (path challenges,
new connection ids, connection and stream limits, pings, crypto data,
datagrams) whether they have something to say, and rebuilds its stream
queue. While a transfer runs, nearly every call has nothing to say but
stream data: an established connection on a validated path, no
acknowledgement due yet, no limit to raise, no frame of any other kind
pending.

``datagrams_to_send(quic, now)`` checks that, once per call, before it
changes anything; then it builds the packets aioquic would build -- the
same bytes in the same order (the differential test compares every
packet's plaintext), the same stream frames and round-robin order, the
same pacing and congestion limits, the same packet records handed to loss
recovery -- without the generic machinery. Any other call goes to
``quic.datagrams_to_send`` untouched.

It follows aioquic 1.7 (``fastpath.FOLLOWS_AIOQUIC``) step by step:
``_write_application``'s loop for the 1-RTT case, ``QuicPacketBuilder``'s
``start_packet``/``start_frame``/``_end_packet`` for short-header packets,
``_write_stream_frame`` and ``_flush_builder``. ``is_supported`` checks the
version and the private attributes; any other connection keeps aioquic's
own path (slower, never wrong). fastpath.py is its receiving twin.
"""

from __future__ import annotations

from typing import Any

import aioquic
from aioquic.quic.connection import QuicConnection, QuicConnectionState
from aioquic.quic.packet import PACKET_FIXED_BIT, PACKET_NUMBER_MAX_SIZE, QuicPacketType
from aioquic.quic.packet_builder import PACKET_NUMBER_SEND_SIZE, QuicSentPacket
from aioquic.tls import Epoch

from p2pcp.net._aioquic.fastpath import follows_aioquic

Address = Any

_CONNECTED = QuicConnectionState.CONNECTED
_ONE_RTT = Epoch.ONE_RTT
_ONE_RTT_PACKET = QuicPacketType.ONE_RTT
# the short header's first byte, but for the spin bit and the key phase
_SHORT_FIRST_BYTE = PACKET_FIXED_BIT | (PACKET_NUMBER_SEND_SIZE - 1)
# a packet's payload must leave header protection a full sample (RFC 9001
# 5.4.2): aioquic pads what is shorter than this
_MIN_PAYLOAD = PACKET_NUMBER_MAX_SIZE - PACKET_NUMBER_SEND_SIZE
# STREAM frame type bits (RFC 9000 19.8): always with a length here
_STREAM_WITH_LENGTH = 0x08 | 0x02
_STREAM_OFF = 0x04
_STREAM_FIN = 0x01

_ATTRIBUTES = (
    "_state", "_quic_logger", "_close_pending", "_handshake_confirmed", "_handshake_complete",
    "_probe_pending", "_ping_pending", "_datagrams_pending", "_handshake_done_pending",
    "_streams_blocked_pending", "_retire_connection_ids", "_is_client",
    "_remote_preferred_address", "_network_paths", "_cryptos", "_crypto_streams", "_spaces",
    "_host_cids", "_local_max_data", "_local_max_streams_bidi", "_local_max_streams_uni",
    "_streams", "_streams_queue", "_pacing_at", "_loss", "_max_datagram_size", "_peer_cid",
    "_packet_number", "_spin_bit", "_remote_max_data", "_remote_max_data_used",
    "_ack_eliciting_sent_since_receipt", "_close_at", "_idle_timeout",
)  # fmt: skip


def is_supported(quic: QuicConnection, version: str = aioquic.__version__) -> bool:
    """Whether ``datagrams_to_send`` may take its fast path on this connection."""
    return follows_aioquic(quic, _ATTRIBUTES, version) and hasattr(quic._loss, "_pacer")


def datagrams_to_send(
    quic: Any, now: float, *, has_reader_credit: bool = False
) -> list[tuple[bytes, Address]]:
    """``quic.datagrams_to_send(now)``, through the fast path when it applies.

    ``has_reader_credit``: the connection's receive windows follow its reader
    (``tuning.install_reader_credit``), so aioquic raises no limit by itself.
    """
    datagrams = _send_fast(quic, now, has_reader_credit)
    if datagrams is None:
        datagrams = quic.datagrams_to_send(now=now)
    return datagrams


def _varint(value: int) -> bytes:
    if value < 0x40:
        return bytes((value,))
    if value < 0x4000:
        return (value | 0x4000).to_bytes(2, "big")
    if value < 0x40000000:
        return (value | 0x80000000).to_bytes(4, "big")
    return (value | 0xC000000000000000).to_bytes(8, "big")


def _varint_size(value: int) -> int:
    if value < 0x40:
        return 1
    if value < 0x4000:
        return 2
    if value < 0x40000000:
        return 4
    return 8


def _only_stream_data(quic: Any, now: float, has_reader_credit: bool) -> bool:
    """Whether this call of aioquic's ``datagrams_to_send`` could write
    nothing but STREAM frames in 1-RTT packets on one validated path.

    None of what is checked here changes while packets are built, so what
    holds for the first packet holds for the call."""
    if quic._state is not _CONNECTED or quic._quic_logger is not None or quic._close_pending:
        return False
    if not (quic._handshake_confirmed and quic._handshake_complete):
        return False
    if quic._probe_pending or quic._ping_pending or quic._datagrams_pending:
        return False
    if quic._handshake_done_pending or quic._streams_blocked_pending:
        return False
    if quic._retire_connection_ids:
        return False
    if quic._is_client and quic._remote_preferred_address is not None:
        return False
    paths = quic._network_paths
    if len(paths) != 1:
        return False
    path = paths[0]
    if not path.is_validated or path.remote_challenges:
        return False
    if not quic._cryptos[_ONE_RTT].send.is_valid():
        return False
    if not quic._crypto_streams[_ONE_RTT].sender.buffer_is_empty:
        return False
    ack_at = quic._spaces[_ONE_RTT].ack_at
    if ack_at is not None and ack_at <= now:
        return False  # an ACK frame is due
    for connection_id in quic._host_cids:
        if not connection_id.was_sent:
            return False
    # MAX_DATA and MAX_STREAMS, as _write_connection_limits decides them
    # (with reader credit it never doubles a limit: only one raised by
    # credit.py and not yet sent makes a frame)
    max_data = quic._local_max_data
    if max_data.value != max_data.sent:
        return False
    if not has_reader_credit and max_data.used * 2 > max_data.value:
        return False
    for limit in (quic._local_max_streams_bidi, quic._local_max_streams_uni):
        if limit.sent - limit.used < limit.value - limit.sent and limit.value != limit.sent:
            return False
    # MAX_STREAM_DATA, as _write_stream_limits decides it (the same way)
    for stream in quic._streams.values():
        local = stream.max_stream_data_local
        if stream.max_stream_data_local_sent != local:
            return False
        if not has_reader_credit and local and stream.receiver.highest_offset * 2 > local:
            return False
    # no stream to discard, no STOP_SENDING or RESET_STREAM
    for stream in quic._streams_queue:
        if stream.is_finished or stream.receiver.stop_pending or stream.sender.reset_pending:
            return False
    return True


def _send_fast(
    quic: Any, now: float, has_reader_credit: bool = False
) -> list[tuple[bytes, Address]] | None:
    if not _only_stream_data(quic, now, has_reader_credit):
        return None

    # -- datagrams_to_send, then _write_application's loop ------------------
    quic._pacing_at = None
    loss = quic._loss
    pacer = loss._pacer
    max_flight_bytes = loss.congestion_window - loss.bytes_in_flight
    crypto = quic._cryptos[_ONE_RTT]
    tag_size = crypto.aead_tag_size
    peer_cid = quic._peer_cid.cid
    header_size = 3 + len(peer_cid)
    max_datagram_size = quic._max_datagram_size
    first_byte_base = _SHORT_FIRST_BYTE | (quic._spin_bit << 5)
    packet_number = quic._packet_number
    flight_bytes = 0
    packets: list[QuicSentPacket] = []
    datagrams: list[bytes] = []

    while True:
        # pacing: no ACK is due (checked), so it always applies
        pacing_at = pacer.next_send_time(now=now)
        if pacing_at is not None:
            quic._pacing_at = pacing_at
            break

        # start_packet: a datagram of its own, within the congestion window
        capacity = min(max_datagram_size, max_flight_bytes - flight_bytes)
        position = header_size
        parts: list[bytes] = []
        handlers: list[tuple[Any, Any]] = []
        sent: list[Any] = []

        # STREAM frames, in the queue's order
        for stream in quic._streams_queue:
            sender = stream.sender
            if stream.is_blocked or sender.buffer_is_empty:
                continue
            highest = sender.highest_offset
            max_offset = min(
                highest + quic._remote_max_data - quic._remote_max_data_used,
                stream.max_stream_data_remote,
            )
            next_offset = sender.next_offset
            stream_id = stream.stream_id
            overhead = 3 + _varint_size(stream_id)
            if next_offset:
                overhead += _varint_size(next_offset)
            frame = sender.get_frame(capacity - position - tag_size - overhead, max_offset)
            if frame is None:
                continue
            # start_frame cannot refuse here: get_frame left room for the
            # header (overhead >= the 2 bytes an empty packet must reserve)
            data = frame.data
            offset = frame.offset
            frame_type = _STREAM_WITH_LENGTH
            if offset:
                frame_type |= _STREAM_OFF
            if frame.fin:
                frame_type |= _STREAM_FIN
            header = (
                bytes((frame_type,))
                + _varint(stream_id)
                + (_varint(offset) if offset else b"")
                + (len(data) | 0x4000).to_bytes(2, "big")
            )
            parts.append(header)
            parts.append(data)
            position += len(header) + len(data)
            handlers.append((sender.on_data_delivery, (offset, offset + len(data), frame.fin)))
            used = sender.highest_offset - highest
            quic._remote_max_data_used += used
            if used > 0:
                sent.append(stream)

        # the new service order, served streams at the end (as aioquic's set);
        # with none served, or a single stream, the order stays as it is
        if sent and len(quic._streams_queue) > 1:
            served = set(sent)
            queue = [stream for stream in quic._streams_queue if stream not in served]
            queue.extend(served)
            quic._streams_queue = queue

        if position == header_size:
            break  # nothing to send (window, flow control, or no data)

        # _end_packet: pad for the header-protection sample, then encrypt
        padding = _MIN_PAYLOAD + header_size - position
        if padding > 0:
            parts.append(bytes(padding))
        plain_header = (
            bytes((first_byte_base | (crypto.key_phase << 2),))
            + peer_cid
            + (packet_number & 0xFFFF).to_bytes(2, "big")
        )
        datagram = crypto.encrypt_packet(plain_header, b"".join(parts), packet_number)
        packets.append(
            QuicSentPacket(
                epoch=_ONE_RTT,
                in_flight=True,
                is_ack_eliciting=True,
                is_crypto_packet=False,
                packet_number=packet_number,
                packet_type=_ONE_RTT_PACKET,
                sent_bytes=len(datagram),
                delivery_handlers=handlers,
            )
        )
        datagrams.append(datagram)
        flight_bytes += len(datagram)
        packet_number += 1
        pacer.update_after_send(now=now)

    # -- _flush_builder -----------------------------------------------------
    if not datagrams:
        return []
    quic._packet_number = packet_number
    space = quic._spaces[_ONE_RTT]
    for packet in packets:
        packet.sent_time = now
        loss.on_packet_sent(packet=packet, space=space)
        if not quic._ack_eliciting_sent_since_receipt:
            quic._close_at = now + quic._idle_timeout()
            quic._ack_eliciting_sent_since_receipt = True
    network_path = quic._network_paths[0]
    addr = network_path.addr
    network_path.bytes_sent += flight_bytes  # every datagram is one packet in flight
    return [(datagram, addr) for datagram in datagrams]
