"""The named choices of net/'s public API, as enums (sans-IO), and ``Route``.

Each member is its word ("relay-only", "direct", "bbr"): a ``str`` whose
``str()`` and format are the value, as 3.11's ``StrEnum`` (the package
supports 3.10), so JSON lines, log lines and the CLI's option values stay
the same words. Words from a user (a flag, the environment, the config
file) convert once, at the edge, with ``Congestion.parse(text)``: a word
that is not one is a one-line UsageError naming the choices. Inside net/,
transfer/ and cli/ these values travel as members, never as strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, TypeVar

from p2pcp.core.errors import UsageError

if TYPE_CHECKING:
    from p2pcp.core.config import RelayUrl

_W = TypeVar("_W", bound="_Words")


class SettingError(UsageError):
    """A setting's value is refused (exit 2). ``setting`` names it as
    EndpointConfig's field does, so the CLI can say where the value came
    from (a flag, a variable, the config file) in front of the message."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting


class _Words(str, Enum):
    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @classmethod
    def setting_name(cls) -> str:
        """The setting's name: ``PathPolicy`` -> "path_policy" (EndpointConfig's field)."""
        return re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()

    @classmethod
    def refusal(cls, value: object) -> SettingError:
        """The one-line error for ``value``, which is not one of the words."""
        words = ", ".join(member.value for member in cls)
        name = cls.setting_name()
        return SettingError(name, f"{name} must be one of {words}, not {value!r}")

    @classmethod
    def parse(cls: type[_W], text: str) -> _W:
        """The member named ``text`` (any case, spaces around ignored)."""
        try:
            return cls(text.strip().lower())
        except ValueError:
            raise cls.refusal(text) from None


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


def format_address(address: tuple[str, int]) -> str:
    """``host:port``, an IPv6 host in brackets."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class Route:
    """Where a connection's packets go now (``Connection.route``): what the
    ``connected`` and ``path`` events report, as values rather than text.
    ``str()`` is the description ("direct 198.18.0.5:4433", "relay
    http://198.18.0.1:3340", "direct (trying 3 addresses)")."""

    kind: PathKind
    relay_url: RelayUrl | None = None
    """The relay carrying the packets (kind RELAY; None: no relay to use)."""
    address: tuple[str, int] | None = None
    """The direct address in use (kind DIRECT; None while several are tried)."""
    trying: int = 0
    """Kind DIRECT without an address yet: how many addresses are tried at once."""

    @property
    def place(self) -> str:
        """Where, in words: the relay's URL, the address, or what is tried."""
        if self.kind is PathKind.RELAY:
            return str(self.relay_url) if self.relay_url is not None else "(none)"
        if self.address is not None:
            return format_address(self.address)
        return f"(trying {self.trying} address{'' if self.trying == 1 else 'es'})"

    def __str__(self) -> str:
        return f"{self.kind} {self.place}"
