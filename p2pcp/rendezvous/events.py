"""What the rendezvous tells the command line, which renders it.

Small frozen facts, as in every layer. A code's words are a secret, but the
code is the point of ``CodeOffered`` (the sender shows it to its user);
no other event carries it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CodeOffered:
    """A new code for the ticket (after a wrong one burnt the last)."""

    code: str


@dataclass(frozen=True)
class CodeUsed:
    """A receiver opened the ticket with the code; the code is spent.
    ``verifier`` is the string ``--verify`` shows on both sides."""

    nameplate: int
    verifier: str


@dataclass(frozen=True)
class CodeRejected:
    """Someone tried a wrong code (or the messages were altered): the
    nameplate is burnt."""

    nameplate: int
    reason: str


@dataclass(frozen=True)
class CodeExpired:
    """Nobody used the code in time."""

    nameplate: int


@dataclass(frozen=True)
class CodeUnavailable:
    """No (more) codes for this ticket: the rendezvous was lost or refused,
    or too many wrong codes were tried. The ticket still works."""

    reason: str


@dataclass(frozen=True)
class CodeClaimed:
    """The receiver's result: the sender's ticket and the verifier."""

    ticket_text: str
    verifier: str
