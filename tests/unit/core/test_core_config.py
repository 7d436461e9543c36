"""Relay settings: flag over environment over config file; bad values are one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pcp.core.config import choose_relay, load_config, normalize_relay_url
from p2pcp.core.errors import ConfigError, UsageError


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("P2PCP_HOME", str(tmp_path))
    monkeypatch.delenv("P2PCP_RELAY", raising=False)
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


@pytest.mark.parametrize(
    "bad", ["relay.example.net", "ftp://x:1", "http://", "http://x:99999", "http://x/relay?q"]
)
def test_bad_urls(bad: str) -> None:
    with pytest.raises(UsageError):
        normalize_relay_url(bad)


def test_precedence(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert choose_relay(None, False) is None
    (home / "config.toml").write_text('relay = "http://198.18.0.1:3340"\n')
    assert choose_relay(None, False) == "http://198.18.0.1:3340"
    monkeypatch.setenv("P2PCP_RELAY", "http://127.0.0.1:4000")
    assert choose_relay(None, False) == "http://127.0.0.1:4000"
    assert choose_relay("http://10.0.0.1:5", False) == "http://10.0.0.1:5"
    assert choose_relay(None, True) is None
    monkeypatch.setenv("P2PCP_RELAY", "none")
    assert choose_relay(None, False) is None
    with pytest.raises(UsageError):
        choose_relay("http://x:1", True)


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
