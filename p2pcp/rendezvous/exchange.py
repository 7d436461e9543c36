"""The code exchange: SPAKE2 on the short code, then the ticket, sealed.

Sans-IO: no sockets, no clock, no asyncio. Inputs: ``receive(message)`` for
each message from the other side, in order. Outputs: ``outgoing()`` (the
messages to send, in order) and ``next_event()`` (``TicketOpened`` on the
receiver, ``ReceiverConfirmed`` on the sender, ``WrongCode`` on either;
None when there is nothing new). After its one final event the exchange
ignores whatever else arrives.

Transcript (docs/PROTOCOL.md, "Short codes"); every message is one phase
byte and a body:

1. ``PAKE`` (both sides, at once): the SPAKE2 message of SPAKE2_Symmetric
   with the password ``str(code)`` and the identity ``b"p2pcp code v1"``.
   Each side finishes SPAKE2 with the other's message: the key K (32 bytes)
   is equal on both sides only if both used the same code and nobody
   altered either message.
2. ``TICKET`` (sender): the ticket, sealed with NaCl SecretBox (XSalsa20-
   Poly1305, random nonce) under HKDF-SHA256(K, "p2pcp code v1 sender").
3. ``CONFIRM`` (receiver, when the ticket opened): a fixed text sealed under
   HKDF-SHA256(K, "p2pcp code v1 receiver"). Or ``BAD`` (either side, empty
   body) when what arrived does not open or is not the expected phase.

Each direction has its own key, so a message reflected back to its sender
or moved to another phase never opens. The verifier shown by ``--verify`` is
HKDF-SHA256(K, "p2pcp code v1 verifier"), cut to 32 bits: equal on both
sides exactly when K is.

Rules: the only way to a ``TicketOpened`` is a ``TICKET`` that opened under
K, which only a holder of the code can seal; anything else that arrives
(a wrong code, a flipped byte, a message out of place, a malformed SPAKE2
element) ends the exchange with ``WrongCode`` on this side and a ``BAD``
to the other side, so the nameplate is burnt on both.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import deque
from dataclasses import dataclass

from p2pcp.core.errors import LocalProtocolError
from p2pcp.rendezvous.codes import Code

ID_SYMMETRIC = b"p2pcp code v1"
PHASE_PAKE = 1
PHASE_TICKET = 2
PHASE_CONFIRM = 3
PHASE_BAD = 4
# SPAKE2_Symmetric's message: its side byte ("S") and an Ed25519 element.
PAKE_MESSAGE_BYTES = 33
# What the receiver seals to say the ticket opened.
CONFIRM_TEXT = b"p2pcp code v1 ticket opened"
# A ticket is ~210 bytes; the relay carries bodies of up to 4 KiB, and the
# seal adds 40 bytes and the phase one.
MAX_PAYLOAD_BYTES = 3 * 1024
VERIFIER_BYTES = 4


@dataclass(frozen=True)
class TicketOpened:
    """The receiver opened the sender's ticket (the exchange succeeded)."""

    ticket_text: str


@dataclass(frozen=True)
class ReceiverConfirmed:
    """The sender heard that the receiver opened its ticket."""


@dataclass(frozen=True)
class WrongCode:
    """The exchange failed: a wrong code, or messages altered on the way.
    ``reason`` says which side noticed what (never the code)."""

    reason: str


ExchangeEvent = TicketOpened | ReceiverConfirmed | WrongCode


def derive_key(shared_key: bytes, purpose: bytes) -> bytes:
    """HKDF-SHA256 (RFC 5869) with an empty salt, one 32-byte block, info
    ``b"p2pcp code v1 " + purpose``."""
    prk = hmac.new(bytes(32), shared_key, hashlib.sha256).digest()
    info = ID_SYMMETRIC + b" " + purpose
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def format_verifier(raw: bytes) -> str:
    """``9f3a-41c2``: short enough to read aloud, 32 bits to compare."""
    text = raw[:VERIFIER_BYTES].hex()
    return f"{text[:4]}-{text[4:]}"


