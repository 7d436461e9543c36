"""EndpointConfig: every value checked once, against one range, as a one-line error."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any

import pytest

import p2pcp.net
from p2pcp.core.config import RelayUrl
from p2pcp.core.errors import EXIT_USAGE, UsageError
from p2pcp.net import Congestion, EndpointConfig, PathKind, PathPolicy, Route, SettingError


def test_defaults_are_valid_and_typed() -> None:
    config = EndpointConfig()
    assert config.port == 0 and config.max_datagram_size is None and config.relay_url is None
    assert config.path_policy is PathPolicy.AUTO and config.congestion is Congestion.BBR
    assert not config.uses_relay
    url = RelayUrl.parse("http://127.0.0.1:3340")
    assert EndpointConfig(relay_url=url).uses_relay
    assert not EndpointConfig(relay_url=url, path_policy=PathPolicy.DIRECT_ONLY).uses_relay


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("port", -1, "port must be 0..65535, got -1"),
        ("port", 65536, "port must be 0..65535, got 65536"),
        ("port", True, "port must be 0..65535, got True"),
        ("max_datagram_size", 1199, "max_datagram_size must be 1200..16000, got 1199"),
        ("max_datagram_size", 16001, "max_datagram_size must be 1200..16000, got 16001"),
        ("max_datagram_size", 1452.0, "max_datagram_size must be 1200..16000, got 1452.0"),
        ("relay_url", "http://x:1", "relay_url must be a RelayUrl, got 'http://x:1'"),
        (
            "path_policy",
            "relay-only",
            "path_policy must be one of auto, relay-only, direct-only, not 'relay-only'",
        ),
        ("congestion", "vegas", "congestion must be one of bbr, cubic, reno, not 'vegas'"),
        ("congestion", "bbr", "congestion must be one of bbr, cubic, reno, not 'bbr'"),
        ("relay_timeout_s", 0, "relay_timeout_s must be more than 0 and at most 60, got 0"),
        ("relay_timeout_s", 61.0, "relay_timeout_s must be more than 0 and at most 60, got 61.0"),
    ],
)
def test_each_bad_value_is_one_line_usage_error(field: str, value: Any, message: str) -> None:
    """A word where a member belongs is refused too: the enums travel as members."""
    with pytest.raises(SettingError) as caught:
        EndpointConfig(**{field: value})
    error = caught.value
    assert isinstance(error, UsageError) and error.exit_code == EXIT_USAGE
    assert str(error) == message and "\n" not in str(error)
    assert error.setting == field


@pytest.mark.parametrize(
    ("edge", "field"),
    [
        (1200, "max_datagram_size"),
        (16000, "max_datagram_size"),
        (65535, "port"),
        (0, "port"),
        (60.0, "relay_timeout_s"),
    ],
)
def test_range_edges_are_accepted(edge: float, field: str) -> None:
    assert getattr(EndpointConfig(**{field: edge}), field) == edge


def test_words_convert_at_the_edge_only() -> None:
    assert Congestion.parse(" Reno ") is Congestion.RENO
    assert PathPolicy.parse("direct-only") is PathPolicy.DIRECT_ONLY
    with pytest.raises(SettingError, match=r"^congestion must be one of bbr, cubic, reno"):
        Congestion.parse("vegas")
    # Each member is its word, for JSON lines and logs.
    assert f"{Congestion.CUBIC}" == "cubic" and str(PathKind.RELAY) == "relay"


def test_route_describes_itself_from_its_values() -> None:
    url = RelayUrl.parse("http://[::1]:9000")
    assert str(Route(PathKind.RELAY, relay_url=url)) == "relay http://[::1]:9000"
    assert Route(PathKind.RELAY).place == "(none)"
    assert str(Route(PathKind.DIRECT, address=("::1", 5))) == "direct [::1]:5"
    assert str(Route(PathKind.DIRECT, trying=1)) == "direct (trying 1 address)"
    assert str(Route(PathKind.DIRECT, trying=3)) == "direct (trying 3 addresses)"


_NAMED_CHOICES = {
    "path_policy": PathPolicy,
    "policy": PathPolicy,
    "path_kind": PathKind,
    "kind": PathKind,
    "old_kind": PathKind,
    "congestion": Congestion,
}


def _public_callables() -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for name in p2pcp.net.__all__:
        item = getattr(p2pcp.net, name)
        if inspect.isclass(item):
            found.append((name, item))
            for member_name, member in vars(item).items():
                if isinstance(member, property) and member.fget is not None:
                    found.append((f"{name}.{member_name}", member.fget))
                elif inspect.isfunction(member) or isinstance(member, classmethod):
                    found.append((f"{name}.{member_name}", getattr(item, member_name)))
    return found


def test_public_api_types_named_choices_as_enums() -> None:
    """No ``str`` where a path policy, path kind or congestion controller goes:
    every parameter, return and field of net's public API with such a name is
    typed as its enum (the layering of issue 18: strings only at the edge)."""
    checked = 0
    for where, item in _public_callables():
        target = (
            item.__init__ if inspect.isclass(item) and not dataclasses.is_dataclass(item) else item
        )
        try:
            hints = typing.get_type_hints(target, localns={"RelayUrl": RelayUrl})
        except (TypeError, NameError):
            continue
        for name, hint in hints.items():
            key = where.rsplit(".", 1)[-1] if name == "return" else name
            expected = _NAMED_CHOICES.get(key)
            if expected is None:
                continue
            checked += 1
            assert str not in typing.get_args(hint) and hint is not str, (where, name, hint)
            assert expected in (hint, *typing.get_args(hint)), (where, name, hint)
    # The rule sees what it looks for: EndpointConfig, Connection, Route.
    assert checked >= 8
