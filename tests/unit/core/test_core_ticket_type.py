"""A ticket's type (--ticket-type) is read from what it names; old tickets
have one too, and the flag's word is parsed with a one-line error."""

from __future__ import annotations

import pytest

from p2pcp.core.errors import UsageError
from p2pcp.core.ticket import Ticket, TicketType, decode_ticket, encode_ticket

ADDRESSES = (("192.0.2.1", 4433), ("2001:db8::1", 4433))
RELAY = "http://relay.example:3340"


def _ticket(relay_url: str | None, addresses: tuple[tuple[str, int], ...]) -> Ticket:
    return Ticket(
        node_id=bytes(32),
        relay_url=relay_url,
        addresses=addresses,
        root_hash=bytes(32),
        total_size=1,
    )


@pytest.mark.parametrize(
    ("relay_url", "addresses", "expected"),
    [
        (RELAY, ADDRESSES, TicketType.FULL),
        (RELAY, (), TicketType.RELAY),
        (None, ADDRESSES, TicketType.ADDRESSES),
        (None, (), None),
    ],
)
def test_type_follows_what_the_ticket_names(
    relay_url: str | None, addresses: tuple[tuple[str, int], ...], expected: TicketType | None
) -> None:
    decoded = decode_ticket(encode_ticket(_ticket(relay_url, addresses)))
    assert decoded.type is expected


def test_a_ticket_of_an_older_p2pcp_has_a_type() -> None:
    """No new wire field: a version 1 record made before --ticket-type
    decodes to the same ticket and its type (full here)."""
    old = encode_ticket(_ticket(RELAY, ADDRESSES))
    assert old[len("p2pcp") :].upper().startswith("AE")  # version byte 1
    assert decode_ticket(old).type is TicketType.FULL


def test_parse_reads_the_words_and_refuses_others_in_one_line() -> None:
    assert TicketType.parse("Relay") is TicketType.RELAY
    assert f"{TicketType.ADDRESSES}" == str(TicketType.ADDRESSES) == "addresses"
    with pytest.raises(UsageError) as caught:
        TicketType.parse("private")
    assert "\n" not in str(caught.value) and "full, relay, addresses" in str(caught.value)
    assert caught.value.exit_code == 2
