"""The code exchange (rendezvous/exchange.py): two sides in memory, no sockets.

A run delivers each side's outgoing messages to the other, in order, until
neither has anything left to say; ``tamper`` may rewrite any message on the
way (as a hostile relay or LAN host could).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcp.core.errors import LocalProtocolError
from p2pcp.rendezvous.codes import Code, parse_code
from p2pcp.rendezvous.exchange import (
    PHASE_BAD,
    PHASE_CONFIRM,
    PHASE_PAKE,
    PHASE_TICKET,
    CodeExchange,
    ExchangeEvent,
    ReceiverConfirmed,
    TicketOpened,
    WrongCode,
)

TICKET = "p2pcp" + "a" * 200
CODE = parse_code("7-crossbow-puzzle")
# (from the sender?, index of the message in its direction, message) -> message
Tamper = Callable[[bool, int, bytes], bytes]


def run(
    sender_code: Code, receiver_code: Code, tamper: Tamper | None = None
) -> tuple[CodeExchange, CodeExchange, list[ExchangeEvent], list[ExchangeEvent]]:
    sender = CodeExchange(sender_code, is_sender=True, payload=TICKET.encode())
    receiver = CodeExchange(receiver_code, is_sender=False)
    sender_events: list[ExchangeEvent] = []
    receiver_events: list[ExchangeEvent] = []
    sent = {True: 0, False: 0}
    for _ in range(10):
        moved = False
        for source, target, events in (
            (sender, receiver, receiver_events),
            (receiver, sender, sender_events),
        ):
            for original in source.outgoing():
                moved = True
                message = original
                if tamper is not None:
                    message = tamper(source.is_sender, sent[source.is_sender], original)
                sent[source.is_sender] += 1
                target.receive(message)
                while (event := target.next_event()) is not None:
                    events.append(event)
        if not moved:
            break
    return sender, receiver, sender_events, receiver_events


def test_the_same_code_opens_the_ticket_and_confirms_with_equal_verifiers() -> None:
    sender, receiver, sender_events, receiver_events = run(CODE, CODE)
    assert receiver_events == [TicketOpened(TICKET)]
    assert sender_events == [ReceiverConfirmed()]
    assert sender.verifier is not None and sender.verifier == receiver.verifier
    assert sender.is_finished and receiver.is_finished


def test_verifiers_differ_between_runs() -> None:
    first, _, _, _ = run(CODE, CODE)
    second, _, _, _ = run(CODE, CODE)
    assert first.verifier != second.verifier


@pytest.mark.parametrize(
    "other",
    ["7-crossbow-pebble", "8-crossbow-puzzle", "7-puzzle-crossbow", "7-crossbow-puzzle-apple"],
)
def test_a_wrong_code_is_wrong_on_both_sides_and_never_gives_the_ticket(other: str) -> None:
    sender, receiver, sender_events, receiver_events = run(CODE, parse_code(other))
    assert len(receiver_events) == 1 and isinstance(receiver_events[0], WrongCode)
    assert len(sender_events) == 1 and isinstance(sender_events[0], WrongCode)
    assert receiver.verifier is None and sender.verifier is None


def _flip(position: int) -> Callable[[bytes], bytes]:
    def flip(message: bytes) -> bytes:
        data = bytearray(message)
        data[position % len(data)] ^= 0x01
        return bytes(data)

    return flip


def _check_never_another_ticket(receiver_events: list[ExchangeEvent]) -> None:
    """The receiver either has the sender's very ticket or a failure."""
    assert len(receiver_events) == 1
    event = receiver_events[0]
    assert isinstance(event, (TicketOpened, WrongCode))
    if isinstance(event, TicketOpened):
        assert event.ticket_text == TICKET


@pytest.mark.parametrize("from_sender", [True, False])
@pytest.mark.parametrize("index", [0, 1])
def test_every_flipped_byte_fails_the_exchange(from_sender: bool, index: int) -> None:
    """Any single flipped bit in any message from either side (bar the
    receiver's confirmation, which comes after its ticket opened)."""
    lengths = {(True, 0): 34, (False, 0): 34, (True, 1): 1 + 24 + 16 + len(TICKET)}
    if (from_sender, index) not in lengths:
        return  # the receiver's second message is its confirmation: see below
    for position in range(lengths[(from_sender, index)]):
        flip = _flip(position)

        def tamper(is_sender: bool, number: int, message: bytes, flip=flip) -> bytes:
            return flip(message) if (is_sender, number) == (from_sender, index) else message

        _, _, sender_events, receiver_events = run(CODE, CODE, tamper)
        assert receiver_events, position
        assert isinstance(receiver_events[0], WrongCode), position
        assert sender_events and isinstance(sender_events[0], WrongCode), position


