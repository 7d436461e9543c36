"""Node identity in TLS: the certificate carries the node key; pinning refuses others."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from nacl.signing import SigningKey

from p2pcp.core.errors import PeerIdentityError
from p2pcp.net.quic.identity import (
    certificate_node_key,
    check_peer_certificate,
    make_certificate,
)

SEED_A = bytes(range(32))
SEED_B = bytes(range(1, 33))


def node_id(seed: bytes) -> bytes:
    return bytes(SigningKey(seed).verify_key)


def test_certificate_key_is_the_node_id() -> None:
    cert, key = make_certificate(SEED_A)
    assert isinstance(cert.public_key(), Ed25519PublicKey)
    assert certificate_node_key(cert) == node_id(SEED_A)
    assert certificate_node_key(None) is None
    signature = key.sign(b"hello")
    SigningKey(SEED_A).verify_key.verify(b"hello", signature)


def test_pinning_accepts_the_expected_key() -> None:
    cert, _ = make_certificate(SEED_A)
    check_peer_certificate(cert, node_id(SEED_A), peer_name="aaaa")


def test_pinning_refuses_another_key() -> None:
    cert, _ = make_certificate(SEED_B)
    with pytest.raises(PeerIdentityError) as info:
        check_peer_certificate(cert, node_id(SEED_A), peer_name="aaaa")
    assert "aaaa" in str(info.value)
    assert info.value.exit_code == 4


def test_pinning_refuses_no_certificate() -> None:
    with pytest.raises(PeerIdentityError):
        check_peer_certificate(None, node_id(SEED_A), peer_name="aaaa")
