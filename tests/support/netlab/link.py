"""Three network namespaces joined by an emulated link, for bench/network.py.

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
lives in the delay line rather than in ``tc tbf``: in this VM tbf re-arms an
hrtimer on nearly every frame, and with it TCP reached 94-96 MB/s on a
1 Gbit/s link against 115-116 MB/s with the line's own bottleneck. Random
loss is an nftables rule on the netdev ingress hook of each host's ``eth0``
(IPv4 frames only, so ARP never fails); its counters show the loss actually
applied.

Frames on the link are real wire frames: the TAP devices offer checksum
offload but no segmentation offload, so the sending kernel segments TCP's
64 KB super-frames before the line reads them (it counts any frame above
1514 bytes as ``oversize`` and drops it; ``max_frame`` in its stats shows
the largest seen).

Names are fixed (``p2b-*``; the tests' labs use ``p2nl<pid>x<n>-*``), so a
lock file keeps two benchmarks from sharing them, and ``build`` first removes
leftovers of an earlier run that died. Needs root, ``ip``, ``nft`` and
``gcc`` (the delay line is compiled on first use into a cache folder).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

NS_A = "p2b-a"
NS_M = "p2b-m"
NS_B = "p2b-b"
NAMESPACES = (NS_A, NS_M, NS_B)
ADDR_A = "10.77.0.1"
ADDR_B = "10.77.0.2"
PREFIX_LEN = 24
MTU_BYTES = 1500

HERE = Path(__file__).resolve().parent
DELAY_LINE_SOURCE = HERE / "delayline.c"
PROBE = HERE / "probe.py"
LOCK_PATH = Path("/run/lock/p2pcp-bench-network.lock")

# Every lab command is quick; one that hangs is a lab bug.
COMMAND_TIMEOUT_S = 20.0
# Ethernet preamble + start delimiter (8), FCS (4) and inter-frame gap (12):
# what a real link spends per frame beyond the 14-byte header we see.
ETHERNET_OVERHEAD_BYTES = 24
# The delay line's timing step: frames leave within about +-25 us of due.
GRANULARITY_US = 50
# The delay line's real-time priority (SCHED_FIFO, 1-99): above every normal
# process, below the kernel's own threads (50).
DELAY_LINE_RT_PRIORITY = 10
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


class LabError(RuntimeError):
    """The lab cannot be built or driven here."""


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

    def command(self) -> str:
        """The delay line's ``shape`` command for this shape."""
        return (
            f"shape {round(self.rtt_ms * 500)} {round(self.jitter_ms * 1000)} "
            f"{round(self.rate_mbit * 1000)} {self.queue_bytes}"
        )


