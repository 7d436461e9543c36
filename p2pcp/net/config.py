"""EndpointConfig: everything an Endpoint is bound with, checked once.

The net layer's one configuration object (as aioquic's ``QuicConfiguration``
is QUIC's): the CLI builds it from flags, the environment and the config
file (core/config.py reads the last two), the transfer layer carries it in
its options, and ``Endpoint.bind`` takes it. Every value is checked here,
in ``__post_init__``, against one range, and a bad one is a one-line
``SettingError`` (a UsageError: exit 2) naming the field, whichever source it came from.
A new setting that reaches net/ is a field here, a flag in cli/, and the
code in net/ that reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

from p2pcp.core.config import RelayUrl
from p2pcp.net.kinds import Congestion, PathPolicy, SettingError
from p2pcp.net.pmtu.probe import FLOOR_BYTES, MAX_DATAGRAM_BYTES

# Bind waits at most this long for the home relay's login and STUN answer
# (quic/endpoint.py's module doc). A relay across the world answers both in
# a few round trips (~0.5 s with TLS at 150 ms); a relay that is black-holed
# costs no more, so a direct transfer never waits noticeably for a relay
# that is not there.
RELAY_JOIN_WAIT_S = 1.0
# The longest wait a caller may ask for: a minute is beyond any relay that
# answers at all; the relay client keeps trying in the background anyway.
MAX_RELAY_JOIN_WAIT_S = 60.0

MAX_PORT = 65535


@dataclass(frozen=True)
class EndpointConfig:
    """How an Endpoint binds and which paths and controller it uses."""

    port: int = 0
    """UDP port to bind, 0..65535 (0: any free port)."""

    max_datagram_size: int | None = None
    """Cap on the UDP datagram size the path prober may reach, 1200..16000
    bytes (1200 is QUIC's floor; aioquic fails above 16000). None: no cap
    below 16000. Tests and benches model an internet path with 1452."""

    relay_url: RelayUrl | None = None
    """The home relay: joined at bind, named in tickets (None: no relay)."""

    path_policy: PathPolicy = PathPolicy.AUTO
    """Which paths are used: the relay until a direct path is confirmed
    (AUTO), only the relay (RELAY_ONLY), only direct UDP (DIRECT_ONLY)."""

    congestion: Congestion = Congestion.BBR
    """The congestion controller for the data this endpoint sends."""

    relay_timeout_s: float = RELAY_JOIN_WAIT_S
    """How long bind waits for the home relay's login and STUN answer,
    more than 0 and at most 60 s (the client keeps trying afterwards)."""

    def __post_init__(self) -> None:
        if not _is_int(self.port) or not 0 <= self.port <= MAX_PORT:
            raise SettingError("port", f"port must be 0..{MAX_PORT}, got {self.port!r}")
        size = self.max_datagram_size
        if size is not None and not (_is_int(size) and FLOOR_BYTES <= size <= MAX_DATAGRAM_BYTES):
            raise SettingError(
                "max_datagram_size",
                f"max_datagram_size must be {FLOOR_BYTES}..{MAX_DATAGRAM_BYTES}, got {size!r}",
            )
        if self.relay_url is not None and not isinstance(self.relay_url, RelayUrl):
            raise SettingError("relay_url", f"relay_url must be a RelayUrl, got {self.relay_url!r}")
        if not isinstance(self.path_policy, PathPolicy):
            raise PathPolicy.refusal(self.path_policy)
        if not isinstance(self.congestion, Congestion):
            raise Congestion.refusal(self.congestion)
        timeout = self.relay_timeout_s
        if (
            not isinstance(timeout, (int, float))
            or isinstance(timeout, bool)
            or not 0.0 < timeout <= MAX_RELAY_JOIN_WAIT_S
        ):
            raise SettingError(
                "relay_timeout_s",
                f"relay_timeout_s must be more than 0 and at most {MAX_RELAY_JOIN_WAIT_S:g}, "
                f"got {timeout!r}",
            )

    @property
    def uses_relay(self) -> bool:
        """Whether a home relay is joined at bind (one named, and the policy allows it)."""
        return self.relay_url is not None and self.path_policy is not PathPolicy.DIRECT_ONLY


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
