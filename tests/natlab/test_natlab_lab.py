"""Self-tests of the NAT lab: it behaves like the networks it claims to be.

They use plain Python sockets (probes.py), not p2pcp, so they hold before the
relay exists and tell a lab bug apart from a p2pcp bug.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.netlab.natlab import ADDRESS_SERVER_PORTS, RELAY_IP, NatKind, NatLab, Site

from .conftest import MakeLab

pytestmark = pytest.mark.natlab

PUNCH_SECONDS = 2.0


def _mapping_ip(mapping: str) -> str:
    return mapping.rsplit(":", 1)[0]


def test_hosts_reach_the_relay_host_by_udp_and_tcp_through_their_nat(make_lab: MakeLab) -> None:
    """Both hosts get out by UDP and TCP, and the relay host sees the routers' public address."""
    lab = make_lab(NatKind.EASY, NatKind.HARD)
    lab.start_address_server()
    for site in lab.sites:
        udp = lab.probe(site.host_ns, "udp-ask", RELAY_IP, str(ADDRESS_SERVER_PORTS[0]))
        assert udp["mapping"] is not None, f"host {site.name}: no UDP answer"
        assert _mapping_ip(udp["mapping"]) == site.wan_ip, udp
        tcp = lab.probe(site.host_ns, "tcp-ask", RELAY_IP, str(ADDRESS_SERVER_PORTS[0]))
        assert tcp["mapping"] is not None, f"host {site.name}: no TCP answer: {tcp}"
        assert _mapping_ip(tcp["mapping"]) == site.wan_ip, tcp


@pytest.mark.parametrize(("kind", "is_same_port"), [(NatKind.EASY, True), (NatKind.HARD, False)])
def test_nat_kinds_map_ports_as_named(make_lab: MakeLab, kind: NatKind, is_same_port: bool) -> None:
    """Easy NAT: one public port for every destination; hard NAT: a new one per destination."""
    lab = make_lab(kind, kind)
    lab.start_address_server()
    result = lab.probe(lab.a.host_ns, "udp-ask-twice", RELAY_IP, *map(str, ADDRESS_SERVER_PORTS))
    first, second = result["mappings"]
    assert first is not None and second is not None, result
    assert (first == second) is is_same_port, result


def test_hosts_cannot_reach_each_other_directly(make_lab: MakeLab) -> None:
    """No route to the other LAN, and unsolicited traffic to a router's public address dies."""
    lab = make_lab(NatKind.EASY, NatKind.EASY)
    listener = lab.start_probe(lab.b.host_ns, "udp-listen", "4000", "2", name="b-listen")
    listener.wait_line(lambda line: '"ready"' in line)
    to_lan = lab.probe(lab.a.host_ns, "udp-send", lab.b.host_ip, "4000", "0.5")
    to_wan = lab.probe(lab.a.host_ns, "udp-send", lab.b.wan_ip, "4000", "0.5")
    assert to_wan["sent"] > 0, to_wan
    heard = json.loads(listener.wait_line(lambda line: '"received"' in line))
    assert heard["received"] == 0, (heard, to_lan)
    tcp = lab.probe(lab.a.host_ns, "tcp-ask", lab.b.host_ip, "4000")
    assert tcp["mapping"] is None, tcp


def _punch(lab: NatLab) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
    """Both hosts learn their mapping, swap them, and send to each other at once.

    Needs the address server running (``lab.start_address_server()``).
    """
    punchers = {
        site.name: lab.start_probe(
            site.host_ns,
            "punch",
            RELAY_IP,
            str(ADDRESS_SERVER_PORTS[0]),
            str(PUNCH_SECONDS),
            name=f"punch-{site.name}",
            stdin_pipe=True,
        )
        for site in lab.sites
    }
    mappings = {
        name: json.loads(proc.wait_line(lambda line: '"mapping"' in line))["mapping"]
        for name, proc in punchers.items()
    }
    assert all(mappings.values()), mappings
    for name, peer in (("a", "b"), ("b", "a")):
        stdin = punchers[name].process.stdin
        assert stdin is not None
        stdin.write(f"{mappings[peer]}\n")
        stdin.flush()
    results = [
        json.loads(punchers[name].wait_line(lambda line: '"received"' in line))
        for name in ("a", "b")
    ]
    return mappings, results[0], results[1]


def test_udp_hole_punch_succeeds_between_two_easy_nats(make_lab: MakeLab) -> None:
    """Simultaneous punching works through two endpoint-independent NATs.

    This proves the inbound-drop rule does its job (without it two plain
    masquerades fail: see natlab.py's module docstring), so p2pcp is expected to go direct here.
    """
    lab = make_lab(NatKind.EASY, NatKind.EASY)
    lab.start_address_server()
    mappings, at_a, at_b = _punch(lab)
    assert at_a["received"] and at_b["received"], (mappings, at_a, at_b)
    # Each side heard the other from exactly the mapping the address server saw.
    assert at_a["sources"] == [mappings["b"]], (mappings, at_a)
    assert at_b["sources"] == [mappings["a"]], (mappings, at_b)


def test_udp_hole_punch_fails_when_one_nat_is_symmetric(make_lab: MakeLab) -> None:
    """Without port prediction an easy/hard pair cannot punch: the hard side's port moves."""
    lab = make_lab(NatKind.EASY, NatKind.HARD)
    lab.start_address_server()
    mappings, at_a, at_b = _punch(lab)
    assert not (at_a["received"] and at_b["received"]), (mappings, at_a, at_b)


def _blocked_and_open(lab: NatLab, blocked: Site, open_site: Site) -> None:
    udp = lab.probe(blocked.host_ns, "udp-ask", RELAY_IP, str(ADDRESS_SERVER_PORTS[0]))
    assert udp["mapping"] is None, udp
    tcp = lab.probe(blocked.host_ns, "tcp-ask", RELAY_IP, str(ADDRESS_SERVER_PORTS[0]))
    assert tcp["mapping"] is not None and _mapping_ip(tcp["mapping"]) == blocked.wan_ip, tcp
    other = lab.probe(open_site.host_ns, "udp-ask", RELAY_IP, str(ADDRESS_SERVER_PORTS[0]))
    assert other["mapping"] is not None, other


def test_udp_blocked_router_lets_only_tcp_out(make_lab: MakeLab) -> None:
    """Behind a udp-blocked router no UDP reaches the internet but TCP does."""
    lab = make_lab(NatKind.UDP_BLOCKED, NatKind.EASY)
    lab.start_address_server()
    _blocked_and_open(lab, lab.a, lab.b)


def test_breaking_the_direct_path_stops_punching_but_not_the_relay_host(make_lab: MakeLab) -> None:
    """The scenarios' tools work: the break rule kills host-to-host UDP only, and lifts.

    Also applies the rate cap the scenarios use, to show tc accepts it.
    """
    lab = make_lab(NatKind.EASY, NatKind.EASY)
    lab.limit_rate(lab.b, 80)
    lab.start_address_server()
    lab.break_direct_path()
    mappings, at_a, at_b = _punch(lab)
    assert at_a["received"] == 0 and at_b["received"] == 0, (mappings, at_a, at_b)
    lab.restore_direct_path()
    mappings, at_a, at_b = _punch(lab)
    assert at_a["received"] and at_b["received"], (mappings, at_a, at_b)
