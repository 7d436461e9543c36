"""Relayed against direct: the real CLI through a local ``p2pcp relay``.

In one run, moves one --size file (default 512 MiB) over loopback with
``p2pcp send --relay URL`` / ``p2pcp receive`` twice: direct
(``--direct-only``) and through the relay (``--relay-only``), and prints the
MB/s of each, the ratio, and the relay process's CPU seconds per GiB
relayed (from /proc). Figures only: a benchmark never fails.

    python bench/relay.py [--size 512M] [--runs 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))  # the checkout: p2pcp and tests.support
sys.path.insert(0, str(BENCH))

from quic_raw import parse_size  # noqa: E402
from transfer import make_file, run_transfer  # noqa: E402

from tests.support.processes import relay_process  # noqa: E402

# The bench's p2pcp nodes announce no short code on this host's real
# network (multicast DNS): traffic stays on loopback.
os.environ["P2PCP_LAN"] = "off"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def transfer(path: Path, work: Path, relay_url: str, policy: str) -> float:
    """One send/receive; MB/s by the receiver's own clock."""
    done, _wall = run_transfer(path, work, send_args=("--relay", relay_url), receive_args=(policy,))
    expected = "relay" if policy == "--relay-only" else "direct"
    if done.get("main_path") != expected:
        raise SystemExit(f"{policy}: the transfer went mostly over {done.get('main_path')}")
    return float(path.stat().st_size / done["seconds"] / 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="512M", help="file size, e.g. 256M, 1G")
    parser.add_argument("--runs", type=int, default=1, help="runs per case (median shown)")
    args = parser.parse_args()
    size = parse_size(args.size)
    with tempfile.TemporaryDirectory(prefix="p2pcp-bench-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        path = work / "payload.bin"
        make_file(path, size)
        with relay_process() as relay:
            pid, relay_url = relay.process.pid, relay.url
            direct = [transfer(path, work, relay_url, "--direct-only") for _ in range(args.runs)]
            cpu_before = cpu_seconds(pid)
            relayed = [transfer(path, work, relay_url, "--relay-only") for _ in range(args.runs)]
            relay_cpu = cpu_seconds(pid) - cpu_before
    gib_relayed = size * args.runs / 2**30
    direct_mb = statistics.median(direct)
    relayed_mb = statistics.median(relayed)
    print(f"file: {size:,} bytes over loopback; {args.runs} run(s) per case, median shown\n")
    print(f"  direct (--direct-only)      {direct_mb:8.1f} MB/s")
    print(f"  relayed (--relay-only)      {relayed_mb:8.1f} MB/s")
    print(f"  relayed / direct            {relayed_mb / direct_mb:8.2f}x   (goal >= 0.5x)")
    print(f"  relay CPU per GiB relayed   {relay_cpu / gib_relayed:8.2f} s")


if __name__ == "__main__":
    main()
