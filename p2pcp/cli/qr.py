"""``send --qr``: the code (or the ticket) as a QR code on the terminal.

Drawn with segno's compact terminal writer: two rows of modules per line,
as the half blocks "▀", "▄", "█" and spaces, light modules inked (a
terminal is light text on dark: the code reads as dark on light, quiet zone
included) and no escape sequences, so the text is the same on any terminal
or in a log. Tickets and codes are read ignoring case, so the text goes in
upper case when that lets QR's alphanumeric mode hold it (5.5 bits a
character instead of 8): a ticket's code is then ~53 columns wide instead
of ~61.

It is written on stderr only, through the one Console; stdout keeps
carrying only the ticket (or the --json lines).
"""

from __future__ import annotations

import io
import re

# QR's alphanumeric mode: digits, upper-case letters and " $%*+-./:".
_ALPHANUMERIC = re.compile(r"[0-9A-Z $%*+\-./:]*")
# What the drawing is made of.
QR_CHARACTERS = frozenset(" \u2580\u2584\u2588\n")


def qr_payload(text: str) -> str:
    """``text`` as the QR code holds it: upper case when that is all
    alphanumeric (a ticket, a code), else as it is."""
    upper = text.upper()
    return upper if _ALPHANUMERIC.fullmatch(upper) else text


def qr_drawing(text: str) -> str:
    """The QR code of ``text`` as lines of half blocks (module doc)."""
    import segno

    code = segno.make(qr_payload(text), micro=False)
    out = io.StringIO()
    code.terminal(out=out, compact=True)
    return out.getvalue()


def show_qr(text: str, what: str) -> None:
    """Draw ``text``'s QR code on stderr, after a line saying that it holds
    ``what`` ("the code", "the ticket")."""
    from p2pcp.cli.output import console

    console.print(f"QR code of {what}:", markup=False, highlight=False)
    console.print(qr_drawing(text), markup=False, highlight=False, end="")
