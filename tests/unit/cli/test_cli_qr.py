"""send --qr: the drawing is the QR matrix of the text, in half blocks only."""

from __future__ import annotations

import segno

from p2pcp.cli.qr import QR_CHARACTERS, qr_drawing, qr_payload
from p2pcp.core.ticket import MAX_ADDRESSES, Ticket, decode_ticket, encode_ticket

# Half blocks, top and bottom module (1: drawn, a light module).
_HALVES = {" ": (0, 0), "\u2580": (1, 0), "\u2584": (0, 1), "\u2588": (1, 1)}


def _long_ticket() -> str:
    """As long as a ticket gets: a relay and the most addresses, half IPv6."""
    addresses = tuple(
        (f"2001:db8::{i}", 40000 + i) if i % 2 else (f"192.0.2.{i}", 40000 + i)
        for i in range(MAX_ADDRESSES)
    )
    return encode_ticket(
        Ticket(
            node_id=bytes(range(32)),
            relay_url="https://relay.example.net:3340",
            addresses=addresses,
            root_hash=bytes(range(32, 64)),
            total_size=123_456_789,
        )
    )


def _modules(drawing: str) -> list[list[int]]:
    """The drawing back as rows of modules (1 light, 0 dark)."""
    rows: list[list[int]] = []
    for line in drawing.splitlines():
        pairs = [_HALVES[char] for char in line]
        rows.append([top for top, _bottom in pairs])
        rows.append([bottom for _top, bottom in pairs])
    return rows


def test_a_long_ticket_becomes_the_qr_matrix_of_its_text() -> None:
    ticket = _long_ticket()
    assert len(ticket) > 300
    drawing = qr_drawing(ticket)
    assert set(drawing) <= QR_CHARACTERS
    assert all(char.isprintable() for char in drawing.replace("\n", ""))
    lines = drawing.splitlines()
    assert len({len(line) for line in lines}) == 1
    # The same modules as segno's matrix of the payload, quiet zone of 4
    # included (light drawn, so a dark module is 0); an odd last row is
    # padded with undrawn (background) halves.
    expected = segno.make(qr_payload(ticket), micro=False)
    matrix = [[1 - bit for bit in row] for row in expected.matrix_iter(border=4)]
    drawn = _modules(drawing)
    assert drawn[: len(matrix)] == matrix
    assert len(drawn) - len(matrix) <= 1
    assert all(not any(row) for row in drawn[len(matrix) :])
    assert len(lines[0]) <= 80  # fits a standard terminal


def test_payload_is_upper_case_when_that_is_alphanumeric() -> None:
    ticket = _long_ticket()
    payload = qr_payload(ticket)
    assert payload == ticket.upper() and decode_ticket(payload) == decode_ticket(ticket)
    assert qr_payload("7-crossbow-puzzle") == "7-CROSSBOW-PUZZLE"
    assert qr_payload("hello, world") == "hello, world"  # "," is not alphanumeric
    smaller = segno.make(payload, micro=False).version
    assert smaller < segno.make(ticket, micro=False, mode="byte").version
