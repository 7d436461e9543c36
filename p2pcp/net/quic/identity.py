"""Node identity in QUIC's TLS: the node's Ed25519 key is its certificate key.

What this module owns:

- ``make_certificate(seed)``: a self-signed X.509 certificate whose subject
  public key is the node's Ed25519 key (aioquic then negotiates the ed25519
  signature scheme and proves possession of the key in CertificateVerify).
- ``certificate_node_key(cert)`` / ``check_peer_certificate(cert, expected)``:
  identity pinning. A peer is who its certificate key says, never a CA: the
  client refuses a server whose certificate key is not the node id it dialled.

Invariants:

- Nothing is CA-verified (configuration.py sets ``verify_mode=CERT_NONE``);
  aioquic still checks the CertificateVerify signature against the
  certificate key, so a peer that presents a certificate with key K has
  proved it holds K's secret half. The caller must therefore check
  ``certificate_node_key == expected node id`` before it trusts anything
  from the connection (``check_peer_certificate``).
- No secret key material ever appears in an error message.
"""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.x509.oid import NameOID

from p2pcp.core.errors import PeerIdentityError

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