class CodeExchange:
    """One side of the exchange. The sender passes ``payload`` (its ticket,
    UTF-8); the receiver passes None and learns it."""

    def __init__(self, code: Code, *, is_sender: bool, payload: bytes | None = None) -> None:
        from spake2 import SPAKE2_Symmetric

        if is_sender != (payload is not None):
            raise LocalProtocolError("the sender, and only the sender, passes a payload")
        if payload is not None and len(payload) > MAX_PAYLOAD_BYTES:
            raise LocalProtocolError(f"code payload over {MAX_PAYLOAD_BYTES} bytes")
        self.is_sender = is_sender
        self._payload = payload
        self._spake = SPAKE2_Symmetric(str(code).encode("ascii"), idSymmetric=ID_SYMMETRIC)
        self._pake_message: bytes = self._spake.start()
        self._outgoing: list[bytes] = [bytes([PHASE_PAKE]) + self._pake_message]
        self._events: deque[ExchangeEvent] = deque()
        # (sender key, receiver key), once the SPAKE2 messages are exchanged.
        self._keys: tuple[bytes, bytes] | None = None
        self.verifier: str | None = None
        self.is_finished = False

    def outgoing(self) -> list[bytes]:
        """The messages to send now, in order (each once)."""
        messages, self._outgoing = self._outgoing, []
        return messages

    def next_event(self) -> ExchangeEvent | None:
        return self._events.popleft() if self._events else None

    def receive(self, message: bytes) -> None:
        """One message from the other side."""
        if self.is_finished:
            return
        phase, body = message[:1], message[1:]
        if phase == bytes([PHASE_BAD]):
            who = "the receiver" if self.is_sender else "the sender"
            # Answered with BAD too, so that a BAD forged by the carrier in
            # place of a real message still ends the exchange on both sides.
            self._fail(f"{who} could not open the exchange")
        elif self._keys is None:
            if phase != bytes([PHASE_PAKE]):
                self._fail("the first message was not a key exchange")
            else:
                self._receive_pake(body)
        elif self.is_sender:
            if phase != bytes([PHASE_CONFIRM]):
                self._fail("the receiver's answer was not a confirmation")
            elif _open(self._keys[1], body) != CONFIRM_TEXT:
                self._fail("the receiver's confirmation did not open")
            else:
                self._finish(ReceiverConfirmed(), tell_peer=False)
        elif phase != bytes([PHASE_TICKET]):
            self._fail("the sender's message was not a ticket")
        else:
            self._receive_ticket(self._keys, body)

    # -- steps ---------------------------------------------------------------

    def _receive_pake(self, body: bytes) -> None:
        if len(body) != PAKE_MESSAGE_BYTES or body == self._pake_message:
            self._fail("the other side's key exchange message is malformed")
            return
        try:
            shared_key = self._spake.finish(body)
        except Exception:
            # spake2 parses the hostile element in pure Python and raises
            # whatever its arithmetic raises (ValueError, AssertionError,
            # its own errors) for a point that is not on the curve or not
            # in the group: each means the same, a message that is not a
            # SPAKE2 message under this code.
            self._fail("the other side's key exchange message is malformed")
            return
        self._keys = (derive_key(shared_key, b"sender"), derive_key(shared_key, b"receiver"))
        self.verifier = format_verifier(derive_key(shared_key, b"verifier"))
        if self._payload is not None:
            self._outgoing.append(bytes([PHASE_TICKET]) + _seal(self._keys[0], self._payload))

    def _receive_ticket(self, keys: tuple[bytes, bytes], body: bytes) -> None:
        payload = _open(keys[0], body)
        if payload is None:
            self._fail("the ticket did not open under this code")
            return
        try:
            ticket_text = payload.decode("utf-8")
        except UnicodeDecodeError:
            self._fail("the sender's ticket is not text")
            return
        self._outgoing.append(bytes([PHASE_CONFIRM]) + _seal(keys[1], CONFIRM_TEXT))
        self._finish(TicketOpened(ticket_text), tell_peer=False)

    def _fail(self, reason: str) -> None:
        self._finish(WrongCode(reason), tell_peer=True)

    def _finish(self, event: ExchangeEvent, *, tell_peer: bool) -> None:
        self.is_finished = True
        if tell_peer:
            self._outgoing.append(bytes([PHASE_BAD]))
        if isinstance(event, WrongCode):
            self.verifier = None
        self._events.append(event)


def _open(key: bytes, body: bytes) -> bytes | None:
    """The plaintext of a sealed body, or None when it does not open."""
    from nacl.exceptions import CryptoError
    from nacl.secret import SecretBox

    try:
        return bytes(SecretBox(key).decrypt(body))
    except (CryptoError, ValueError, TypeError):
        return None


def _seal(key: bytes, plaintext: bytes) -> bytes:
    from nacl.secret import SecretBox

    return bytes(SecretBox(key).encrypt(plaintext))