def test_a_flipped_confirmation_leaves_the_ticket_opened_but_the_sender_warned() -> None:
    """The receiver has the real ticket; the sender, whose confirmation was
    altered, does not count the code as used and says so."""

    def tamper(is_sender: bool, number: int, message: bytes) -> bytes:
        return _flip(10)(message) if (is_sender, number) == (False, 1) else message

    _, _, sender_events, receiver_events = run(CODE, CODE, tamper)
    assert receiver_events == [TicketOpened(TICKET)]
    assert len(sender_events) == 1 and isinstance(sender_events[0], WrongCode)


@pytest.mark.parametrize("phase", [PHASE_PAKE, PHASE_TICKET, PHASE_CONFIRM, PHASE_BAD, 0, 255])
@pytest.mark.parametrize(("from_sender", "index"), [(True, 0), (True, 1), (False, 0)])
def test_a_replaced_phase_fails_the_exchange(phase: int, from_sender: bool, index: int) -> None:
    def tamper(is_sender: bool, number: int, message: bytes) -> bytes:
        if (is_sender, number) != (from_sender, index) or message[0] == phase:
            return message
        return bytes([phase]) + message[1:]

    _, _, sender_events, receiver_events = run(CODE, CODE, tamper)
    if (from_sender, index) == (True, 1) and phase == PHASE_TICKET:
        assert receiver_events == [TicketOpened(TICKET)]  # nothing was replaced
        return
    if (from_sender, index) == (False, 0) and phase == PHASE_PAKE:
        assert receiver_events == [TicketOpened(TICKET)]
        return
    if (from_sender, index) == (True, 0) and phase == PHASE_PAKE:
        return
    _check_never_another_ticket(receiver_events)
    assert isinstance(receiver_events[0], WrongCode)
    assert sender_events and isinstance(sender_events[0], WrongCode)


def test_a_reflected_message_never_opens() -> None:
    """A relay that sends each side its own messages back learns nothing
    and makes nothing open."""
    sender = CodeExchange(CODE, is_sender=True, payload=TICKET.encode())
    receiver = CodeExchange(CODE, is_sender=False)
    for side in (sender, receiver):
        for message in side.outgoing():
            side.receive(message)
        event = side.next_event()
        assert isinstance(event, WrongCode)
        assert side.outgoing()[-1] == bytes([PHASE_BAD])


def test_the_sealed_ticket_moved_into_the_confirmation_slot_does_not_confirm() -> None:
    """The sender's own ticket, reflected to it as the receiver's answer,
    does not open under the receiver's key."""
    sender = CodeExchange(CODE, is_sender=True, payload=TICKET.encode())
    receiver = CodeExchange(CODE, is_sender=False)
    (sender_pake,) = sender.outgoing()
    (receiver_pake,) = receiver.outgoing()
    sender.receive(receiver_pake)
    (sealed_ticket,) = sender.outgoing()
    sender.receive(bytes([PHASE_CONFIRM]) + sealed_ticket[1:])
    assert isinstance(sender.next_event(), WrongCode)
    assert sender_pake != receiver_pake


def test_messages_after_the_end_are_ignored() -> None:
    sender, receiver, _, _ = run(CODE, CODE)
    receiver.receive(b"\x02whatever")
    sender.receive(b"\x04")
    assert receiver.next_event() is None and sender.next_event() is None


def test_only_the_sender_carries_a_payload_and_a_small_one() -> None:
    with pytest.raises(LocalProtocolError):
        CodeExchange(CODE, is_sender=True)
    with pytest.raises(LocalProtocolError):
        CodeExchange(CODE, is_sender=False, payload=b"x")
    with pytest.raises(LocalProtocolError):
        CodeExchange(CODE, is_sender=True, payload=b"x" * 5000)


@settings(max_examples=150, deadline=None)
@given(garbage=st.binary(max_size=120), from_sender=st.booleans(), index=st.integers(0, 1))
def test_any_replaced_message_never_yields_another_ticket(
    garbage: bytes, from_sender: bool, index: int
) -> None:
    def tamper(is_sender: bool, number: int, message: bytes) -> bytes:
        return garbage if (is_sender, number) == (from_sender, index) else message

    _, _, _, receiver_events = run(CODE, CODE, tamper)
    if receiver_events:
        _check_never_another_ticket(receiver_events)
