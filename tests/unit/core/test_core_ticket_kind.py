"""Ticket kinds: a file ticket is still record version 1 (older receivers
read it); text and stream tickets are version 2 with a kind byte."""

from __future__ import annotations

import base64
import dataclasses

import pytest

from p2pcp.core.errors import TicketError
from p2pcp.core.ticket import Ticket, TicketKind, decode_ticket, encode_ticket

FILES = Ticket(bytes(range(32)), None, (("127.0.0.1", 4433),), bytes(range(32, 64)), 5)


def _record(text: str) -> bytes:
    payload = text[len("p2pcp") :].upper()
    return base64.b32decode(payload + "=" * (-len(payload) % 8))[:-4]


def test_a_files_ticket_is_version_1() -> None:
    text = encode_ticket(FILES)
    assert _record(text)[0] == 1
    assert decode_ticket(text).kind is TicketKind.FILES


@pytest.mark.parametrize("kind", [TicketKind.TEXT, TicketKind.STREAM])
def test_text_and_stream_tickets_round_trip_as_version_2(kind: TicketKind) -> None:
    ticket = dataclasses.replace(FILES, kind=kind)
    text = encode_ticket(ticket)
    assert _record(text)[:2] == bytes([2, kind.value])
    assert decode_ticket(text) == ticket


def test_an_unknown_kind_says_update() -> None:
    from p2pcp.core import ticket as codec

    record = bytes([2, 9]) + _record(encode_ticket(FILES))[1:]
    text = "p2pcp" + base64.b32encode(record + codec._checksum(record)).decode().rstrip("=")
    with pytest.raises(TicketError, match="update p2pcp"):
        decode_ticket(text.lower())
