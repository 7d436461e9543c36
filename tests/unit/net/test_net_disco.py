"""Disco codec and box: round trips, tampering, hostile bytes (no sockets)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pcp.core.errors import RemoteProtocolError
from p2pcp.core.identity import SecretKey
from p2pcp.net.paths.disco import (
    HEADER_BYTES,
    MAX_CALL_ME_MAYBE_ADDRESSES,
    CallMeMaybe,
    DiscoBox,
    Ping,
    Pong,
    decode_message,
    encode_message,
    is_disco_packet,
    new_tx_id,
)
from p2pcp.net.pmtu.probe import is_control_packet

ALICE = SecretKey(bytes(range(32)))
BOB = SecretKey(bytes(range(1, 33)))
MALLORY = SecretKey(bytes(range(2, 34)))

MESSAGES = [
    Ping(b"\x01" * 12),
    Pong(b"\x02" * 12, ("198.18.0.5", 4433)),
    Pong(b"\x03" * 12, ("2001:db8::1", 65535)),
    CallMeMaybe(()),
    CallMeMaybe((("10.0.0.2", 1), ("::1", 2), ("198.18.0.9", 3340))),
]


@pytest.mark.parametrize("message", MESSAGES, ids=repr)
def test_seal_open_round_trip(message: Ping | Pong | CallMeMaybe) -> None:
    packet = DiscoBox(ALICE).seal(BOB.public, message)
    assert is_disco_packet(packet)
    assert is_control_packet(packet)  # QUIC fixed bit clear: never mistaken for QUIC
    sender, opened = DiscoBox(BOB).open(packet)
    assert sender == ALICE.public
    assert opened == message


def test_packet_starts_with_prefix_version_and_sender_in_clear() -> None:
    packet = DiscoBox(ALICE).seal(BOB.public, Ping(new_tx_id()))
    assert packet[:8] == b"\x00p2pcp\x03\x01"
    assert packet[8:HEADER_BYTES] == bytes(ALICE.public)
    assert packet[0] & 0x40 == 0


def test_only_the_addressee_can_open() -> None:
    packet = DiscoBox(ALICE).seal(BOB.public, Ping(new_tx_id()))
    with pytest.raises(RemoteProtocolError):
        DiscoBox(MALLORY).open(packet)


def test_forged_sender_does_not_open() -> None:
    """Mallory boxes for Bob but writes Alice's id in the header."""
    packet = bytearray(DiscoBox(MALLORY).seal(BOB.public, Ping(new_tx_id())))
    packet[8:HEADER_BYTES] = bytes(ALICE.public)
    with pytest.raises(RemoteProtocolError):
        DiscoBox(BOB).open(bytes(packet))


def test_every_single_byte_change_is_refused() -> None:
    packet = DiscoBox(ALICE).seal(BOB.public, Pong(new_tx_id(), ("127.0.0.1", 9)))
    bob = DiscoBox(BOB)
    for index in range(len(packet)):
        tampered = bytearray(packet)
        tampered[index] ^= 0x01
        with pytest.raises(RemoteProtocolError):
            bob.open(bytes(tampered))


def test_truncations_are_refused() -> None:
    packet = DiscoBox(ALICE).seal(BOB.public, CallMeMaybe((("10.0.0.1", 5),)))
    bob = DiscoBox(BOB)
    for end in range(len(packet)):
        with pytest.raises(RemoteProtocolError):
            bob.open(packet[:end])


def test_unknown_version_is_refused_with_update_hint() -> None:
    packet = bytearray(DiscoBox(ALICE).seal(BOB.public, Ping(new_tx_id())))
    packet[7] = 2
    with pytest.raises(RemoteProtocolError, match="update p2pcp"):
        DiscoBox(BOB).open(bytes(packet))


def test_call_me_maybe_limit() -> None:
    many = tuple(("10.0.0.1", port) for port in range(MAX_CALL_ME_MAYBE_ADDRESSES + 1))
    with pytest.raises(ValueError):
        encode_message(CallMeMaybe(many))
    plain = bytearray(encode_message(CallMeMaybe(many[:MAX_CALL_ME_MAYBE_ADDRESSES])))
    plain[1] = MAX_CALL_ME_MAYBE_ADDRESSES + 1
    with pytest.raises(RemoteProtocolError):
        decode_message(bytes(plain))


def test_trailing_bytes_are_refused() -> None:
    for message in MESSAGES:
        with pytest.raises(RemoteProtocolError):
            decode_message(encode_message(message) + b"\x00")


@given(st.binary(max_size=200))
def test_hostile_plaintext_only_raises_our_error(data: bytes) -> None:
    try:
        message = decode_message(data)
    except RemoteProtocolError:
        return
    assert encode_message(message) == data


@given(st.binary(max_size=300))
def test_hostile_packets_only_raise_our_error(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        DiscoBox(BOB).open(b"\x00p2pcp\x03\x01" + data)


def test_invalid_sender_key_is_our_error() -> None:
    # Not a point on the curve: conversion to Curve25519 fails.
    packet = b"\x00p2pcp\x03\x01" + b"\xff" * 32 + bytes(24 + 16 + 13)
    with pytest.raises(RemoteProtocolError):
        DiscoBox(BOB).open(packet)
