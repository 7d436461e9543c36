"""CPU per packet at both ends: aioquic's own paths against p2pcp's fast paths.

Two QuicConnections with p2pcp's settings, in memory on a virtual clock (no
sockets, no event loop): the server streams --mib MiB to the client. Either
both ends use aioquic's ``datagrams_to_send`` and ``receive_datagram`` (the
baseline), or the sender builds its packets through
``p2pcp.net._aioquic.fastsend.datagrams_to_send`` and the receiver takes them through
``p2pcp.net._aioquic.fastpath.receive``, as a p2pcp connection does.
Prints, per path and datagram size, the sender's CPU per packet (building
and sending its packets, taking the acks) and the receiver's (receiving,
events, building its acks), in us and in MB of datagrams per second of that end's CPU, with the
ratios against the baseline, all measured in the same run (best of
--repeats, alternating the paths so that neither gets a warmer machine).

    python bench/packet_path.py [--mib 64] [--repeats 3] [--sizes 1452,16000]

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

from p2pcp.net._aioquic import fastpath, fastsend, tuning
from p2pcp.net.quic import configuration

SERVER_ADDR = ("198.18.0.1", 4433)
CLIENT_ADDR = ("198.18.0.2", 5000)
CHUNK = os.urandom(1024 * 1024)
SEND_WINDOW_BYTES = 8 * 1024 * 1024
STEP_S = 0.0005

Receive = Callable[[QuicConnection, bytes, Any, float], object]
Send = Callable[[QuicConnection, float], list[tuple[bytes, Any]]]


def aioquic_receive(quic: QuicConnection, data: bytes, addr: Any, now: float) -> None:
    quic.receive_datagram(data, addr, now)


def aioquic_send(quic: QuicConnection, now: float) -> list[tuple[bytes, Any]]:
    return quic.datagrams_to_send(now=now)


def connected_pair(size: int) -> tuple[QuicConnection, QuicConnection, float]:
    """(client, server, now): a sole-client pair, as a receiver's endpoint makes."""
    client_config = configuration.sole_client_configuration(
        configuration.client_configuration(bytes(range(32)))
    )
    client = QuicConnection(configuration=client_config)
    tuning.forgo_connection_ids(client)
    tuning.set_initial_destination_cid(client, os.urandom(configuration.INITIAL_DCID_BYTES))
    now = 0.0
    client.connect(SERVER_ADDR, now=now)
    initial = client.datagrams_to_send(now=now)
    header = pull_quic_header(
        Buffer(data=initial[0][0]), host_cid_length=configuration.SERVER_CID_BYTES
    )
    server = QuicConnection(
        configuration=configuration.server_configuration(bytes(range(1, 33))),
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


def run(send: Send, receive: Receive, size: int, total: int) -> tuple[float, float, int]:
    """(sender CPU seconds, receiver CPU seconds, packets) for ``total`` bytes
    at ``size``."""
    client, server, now = connected_pair(size)
    stream_id = client.get_next_available_stream_id()
    client.send_stream_data(stream_id, b"GET", end_stream=True)
    for data, _addr in client.datagrams_to_send(now=now):
        server.receive_datagram(data, CLIENT_ADDR, now=now)
    while server.next_event() is not None:
        pass
    queued = received = packets = 0
    send_cpu = receive_cpu = 0.0
    clock = time.process_time
    while received < total:
        while (
            queued < total and tuning.stream_buffered_bytes(server, stream_id) < SEND_WINDOW_BYTES
        ):
            queued += len(CHUNK)
            server.send_stream_data(stream_id, CHUNK, end_stream=queued >= total)
        now += STEP_S
        started = clock()
        datagrams = send(server, now)
        send_cpu += clock() - started
        packets += len(datagrams)
        started = clock()
        for data, _addr in datagrams:
            receive(client, data, SERVER_ADDR, now)
        while (event := client.next_event()) is not None:
            if isinstance(event, events.StreamDataReceived):
                received += len(event.data)
        acks = client.datagrams_to_send(now=now)
        receive_cpu += clock() - started
        started = clock()
        for data, _addr in acks:
            server.receive_datagram(data, CLIENT_ADDR, now=now)
        while server.next_event() is not None:
            pass
        send_cpu += clock() - started
    return send_cpu, receive_cpu, packets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64, help="MiB moved per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per case (best shown)")
    parser.add_argument("--sizes", default="1452,16000", help="datagram sizes, comma-separated")
    args = parser.parse_args()
    total = args.mib * 1024 * 1024
    paths: list[tuple[str, Send, Receive]] = [
        ("aioquic", aioquic_send, aioquic_receive),
        ("p2pcp fast paths", fastsend.datagrams_to_send, fastpath.receive),
    ]
    print(
        f"CPU per packet at each end, {args.mib} MiB in memory, best of {args.repeats}, "
        f"python {sys.version.split()[0]}"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        best: dict[str, list[float]] = {}
        for _ in range(args.repeats):
            for name, send, receive in paths:
                send_cpu, receive_cpu, packets = run(send, receive, size, total)
                us = [1e6 * send_cpu / packets, 1e6 * receive_cpu / packets]
                if name not in best:
                    best[name] = us
                else:
                    best[name] = [min(old, new) for old, new in zip(best[name], us, strict=True)]
        base = best[paths[0][0]]
        for name, _send, _receive in paths:
            cells = []
            for end, us, base_us in zip(("sender", "receiver"), best[name], base, strict=True):
                mb_s = size / us  # bytes per us = MB/s of this end's CPU
                cells.append(f"{end} {us:6.1f} us/packet {mb_s:6.1f} MB/s {us / base_us:5.2f}x")
            print(f"  {size:>5}-byte datagrams  {name:<17} " + "   ".join(cells))


if __name__ == "__main__":
    main()
