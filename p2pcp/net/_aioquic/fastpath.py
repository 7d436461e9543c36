"""A faster ``QuicConnection.receive_datagram`` for the packets that carry a transfer.

Why: a receiver's CPU goes mostly to aioquic's per-packet Python work, and on
a busy 2-core machine a receiver that falls behind stalls the sender (its
socket queue fills and packets are dropped).
aioquic's ``receive_datagram`` is written for every kind of datagram: it
parses a generic header into an object, copies the packet out, walks the
connection's ids and paths, looks up its keys by epoch and builds a context
for each packet. Nearly every datagram of a transfer is the same case: one
short-header (1-RTT) packet, from the connection's current address, to its
current id, on an established connection without a qlog.

``receive(quic, data, addr, now)`` handles exactly that case with the same
steps and the same state changes as aioquic 1.7.2's ``receive_datagram``
(and the same ``_payload_received`` for the frames), and hands every other
datagram to ``quic.receive_datagram`` untouched. It decides before it changes
anything: a packet it cannot decrypt (the only check after the first state
change) has changed nothing, and aioquic then drops it its own way.

It follows aioquic 1.7 (``FOLLOWS_AIOQUIC``; pyproject.toml admits older
ones too): ``is_supported`` checks the version and the private attributes
on a connection, and any other keeps aioquic's own path (slower, never
wrong).
tuning.py holds the other touches of aioquic's internals.
"""

from __future__ import annotations

from typing import Any

import aioquic
from aioquic._crypto import CryptoError
from aioquic.quic import recovery
from aioquic.quic.connection import (
    END_STATES,
    QuicConnection,
    QuicConnectionError,
    QuicConnectionState,
    QuicReceiveContext,
)
from aioquic.quic.crypto import KeyUnavailableError
from aioquic.quic.packet import QuicErrorCode, QuicFrameType
from aioquic.tls import Epoch

# The aioquic whose receive_datagram the fast path follows step by step; any
# other keeps aioquic's own path (its steps may differ).
FOLLOWS_AIOQUIC = "1.7."
_MAX_ACK_RANGES: int | None = getattr(recovery, "MAX_ACK_RANGES", None)

_CONNECTED = QuicConnectionState.CONNECTED
_ONE_RTT = Epoch.ONE_RTT
_ZERO_RTT = Epoch.ZERO_RTT
# first byte of a short header: header form 0, fixed bit 1
_FORM_AND_FIXED = 0xC0
_SHORT_FIXED = 0x40
_RESERVED_SHORT = 0x18
_SPIN = 0x20

_ATTRIBUTES = (
    "_state", "_quic_logger", "_close_pending", "_network_paths", "_configuration",
    "_peer_cid", "_cryptos", "_spaces", "_is_client", "_spin_highest_pn", "_spin_bit",
    "_payload_received", "_close_at", "_idle_timeout", "_ack_eliciting_sent_since_receipt",
    "_ack_delay", "_add_network_path", "_use_reserved_peer_cid", "_logger", "host_cid",
)  # fmt: skip


def follows_aioquic(quic: Any, attributes: tuple[str, ...], version: str) -> bool:
    """Whether ``quic`` is a connection of the aioquic the fast paths follow
    (fastsend.py too), with these private attributes."""
    return (
        version.startswith(FOLLOWS_AIOQUIC)
        and isinstance(quic, QuicConnection)
        and all(hasattr(quic, a) for a in attributes)
    )


def is_supported(quic: QuicConnection, version: str = aioquic.__version__) -> bool:
    """Whether ``receive`` may take its fast path on this connection."""
    return _MAX_ACK_RANGES is not None and follows_aioquic(quic, _ATTRIBUTES, version)


def receive(quic: Any, data: bytes, addr: Any, now: float) -> bool:
    """``quic.receive_datagram(data, addr, now)``; True if the fast path took it."""
    if _receive_fast(quic, data, addr, now):
        return True
    quic.receive_datagram(data, addr, now)
    return False


