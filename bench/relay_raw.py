"""Raw relay throughput: two RelayClients pump datagrams through a local relay.

Starts ``p2pcp relay --host 127.0.0.1 --port 0`` as a process, connects a
sender and a receiver (both in this process, one event loop), and sends
--size bytes as --datagram-size datagrams in batches of --batch, keeping at
most --window bytes in flight (sent but not yet received) so the relay's
queues never overflow. Prints MB/s delivered, datagrams lost, and the relay
process's CPU seconds per GiB relayed (from /proc). Figures only.

    python bench/relay_raw.py [--size 1G] [--datagram-size 16000] [--batch 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from quic_raw import parse_size  # noqa: E402

from p2pcp.core.identity import NodeId, SecretKey  # noqa: E402
from p2pcp.relay.client import RelayClient  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_relay() -> tuple[subprocess.Popen[str], str]:
    relay = subprocess.Popen(
        [sys.executable, "-m", "p2pcp", "relay", "--host", "127.0.0.1", "--port", "0"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "COLUMNS": "300"},
    )
    assert relay.stderr is not None
    line = relay.stderr.readline()
    match = re.search(r"(http://\S+?:\d+)", line)
    if match is None:
        relay.kill()
        raise SystemExit(f"the relay did not start: {line!r}")
    return relay, match.group(1)


async def pump(
    url: str, size: int, datagram_size: int, batch: int, window: int
) -> tuple[float, int, int]:
    received = 0
    arrived = asyncio.Event()

    def on_packets(source: NodeId, datagrams: list[bytes]) -> None:
        nonlocal received
        received += sum(map(len, datagrams))
        arrived.set()

    sender = RelayClient(url, SecretKey(bytes([1] * 32)), on_packets=lambda s, d: None)
    receiver_key = SecretKey(bytes([2] * 32))
    receiver = RelayClient(url, receiver_key, on_packets=on_packets)
    if not (await sender.start(timeout_s=10) and await receiver.start(timeout_s=10)):
        raise SystemExit("cannot connect to the relay")
    payload = [os.urandom(datagram_size) for _ in range(batch)]
    batch_bytes = datagram_size * batch
    count = size // batch_bytes
    sent = 0
    started = time.perf_counter()
    for _ in range(count):
        while sent - received > window:
            arrived.clear()
            try:
                await asyncio.wait_for(arrived.wait(), 2.0)
            except asyncio.TimeoutError:
                break  # datagrams were lost: go on
        while not sender.send(receiver_key.public, payload):
            await asyncio.sleep(0.001)
        sent += batch_bytes
        await asyncio.sleep(0)
    deadline = time.perf_counter() + 5
    while received < sent and time.perf_counter() < deadline:
        arrived.clear()
        with_timeout = asyncio.wait_for(arrived.wait(), 1.0)
        try:
            await with_timeout
        except asyncio.TimeoutError:
            break
    seconds = time.perf_counter() - started
    await sender.close()
    await receiver.close()
    return seconds, sent, received


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1G", help="bytes to send, e.g. 512M, 1G")
    parser.add_argument("--datagram-size", type=int, default=16000)
    parser.add_argument("--batch", type=int, default=8, help="datagrams per send() call")
    parser.add_argument("--window", default="4M", help="bytes in flight at most")
    args = parser.parse_args()
    size = parse_size(args.size)
    relay, url = start_relay()
    try:
        cpu_before = cpu_seconds(relay.pid)
        seconds, sent, received = asyncio.run(
            pump(url, size, args.datagram_size, args.batch, parse_size(args.window))
        )
        relay_cpu = cpu_seconds(relay.pid) - cpu_before
    finally:
        relay.terminate()
        relay.wait(timeout=10)
    print(
        f"relay {url}: {sent:,} bytes as {args.datagram_size}-byte datagrams, "
        f"{args.batch} per message"
    )
    print(f"  delivered                 {received / seconds / 1e6:8.1f} MB/s")
    print(f"  lost                      {(sent - received) / max(sent, 1) * 100:8.2f} %")
    print(f"  relay CPU per GiB         {relay_cpu / (received / 2**30):8.2f} s")


if __name__ == "__main__":
    main()
