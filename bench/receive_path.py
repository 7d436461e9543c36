"""A receiver's CPU per packet: aioquic's receive_datagram against fastpath.py.

Two QuicConnections with p2pcp's settings, in memory on a virtual clock (no
sockets, no event loop): the server streams --mib MiB to the client, which
takes every datagram either through aioquic's ``receive_datagram`` (the
baseline) or through ``p2pcp.net.fastpath.receive``, then acknowledges.
Prints the receiver's CPU time per packet (receiving, events, building its
acks) and per MB for each path and datagram size, and the ratio against the
baseline, all measured in the same run (best of --repeats, alternating the
two paths so that neither gets a warmer machine).

    python bench/receive_path.py [--mib 64] [--repeats 3] [--sizes 1452,16000]

A benchmark, not a test: it never fails on a figure.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from aioquic.buffer import Buffer
from aioquic.quic import events
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import pull_quic_header

from p2pcp.net import fastpath, tls, tuning

SERVER_ADDR = ("198.18.0.1", 4433)
CLIENT_ADDR = ("198.18.0.2", 5000)
CHUNK = os.urandom(1024 * 1024)
SEND_WINDOW_BYTES = 8 * 1024 * 1024
STEP_S = 0.0005

Receive = Callable[[QuicConnection, bytes, Any, float], object]


def aioquic_receive(quic: QuicConnection, data: bytes, addr: Any, now: float) -> None:
    quic.receive_datagram(data, addr, now)


def connected_pair(size: int) -> tuple[QuicConnection, QuicConnection, float]:
    """(client, server, now): a sole-client pair, as a receiver's endpoint makes."""
    client_config = tls.sole_client_configuration(tls.client_configuration(bytes(range(32))))
    client = QuicConnection(configuration=client_config)
    tuning.forgo_connection_ids(client)
    tuning.set_initial_destination_cid(client, os.urandom(tls.INITIAL_DCID_BYTES))
    now = 0.0
    client.connect(SERVER_ADDR, now=now)
    initial = client.datagrams_to_send(now=now)
    header = pull_quic_header(Buffer(data=initial[0][0]), host_cid_length=tls.SERVER_CID_BYTES)
    server = QuicConnection(
        configuration=tls.server_configuration(bytes(range(1, 33))),
        original_destination_connection_id=header.destination_cid,
    )
    for data, _addr in initial:
        server.receive_datagram(data, CLIENT_ADDR, now=now)
    for _ in range(20):
        now += 0.001
        for data, _addr in server.datagrams_to_send(now=now):
            client.receive_datagram(data, SERVER_ADDR, now=now)
        for data, _addr in client.datagrams_to_send(now=now):
            server.receive_datagram(data, CLIENT_ADDR, now=now)
    for quic in (client, server):
        while quic.next_event() is not None:
            pass
        tuning.set_datagram_size(quic, size)
        tuning.install_burst_pacer(quic)
    return client, server, now


def run(receive: Receive, size: int, total: int) -> tuple[float, int]:
    """(receiver CPU seconds, packets) for ``total`` bytes at ``size``."""
    client, server, now = connected_pair(size)
    stream_id = client.get_next_available_stream_id()
    client.send_stream_data(stream_id, b"GET", end_stream=True)
    for data, _addr in client.datagrams_to_send(now=now):
        server.receive_datagram(data, CLIENT_ADDR, now=now)
    while server.next_event() is not None:
        pass
    queued = received = packets = 0
    cpu = 0.0
    clock = time.process_time
    while received < total:
        while (
            queued < total and tuning.stream_buffered_bytes(server, stream_id) < SEND_WINDOW_BYTES
        ):
            queued += len(CHUNK)
            server.send_stream_data(stream_id, CHUNK, end_stream=queued >= total)
        now += STEP_S
        datagrams = server.datagrams_to_send(now=now)
        packets += len(datagrams)
        started = clock()
        for data, _addr in datagrams:
            receive(client, data, SERVER_ADDR, now)
        while (event := client.next_event()) is not None:
            if isinstance(event, events.StreamDataReceived):
                received += len(event.data)
        acks = client.datagrams_to_send(now=now)
        cpu += clock() - started
        for data, _addr in acks:
            server.receive_datagram(data, CLIENT_ADDR, now=now)
        while server.next_event() is not None:
            pass
    return cpu, packets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64, help="MiB moved per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per case (best shown)")
    parser.add_argument("--sizes", default="1452,16000", help="datagram sizes, comma-separated")
    args = parser.parse_args()
    total = args.mib * 1024 * 1024
    paths: list[tuple[str, Receive]] = [
        ("aioquic receive_datagram", aioquic_receive),
        ("p2pcp fastpath.receive", fastpath.receive),
    ]
    print(
        f"receiver CPU per packet, {args.mib} MiB in memory, best of {args.repeats}, "
        f"python {sys.version.split()[0]}"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        best: dict[str, tuple[float, int]] = {}
        for _ in range(args.repeats):
            for name, receive in paths:
                cpu, packets = run(receive, size, total)
                if name not in best or cpu < best[name][0]:
                    best[name] = (cpu, packets)
        base_cpu, base_packets = best[paths[0][0]]
        base_us = 1e6 * base_cpu / base_packets
        for name, _receive in paths:
            cpu, packets = best[name]
            us = 1e6 * cpu / packets
            print(
                f"  {size:>5}-byte datagrams  {name:<26} {us:6.1f} us/packet  "
                f"{total / 1e6 / cpu:7.1f} MB/s of receiver CPU  {us / base_us:5.2f}x baseline"
            )


if __name__ == "__main__":
    main()
