"""Ticket codec: round trips, and every kind of damage is refused cleanly."""

from __future__ import annotations

import base64
import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcp.core.errors import P2pcpError, TicketError
from p2pcp.core.ticket import MAX_ADDRESSES, Ticket, decode_ticket, encode_ticket

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
addresses = st.lists(
    st.tuples(st.one_of(ipv4, ipv6), st.integers(1, 65535)), max_size=MAX_ADDRESSES
).map(tuple)
tickets = st.builds(
    Ticket,
    node_id=st.binary(min_size=32, max_size=32),
    relay_url=st.one_of(st.none(), st.text(min_size=1, max_size=60)),
    addresses=addresses,
    root_hash=st.binary(min_size=32, max_size=32),
    total_size=st.integers(0, 2**63 - 1),
)

SAMPLE = Ticket(
    node_id=bytes(range(32)),
    relay_url=None,
    addresses=(("127.0.0.1", 4433), ("::1", 4433), ("198.18.0.7", 50000)),
    root_hash=bytes(range(32, 64)),
    total_size=1_234_567,
)


@given(tickets)
def test_round_trip(ticket: Ticket) -> None:
    text = encode_ticket(ticket)
    assert text.startswith("p2pcp")
    assert text == text.lower()
    assert decode_ticket(text) == ticket


def test_pasted_with_whitespace_and_upper_case() -> None:
    text = encode_ticket(SAMPLE)
    mangled = "  " + text[:40].upper() + "\n" + text[40:90] + " " + text[90:] + "\n"
    assert decode_ticket(mangled) == SAMPLE


def test_every_truncation_is_refused() -> None:
    text = encode_ticket(SAMPLE)
    for cut in range(len(text)):
        with pytest.raises(TicketError):
            decode_ticket(text[:cut])


@pytest.mark.parametrize("extra", ["a", "aa", "q", "7", "aaaaaaaa", "0"])
def test_extended_ticket_is_refused(extra: str) -> None:
    with pytest.raises(TicketError):
        decode_ticket(encode_ticket(SAMPLE) + extra)


def test_every_single_character_typo_is_refused() -> None:
    text = encode_ticket(SAMPLE)
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    refused = 0
    for pos in range(len("p2pcp"), len(text)):
        for replacement in "a7q":
            if replacement == text[pos]:
                continue
            typo = text[:pos] + replacement + text[pos + 1 :]
            assert all(c in alphabet for c in typo[5:])
            try:
                decoded = decode_ticket(typo)
            except TicketError:
                refused += 1
                continue
            # Only a change in the unused low bits of the last character can
            # decode to the very same ticket; it never yields a different one.
            assert decoded == SAMPLE
            assert pos == len(text) - 1
    assert refused > 2 * (len(text) - 6)


def test_wrong_prefix_and_alphabet() -> None:
    text = encode_ticket(SAMPLE)
    with pytest.raises(TicketError, match="start with"):
        decode_ticket("sendme" + text[5:])
    with pytest.raises(TicketError, match="base32"):
        decode_ticket(text[:20] + "1" + text[21:])
    with pytest.raises(TicketError):
        decode_ticket("")


def test_unknown_version_says_update() -> None:
    import blake3

    record = b"\x03" + bytes(70)  # 2 is the text and stream tickets' version
    checksum = blake3.blake3(b"p2pcp ticket v1" + record).digest()[:4]
    body = base64.b32encode(record + checksum).decode().rstrip("=").lower()
    with pytest.raises(TicketError, match="version 3"):
        decode_ticket("p2pcp" + body)


def test_encode_refuses_bad_fields() -> None:
    with pytest.raises(TicketError):
        encode_ticket(Ticket(b"x", None, (), bytes(32), 0))
    with pytest.raises(TicketError):
        encode_ticket(Ticket(bytes(32), None, (("example.com", 1),), bytes(32), 0))
    with pytest.raises(TicketError):
        encode_ticket(Ticket(bytes(32), None, (("127.0.0.1", 0),), bytes(32), 0))


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_hostile_text_only_raises_ticket_errors(text: str) -> None:
    with contextlib.suppress(TicketError):  # anything else fails the test
        decode_ticket(text)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_hostile_records_with_valid_checksums_only_raise_ticket_errors(record: bytes) -> None:
    import blake3

    checksum = blake3.blake3(b"p2pcp ticket v1" + record).digest()[:4]
    body = base64.b32encode(record + checksum).decode().rstrip("=").lower()
    try:
        decode_ticket("p2pcp" + body)
    except P2pcpError as exc:
        assert isinstance(exc, TicketError)
