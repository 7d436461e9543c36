"""The named choices of net/'s public API, as enums (sans-IO, imports nothing).

Each member is its word ("relay-only", "direct", "bbr"): a ``str`` whose
``str()`` and format are the value, as 3.11's ``StrEnum`` (the package
supports 3.10), so JSON lines, log lines and the CLI's option values stay
the same words, and a plain string converts with ``PathPolicy(text)`` (ValueError for
a word that is not one).
"""

from __future__ import annotations

from enum import Enum


class _Words(str, Enum):
    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class PathPolicy(_Words):
    """Which paths an endpoint may use (``--relay-only``, ``--direct-only``)."""

    AUTO = "auto"
    """The relay until a direct path is confirmed, then direct."""
    RELAY_ONLY = "relay-only"
    """Only the relay: no direct packet is sent or accepted."""
    DIRECT_ONLY = "direct-only"
    """Only direct UDP: no relay is used."""


class PathKind(_Words):
    """What carries a connection's packets now (the ``connected`` event's path)."""

    DIRECT = "direct"
    RELAY = "relay"


class Congestion(_Words):
    """The congestion controllers a user may choose (``--congestion``)."""

    BBR = "bbr"
    """Ours (congestion/bbr.py): model-based, random loss does not cut its rate."""
    CUBIC = "cubic"
    """aioquic's, loss-based."""
    RENO = "reno"
    """aioquic's, loss-based."""
