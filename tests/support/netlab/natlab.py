"""A NAT lab in Linux network namespaces, built and torn down by the tests.

Layout (every address in the test range 198.18.0.0/15; loopback up everywhere)::

                      <prefix>-relay  eth0 198.18.0.1   (relay, address server)
                             |
      <prefix>-inet: bridge br0, 198.18.0.0/24 (the "internet")
             |                                   |
      <prefix>-ra  wan 198.18.0.11        <prefix>-rb  wan 198.18.0.12
      (router A)   lan 198.19.1.1         (router B)   lan 198.19.2.1
             |                                   |
      <prefix>-ha  eth0 198.19.1.2        <prefix>-hb  eth0 198.19.2.2
      (host A, default via 198.19.1.1)    (host B, default via 198.19.2.1)

Routers know only their two subnets, so a host can reach the internet subnet
(through its router's NAT) but never the other host's LAN address.

Router kinds (``NatKind``), nftables in the router's namespace:

- ``easy``: endpoint-independent mapping (plain ``masquerade`` keeps the
  source port, one public port for every destination);
- ``hard``: symmetric (``masquerade random,fully-random``: a new public port
  per destination), so hole punching cannot guess the port;
- ``udp-blocked``: easy NAT for TCP, but every UDP datagram from the LAN is
  dropped (only the relay's WebSocket over TCP gets out).

Every router also drops unsolicited inbound traffic, as home routers do, in a
prerouting filter chain at priority -150 (after conntrack, before NAT):
``iifname "wan" ct state new drop``. Without it two plain masquerades cannot
punch at once (the first punch creates a conntrack entry "to the
router itself" and the host's own flow then gets another port); with it the
dropped packet's entry is never confirmed.

Faults (the test kernels have no ``tc netem``, only tbf and nftables): ``limit_rate``
(tc tbf on a router's LAN leg), ``add_random_loss`` (plumbing.py's nftables
rule on a router's two legs, both directions), ``start_blackout``/
``end_blackout`` (a netdev drop-everything table on a router),
``restart_relay``, and ``attach_delay_line`` (the lab's delay line,
delayline.c, bridged into a router's WAN link, for delay, jitter and
reordering).

Names: each lab gets a prefix ``p2nl<pid>x<n>`` (the pid of the pytest
process that built it), so labs of parallel sessions never clash, never take
the bench link's fixed ``p2b-*`` names, and a later session can tell a
leftover (its pid is gone) from a live lab. Interfaces are created directly
inside their namespaces and never appear in the root one.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import plumbing
from .delayline import DelayLine
from .plumbing import COMMAND_TIMEOUT_S, LabProcess, run

LAB_NAME_PREFIX = "p2nl"
_LAB_NAME = re.compile(rf"^{LAB_NAME_PREFIX}(\d+)x\d+-")

INTERNET_PREFIX_LEN = 24
RELAY_IP = "198.18.0.1"
RELAY_PORT = 3340
RELAY_URL = f"http://{RELAY_IP}:{RELAY_PORT}"
# The probes' address server on the relay host (UDP on both, TCP on the first).
ADDRESS_SERVER_PORTS = (3478, 3479)

PROBES = Path(__file__).with_name("probes.py")

# The two legs of every router: towards the internet and towards its host.
ROUTER_LEGS = ("wan", "lan")

_lab_numbers = itertools.count()


def new_lab_prefix() -> str:
    """A fresh ``p2nl<pid>x<n>`` prefix (every topology of the tests takes
    one, so ``remove_leftover_labs`` finds its namespaces too)."""
    return f"{LAB_NAME_PREFIX}{os.getpid()}x{next(_lab_numbers)}"


class NatKind(str, enum.Enum):
    EASY = "easy"
    HARD = "hard"
    UDP_BLOCKED = "udp-blocked"


@dataclass(frozen=True)
class Site:
    """One side of the lab: a router and the host behind it."""

    name: str  # "a" or "b"
    router_ns: str
    host_ns: str
    wan_ip: str  # the router's public address: every host mapping uses it
    router_lan_ip: str
    host_ip: str
    nat: NatKind


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftover_labs(*, including_own: bool = False) -> list[str]:
    """Delete lab namespaces whose building process is gone (or our own)."""
    removed = []
    for ns in plumbing.list_namespaces():
        match = _LAB_NAME.match(ns)
        if not match:
            continue
        owner = int(match.group(1))
        if (owner == os.getpid() and including_own) or (
            owner != os.getpid() and not _pid_alive(owner)
        ):
            plumbing.delete_namespace(ns)
            removed.append(ns)
    return removed


class NatLab:
    """Namespaces, links, routes and NAT rules for one test; see the module doc."""

    def __init__(self, nat_a: NatKind, nat_b: NatKind, log_dir: Path) -> None:
        self.prefix = new_lab_prefix()
        self.log_dir = log_dir
        self.inet_ns = f"{self.prefix}-inet"
        self.relay_ns = f"{self.prefix}-relay"
        self.a = self._site("a", 1, nat_a)
        self.b = self._site("b", 2, nat_b)
        self.processes: list[LabProcess] = []
        self.relay: LabProcess | None = None
        # The delay line on each site's WAN (attach_delay_line), by site name.
        self.delay_lines: dict[str, DelayLine] = {}
        self._namespaces = [
            self.inet_ns,
            self.relay_ns,
            self.a.router_ns,
            self.a.host_ns,
            self.b.router_ns,
            self.b.host_ns,
        ]

    def _site(self, name: str, number: int, nat: NatKind) -> Site:
        """Site number n: WAN 198.18.0.1n, LAN 198.19.n.0/24 (router .1, host .2)."""
        return Site(
            name=name,
            router_ns=f"{self.prefix}-r{name}",
            host_ns=f"{self.prefix}-h{name}",
            wan_ip=f"198.18.0.1{number}",
            router_lan_ip=f"198.19.{number}.1",
            host_ip=f"198.19.{number}.2",
            nat=nat,
        )

    @property
    def sites(self) -> tuple[Site, Site]:
        return (self.a, self.b)

    # -- building -------------------------------------------------------------

    def build(self) -> None:
        for ns in self._namespaces:
            plumbing.add_namespace(ns)
        self.ip(self.inet_ns, "link", "add", "br0", "type", "bridge")
        self.ip(self.inet_ns, "link", "set", "br0", "up")
        self._wire(self.relay_ns, "eth0", f"{RELAY_IP}/{INTERNET_PREFIX_LEN}", "to-relay")
        for site in self.sites:
            self._wire(
                site.router_ns, "wan", f"{site.wan_ip}/{INTERNET_PREFIX_LEN}", f"to-r{site.name}"
            )
            plumbing.veth(site.router_ns, "lan", site.host_ns, "eth0")
            plumbing.address(site.router_ns, "lan", f"{site.router_lan_ip}/24")
            plumbing.address(site.host_ns, "eth0", f"{site.host_ip}/24")
            self.ip(site.host_ns, "route", "add", "default", "via", site.router_lan_ip)
            plumbing.sysctl(site.router_ns, "net.ipv4.ip_forward", "1")
            plumbing.nft(site.router_ns, _router_ruleset(site.nat))

    def _wire(self, ns: str, name: str, cidr: str, bridge_port: str) -> None:
        """A veth from ns to the internet bridge (port named bridge_port)."""
        plumbing.veth(ns, name, self.inet_ns, bridge_port)
        self.ip(self.inet_ns, "link", "set", "dev", bridge_port, "master", "br0")
        self.ip(self.inet_ns, "link", "set", "dev", bridge_port, "up")
        plumbing.address(ns, name, cidr)

    def teardown(self) -> None:
        """Stop every process this lab started, then delete its namespaces."""
        for line in self.delay_lines.values():
            with contextlib.suppress(Exception):
                line.process.stop(signal.SIGKILL)
        for proc in reversed(self.processes):
            with contextlib.suppress(Exception):
                proc.stop(signal.SIGKILL)
        for ns in reversed(self._namespaces):
            plumbing.delete_namespace(ns)

    # -- commands -------------------------------------------------------------

    def ip(self, ns: str, *args: str) -> subprocess.CompletedProcess[str]:
        return plumbing.ip(ns, *args)

    def exec(
        self,
        ns: str,
        argv: list[str],
        *,
        timeout: float = COMMAND_TIMEOUT_S,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv in ns to completion; never raises on its exit code."""
        return plumbing.exec_in(ns, argv, timeout=timeout, env=env)

    def probe(self, ns: str, *args: str, timeout: float = COMMAND_TIMEOUT_S) -> dict[str, Any]:
        """Run one probe (probes.py) in ns and return its last JSON line."""
        result = self.exec(ns, [sys.executable, str(PROBES), *args], timeout=timeout)
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        if result.returncode != 0 or not lines:
            raise RuntimeError(f"probe {args} in {ns} failed: {result.stderr.strip()}")
        return json.loads(lines[-1])  # type: ignore[no-any-return]

    def start(
        self,
        ns: str,
        argv: list[str],
        *,
        name: str,
        env: dict[str, str] | None = None,
        stdin_pipe: bool = False,
    ) -> LabProcess:
        """Start argv in the background in ns; stdout is read line by line."""
        proc = plumbing.start_process(
            ns,
            argv,
            name=name,
            stderr_path=self.log_dir / f"{self.prefix}-{name}.stderr",
            env=env,
            stdin_pipe=stdin_pipe,
        )
        self.processes.append(proc)
        return proc

    def start_probe(self, ns: str, *args: str, name: str, stdin_pipe: bool = False) -> LabProcess:
        return self.start(
            ns, [sys.executable, str(PROBES), *args], name=name, stdin_pipe=stdin_pipe
        )

    def start_address_server(self) -> LabProcess:
        """The probes' address server on the relay host (UDP echo of the mapping, TCP)."""
        server = self.start_probe(
            self.relay_ns,
            "serve",
            RELAY_IP,
            *map(str, ADDRESS_SERVER_PORTS),
            name="address-server",
        )
        server.wait_line(lambda line: '"ready"' in line, timeout=COMMAND_TIMEOUT_S)
        return server

    # -- the relay ------------------------------------------------------------

    def start_relay(self, command: list[str], env: dict[str, str]) -> LabProcess:
        """Start ``p2pcp relay`` on the relay host and wait until /health answers."""
        relay = self.start(
            self.relay_ns,
            [*command, "relay", "--host", RELAY_IP, "--port", str(RELAY_PORT), "-v"],
            name="relay",
            env=env,
        )
        self.relay = relay
        deadline = time.monotonic() + COMMAND_TIMEOUT_S
        while time.monotonic() < deadline:
            if relay.process.poll() is not None:
                raise AssertionError(f"the relay exited at start\n{relay.describe()}")
            if self.relay_is_healthy():
                return relay
            time.sleep(0.2)
        raise AssertionError(f"the relay's /health never answered\n{relay.describe()}")

    def relay_is_healthy(self) -> bool:
        script = (
            "import urllib.request,sys\n"
            "try:\n"
            f"    r = urllib.request.urlopen('{RELAY_URL}/health', timeout=1)\n"
            "    sys.exit(0 if r.status == 200 else 1)\n"
            "except Exception:\n"
            "    sys.exit(1)\n"
        )
        return self.exec(self.relay_ns, [sys.executable, "-c", script]).returncode == 0

    def relay_metrics(self) -> str:
        """The relay's /metrics samples (no comment lines), or why there are none."""
        script = (
            "import urllib.request\n"
            f"print(urllib.request.urlopen('{RELAY_URL}/metrics', timeout=2).read().decode())\n"
        )
        result = self.exec(self.relay_ns, [sys.executable, "-c", script])
        if result.returncode != 0:
            return "(no /metrics answer)"
        return "\n".join(
            line for line in result.stdout.splitlines() if line and not line.startswith("#")
        )

    def kill_relay(self) -> None:
        """Kill the relay process outright (SIGKILL: no goodbye to its clients)."""
        assert self.relay is not None, "no relay was started"
        self.relay.stop(signal.SIGKILL)

    def restart_relay(
        self,
        command: list[str],
        env: dict[str, str],
        *,
        down_s: float = 1.0,
        sig: int = signal.SIGKILL,
    ) -> LabProcess:
        """Stop the relay (SIGKILL by default: a crash), wait down_s, start a new one.

        The new relay listens on the same address and port, so clients that
        reconnect find it; it knows nothing of the old one's logins.
        """
        assert self.relay is not None, "no relay was started"
        self.relay.stop(sig)
        time.sleep(down_s)
        return self.start_relay(command, env)

    # -- shaping the paths ----------------------------------------------------

    def limit_rate(self, site: Site, mbit: float) -> None:
        """Cap what router site forwards to its host (direct and relayed alike)."""
        run(
            [
                "tc", "-n", site.router_ns, "qdisc", "replace", "dev", "lan", "root",
                "tbf", "rate", f"{mbit}mbit", "burst", "64kb", "latency", "100ms",
            ]
        )  # fmt: skip

    def break_direct_path(self) -> None:
        """Drop every UDP datagram between the two routers' public addresses.

        The rule sits in router A (both directions), before conntrack, so the
        hosts' direct UDP flow dies while the relay (TCP and UDP to the relay
        host) is untouched.
        """
        plumbing.nft(
            self.a.router_ns,
            f"""table ip breaker {{
  chain inbound {{
    type filter hook prerouting priority -300; policy accept;
    iifname "wan" ip saddr {self.b.wan_ip} meta l4proto udp drop
  }}
  chain outbound {{
    type filter hook postrouting priority 0; policy accept;
    oifname "wan" ip daddr {self.b.wan_ip} meta l4proto udp drop
  }}
}}
""",
        )

    def restore_direct_path(self) -> None:
        plumbing.nft_delete(self.a.router_ns, "ip", "breaker")

    def add_random_loss(self, site: Site, percent: float) -> None:
        """Drop percent % of the IPv4 frames entering router site, both directions.

        On both router legs: ``wan`` ingress is the traffic towards the
        host, ``lan`` ingress the traffic from it. Every path through the
        router (direct, relay, STUN) loses alike.
        """
        plumbing.nft(site.router_ns, plumbing.random_loss_ruleset("loss", ROUTER_LEGS, percent))

    def remove_random_loss(self, site: Site) -> None:
        plumbing.nft_delete(site.router_ns, "netdev", "loss")

    def start_blackout(self, site: Site) -> None:
        """Cut router site off: every frame entering its WAN or LAN leg is dropped.

        The host can reach nothing (relay, peer, STUN) and nothing reaches it,
        as when a train enters a tunnel; the router's conntrack and NAT
        mappings stay as they were. ``end_blackout`` removes the rule.
        """
        plumbing.nft(site.router_ns, plumbing.ingress_table("blackout", ROUTER_LEGS, policy="drop"))

    def end_blackout(self, site: Site) -> None:
        plumbing.nft_delete(site.router_ns, "netdev", "blackout")

    def attach_delay_line(
        self,
        site: Site,
        *,
        delay_ms: float,
        jitter_ms: float = 0.0,
        is_ordered: bool = False,
        seed: int | None = None,
    ) -> DelayLine:
        """Put the delay line (delayline.c) on router site's WAN link.

        In the internet namespace the router's bridge port leaves ``br0`` for
        a small bridge of its own with the line's first TAP device; the
        second TAP joins ``br0``. Every frame to and from the router then
        waits delay_ms ± jitter_ms, drawn per frame, so frames reorder;
        is_ordered keeps the jitter from reordering them (a queue's jitter).
        No rate limit. Addresses and NAT are unchanged; a path between the
        two hosts crosses it once each way.
        """
        left, right = f"dl{site.name}-r", f"dl{site.name}-i"
        line = DelayLine.start(
            self.inet_ns, left, right,
            log_dir=self.log_dir, name=f"{self.prefix}-delayline-{site.name}", seed=seed,
        )  # fmt: skip
        self.delay_lines[site.name] = line
        line.shape(delay_ms=delay_ms, jitter_ms=jitter_ms, is_reordering=not is_ordered)
        port, side_bridge = f"to-r{site.name}", f"br{site.name}"
        self.ip(self.inet_ns, "link", "add", side_bridge, "type", "bridge")
        self.ip(self.inet_ns, "link", "set", port, "nomaster")
        self.ip(self.inet_ns, "link", "set", port, "master", side_bridge)
        self.ip(self.inet_ns, "link", "set", left, "master", side_bridge)
        self.ip(self.inet_ns, "link", "set", right, "master", "br0")
        for device in (left, right, side_bridge):
            self.ip(self.inet_ns, "link", "set", device, "up")
        return line

    def detach_delay_line(self, site: Site) -> dict[str, dict[str, Any]]:
        """Take the line off site's WAN link (router back on br0); return its
        final counters per direction (delayline.c names them)."""
        line = self.delay_lines.pop(site.name)
        port = f"to-r{site.name}"
        self.ip(self.inet_ns, "link", "set", port, "nomaster")
        self.ip(self.inet_ns, "link", "set", port, "master", "br0")
        self.ip(self.inet_ns, "link", "delete", f"br{site.name}")
        stats = line.stop()
        if not stats:
            raise AssertionError(f"the delay line left no stats\n{line.process.describe()}")
        return stats


def _router_ruleset(nat: NatKind) -> str:
    masquerade = "masquerade random,fully-random" if nat is NatKind.HARD else "masquerade"
    block_udp = 'iifname "lan" meta l4proto udp drop' if nat is NatKind.UDP_BLOCKED else ""
    return f"""table ip lab {{
  chain inbound {{
    type filter hook prerouting priority -150; policy accept;
    iifname "wan" ct state new drop
  }}
  chain forward {{
    type filter hook forward priority 0; policy accept;
    {block_udp}
  }}
  chain nat_out {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan" {masquerade}
  }}
}}
"""


def build_lab(nat_a: NatKind, nat_b: NatKind, log_dir: Path) -> NatLab:
    lab = NatLab(nat_a, nat_b, log_dir)
    try:
        lab.build()
    except BaseException:
        lab.teardown()
        raise
    return lab


def lab_unavailable_reason() -> str | None:
    """Why the lab cannot run here, or None (plumbing.unavailable_reason)."""
    return plumbing.unavailable_reason(f"{LAB_NAME_PREFIX}{os.getpid()}x999999-probe")
