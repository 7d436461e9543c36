"""Node keys: created once with mode 0600, stable, never shown."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from p2pcp.core.errors import ConfigError, UsageError
from p2pcp.core.identity import (
    NodeId,
    SecretKey,
    load_or_create_secret_key,
    verify_signature,
)


def test_key_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = load_or_create_secret_key(home)
    key_file = home / "node.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    second = load_or_create_secret_key(home)
    assert first.public == second.public
    assert [p.name for p in home.iterdir()] == ["node.key"]


def test_p2pcp_home_overrides_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("P2PCP_HOME", str(tmp_path / "x"))
    key = load_or_create_secret_key()
    assert (tmp_path / "x" / "node.key").exists()
    assert load_or_create_secret_key().public == key.public


def test_damaged_key_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "node.key").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="damaged"):
        load_or_create_secret_key(tmp_path)


def test_node_id_text_round_trip_and_short_form() -> None:
    key = SecretKey(bytes(range(32)))
    text = str(key.public)
    assert len(text) == 52 and text == text.lower()
    assert NodeId.from_str(text.upper()) == key.public
    assert key.public.short() == text[:10]
    with pytest.raises(UsageError):
        NodeId.from_str("not-base32!")
    with pytest.raises(UsageError):
        NodeId(b"short")


def test_repr_never_shows_the_secret() -> None:
    seed = bytes(range(32))
    key = SecretKey(seed)
    assert seed.hex() not in repr(key)
    assert str(key.public)[:10] in repr(key)


def test_signatures_verify_only_for_the_signer() -> None:
    key = SecretKey(bytes(32))
    other = SecretKey(bytes([1]) * 32)
    signature = key.sign(b"challenge")
    assert verify_signature(key.public, b"challenge", signature)
    assert not verify_signature(other.public, b"challenge", signature)
    assert not verify_signature(key.public, b"challengE", signature)
