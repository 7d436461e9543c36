"""Short codes: ``<nameplate>-<word>-<word>[...]``, e.g. ``7-crossbow-puzzle``.

Sans-IO. The nameplate is a small positive integer that names the meeting
place (a relay mailbox, or a sender's announcement on the LAN); the words,
from ``words.WORDS`` (8 bits each), are the secret. The whole code, written
canonically (``str(code)``: lowercase, single hyphens), is the SPAKE2
password (``exchange.py``), so the nameplate is bound into the key too.

Parsing is forgiving where people are (case, spaces or hyphens between the
parts, surrounding blanks) and strict about the words: a word not in the list
is a typo, reported before it can burn a nameplate on a failed exchange.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from p2pcp.core.errors import UsageError
from p2pcp.rendezvous.words import WORD_INDEX, WORDS

# Two words are 16 bits: an attacker gets one guess per nameplate (a wrong
# guess burns it), so 1 in 65,536; eight words (64 bits) is more than any
# person wants to read aloud.
MIN_WORDS = 2
MAX_WORDS = 8
DEFAULT_WORDS = 2
# Nameplates travel as u32 in the relay's frames.
MAX_NAMEPLATE = 2**32 - 1

_SEPARATORS = re.compile(r"[\s-]+")


@dataclass(frozen=True)
class Code:
    """A parsed short code. ``str(code)`` is its one canonical spelling."""

    nameplate: int
    words: tuple[str, ...]

    def __str__(self) -> str:
        return "-".join((str(self.nameplate), *self.words))

    def __repr__(self) -> str:
        # A code is a secret: a repr in a traceback or a log shows only the
        # nameplate, never the words.
        return f"Code(nameplate={self.nameplate}, words=<{len(self.words)} hidden>)"


def looks_like_code(text: str) -> bool:
    """Whether ``text`` is meant as a code rather than a ticket (tickets
    start with "p2pcp", codes with the nameplate's digits)."""
    return text.strip()[:1].isdigit()


def check_word_count(count: int) -> int:
    """``--code-words N``: 2 to 8."""
    if not MIN_WORDS <= count <= MAX_WORDS:
        raise UsageError(f"--code-words {count}: a code has {MIN_WORDS} to {MAX_WORDS} words")
    return count


def check_nameplate(nameplate: int) -> int:
    if not 1 <= nameplate <= MAX_NAMEPLATE:
        raise UsageError(f"nameplate {nameplate} is out of range (1 to {MAX_NAMEPLATE})")
    return nameplate


def new_code(nameplate: int, word_count: int = DEFAULT_WORDS) -> Code:
    """A fresh code for ``nameplate`` with ``word_count`` random words."""
    check_word_count(word_count)
    check_nameplate(nameplate)
    return Code(nameplate, tuple(secrets.choice(WORDS) for _ in range(word_count)))


def parse_words(text: str, what: str = "code") -> tuple[str, ...]:
    """The words of ``crossbow-puzzle`` (or ``Crossbow Puzzle``); UsageError
    naming the first part that is not a word of the list."""
    parts = tuple(part for part in _SEPARATORS.split(text.strip().lower()) if part)
    if not MIN_WORDS <= len(parts) <= MAX_WORDS:
        raise UsageError(f"{what}: {len(parts)} words; a code has {MIN_WORDS} to {MAX_WORDS} words")
    for position, part in enumerate(parts, 1):
        if part not in WORD_INDEX:
            # The part itself is not echoed: it is (part of) a secret.
            raise UsageError(f"{what}: word {position} is not one of p2pcp's code words (a typo?)")
    return parts


def parse_code(text: str) -> Code:
    """``7-crossbow-puzzle`` as a Code; UsageError (exit 2) when malformed."""
    stripped = text.strip()
    number, _, rest = _SEPARATORS.sub("-", stripped).partition("-")
    if not number.isdigit() or not number.isascii():
        raise UsageError("not a code: a code starts with its number, as in 7-crossbow-puzzle")
    if not rest:
        raise UsageError("not a code: the words after the number are missing")
    return Code(check_nameplate(int(number)), parse_words(rest))
