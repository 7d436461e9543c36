"""Goodput over emulated networks: p2pcp against TCP and magic-wormhole.

Builds three network namespaces joined by an emulated Ethernet link (root
only), then for each profile moves one file of random data from the sender
namespace to the receiver namespace with each tool, and prints a table:
MB/s (10**6 bytes per second, median of --runs), the share of the link rate,
the ratio against the TCP baseline and against the floor ``aioquic reno
@1452``, whether every run finished, and the delay line's CPU use. A summary
of the goals of the issue follows (met / not met), then, for each speed goal
p2pcp missed, the cores its two ends and the delay line would need at the
goal's speed at the CPU per byte they had (more than the machine has: the
shortfall is this machine's CPU). A benchmark never fails:
it exits 0 unless the lab cannot be built (one line on stderr, exit 1).

    sudo python bench/network.py [--profile lan|wan|lfn|wifi ...] [--size 128M]
        [--runs N] [--tools p2pcp,tcp,wormhole] [--timeout S]
        [--p2pcp-variant NAME-or-SPEC ...] [--json]

Topology (tests/support/netlab/link.py, the lab the NAT tests use too)::

    p2b-a (sender)          p2b-m                          p2b-b (receiver)
    eth0 10.77.0.1  <==  delay line process (delayline.c)  ==>  eth0 10.77.0.2
    (+ magic-wormhole's mailbox server and transit relay)

Each eth0 is one of the delay line's two TAP devices (tests/support/netlab/
delayline.c, compiled with gcc on first use), moved into its namespace: no
bridge or veth is in the path. Each direction of the line is a bottleneck of
the profile's rate with a tail-drop queue of one bandwidth-delay product (at
least 256 KiB), then half the RTT of delay plus in-order jitter. The rate
counts Ethernet framing (a 1514-byte frame costs 1538 bytes of link time), so
TCP can reach at most 94% of the rate in goodput and QUIC with 1452-byte
datagrams about 93%. Random loss is an nftables rule on each end's ingress,
per direction. MTU 1500 everywhere; the TAP devices have no segmentation
offload, so every frame on the link is a real <=1514-byte frame (the
profile block shows the largest one seen). The rate is not ``tc tbf``: its
per-frame timer costs enough CPU to keep TCP well below a gigabit link.

Profiles (the issue's):

    lan   LAN: 1 Gbit/s, 1 ms RTT, no loss (a wired gigabit LAN)
    wan   WAN: 100 Mbit/s, 40 ms RTT, 0.5% loss (an internet path between cities)
    lfn   long fat pipe: 1 Gbit/s, 100 ms RTT, 0.1% loss (fibre across an ocean)
    wifi  bad Wi-Fi: 50 Mbit/s, 10 ms RTT, 2% loss, +-3 ms jitter kept in order

Each profile's default file takes about 13 s at the link rate; a run that
has not finished after the cap (--timeout; default max(60 s, 4x that time))
is stopped and reports the bytes it had moved by then (p2pcp: its last
progress event; TCP: what arrived) over that time, marked not finished.

Tools:

- ``p2pcp`` variants, each a label + environment + extra ``send`` and
  ``receive`` arguments: ``p2pcp`` (defaults), ``p2pcp bbr``, ``p2pcp cubic``
  (``--congestion``) and the floor ``aioquic reno @1452`` (``--congestion
  reno`` with ``P2PCP_MAX_DATAGRAM_SIZE=1452``). Variants that need
  ``--congestion`` are skipped, with a note, if ``p2pcp send --help`` does
  not mention it. ``--p2pcp-variant`` picks built-ins (default, bbr, cubic,
  reno1452) or defines one: ``'LABEL|ENV=V ...|SEND ARGS|RECEIVE ARGS'``.
  Sender ``p2pcp send --once --no-relay -v`` in a, receiver ``p2pcp
  receive --no-relay`` in b, separate P2PCP_HOMEs; goodput = size / the
  receiver's ``done`` event "seconds" (bind to verified and fsynced). The
  notes show the datagram sizes the sender logged, in order, and why it
  fell back from fragmented datagrams if it did.
- ``tcp``: one kernel TCP connection (tests/support/netlab/probes.py): ``sendfile``
  in a, ``recv_into`` + write in b, timed from connect to EOF; congestion
  control is the namespaces' default (shown: new namespaces inherit the
  host's ``net.ipv4.tcp_congestion_control``).
- ``wormhole``: magic-wormhole 0.24 through bench/wormhole.py (its own venv
  in the cache folder; its mailbox server and transit relay run in p2b-a on
  10.77.0.1, which the receiver reaches across the link); its time is the
  receiver's "rx file" span, which leaves out the handshakes and has no
  fsync, so it flatters magic-wormhole a little.

Each profile block also shows what the link really did: an idle UDP ping
(against the floor measured through a zero-delay line), the line's frames,
largest frame, bottleneck drops and its own lateness (due time to write),
the random loss applied per direction, and drops outside the link (eth0
queues, UDP receive buffers), which should be zero or the receiver's own.

Limitations: the sender, the receiver and the delay line share this
machine's cores (the line runs at real-time priority, SCHED_FIFO, so it
preempts both ends instead of falling behind them; its CPU share is shown
per tool; it includes the kernel's delivery of each frame to the receiving
host, and a CPU-bound tool on 2 cores loses some speed to it); anything else running on the machine
lowers the figures (a warning is printed when the machine is busy before a
profile) and makes the line late now and then (the block counts frames more
than 1 ms late); timing is exact to about +-25 us otherwise; jitter is
uniform per frame and kept in order, so under load frames bunch up behind
the slowest draw and the mean delay grows with the load; loss is random and independent per frame
(no bursts); no reordering, duplication or asymmetric links; IPv4 only.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))  # the shared lab: tests/support/netlab

from network_report import (  # noqa: E402
    BUSY_WARNING_PERCENT,
    MIB,
    Profile,
    ProfileResult,
    cpu_budgets,
    goals,
    print_cpu_budgets,
    print_goals,
    print_profile,
    to_json,
)
from network_tools import (  # noqa: E402
    BUILTIN_VARIANTS,
    TCP_TOOL,
    WORMHOLE_TOOL,
    ToolSummary,
    Variant,
    has_congestion_flag,
    load_wormhole,
    one_line,
    parse_variant,
    run_p2pcp,
    run_tcp,
    run_wormhole,
)
from quic_raw import parse_size  # noqa: E402

from tests.support.netlab import delayline  # noqa: E402
from tests.support.netlab import link as netlab  # noqa: E402
from tests.support.netlab.link import (  # noqa: E402
    ADDR_A,
    NS_A,
    NS_B,
    LabError,
    LinkLab,
    LinkShape,
)

# The nodes announce no short code by multicast DNS: the link carries only
# the benchmark's traffic, and the ticket is not held back for a code.
os.environ["P2PCP_LAN"] = "off"

# A run's cap is at least this, else this many times the time at link rate.
MIN_CAP_S = 60.0
CAP_TIMES_LINK = 4.0
PING_COUNT = 50

PROFILES = {
    "lan": Profile("lan", "LAN", "a wired gigabit LAN", LinkShape(1000, 1.0), 1536 * MIB),
    "wan": Profile(
        "wan", "WAN", "an internet path between cities", LinkShape(100, 40, 0.5), 160 * MIB
    ),
    "lfn": Profile(
        "lfn", "long fat pipe", "fibre across an ocean", LinkShape(1000, 100, 0.1), 1536 * MIB
    ),
    "wifi": Profile(
        "wifi", "bad Wi-Fi", "a weak wireless link", LinkShape(50, 10, 2.0, 3.0), 80 * MIB
    ),
}


# -- the benchmark ---------------------------------------------------------


def make_file(path: Path, size: int) -> None:
    """size bytes of fresh random data (no repeated blocks anything could dedupe)."""
    with path.open("wb") as handle:
        left = size
        while left > 0:
            piece = os.urandom(min(left, 8 * MIB))
            handle.write(piece)
            left -= len(piece)


def machine_busy_percent(seconds: float = 1.0) -> float:
    busy, total = netlab.system_cpu()
    time.sleep(seconds)
    busy2, total2 = netlab.system_cpu()
    return 100 * (busy2 - busy) / max(total2 - total, 1e-6)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_profile(
    lab: LinkLab,
    profile: Profile,
    path: Path,
    work: Path,
    args: argparse.Namespace,
    variants: list[Variant],
    wormhole: Any,
    wormhole_reason: str,
) -> ProfileResult:
    size = path.stat().st_size
    cap_s = args.timeout or max(MIN_CAP_S, CAP_TIMES_LINK * size / profile.shape.rate_bytes_per_s)
    result = ProfileResult(profile, size, cap_s)
    send_buffer_max = int(lab.sysctl(NS_A, "net.ipv4.tcp_wmem").split()[-1])
    bdp = profile.shape.rate_bytes_per_s * profile.shape.rtt_ms / 1000
    if bdp > send_buffer_max:
        result.notes.append(
            f"the path holds {bdp / 1e6:.1f} MB in flight, more than kernel TCP's largest send "
            f"buffer here (net.ipv4.tcp_wmem max {send_buffer_max / MIB:.0f} MiB): TCP, and "
            "magic-wormhole on it, are window-limited, as on a default Linux host"
        )
    result.busy_before_percent = machine_busy_percent()
    if result.busy_before_percent > BUSY_WARNING_PERCENT:
        say(
            f"warning: the machine was {result.busy_before_percent:.0f}% busy before this "
            "profile (other work): figures will be low"
        )
    lab.set_shape(profile.shape)
    result.pings_sent = PING_COUNT
    result.ping_ms = lab.ping(PING_COUNT, interval_s=0.02)
    tools: list[str] = []
    if "p2pcp" in args.tools:
        tools += [variant.label for variant in variants]
    if "tcp" in args.tools:
        tools.append(TCP_TOOL)
    if "wormhole" in args.tools:
        tools.append(WORMHOLE_TOOL)
    result.tools = {tool: ToolSummary(tool) for tool in tools}
    drops_before = lab.host_drops()
    if WORMHOLE_TOOL in result.tools and wormhole is None:
        result.tools[WORMHOLE_TOOL].skipped = wormhole_reason
    by_label = {variant.label: variant for variant in variants}
    for number in range(1, args.runs + 1):
        for tool, summary in result.tools.items():
            if summary.skipped:
                continue
            if tool in by_label:
                run = run_p2pcp(lab, by_label[tool], path, work, cap_s)
            elif tool == TCP_TOOL:
                run = run_tcp(lab, path, work, cap_s)
            else:
                run = run_wormhole(lab, wormhole, path, work, cap_s)
            summary.runs.append(run)
            speed = f"{run.mb_per_s:.1f} MB/s" if run.mb_per_s is not None else "no figure"
            state = "done" if run.finished else "NOT FINISHED"
            say(
                f"  {profile.name} {tool} run {number}/{args.runs}: {speed}, {state} "
                f"(wall {run.wall_s:.1f} s, delay line {run.line_cpu_percent:.0f}% of a core, "
                f"machine {run.machine_busy_percent:.0f}% busy) {run.note}"
            )
    result.line_stats = lab.delay_line_stats()
    result.loss = lab.loss_counters()
    drops_after = lab.host_drops()
    result.host_drops = {key: drops_after[key] - drops_before[key] for key in drops_after}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--profile",
        action="append",
        choices=sorted(PROFILES),
        help="profile to run (repeat; default: all)",
    )
    parser.add_argument(
        "--size",
        type=parse_size,
        help="file size for every profile, e.g. 128M (default: per profile)",
    )
    parser.add_argument("--runs", type=int, default=1, help="runs per tool (median shown)")
    parser.add_argument(
        "--tools", default="p2pcp,tcp,wormhole", help="comma list of p2pcp, tcp, wormhole"
    )
    parser.add_argument(
        "--timeout", type=float, help="cap per run in seconds (default: per profile)"
    )
    parser.add_argument(
        "--p2pcp-variant",
        action="append",
        type=parse_variant,
        help="p2pcp variant (repeat): default, bbr, cubic, reno1452, or "
        "'LABEL|ENV=V ...|SEND ARGS|RECEIVE ARGS' (default: the four built-ins)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "p2pcp-bench-cache",
        help="where the compiled delay line and the magic-wormhole venv live",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = parser.parse_args()
    args.tools = {tool.strip() for tool in args.tools.split(",") if tool.strip()}
    unknown = args.tools - {"p2pcp", "tcp", "wormhole"}
    if unknown:
        parser.error(f"unknown tools: {', '.join(sorted(unknown))}")
    if args.runs < 1 or (args.size is not None and args.size <= 0):
        parser.error("--runs and --size must be positive")
    profiles = [PROFILES[name] for name in (args.profile or PROFILES)]

    reason = netlab.unavailable_reason()
    if reason:
        print(f"network bench: {reason}", file=sys.stderr)
        return 1
    try:
        binary = delayline.build(args.cache_dir)
    except LabError as exc:
        print(f"network bench: {exc}", file=sys.stderr)
        return 1

    notes: list[str] = []
    variants = args.p2pcp_variant or list(BUILTIN_VARIANTS.values())
    needs_flag = [v.label for v in variants if v.needs_congestion_flag]
    if "p2pcp" in args.tools and needs_flag and not has_congestion_flag():
        variants = [v for v in variants if not v.needs_congestion_flag]
        notes.append(f"skipped {', '.join(needs_flag)}: this p2pcp has no --congestion flag yet")
    wormhole: Any = None
    wormhole_reason = ""
    if "wormhole" in args.tools:
        say("magic-wormhole: checking its bench venv (installs it the first time)")
        wormhole, wormhole_reason = load_wormhole(args.cache_dir)

    root = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    work = Path(tempfile.mkdtemp(prefix="p2pcp-netbench-", dir=root))
    ring_frames = max(profile.shape.ring_frames for profile in profiles)
    lab = LinkLab(binary, log_dir=work, ring_frames=ring_frames)
    cleaned = False

    def cleanup() -> None:
        nonlocal cleaned
        if cleaned:
            return
        cleaned = True
        if wormhole is not None:
            with contextlib.suppress(Exception):
                wormhole.stop_servers()
        lab.teardown()
        shutil.rmtree(work, ignore_errors=True)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        files: dict[int, Path] = {}
        for profile in profiles:
            size = args.size or profile.default_size
            if size not in files:
                files[size] = work / f"random-{size}.bin"
                say(f"writing {size / MIB:,.0f} MiB of random data to {files[size]}")
                make_file(files[size], size)
        try:
            lab.build()
            lab.set_shape(LinkShape(rate_mbit=0, rtt_ms=0))
        except LabError as exc:
            print(f"network bench: the lab cannot be built: {exc}", file=sys.stderr)
            return 1
        floor_pings = lab.ping(PING_COUNT, interval_s=0.02)
        floor_ms = statistics.median(floor_pings) if floor_pings else None
        congestion = {
            "host": Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip(),
            "sender namespace": lab.sysctl(NS_A, "net.ipv4.tcp_congestion_control"),
            "receiver namespace": lab.sysctl(NS_B, "net.ipv4.tcp_congestion_control"),
        }
        if wormhole is not None:
            try:
                wormhole.start_servers(NS_A, ADDR_A)
            except Exception as exc:
                wormhole_reason = f"servers did not start: {one_line(exc)}"
                wormhole = None
        say(
            f"lab ready: {os.cpu_count()} CPUs; TCP congestion control "
            + ", ".join(f"{k} {v}" for k, v in congestion.items())
        )
        results = []
        for profile in profiles:
            size = args.size or profile.default_size
            say(f"profile {profile.describe()}")
            result = run_profile(
                lab, profile, files[size], work, args, variants, wormhole, wormhole_reason
            )
            results.append(result)
            if not args.json:
                print_profile(result, floor_ms)
        found = goals(results)
        budgets = cpu_budgets(results, os.cpu_count() or 1)
        context = {
            "cpus": os.cpu_count(),
            "kernel": os.uname().release,
            "tcp_congestion_control": congestion,
            "ping_floor_ms": floor_ms,
            "variants": [asdict(variant) for variant in variants],
            "notes": notes,
        }
        if args.json:
            print(json.dumps(to_json(results, found, context, budgets)))
        else:
            print_goals(found)
            print_cpu_budgets(budgets)
            print(
                "\nTCP congestion control: "
                + ", ".join(f"{k} {v}" for k, v in congestion.items())
                + f"; {os.cpu_count()} CPUs shared by sender, receiver and delay line"
            )
            for note in notes:
                print(f"note: {note}")
        return 0
    except LabError as exc:
        print(f"network bench: the lab failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(main())
