"""Settings from the command line, the environment and the config file.

Precedence, highest first: a command-line flag, the environment, the config
file, the built-in default (no relay: p2pcp has no relay of its own on the
internet; run one with ``p2pcp relay``). This module reads the environment
and the file; cli/ puts the flags on top and builds the one
``EndpointConfig`` (net/config.py) that checks every value, so a bad value
gives the same one-line error whichever of the three it came from.

The config file is TOML, at ``$P2PCP_HOME/config.toml`` when ``P2PCP_HOME``
is set, else in the user config dir (``~/.config/p2pcp/config.toml`` on
Linux); each key has its environment variable::

    relay = "https://relay.example.net:443"   # P2PCP_RELAY; "" for none
    congestion = "bbr"                         # P2PCP_CONGESTION: bbr, cubic or reno
    max_datagram_size = 1452                   # P2PCP_MAX_DATAGRAM_SIZE: 1200..16000
    lan = "on"                                 # P2PCP_LAN: on, off, or one IPv4 address

This module is the one place that reads the environment: ``P2PCP_HOME``,
those four and ``P2PCP_DEBUG``. ``RelayUrl`` is a relay's URL parsed once
(here, from a flag, the environment, the file or a ticket) and passed on as
that object.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from p2pcp.core.errors import ConfigError, UsageError

CONFIG_FILE_NAME = "config.toml"
# Values of P2PCP_RELAY (or the config file's ``relay``) that mean "no relay".
_NO_RELAY_WORDS = {"", "none", "off", "no"}
# Port of `p2pcp relay` when a URL names none: the relay's default.
DEFAULT_RELAY_PORT = 3340

HOME_ENV = "P2PCP_HOME"
RELAY_ENV = "P2PCP_RELAY"
CONGESTION_ENV = "P2PCP_CONGESTION"
# For tests and benchmarks that model an internet path on loopback: caps
# the datagram size the path prober may reach.
MAX_DATAGRAM_ENV = "P2PCP_MAX_DATAGRAM_SIZE"
DEBUG_ENV = "P2PCP_DEBUG"
# Short codes on the LAN (rendezvous/lan.py parses it): "on" (every
# interface), "off", or one IPv4 address whose interface alone is used.
LAN_ENV = "P2PCP_LAN"

# The config file's keys, each with the environment variable that overrides it.
_SETTINGS = {
    "relay": RELAY_ENV,
    "congestion": CONGESTION_ENV,
    "max_datagram_size": MAX_DATAGRAM_ENV,
    "lan": LAN_ENV,
}


@dataclass(frozen=True)
class RelayUrl:
    """A relay's URL, checked and tidied (``parse``): http or https, a host,
    a port (the relay's default, 3340, when the text names none, so the same
    number serves WebSocket over TCP and STUN over UDP). ``str()`` is the
    tidy form, ``http://HOST:PORT``, as tickets and JSON lines carry it."""

    scheme: str
    """"http" or "https"."""
    host: str
    """A host name (lower case) or an IP address (IPv6 without brackets)."""
    port: int
    """1..65535."""

    @classmethod
    def parse(cls, text: str) -> RelayUrl:
        """``text`` as a relay URL; UsageError (one line) when it is not one."""
        try:
            parts = urlsplit(text.strip())
            port = parts.port
        except ValueError:
            raise UsageError(f"not a relay URL: {text!r}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(
                f"a relay URL looks like http://HOST:PORT or https://HOST:PORT, not {text!r}"
            )
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise UsageError(f"a relay URL has only a scheme, a host and a port: {text!r}")
        return cls(parts.scheme, parts.hostname, port or DEFAULT_RELAY_PORT)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def normalize_relay_url(text: str) -> str:
    """``text`` checked as a relay URL, in its tidy form (``RelayUrl``)."""
    return str(RelayUrl.parse(text))


@dataclass(frozen=True)
class Config:
    """What the environment and the config file set (cli/ puts flags on top).

    Values arrive as given; net/config.py's ``EndpointConfig`` checks them
    (core/ cannot know net's names). ``where`` says where each came from, for
    the error message: the variable's name or the config file's path.
    """

    relay_url: RelayUrl | None = None
    congestion: str | None = None
    max_datagram_size: int | None = None
    lan: str | None = None
    where: tuple[tuple[str, str], ...] = ()

    def source(self, key: str) -> str:
        """Where ``key`` ("congestion", ...) was set, or "" when it was not."""
        return dict(self.where).get(key, "")


