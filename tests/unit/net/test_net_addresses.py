"""Address helpers: interface enumeration and the socket's address forms."""

from __future__ import annotations

from p2pcp.net.paths.magicsock import format_address
from p2pcp.net.udp.interfaces import interface_addresses
from p2pcp.net.udp.sockets import public_address


def test_loopback_is_listed() -> None:
    hosts = {a.host for a in interface_addresses()}
    assert "127.0.0.1" in hosts or "::1" in hosts


def test_no_link_local_or_unspecified() -> None:
    for address in interface_addresses():
        assert not address.host.startswith("fe80")
        assert address.host not in ("0.0.0.0", "::")


def test_mapped_ipv4_is_shown_plain() -> None:
    assert public_address(("::ffff:127.0.0.1", 5, 0, 0)) == ("127.0.0.1", 5)
    assert public_address(("::1", 5, 0, 0)) == ("::1", 5)
    assert public_address(("10.0.0.1", 7)) == ("10.0.0.1", 7)


def test_format_address_brackets_ipv6() -> None:
    assert format_address(("::1", 4433)) == "[::1]:4433"
    assert format_address(("127.0.0.1", 4433)) == "127.0.0.1:4433"