def _receive_fast(quic: Any, data: bytes, addr: Any, now: float) -> bool:
    # -- the case, checked before anything changes --------------------------
    if not data or data[0] & _FORM_AND_FIXED != _SHORT_FIXED:
        return False
    if quic._state is not _CONNECTED or quic._quic_logger is not None or quic._close_pending:
        return False
    if quic._close_at is None:
        return False
    paths = quic._network_paths
    if not paths:
        return False
    network_path = paths[0]
    if network_path.addr != addr or not network_path.is_validated:
        return False
    host_cid = quic.host_cid
    cid_length = len(host_cid)
    if cid_length != quic._configuration.connection_id_length:
        return False
    if cid_length and data[1 : 1 + cid_length] != host_cid:
        return False
    if quic._peer_cid.sequence_number is None:
        return False
    crypto = quic._cryptos[_ONE_RTT]
    space = quic._spaces[_ONE_RTT]
    if space.discarded:
        return False

    # -- decrypt: on failure nothing has changed, aioquic drops it ----------
    try:
        plain_header, payload, packet_number = crypto.decrypt_packet(
            data, 1 + cid_length, space.expected_packet_number
        )
    except (KeyUnavailableError, CryptoError):
        return False

    # -- aioquic's steps for this case, in its order ------------------------
    if packet_number in space.received_packets:
        return True  # a duplicate (RFC 9000 12.3)
    first_byte = plain_header[0]
    if first_byte & _RESERVED_SHORT:
        quic.close(
            error_code=QuicErrorCode.PROTOCOL_VIOLATION,
            frame_type=QuicFrameType.PADDING,
            reason_phrase="Reserved bits must be zero",
        )
        return True
    if packet_number > space.expected_packet_number:
        space.expected_packet_number = packet_number + 1
    is_client = quic._is_client
    if not is_client:
        zero_rtt = quic._cryptos[_ZERO_RTT].recv
        if zero_rtt.is_valid():
            zero_rtt.teardown()
    if packet_number > quic._spin_highest_pn:
        spin_bit = bool(first_byte & _SPIN)
        quic._spin_bit = not spin_bit if is_client else spin_bit
        quic._spin_highest_pn = packet_number

    context = QuicReceiveContext(
        epoch=_ONE_RTT,
        host_cid=host_cid,
        network_path=network_path,
        quic_logger_frames=None,
        time=now,
        version=None,
    )
    try:
        is_ack_eliciting, is_probing = quic._payload_received(context, payload)
    except QuicConnectionError as exc:
        quic._logger.warning(exc)
        quic.close(
            error_code=exc.error_code,
            frame_type=exc.frame_type,
            reason_phrase=exc.reason_phrase,
        )
    if quic._state in END_STATES or quic._close_pending:
        return True

    quic._close_at = now + quic._idle_timeout()
    quic._ack_eliciting_sent_since_receipt = False

    # The frames may have moved the connection (a retired id, a new path):
    # then aioquic's own rules for the rest, which the checks above made moot
    # for the packet as it arrived.
    if not is_client and not is_probing and host_cid != quic.host_cid:
        quic.host_cid = host_cid
        if network_path.peer_cid is None:
            quic.change_connection_id()
    paths = quic._network_paths
    if not paths or paths[0] is not network_path:
        if network_path not in paths:
            quic._add_network_path(network_path)
        index = paths.index(network_path)
        if (
            not is_client
            and index
            and not is_probing
            and packet_number > space.largest_received_packet
        ):
            paths.pop(index)
            paths.insert(0, network_path)
            if network_path.peer_cid is not None:
                quic._use_reserved_peer_cid(network_path)

    if not space.discarded:
        if packet_number > space.largest_received_packet:
            space.largest_received_packet = packet_number
            space.largest_received_time = now
        space.ack_queue.add(packet_number)
        space.received_packets.add(packet_number)
        if _MAX_ACK_RANGES is not None and len(space.ack_queue) > _MAX_ACK_RANGES:
            space.ack_queue.shift()
        if is_ack_eliciting and space.ack_at is None:
            space.ack_at = now + quic._ack_delay
    return True
