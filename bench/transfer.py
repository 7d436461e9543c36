"""End-to-end transfer speed of the real CLI on loopback, against baselines.

Moves one --size file (default 1 GiB) with ``p2pcp send --once`` and
``p2pcp receive`` (two processes, separate P2PCP_HOMEs) and prints MB/s for

  - p2pcp as it runs by default (datagram size probed: 16,000 on loopback)
  - p2pcp held to 1452-byte datagrams (P2PCP_MAX_DATAGRAM_SIZE=1452: an
    internet path)
  - the baseline, measured in the same run: a bare aioquic stream through
    aioquic's own asyncio connect()/serve() with default settings
    (bench/quic_raw.py, case a)

It also times the sender's import (hashing: tree + standard BLAKE3) of the
same file against ``b3sum``. Figures and ratios only: a benchmark never fails.

    python bench/transfer.py [--size 1G] [--runs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from quic_raw import parse_size, run_case  # noqa: E402

from p2pcp.transfer.source import hash_file  # noqa: E402
from tests.support.processes import p2pcp_command  # noqa: E402

# The bench's p2pcp nodes announce no short code on this host's real
# network (multicast DNS): traffic stays on loopback.
os.environ["P2PCP_LAN"] = "off"


def make_file(path: Path, size: int) -> None:
    chunk = os.urandom(16 * 1024 * 1024)
    with open(path, "wb") as handle:
        left = size
        while left > 0:
            handle.write(chunk[: min(left, len(chunk))])
            left -= len(chunk)


def time_import(path: Path) -> float:
    started = time.perf_counter()
    hash_file(path, with_blake3=False)  # what `p2pcp send` does on import
    return time.perf_counter() - started


def time_b3sum(path: Path, threads: int | None = None) -> float | None:
    if shutil.which("b3sum") is None:
        return None
    args = ["b3sum", "--no-names", str(path)]
    if threads:
        args[1:1] = ["--num-threads", str(threads)]
    started = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    return time.perf_counter() - started


def run_transfer(
    path: Path,
    work: Path,
    *,
    env_extra: dict[str, str] | None = None,
    send_args: tuple[str, ...] = (),
    receive_args: tuple[str, ...] = (),
) -> tuple[dict[str, Any], float]:
    """One real send/receive of ``path``; returns the receiver's done event and wall seconds."""
    env = {**os.environ, **(env_extra or {})}
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    sender = subprocess.Popen(
        [*p2pcp_command(), "send", "--once", "--json", *send_args, str(path)],
        env={**env, "P2PCP_HOME": str(work / "send-home")},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert sender.stdout is not None
        ticket = json.loads(sender.stdout.readline())["ticket"]
        started = time.perf_counter()
        result = subprocess.run(
            [*p2pcp_command(), "receive", ticket, "--out", str(out), "--json", *receive_args],
            env={**env, "P2PCP_HOME": str(work / "recv-home")},
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(f"receive failed: {result.stderr.strip()}")
        done: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        sender.wait(timeout=60)
    finally:
        if sender.poll() is None:
            sender.kill()
            sender.wait()
        if sender.stdout is not None:
            sender.stdout.close()
    if (out / path.name).stat().st_size != path.stat().st_size:
        raise SystemExit("received file has the wrong size")
    shutil.rmtree(out, ignore_errors=True)
    return done, wall


def cli_transfer(path: Path, work: Path, cap: int | None) -> tuple[float, float]:
    """MB/s of one transfer: (by the receiver's own clock, by the wall clock)."""
    env = {"P2PCP_MAX_DATAGRAM_SIZE": str(cap)} if cap else {}
    done, wall = run_transfer(path, work, env_extra=env)
    size = path.stat().st_size
    return size / done["seconds"] / 1e6, size / wall / 1e6


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1G", help="file size, e.g. 256M, 1G")
    parser.add_argument("--runs", type=int, default=1, help="runs per case (median shown)")
    args = parser.parse_args()
    size = parse_size(args.size)
    with tempfile.TemporaryDirectory(prefix="p2pcp-bench-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        path = work / "payload.bin"
        make_file(path, size)
        mb = size / 1e6
        print(f"file: {size:,} bytes; {args.runs} run(s) per case, median shown\n")

        time_b3sum(path)  # warm the page cache
        imports = [time_import(path) for _ in range(max(3, args.runs))]
        b3 = [t for t in (time_b3sum(path) for _ in range(max(3, args.runs))) if t]
        b3_one = time_b3sum(path, threads=1)
        print("sender import (hashing the tree), hot page cache")
        print(f"  p2pcp import           {mb / median(imports):8.0f} MB/s")
        if b3:
            ratio = median(b3) / median(imports)
            print(f"  b3sum (all threads)    {mb / median(b3):8.0f} MB/s")
            if b3_one:
                print(f"  b3sum (one thread)     {mb / b3_one:8.0f} MB/s")
            print(f"  ratio p2pcp / b3sum    {ratio:8.2f}x   (goal >= 0.5x)")
        else:
            print("  b3sum not installed: no ratio")

        rows = {}
        for label, cap in (("default", None), ("1452", 1452)):
            runs = [cli_transfer(path, work, cap) for _ in range(args.runs)]
            rows[label] = (median([r[0] for r in runs]), median([r[1] for r in runs]))
        stock = median([run_case("a", size)[0] for _ in range(args.runs)])

        print("\ntransfer over loopback (MB/s; 'session' = receiver's own clock from")
        print("start to verified-and-fsynced, 'wall' = whole receive command)")
        print(f"  {'case':42} {'session':>8} {'wall':>8}")
        print(
            f"  {'p2pcp CLI, default (probed datagram size)':42} {rows['default'][0]:8.1f} "
            f"{rows['default'][1]:8.1f}"
        )
        print(
            f"  {'p2pcp CLI, 1452-byte datagrams':42} {rows['1452'][0]:8.1f} {rows['1452'][1]:8.1f}"
        )
        print(f"  {'stock aioquic connect()/serve() (baseline)':42} {stock:8.1f}")
        print("\nratios and goals")
        print(f"  default            {rows['default'][0]:7.1f} MB/s   (goal >= 150)")
        print(f"  1452 bytes         {rows['1452'][0]:7.1f} MB/s   (goal >= 55)")
        print(f"  1452 / stock       {rows['1452'][0] / stock:7.2f}x       (goal >= 2x)")
        print(f"  default / stock    {rows['default'][0] / stock:7.2f}x")


if __name__ == "__main__":
    main()
