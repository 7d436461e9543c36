"""Settings: flag over environment over config file; bad values are one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pcp.core.config import RelayUrl, choose_relay, load_config, normalize_relay_url
from p2pcp.core.errors import ConfigError, UsageError


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("P2PCP_HOME", str(tmp_path))
    # Every variable that overrides a setting of the file (the test session
    # sets P2PCP_LAN=off for all it starts).
    for name in ("P2PCP_RELAY", "P2PCP_CONGESTION", "P2PCP_MAX_DATAGRAM_SIZE", "P2PCP_LAN"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://198.18.0.1:3340", "http://198.18.0.1:3340"),
        ("https://relay.example.net", "https://relay.example.net:3340"),
        ("https://relay.example.net:443/", "https://relay.example.net:443"),
        ("http://[::1]:9000", "http://[::1]:9000"),
        (" HTTP://Relay.Example.NET:1 ", "http://relay.example.net:1"),
    ],
)
def test_normalize(given: str, expected: str) -> None:
    assert normalize_relay_url(given) == expected
    url = RelayUrl.parse(given)
    assert str(url) == expected and RelayUrl.parse(str(url)) == url


@pytest.mark.parametrize(
    "bad", ["relay.example.net", "ftp://x:1", "http://", "http://x:99999", "http://x/relay?q"]
)
def test_bad_urls(bad: str) -> None:
    with pytest.raises(UsageError):
        normalize_relay_url(bad)


def _relay(flag: str | None, no_relay: bool) -> str | None:
    url = choose_relay(flag, no_relay, load_config())
    return None if url is None else str(url)


def test_precedence(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _relay(None, False) is None
    (home / "config.toml").write_text('relay = "http://198.18.0.1:3340"\n')
    assert _relay(None, False) == "http://198.18.0.1:3340"
    monkeypatch.setenv("P2PCP_RELAY", "http://127.0.0.1:4000")
    assert _relay(None, False) == "http://127.0.0.1:4000"
    assert _relay("http://10.0.0.1:5", False) == "http://10.0.0.1:5"
    assert _relay(None, True) is None
    monkeypatch.setenv("P2PCP_RELAY", "none")
    assert _relay(None, False) is None
    with pytest.raises(UsageError):
        _relay("http://x:1", True)


def test_every_setting_comes_from_the_file_unless_its_variable_is_set(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_config() == load_config().__class__()  # nothing set: all defaults
    path = home / "config.toml"
    path.write_text('congestion = "reno"\nmax_datagram_size = 1452\n')
    config = load_config()
    assert (config.congestion, config.max_datagram_size) == ("reno", 1452)
    assert config.source("congestion") == str(path) and config.source("relay") == ""
    monkeypatch.setenv("P2PCP_CONGESTION", "cubic")
    monkeypatch.setenv("P2PCP_MAX_DATAGRAM_SIZE", "1300")
    config = load_config()
    assert (config.congestion, config.max_datagram_size) == ("cubic", 1300)
    assert config.source("max_datagram_size") == "P2PCP_MAX_DATAGRAM_SIZE"
    monkeypatch.setenv("P2PCP_MAX_DATAGRAM_SIZE", "lots")
    with pytest.raises(ConfigError, match=r"^P2PCP_MAX_DATAGRAM_SIZE: .*number of bytes"):
        load_config()


def test_bad_config_file_is_a_clear_error(home: Path) -> None:
    (home / "config.toml").write_text("relay = [1, 2]\n")
    with pytest.raises(ConfigError, match="must be a string"):
        load_config()
    (home / "config.toml").write_text("rellay = 'x'\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config()
    (home / "config.toml").write_text("relay = \n")
    with pytest.raises(ConfigError, match="TOML"):
        load_config()
    (home / "config.toml").write_text('relay = "gopher://x"\n')
    with pytest.raises(ConfigError):
        load_config()
    (home / "config.toml").write_text("max_datagram_size = true\n")
    with pytest.raises(ConfigError, match="number of bytes"):
        load_config()
    (home / "config.toml").write_text("congestion = 3\n")
    with pytest.raises(ConfigError, match="congestion must be a string"):
        load_config()
