"""Settings from the command line, the environment and the config file.

Precedence, highest first: a command-line flag, the environment
(``P2PCP_RELAY``), the config file, the built-in default (no relay: p2pcp
has no relay of its own on the internet; run one with ``p2pcp relay``).

The config file is TOML, at ``$P2PCP_HOME/config.toml`` when ``P2PCP_HOME``
is set, else in the user config dir (``~/.config/p2pcp/config.toml`` on
Linux)::

    relay = "https://relay.example.net:443"   # or "" for none

This module is the one place that reads the environment: ``P2PCP_HOME``,
``P2PCP_RELAY``, ``P2PCP_MAX_DATAGRAM_SIZE`` (tests and benches that model
an internet path on loopback) and ``P2PCP_DEBUG``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from p2pcp.core.errors import ConfigError, UsageError

RELAY_ENV = "P2PCP_RELAY"
CONFIG_FILE_NAME = "config.toml"
# Values of P2PCP_RELAY (or the config file's ``relay``) that mean "no relay".
_NO_RELAY_WORDS = {"", "none", "off", "no"}
# Port of `p2pcp relay` when a URL names none: the relay's default.
DEFAULT_RELAY_PORT = 3340


@dataclass(frozen=True)
class Config:
    relay_url: str | None = None


HOME_ENV = "P2PCP_HOME"


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


def normalize_relay_url(text: str) -> str:
    """Check a relay URL (http or https, a host, an optional port); return it tidied.

    A URL without a port gets the relay's default port, 3340, so the same
    number serves WebSocket (TCP) and STUN (UDP).
    """
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
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}:{port or DEFAULT_RELAY_PORT}"


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
    unknown = set(data) - {"relay"}
    if unknown:
        raise ConfigError(f"{path}: unknown setting {sorted(unknown)[0]!r}")
    return data


def _relay_from_text(text: str, where: str) -> str | None:
    if text.strip().lower() in _NO_RELAY_WORDS:
        return None
    try:
        return normalize_relay_url(text)
    except UsageError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_config() -> Config:
    """Settings from the environment and the config file (flags come on top)."""
    env = os.environ.get(RELAY_ENV)
    if env is not None:
        return Config(relay_url=_relay_from_text(env, RELAY_ENV))
    path = config_path()
    data = _read_file(path)
    relay = data.get("relay")
    if relay is None:
        return Config()
    if not isinstance(relay, str):
        raise ConfigError(f'{path}: relay must be a string (a URL, or "" for none)')
    return Config(relay_url=_relay_from_text(relay, str(path)))


def choose_relay(flag_url: str | None, no_relay: bool) -> str | None:
    """The relay for this run: --no-relay, else --relay, else config/env."""
    if no_relay and flag_url:
        raise UsageError("--relay and --no-relay contradict each other")
    if no_relay:
        return None
    if flag_url:
        return normalize_relay_url(flag_url)
    return load_config().relay_url


# For tests and benchmarks that model an internet path on loopback: caps
# the datagram size the path prober may reach (1200 is QUIC's floor).
MAX_DATAGRAM_ENV = "P2PCP_MAX_DATAGRAM_SIZE"


def max_datagram_size_from_env() -> int | None:
    text = os.environ.get(MAX_DATAGRAM_ENV)
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{MAX_DATAGRAM_ENV} must be a number of bytes") from None
    if not 1200 <= value <= 65527:
        raise UsageError(f"{MAX_DATAGRAM_ENV} must be between 1200 and 65527")
    return value


DEBUG_ENV = "P2PCP_DEBUG"


def is_debug() -> bool:
    """``P2PCP_DEBUG`` set: an unexpected error shows its traceback."""
    return bool(os.environ.get(DEBUG_ENV))