def home_override() -> Path | None:
    """``$P2PCP_HOME``, the one folder for this node's key and config file
    when set (tests and scripts run several nodes on one machine), or None.
    The only place that reads it."""
    home = os.environ.get(HOME_ENV)
    return Path(home).expanduser() if home else None


def config_path() -> Path:
    home = home_override()
    if home is not None:
        return home / CONFIG_FILE_NAME
    import platformdirs

    return Path(platformdirs.user_config_dir("p2pcp", appauthor=False)) / CONFIG_FILE_NAME


def cache_dir() -> Path:
    """Where p2pcp keeps what it can rebuild (the sender's hash cache):
    ``$P2PCP_HOME/cache`` when P2PCP_HOME is set, else the user cache dir
    (``~/.cache/p2pcp`` on Linux)."""
    home = home_override()
    if home is not None:
        return home / "cache"
    import platformdirs

    return Path(platformdirs.user_cache_dir("p2pcp", appauthor=False))


def _read_file(path: Path) -> dict[str, object]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        import tomli as tomllib
    try:
        with open(path, "rb") as handle:
            data: dict[str, object] = tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    unknown = set(data) - set(_SETTINGS)
    if unknown:
        raise ConfigError(f"{path}: unknown setting {sorted(unknown)[0]!r}")
    return data


def _relay_from_text(text: str, where: str) -> RelayUrl | None:
    if text.strip().lower() in _NO_RELAY_WORDS:
        return None
    try:
        return RelayUrl.parse(text)
    except UsageError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _size_from_text(text: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{where}: max_datagram_size must be a number of bytes") from None


def load_config() -> Config:
    """Settings from the environment and the config file (flags come on top).

    A variable that is set overrides the file's key (for ``relay``, even
    set to "none"); the file is read only when some key is left to it.
    """
    values: dict[str, object] = {}
    where: dict[str, str] = {}
    for key, env in _SETTINGS.items():
        text = os.environ.get(env)
        if text is not None and (text or key == "relay"):
            values[key], where[key] = text, env
    if len(values) < len(_SETTINGS):
        path = config_path()
        for key, value in _read_file(path).items():
            if key not in values:
                values[key], where[key] = value, str(path)
    relay_url: RelayUrl | None = None
    if "relay" in values:
        relay = values["relay"]
        if not isinstance(relay, str):
            raise ConfigError(f'{where["relay"]}: relay must be a string (a URL, or "" for none)')
        relay_url = _relay_from_text(relay, where["relay"])
    congestion = values.get("congestion")
    if congestion is not None and not isinstance(congestion, str):
        raise ConfigError(f"{where['congestion']}: congestion must be a string (bbr, cubic, reno)")
    size = values.get("max_datagram_size")
    if isinstance(size, str):
        size = _size_from_text(size, where["max_datagram_size"])
    if size is not None and (not isinstance(size, int) or isinstance(size, bool)):
        raise ConfigError(
            f"{where['max_datagram_size']}: max_datagram_size must be a number of bytes"
        )
    lan = values.get("lan")
    if lan is not None and not isinstance(lan, str):
        raise ConfigError(f'{where["lan"]}: lan must be a string ("on", "off" or an IPv4 address)')
    return Config(
        relay_url=relay_url,
        congestion=congestion,
        max_datagram_size=size,
        lan=lan,
        where=tuple(sorted(where.items())),
    )


def choose_relay(flag_url: str | None, no_relay: bool, config: Config) -> RelayUrl | None:
    """The relay for this run: --no-relay, else --relay, else config/env."""
    if no_relay and flag_url:
        raise UsageError("--relay and --no-relay contradict each other")
    if no_relay:
        return None
    if flag_url:
        return relay_from_flag(flag_url)
    return config.relay_url


def relay_from_flag(text: str) -> RelayUrl:
    """``--relay``'s URL; a bad one is the same error as from P2PCP_RELAY or
    the config file, behind the flag's name instead of theirs."""
    try:
        return RelayUrl.parse(text)
    except UsageError as exc:
        raise UsageError(f"--relay: {exc}") from None


def is_debug() -> bool:
    """``P2PCP_DEBUG`` set: an unexpected error shows its traceback."""
    return bool(os.environ.get(DEBUG_ENV))
