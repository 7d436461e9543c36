"""TLS identity for QUIC: the node's Ed25519 key is its certificate key.

What this module owns:

- ``make_certificate(seed)``: a self-signed X.509 certificate whose subject
  public key is the node's Ed25519 key (aioquic then negotiates the ed25519
  signature scheme and proves possession of the key in CertificateVerify).
- ``certificate_node_key(cert)`` / ``check_peer_certificate(cert, expected)``:
  identity pinning. A peer is who its certificate key says, never a CA: the
  client refuses a server whose certificate key is not the node id it dialled.
- ``client_configuration`` / ``server_configuration``: the QUIC settings every
  p2pcp connection uses (ALPN ``p2pcp/1``, windows, idle timeout, congestion
  controller: ``CONGESTION_CONTROLLERS`` maps the names users choose to
  aioquic's registry, where the configuration first registers ours).

Invariants:

- Nothing here is CA-verified (``verify_mode=CERT_NONE``); aioquic still checks
  the CertificateVerify signature against the certificate key, so a peer that
  presents a certificate with key K has proved it holds K's secret half. The
  caller must therefore check ``certificate_node_key == expected node id``
  before it trusts anything from the connection (``check_peer_certificate``).
- No secret key material ever appears in an error message.
"""

from __future__ import annotations

import dataclasses
import datetime
import ssl

from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE, QuicConfiguration
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.x509.oid import NameOID

from p2pcp.core.errors import PeerIdentityError, UsageError
from p2pcp.net.congestion import bbr
from p2pcp.net.kinds import Congestion

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

# The certificate is self-signed and only its key matters; a long validity
# keeps clock skew between peers from ever mattering.
_CERT_VALIDITY = datetime.timedelta(days=3650)
_CERT_BACKDATE = datetime.timedelta(days=1)


def private_key_from_seed(seed: bytes) -> Ed25519PrivateKey:
    """The cryptography Ed25519 key of a 32-byte seed (the same key pynacl derives)."""
    return Ed25519PrivateKey.from_private_bytes(seed)


def make_certificate(seed: bytes) -> tuple[x509.Certificate, Ed25519PrivateKey]:
    """A self-signed certificate for the node whose Ed25519 seed is ``seed``."""
    key = private_key_from_seed(seed)
    public_raw = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "p2pcp-" + public_raw.hex()[:20])])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CERT_BACKDATE)
        .not_valid_after(now + _CERT_VALIDITY)
        .sign(key, algorithm=None)
    )
    return cert, key


def certificate_node_key(cert: x509.Certificate | None) -> bytes | None:
    """The raw 32-byte Ed25519 key of ``cert``, or None if it has no such key."""
    if cert is None:
        return None
    public = cert.public_key()
    if not isinstance(public, Ed25519PublicKey):
        return None
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def check_peer_certificate(
    cert: x509.Certificate | None, expected_node_id: bytes, *, peer_name: str
) -> None:
    """Raise PeerIdentityError unless ``cert``'s key is ``expected_node_id``.

    ``peer_name`` is how the message names the peer (its short node id).
    """
    key = certificate_node_key(cert)
    if key is None:
        raise PeerIdentityError(f"peer {peer_name} presented no Ed25519 certificate key")
    if key != expected_node_id:
        raise PeerIdentityError(
            f"the peer is not {peer_name}: it holds key {key.hex()[:16]}... "
            "(a stale ticket, or another node at that address); refusing it"
        )


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


def _base_configuration(*, is_client: bool, congestion: str) -> QuicConfiguration:
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
        # raises it after a datagram-size probe succeeds (probe.py).
        max_datagram_size=SMALLEST_MAX_DATAGRAM_SIZE,
        verify_mode=ssl.CERT_NONE,
        connection_id_length=SERVER_CID_BYTES,
    )


def client_configuration(seed: bytes, congestion: str = DEFAULT_CONGESTION) -> QuicConfiguration:
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


def server_configuration(seed: bytes, congestion: str = DEFAULT_CONGESTION) -> QuicConfiguration:
    """Server settings: our certificate. Each server connection asks the client
    for its certificate (``tuning.request_client_certificate``) but does not
    require one: a client without it is served, its key just stays unknown."""
    config = _base_configuration(is_client=False, congestion=congestion)
    cert, key = make_certificate(seed)
    config.certificate = cert
    config.private_key = key
    return config
