"""STUN codec: RFC 5769 test vectors, round trips, hostile bytes, the demux helper."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pcp.core.errors import RemoteProtocolError
from p2pcp.relay import stun
from p2pcp.relay.stun import StunError

# RFC 5769 section 2.2: IPv4 response (with SOFTWARE and MESSAGE-INTEGRITY,
# which a binding client skips).
RFC5769_IPV4_RESPONSE = bytes.fromhex(
    "0101003c2112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000080001a147e112a643"
    "000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7"
    "80280004c07d4c96"
)
# Section 2.3: the same over IPv6.
RFC5769_IPV6_RESPONSE = bytes.fromhex(
    "010100482112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9"
    "00080014a382954e4be67bf11784c97c8292c275bfe3ed41"
    "80280004c8fb0b4c"
)
TRANSACTION_ID = bytes.fromhex("b7e7a701bc34d686fa87dfae")

addresses = st.tuples(
    st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str), st.integers(0, 65535)
)


def test_rfc5769_vectors() -> None:
    ipv4 = stun.decode_binding_response(RFC5769_IPV4_RESPONSE)
    assert ipv4 == stun.BindingResponse(TRANSACTION_ID, ("192.0.2.1", 32853))
    ipv6 = stun.decode_binding_response(RFC5769_IPV6_RESPONSE)
    assert ipv6.address == ("2001:db8:1234:5678:11:2233:4455:6677", 32853)
    damaged = bytearray(RFC5769_IPV4_RESPONSE)
    damaged[30] ^= 1  # inside SOFTWARE: only the fingerprint notices
    with pytest.raises(StunError):
        stun.decode_binding_response(bytes(damaged))


@given(st.binary(min_size=12, max_size=12), addresses)
def test_response_round_trip(transaction_id: bytes, address: tuple[str, int]) -> None:
    data = stun.encode_binding_response(transaction_id, address)
    address = stun.unmap_address(address)  # IPv4-mapped IPv6 goes out as IPv4
    assert stun.is_stun_packet(data)
    assert stun.decode_binding_response(data) == stun.BindingResponse(transaction_id, address)
    decoded = stun.decode_binding_response(data)
    assert stun.encode_binding_response(decoded.transaction_id, decoded.address) == data


@given(st.binary(min_size=12, max_size=12))
def test_request_round_trip(transaction_id: bytes) -> None:
    data = stun.encode_binding_request(transaction_id)
    assert stun.is_stun_packet(data)
    assert stun.decode_binding_request(data) == transaction_id
    assert stun.encode_binding_request(stun.decode_binding_request(data)) == data
    with pytest.raises(StunError):
        stun.decode_binding_response(data)


@given(st.binary(max_size=120))
def test_hostile_bytes_raise_only_stun_errors(data: bytes) -> None:
    for decode in (stun.decode_binding_request, stun.decode_binding_response):
        with contextlib.suppress(StunError):
            decode(data)


@given(st.binary(min_size=12, max_size=12), addresses, st.data())
def test_damaged_responses_are_refused_or_still_valid(
    transaction_id: bytes, address: tuple[str, int], data: st.DataObject
) -> None:
    encoded = bytearray(stun.encode_binding_response(transaction_id, address))
    address = stun.unmap_address(address)
    index = data.draw(st.integers(0, len(encoded) - 1))
    encoded[index] ^= data.draw(st.integers(1, 255))
    try:
        decoded = stun.decode_binding_response(bytes(encoded))
    except StunError:
        return
    # Only damage the decoder may ignore (the fingerprint's own type, which
    # turns it into an unknown attribute) gets through, and changes nothing.
    assert decoded == stun.BindingResponse(transaction_id, address)


def test_mapped_ipv4_is_reported_as_ipv4() -> None:
    data = stun.encode_binding_response(TRANSACTION_ID, ("::ffff:192.0.2.7", 4000))
    assert stun.decode_binding_response(data).address == ("192.0.2.7", 4000)


def test_demux_tells_stun_from_quic_and_probes() -> None:
    request = stun.encode_binding_request(TRANSACTION_ID)
    assert stun.is_stun_packet(request)
    quic_long_header = bytes([0xC3]) + request[1:]
    assert not stun.is_stun_packet(quic_long_header)
    assert not stun.is_stun_packet(b"\x00p2pcp" + bytes(40))
    assert not stun.is_stun_packet(request[:-1])
    assert not stun.is_stun_packet(b"")


def test_stun_error_is_a_remote_error() -> None:
    assert issubclass(StunError, RemoteProtocolError)
