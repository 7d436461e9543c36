"""A LAN lab: hosts on one Ethernet segment, no router, no relay, no server.

Layout (addresses in the test range 198.18.0.0/15; loopback up everywhere)::

      <prefix>-lan: bridge br0 (multicast flooded: snooping off)
          |                 |                 |
      <prefix>-ha       <prefix>-hb       <prefix>-hc
      eth0 198.18.7.1   eth0 198.18.7.2   eth0 198.18.7.3

The hosts share one broadcast domain, so multicast DNS (224.0.0.251:5353)
between them works as on a home LAN; there is no default route, so nothing
beyond the segment is reachable. IPv6 is off (p2pcp's LAN rendezvous is
IPv4). The third host is for a test's bystander or attacker.

One fault: ``drop_udp_from`` (an nftables input rule in one host) silences
one host's datagrams to a port, for example a real sender's multicast DNS
answers, so a test can decide whose answer a receiver sees.

Names come from natlab.py's ``new_lab_prefix`` (``p2nl<pid>x<n>``), so the NAT
lab's leftover cleanup removes a killed run's LAN lab as well.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import plumbing
from .natlab import new_lab_prefix
from .plumbing import COMMAND_TIMEOUT_S, LabProcess

LAN_PREFIX_LEN = 24
HOST_NAMES = ("a", "b", "c")


@dataclass(frozen=True)
class LanHost:
    name: str
    ns: str
    ip: str


class LanLab:
    """Namespaces and one bridge for one test; see the module doc."""

    def __init__(self, log_dir: Path) -> None:
        self.prefix = new_lab_prefix()
        self.log_dir = log_dir
        self.switch_ns = f"{self.prefix}-lan"
        self.a, self.b, self.c = (
            LanHost(name, f"{self.prefix}-h{name}", f"198.18.7.{number}")
            for number, name in enumerate(HOST_NAMES, start=1)
        )
        self.processes: list[LabProcess] = []
        self._namespaces = [self.switch_ns, *(host.ns for host in self.hosts)]

    @property
    def hosts(self) -> tuple[LanHost, LanHost, LanHost]:
        return (self.a, self.b, self.c)

    def build(self) -> None:
        plumbing.add_namespace(self.switch_ns, has_ipv6=False)
        plumbing.ip(self.switch_ns, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        plumbing.ip(self.switch_ns, "link", "set", "br0", "up")
        for host in self.hosts:
            plumbing.add_namespace(host.ns, has_ipv6=False)
            port = f"to-h{host.name}"
            plumbing.veth(host.ns, "eth0", self.switch_ns, port)
            plumbing.ip(self.switch_ns, "link", "set", "dev", port, "master", "br0")
            plumbing.ip(self.switch_ns, "link", "set", "dev", port, "up")
            plumbing.address(host.ns, "eth0", f"{host.ip}/{LAN_PREFIX_LEN}")

    def teardown(self) -> None:
        """Stop every process this lab started, then delete its namespaces."""
        for proc in reversed(self.processes):
            with contextlib.suppress(Exception):
                proc.stop(signal.SIGKILL)
        for ns in reversed(self._namespaces):
            plumbing.delete_namespace(ns)

    def exec(
        self,
        host: LanHost,
        argv: list[str],
        *,
        timeout: float = COMMAND_TIMEOUT_S,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv on host to completion; never raises on its exit code."""
        return plumbing.exec_in(host.ns, argv, timeout=timeout, env=env)

    def start(
        self, host: LanHost, argv: list[str], *, name: str, env: dict[str, str] | None = None
    ) -> LabProcess:
        """Start argv in the background on host; stdout is read line by line."""
        proc = plumbing.start_process(
            host.ns,
            argv,
            name=name,
            stderr_path=self.log_dir / f"{self.prefix}-{name}.stderr",
            env=env,
        )
        self.processes.append(proc)
        return proc

    def drop_udp_from(self, host: LanHost, source: LanHost, port: int) -> None:
        """host stops hearing source's UDP datagrams sent from port."""
        plumbing.nft(
            host.ns,
            f"""table ip deaf {{
  chain input {{
    type filter hook input priority 0; policy accept;
    ip saddr {source.ip} udp sport {port} drop
  }}
}}
""",
        )

    def restore_udp(self, host: LanHost) -> None:
        plumbing.nft_delete(host.ns, "ip", "deaf")


def build_lan_lab(log_dir: Path) -> LanLab:
    lab = LanLab(log_dir)
    try:
        lab.build()
    except BaseException:
        lab.teardown()
        raise
    return lab
