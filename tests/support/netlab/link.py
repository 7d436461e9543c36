"""Two hosts joined by one emulated link: the bench's lab (bench/network.py).

Topology (IPv4 only, MTU 1500; IPv6 is switched off so nothing but the
benchmark's own traffic crosses the link)::

    p2b-a (sender)          p2b-m                          p2b-b (receiver)
    eth0 10.77.0.1  <==  delay line process (delayline.c)  ==>  eth0 10.77.0.2

Each ``eth0`` is a TAP device of the delay line: the line creates both in
``p2b-m``, they are moved into ``p2b-a`` and ``p2b-b`` (its file descriptors
keep working), and every frame one host sends is read by the line and, when
due, written into the other host's ``eth0``. No bridge or veth is in the
path, so the line's CPU goes on forwarding alone. Servers that both ends
must reach (magic-wormhole's) run in ``p2b-a`` on 10.77.0.1: the sender
reaches them locally, the receiver across the link.

What the link does per direction (``set_shape``; see delayline.c): a
bottleneck of the profile's rate (counting 24 bytes of preamble, FCS and gap
per frame, as on Ethernet) with a tail-drop queue of ``queue_bytes``, then
the one-way delay (half the RTT) plus uniform jitter kept in order. The rate
lives in the delay line rather than in ``tc tbf``, because tbf re-arms a
timer on nearly every frame and its CPU cost alone kept TCP well below a
gigabit link's rate. Random loss is plumbing.py's nftables rule on each
host's ``eth0`` ingress; its counters show the loss actually applied.

Frames on the link are real wire frames: the TAP devices offer checksum
offload but no segmentation offload, so the sending kernel segments TCP's
64 KB super-frames before the line reads them (it counts any frame above
1514 bytes as ``oversize`` and drops it; ``max_frame`` in its stats shows
the largest seen).

Names are fixed (``p2b-*``, never the NAT lab's ``p2nl<pid>x<n>-*``), so a
lock file keeps two benchmarks from sharing them, and ``build`` first removes
leftovers of an earlier run that died.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from . import plumbing
from .delayline import DelayLine, process_cpu_seconds
from .plumbing import COMMAND_TIMEOUT_S, LabError, LabProcess, in_ns, run

__all__ = [
    "ADDR_A",
    "ADDR_B",
    "NS_A",
    "NS_B",
    "LabError",
    "LinkLab",
    "LinkShape",
    "in_ns",
    "process_cpu_seconds",
    "system_cpu",
    "unavailable_reason",
]

NS_A = "p2b-a"
NS_M = "p2b-m"
NS_B = "p2b-b"
NAMESPACES = (NS_A, NS_M, NS_B)
ADDR_A = "10.77.0.1"
ADDR_B = "10.77.0.2"
PREFIX_LEN = 24
MTU_BYTES = 1500

PROBES = Path(__file__).with_name("probes.py")
LOCK_PATH = Path("/run/lock/p2pcp-bench-network.lock")
LOSS_TABLE = "p2b_loss"

# Ethernet preamble + start delimiter (8), FCS (4) and inter-frame gap (12):
# what a real link spends per frame beyond the 14-byte header we see.
ETHERNET_OVERHEAD_BYTES = 24
# The delay line's timing step: frames leave within about +-25 us of due.
GRANULARITY_US = 50
# The bottleneck queue holds at least this much (about 2 ms at 1 Gbit/s),
# else one bandwidth-delay product.
MIN_QUEUE_BYTES = 256 * 1024
# A TAP device's queue towards the delay line, in frames: deep enough that a
# burst never overflows it while the line sleeps (it reads every 50 us).
TAP_QUEUE_FRAMES = 10000
# The line's ring slots per direction: what a shape can hold at once (its
# queue plus a one-way delay of traffic), counted in frames of 750 bytes on
# average, doubled; a full ring drops (the stats count it as dropped_full).
MIN_RING_FRAMES = 8192
AVERAGE_FRAME_BYTES = 750
ECHO_PORT = 7777


@dataclass(frozen=True)
class LinkShape:
    """What the link between a and b does, the same in both directions.

    A rate of 0 means no bottleneck (frames cross at once, only delayed).
    """

    rate_mbit: float
    rtt_ms: float
    loss_percent: float = 0.0
    jitter_ms: float = 0.0

    @property
    def rate_bytes_per_s(self) -> float:
        return self.rate_mbit * 1e6 / 8

    @property
    def queue_bytes(self) -> int:
        bdp = self.rate_bytes_per_s * self.rtt_ms / 1000
        return max(MIN_QUEUE_BYTES, int(bdp))

    @property
    def ring_frames(self) -> int:
        one_way_s = self.rtt_ms / 2000 + self.jitter_ms / 1000
        in_line = self.queue_bytes + self.rate_bytes_per_s * one_way_s
        return max(MIN_RING_FRAMES, int(2 * in_line / AVERAGE_FRAME_BYTES))


def unavailable_reason() -> str | None:
    """Why the bench's link cannot be built here (one line), or None."""
    return plumbing.unavailable_reason(f"p2b-probe{os.getpid()}")


