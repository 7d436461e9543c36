"""The QUIC configuration every p2pcp connection uses.

What this module owns:

- ``client_configuration`` / ``server_configuration`` /
  ``sole_client_configuration``: aioquic ``QuicConfiguration`` objects with
  p2pcp's settings: ALPN ``p2pcp/1``, receive windows, idle timeout,
  connection id lengths, the congestion controller, and the node's
  certificate (identity.py).
- The congestion controllers a user may choose: ``CONGESTION_CONTROLLERS``
  maps their names to aioquic's registry, where building a configuration
  first registers ours (congestion/bbr.py); ``DEFAULT_CONGESTION``.

Invariants:

- Every configuration starts at the smallest datagram size; the connection
  raises it once probes prove more (pmtu/sizer.py).
- Nothing is CA-verified (``verify_mode=CERT_NONE``): the connection pins
  the peer's certificate key instead (identity.py).
- An unknown congestion name is a UsageError, never a traceback.
"""

from __future__ import annotations

import dataclasses
import ssl

from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE, QuicConfiguration

from p2pcp.core.errors import UsageError
from p2pcp.net.congestion import bbr
from p2pcp.net.kinds import Congestion
from p2pcp.net.quic.identity import make_certificate

# The ALPN token names the wire protocol and its version; a peer speaking
# another version fails the handshake instead of misreading our frames.
ALPN = "p2pcp/1"

# Receive windows. They follow the reader (credit.py): a stream may hold at
# most MAX_STREAM_DATA_BYTES the reader has not taken, all streams together
# MAX_DATA_BYTES; that is all the memory received data can take, at any
# transfer size. They must cover the bandwidth-delay product of the paths
# p2pcp targets, or the window, not the path, sets the speed: loopback is
# ~400 MB/s x 1 ms = 0.4 MB, a 1 Gbit/s path with a 100 ms RTT (a long fat
# pipe) ~12.5 MB in flight, and one stream must fill it alone (one big
# file). Updates go every 1/8 window (credit.UPDATE_DIVISOR), so the peer
# always has >= 14 MiB of a 16 MiB stream window to send into: enough for
# that pipe. The connection window is twice that: the fetcher reads up to
# 8 streams at once, and a stream it reads later (the first file's,
# requested with the file list) may hold a full stream window while
# another must still get credit; 32 MiB keeps the receiver's peak within
# issue 17's 150 MB with room for the interpreter (~50-60 MB) and the
# writer's buffers.
MAX_STREAM_DATA_BYTES = 16 * 1024 * 1024
MAX_DATA_BYTES = 2 * MAX_STREAM_DATA_BYTES

# A connection with no packet for this long is dead. Long enough to ride out
# a brief outage or a slow disk on the other side, short enough that a user
# is not left waiting on a peer that vanished.
IDLE_TIMEOUT_S = 30.0

# The congestion controllers a user may choose (``--congestion``), by the
# name aioquic's registry knows them under. bbr is ours (bbr.py): random loss
# does not cut its rate; cubic and reno are aioquic's, loss-based.
CONGESTION_CONTROLLERS = {
    Congestion.BBR: bbr.REGISTRY_NAME,
    Congestion.CUBIC: "cubic",
    Congestion.RENO: "reno",
}

# What bench/network.py measured best on every emulated path (README).
DEFAULT_CONGESTION = Congestion.BBR

# The connection ids a client issues, which every packet to it carries: the
# client is the receiver, so these ride on every data packet, where each byte
# is 0.07% of a 1472-byte datagram. An endpoint routes datagrams by them, so:
# its one client connection (a receiver's usual case) uses zero-length ids
# (RFC 9000 5.1; it then issues no more ids: tuning.py), a client connection
# beside it 4-byte ids (a receiver holds a few at most: 2**32 keep them
# apart). A server keeps 8-byte ids: it may serve many receivers, and only
# acknowledgements carry its ids.
SOLE_CLIENT_CID_BYTES = 0
CLIENT_CID_BYTES = 4
SERVER_CID_BYTES = 8
# RFC 9000 7.2: a client's first Destination Connection ID (random, until
# the server's own replaces it) is at least 8 bytes, whatever its own ids'
# length.
INITIAL_DCID_BYTES = 8


def _base_configuration(*, is_client: bool, congestion: Congestion) -> QuicConfiguration:
    try:
        algorithm = CONGESTION_CONTROLLERS[Congestion(congestion)]
    except ValueError:
        choices = ", ".join(CONGESTION_CONTROLLERS)
        raise UsageError(
            f"unknown congestion controller {congestion!r} (choose {choices})"
        ) from None
    bbr.register()
    return QuicConfiguration(
        is_client=is_client,
        congestion_control_algorithm=algorithm,
        alpn_protocols=[ALPN],
        idle_timeout=IDLE_TIMEOUT_S,
        max_data=MAX_DATA_BYTES,
        max_stream_data=MAX_STREAM_DATA_BYTES,
        # Every connection starts at the size every path carries; the driver
        # raises it after a datagram-size probe succeeds (pmtu/sizer.py).
        max_datagram_size=SMALLEST_MAX_DATAGRAM_SIZE,
        verify_mode=ssl.CERT_NONE,
        connection_id_length=SERVER_CID_BYTES,
    )


def client_configuration(
    seed: bytes, congestion: Congestion = DEFAULT_CONGESTION
) -> QuicConfiguration:
    """Client settings. They carry our certificate too: the server asks for it
    (mutual TLS) to learn which node it serves."""
    config = _base_configuration(is_client=True, congestion=congestion)
    config.connection_id_length = CLIENT_CID_BYTES
    cert, key = make_certificate(seed)
    config.certificate = cert
    config.private_key = key
    return config


def sole_client_configuration(config: QuicConfiguration) -> QuicConfiguration:
    """``config`` for an endpoint's only client connection: zero-length ids."""
    return dataclasses.replace(config, connection_id_length=SOLE_CLIENT_CID_BYTES)


def server_configuration(
    seed: bytes, congestion: Congestion = DEFAULT_CONGESTION
) -> QuicConfiguration:
    """Server settings: our certificate. Each server connection asks the client
    for its certificate (``tuning.request_client_certificate``) but does not
    require one: a client without it is served, its key just stays unknown."""
    config = _base_configuration(is_client=False, congestion=congestion)
    cert, key = make_certificate(seed)
    config.certificate = cert
    config.private_key = key
    return config