def build_delay_line(cache: Path) -> Path:
    """Compile delayline.c into cache (again when the source is newer)."""
    binary = cache / "delayline"
    if binary.exists() and binary.stat().st_mtime >= DELAY_LINE_SOURCE.stat().st_mtime:
        return binary
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise LabError("no C compiler (gcc): it builds the delay line (apt-get install gcc)")
    cache.mkdir(parents=True, exist_ok=True)
    partial = cache / f"delayline.{os.getpid()}.tmp"
    result = subprocess.run(
        [compiler, "-O2", "-Wall", "-o", str(partial), str(DELAY_LINE_SOURCE)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise LabError(f"compiling the delay line failed: {result.stderr.strip()}")
    partial.replace(binary)
    return binary


def run(
    argv: list[str], *, check: bool = True, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        input=input_text,
        stdin=None if input_text is not None else subprocess.DEVNULL,
        check=False,
    )
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()}")
    return result


def in_ns(ns: str, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def unavailable_reason() -> str | None:
    """Why the lab cannot be built here (one line), or None."""
    if sys.platform != "linux":
        return "the network bench needs Linux (network namespaces)"
    if os.geteuid() != 0:
        return "the network bench needs root (network namespaces, nftables, TAP devices)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"the network bench needs `{tool}` (apt-get install iproute2 nftables)"
    if not os.path.exists("/dev/net/tun"):
        return "the network bench needs /dev/net/tun (TAP devices for the delay line)"
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def system_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / os.sysconf("SC_CLK_TCK"), sum(values) / os.sysconf("SC_CLK_TCK")


class LineReader:
    """Collect a process's stdout lines in a thread, each with its arrival time."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: queue.Queue[tuple[float, str] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        with contextlib.suppress(ValueError, OSError):
            for raw in stream:
                self.lines.put((time.monotonic(), raw.rstrip("\n")))
        self.lines.put(None)

    def next_json(self, timeout: float) -> tuple[float, dict[str, Any]] | None:
        """The next line that is a JSON object, or None at EOF or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                item = self.lines.get(timeout=left)
            except queue.Empty:
                return None
            if item is None:
                self.lines.put(None)  # keep EOF visible to later calls
                return None
            with contextlib.suppress(ValueError):
                value = json.loads(item[1])
                if isinstance(value, dict):
                    return item[0], value


class Lab:
    """The namespaces, the link and the processes in them; see the module doc."""

    def __init__(self, delay_line_binary: Path, log_dir: Path, ring_frames: int) -> None:
        self.delay_line_binary = delay_line_binary
        self.log_dir = log_dir
        self.ring_frames = ring_frames
        self.delay_line: subprocess.Popen[str] | None = None
        self._delay_line_out: LineReader | None = None
        self.processes: list[subprocess.Popen[str]] = []
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
            run(["ip", "netns", "add", ns])
            self.sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")
            self.sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1")
            self.ip(ns, "link", "set", "lo", "up")
        self._start_delay_line()
        for ns, tap, addr in ((NS_A, "p2bta", ADDR_A), (NS_B, "p2btb", ADDR_B)):
            self.ip(NS_M, "link", "set", tap, "netns", ns)
            self.ip(ns, "link", "set", tap, "name", "eth0")
            self.ip(ns, "link", "set", "eth0", "mtu", str(MTU_BYTES))
            self.ip(ns, "link", "set", "eth0", "txqueuelen", str(TAP_QUEUE_FRAMES))
            self.ip(ns, "addr", "add", f"{addr}/{PREFIX_LEN}", "dev", "eth0")
            self.ip(ns, "link", "set", "eth0", "up")
        self.start_background(
            NS_B, [sys.executable, str(PROBE), "udp-echo", ADDR_B, str(ECHO_PORT)]
        )

    def _start_delay_line(self) -> None:
        argv = [
            str(self.delay_line_binary), "p2bta", "p2btb",
            "--queue-frames", str(self.ring_frames),
            "--granularity-us", str(GRANULARITY_US),
            "--overhead-bytes", str(ETHERNET_OVERHEAD_BYTES),
        ]  # fmt: skip
        stderr_path = self.log_dir / "delayline.stderr"
        with stderr_path.open("w") as stderr:
            process = subprocess.Popen(
                in_ns(NS_M, argv),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        self.delay_line = process
        assert process.stdout is not None
        self._delay_line_out = LineReader(process.stdout)
        ready = self._delay_line_out.next_json(COMMAND_TIMEOUT_S)
        if ready is None or not ready[1].get("ready"):
            raise LabError(f"the delay line did not start: {stderr_path.read_text()[-300:]}")
        # A real link never waits for a CPU: let the line preempt the two
        # transfer ends, which share the same cores. Real-time (FIFO) where
        # allowed: at nice -10 it still woke up to ~7 ms late while both ends
        # were busy, took the frames that had piled up meanwhile as one burst
        # and overflowed its 256 KiB LAN queue (losses no real link had). It
        # sleeps between frames, and the kernel keeps 5% of every second for
        # others (sched_rt_runtime_us), so it cannot lock the machine up.
        try:
            os.sched_setscheduler(
                process.pid, os.SCHED_FIFO, os.sched_param(DELAY_LINE_RT_PRIORITY)
            )
        except (OSError, AttributeError):
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, process.pid, -10)

    def teardown(self) -> None:
        """Stop every process this lab started, delete the namespaces, free the lock.

        The namespaces go only if this lab holds the lock: without it they may
        be another running bench's.
        """
        if self.delay_line is not None:
            stop_process(self.delay_line, signal.SIGTERM)
            self.delay_line = None
        for process in reversed(self.processes):
            stop_process(process)
        self.processes.clear()
        if self._lock is not None:
            remove_namespaces()
            self._lock.close()
            self._lock = None

    # -- commands ----------------------------------------------------------

    def ip(self, ns: str, *args: str) -> None:
        run(["ip", "-n", ns, *args])

    def sysctl(self, ns: str, name: str, value: str | None = None) -> str:
        """Read (or set) a sysctl inside ns."""
        path = "/proc/sys/" + name.replace(".", "/")
        if value is None:
            return run(in_ns(ns, ["cat", path])).stdout.strip()
        run(in_ns(ns, ["sh", "-c", f"echo {value} > {path}"]))
        return value

    def start_background(self, ns: str, argv: list[str]) -> subprocess.Popen[str]:
        """A long-lived helper in ns, stopped at teardown."""
        process = subprocess.Popen(
            in_ns(ns, argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.processes.append(process)
        return process

    # -- the link ----------------------------------------------------------

    def _ask_delay_line(self, command: str, answer_key: str) -> dict[str, Any]:
        """Send one command to the line and return its answer (a JSON object)."""
        line, out = self.delay_line, self._delay_line_out
        if line is None or out is None or line.stdin is None or line.poll() is not None:
            raise LabError("the delay line is not running")
        line.stdin.write(command + "\n")
        line.stdin.flush()
        while True:
            item = out.next_json(COMMAND_TIMEOUT_S)
            if item is None:
                raise LabError(f"the delay line did not answer {command!r}")
            if answer_key in item[1]:
                return item[1]

    def set_shape(self, shape: LinkShape) -> None:
        """Shape the link (statistics start again) and set the loss rules."""
        if shape.ring_frames > self.ring_frames:
            raise LabError(f"the delay line has {self.ring_frames} slots, {shape} needs more")
        self._ask_delay_line(shape.command(), "shaped")
        for ns in (NS_A, NS_B):
            run(in_ns(ns, ["nft", "delete", "table", "netdev", "p2b_loss"]), check=False)
        if shape.loss_percent > 0:
            threshold = round(shape.loss_percent * 1000)  # out of 100000
            for ns in (NS_A, NS_B):
                ruleset = f"""table netdev p2b_loss {{
  chain ingress {{
    type filter hook ingress device "eth0" priority -500; policy accept;
    meta protocol ip counter
    meta protocol ip numgen random mod 100000 < {threshold} counter drop
  }}
}}
"""
                run(in_ns(ns, ["nft", "-f", "-"]), input_text=ruleset)
        deadline = time.monotonic() + COMMAND_TIMEOUT_S
        while not self.ping(count=3, interval_s=0.05):
            if time.monotonic() > deadline:
                raise LabError("no ping crosses the emulated link")

    def delay_line_stats(self) -> dict[str, Any]:
        """The delay line's counters since the last ``set_shape``."""
        stats: dict[str, Any] = self._ask_delay_line("stats", "stats")["stats"]
        return stats

    def delay_line_cpu_s(self) -> float:
        if self.delay_line is None:
            return 0.0
        with contextlib.suppress(OSError, ValueError, IndexError):
            return cpu_seconds(self.delay_line.pid)
        return 0.0

    def loss_counters(self) -> dict[str, tuple[int, int]]:
        """Per direction, (frames seen, frames dropped) by the loss rules so far."""
        counters: dict[str, tuple[int, int]] = {}
        for ns, direction in ((NS_B, "a_to_b"), (NS_A, "b_to_a")):
            result = run(
                in_ns(ns, ["nft", "-j", "list", "table", "netdev", "p2b_loss"]), check=False
            )
            if result.returncode != 0:
                continue
            rules = [
                item["rule"]["expr"]
                for item in json.loads(result.stdout).get("nftables", [])
                if "rule" in item
            ]
            found = [
                int(expression["counter"]["packets"])
                for expressions in rules
                for expression in expressions
                if "counter" in expression
            ]
            if len(found) == 2:
                counters[direction] = (found[0], found[1])
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
            sys.executable, str(PROBE), "udp-ping", ADDR_B, str(ECHO_PORT),
            "--count", str(count), "--interval-s", str(interval_s),
        ]  # fmt: skip
        result = subprocess.run(
            in_ns(NS_A, argv),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S + count * 0.6,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if result.returncode != 0:
            raise LabError(f"udp-ping failed: {result.stderr.strip()[-300:]}")
        rtts: list[float] = json.loads(result.stdout.strip().splitlines()[-1])["rtts_ms"]
        return rtts


def stop_process(process: subprocess.Popen[Any], sig: int = signal.SIGKILL) -> None:
    """End one process this bench started (by its pid) and reap it."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def remove_namespaces() -> None:
    """Delete the bench's namespaces, first killing what still runs in them.

    Only this bench creates ``p2b-*`` namespaces and it holds the lock, so
    whatever runs in them was started by this bench (or a dead earlier run).
    """
    existing = run(["ip", "netns", "list"], check=False).stdout.split()
    for ns in NAMESPACES:
        if ns not in existing:
            continue
        for pid in run(["ip", "netns", "pids", ns], check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        run(["ip", "netns", "delete", ns], check=False)