def system_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / os.sysconf("SC_CLK_TCK"), sum(values) / os.sysconf("SC_CLK_TCK")


class LinkLab:
    """The namespaces, the link and the processes in them; see the module doc."""

    def __init__(self, delay_line_binary: Path, log_dir: Path, ring_frames: int) -> None:
        self.delay_line_binary = delay_line_binary
        self.log_dir = log_dir
        self.ring_frames = ring_frames
        self.delay_line: DelayLine | None = None
        self.processes: list[LabProcess] = []
        self._lock: IO[str] | None = None

    # -- building ----------------------------------------------------------

    def build(self) -> None:
        LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
        lock = LOCK_PATH.open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise LabError(f"another network bench holds {LOCK_PATH}") from None
        self._lock = lock
        remove_namespaces()
        for ns in NAMESPACES:
            plumbing.add_namespace(ns, has_ipv6=False)
        self.delay_line = DelayLine.start(
            NS_M,
            "p2bta",
            "p2btb",
            log_dir=self.log_dir,
            binary=self.delay_line_binary,
            options=(
                "--queue-frames", str(self.ring_frames),
                "--granularity-us", str(GRANULARITY_US),
                "--overhead-bytes", str(ETHERNET_OVERHEAD_BYTES),
            ),
        )  # fmt: skip
        for ns, tap, addr in ((NS_A, "p2bta", ADDR_A), (NS_B, "p2btb", ADDR_B)):
            plumbing.ip(NS_M, "link", "set", tap, "netns", ns)
            plumbing.ip(ns, "link", "set", tap, "name", "eth0")
            plumbing.ip(ns, "link", "set", "eth0", "mtu", str(MTU_BYTES))
            plumbing.ip(ns, "link", "set", "eth0", "txqueuelen", str(TAP_QUEUE_FRAMES))
            plumbing.address(ns, "eth0", f"{addr}/{PREFIX_LEN}")
        self.start_background(
            NS_B, [sys.executable, str(PROBES), "udp-echo", ADDR_B, str(ECHO_PORT)]
        )

    def teardown(self) -> None:
        """Stop every process this lab started, delete the namespaces, free the lock.

        The namespaces go only if this lab holds the lock: without it they may
        be another running bench's.
        """
        if self.delay_line is not None:
            self.delay_line.stop()
            self.delay_line = None
        for process in reversed(self.processes):
            process.stop(signal.SIGKILL)
        self.processes.clear()
        if self._lock is not None:
            remove_namespaces()
            self._lock.close()
            self._lock = None

    # -- commands ----------------------------------------------------------

    def sysctl(self, ns: str, name: str, value: str | None = None) -> str:
        """Read (or set) a sysctl inside ns."""
        return plumbing.sysctl(ns, name, value)

    def start_background(self, ns: str, argv: list[str]) -> LabProcess:
        """A long-lived helper in ns, stopped at teardown."""
        name = f"background{len(self.processes)}"
        process = plumbing.start_process(
            ns, argv, name=name, stderr_path=self.log_dir / f"{name}.stderr"
        )
        self.processes.append(process)
        return process

    # -- the link ----------------------------------------------------------

    def _line(self) -> DelayLine:
        if self.delay_line is None:
            raise LabError("the delay line is not running")
        return self.delay_line

    def set_shape(self, shape: LinkShape) -> None:
        """Shape the link (statistics start again) and set the loss rules."""
        if shape.ring_frames > self.ring_frames:
            raise LabError(f"the delay line has {self.ring_frames} slots, {shape} needs more")
        self._line().shape(
            delay_ms=shape.rtt_ms / 2,
            jitter_ms=shape.jitter_ms,
            rate_mbit=shape.rate_mbit,
            queue_bytes=shape.queue_bytes,
        )
        for ns in (NS_A, NS_B):
            plumbing.nft_delete(ns, "netdev", LOSS_TABLE, check=False)
            if shape.loss_percent > 0:
                plumbing.nft(
                    ns, plumbing.random_loss_ruleset(LOSS_TABLE, ("eth0",), shape.loss_percent)
                )
        deadline = time.monotonic() + COMMAND_TIMEOUT_S
        while not self.ping(count=3, interval_s=0.05):
            if time.monotonic() > deadline:
                raise LabError("no ping crosses the emulated link")

    def delay_line_stats(self) -> dict[str, Any]:
        """The delay line's counters since the last ``set_shape``."""
        return self._line().stats()

    def delay_line_cpu_s(self) -> float:
        return self.delay_line.cpu_seconds() if self.delay_line is not None else 0.0

    def loss_counters(self) -> dict[str, tuple[int, int]]:
        """Per direction, (frames seen, frames dropped) by the loss rules so far."""
        counters: dict[str, tuple[int, int]] = {}
        for ns, direction in ((NS_B, "a_to_b"), (NS_A, "b_to_a")):
            found = plumbing.loss_counters(ns, LOSS_TABLE)
            if "eth0" in found:
                counters[direction] = found["eth0"]
        return counters

    def host_drops(self) -> dict[str, int]:
        """Drops outside the emulated link, per host (counters since boot).

        ``tx``: frames the host's eth0 dropped before the line read them (its
        queue overflowed); ``udp_rcvbuf``: datagrams its UDP sockets had no
        room for (a receiver that cannot keep up).
        """
        drops: dict[str, int] = {}
        for ns, host in ((NS_A, "a"), (NS_B, "b")):
            link = json.loads(run(in_ns(ns, ["ip", "-s", "-j", "link", "show", "eth0"])).stdout)
            drops[f"{host}_tx"] = int(link[0]["stats64"]["tx"]["dropped"])
            udp = [
                line.split()
                for line in run(in_ns(ns, ["cat", "/proc/net/snmp"])).stdout.splitlines()
                if line.startswith("Udp:")
            ]
            drops[f"{host}_udp_rcvbuf"] = int(
                dict(zip(udp[0], udp[1], strict=True))["RcvbufErrors"]
            )
        return drops

    def ping(self, count: int, interval_s: float) -> list[float]:
        """Round trips (ms) of small UDP datagrams from a to b's echo."""
        argv = [
            sys.executable, str(PROBES), "udp-ping", ADDR_B, str(ECHO_PORT),
            "--count", str(count), "--interval-s", str(interval_s),
        ]  # fmt: skip
        result = run(in_ns(NS_A, argv), timeout=COMMAND_TIMEOUT_S + count * 0.6, check=False)
        if result.returncode != 0:
            raise LabError(f"udp-ping failed: {result.stderr.strip()[-300:]}")
        rtts: list[float] = json.loads(result.stdout.strip().splitlines()[-1])["rtts_ms"]
        return rtts


def remove_namespaces() -> None:
    """Delete the bench's namespaces, first killing what still runs in them.

    Only this bench creates ``p2b-*`` namespaces and it holds the lock, so
    whatever runs in them was started by this bench (or a dead earlier run).
    """
    existing = plumbing.list_namespaces()
    for ns in NAMESPACES:
        if ns in existing:
            plumbing.delete_namespace(ns)
