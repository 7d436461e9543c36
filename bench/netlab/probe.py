"""Small network probes that bench/network.py runs inside its namespaces.

Standard library only; each prints JSON lines on stdout::

    probe.py udp-echo HOST PORT                # answer every datagram (until killed)
    probe.py udp-ping HOST PORT [--count N] [--interval-s S]
                                               # round trips: {"rtts_ms": [...], "sent": N}
    probe.py tcp-serve HOST PORT FILE          # {"ready": ...}, then send FILE to the
                                               # first client and exit: {"sent": bytes}
    probe.py tcp-fetch HOST PORT OUT [--timeout-s S]
                                               # connect, read to EOF into OUT (or
                                               # /dev/null), time connect -> EOF

``tcp-fetch`` reports ``{"bytes", "seconds", "finished", "congestion"}``;
at the deadline it stops and reports what it got with ``finished: false``.
The TCP congestion control is whatever the namespace's
``net.ipv4.tcp_congestion_control`` says; both ends report the one their
socket uses.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time

RECV_BUFFER_BYTES = 4 * 1024 * 1024
PING_PAYLOAD = b"p2pcp-bench-ping"


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def congestion_of(sock: socket.socket) -> str:
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16)
    return raw.split(b"\0", 1)[0].decode()


def udp_echo(host: str, port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, port))
    say(ready=True)
    while True:
        data, peer = sock.recvfrom(2048)
        sock.sendto(data, peer)


def udp_ping(host: str, port: int, count: int, interval_s: float) -> None:
    """Send count numbered pings, interval_s apart; a reply counts only for its own ping."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((host, port))
    rtts_ms: list[float] = []
    for number in range(count):
        tag = PING_PAYLOAD + number.to_bytes(4, "big")
        started = time.monotonic()
        sock.send(tag)
        deadline = started + max(interval_s, 0.5)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            try:
                data = sock.recv(2048)
            except (TimeoutError, ConnectionRefusedError):
                break
            if data == tag:
                rtts_ms.append((time.monotonic() - started) * 1000)
                break
        pause = started + interval_s - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    say(sent=count, rtts_ms=[round(rtt, 4) for rtt in rtts_ms])


def tcp_serve(host: str, port: int, path: str) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(1)
    say(ready=True, congestion=congestion_of(listener))
    conn, _ = listener.accept()
    congestion = congestion_of(conn)
    sent = 0
    with conn, open(path, "rb") as handle:
        try:
            sent = conn.sendfile(handle)
            conn.shutdown(socket.SHUT_WR)
            # Wait for the client to close, so every byte is acknowledged.
            conn.settimeout(30)
            while conn.recv(65536):
                pass
        except OSError:  # the client stopped at its deadline
            pass
    say(sent=sent, congestion=congestion)


def tcp_fetch(host: str, port: int, out: str, timeout_s: float) -> None:
    started = time.monotonic()
    deadline = started + timeout_s
    received = 0
    finished = False
    congestion = ""
    buffer = bytearray(RECV_BUFFER_BYTES)
    view = memoryview(buffer)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        sock = socket.create_connection((host, port), timeout=max(1.0, timeout_s))
        with sock:
            congestion = congestion_of(sock)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                sock.settimeout(left)
                try:
                    count = sock.recv_into(buffer)
                except TimeoutError:
                    break
                if count == 0:
                    finished = True
                    break
                os.write(fd, view[:count])
                received += count
    finally:
        os.close(fd)
    say(
        bytes=received,
        seconds=round(time.monotonic() - started, 4),
        finished=finished,
        congestion=congestion,
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    echo = sub.add_parser("udp-echo")
    ping = sub.add_parser("udp-ping")
    serve = sub.add_parser("tcp-serve")
    fetch = sub.add_parser("tcp-fetch")
    for command in (echo, ping, serve, fetch):
        command.add_argument("host")
        command.add_argument("port", type=int)
    ping.add_argument("--count", type=int, default=100)
    ping.add_argument("--interval-s", type=float, default=0.02)
    serve.add_argument("file")
    fetch.add_argument("out")
    fetch.add_argument("--timeout-s", type=float, default=60.0)
    args = parser.parse_args(argv)
    if args.command == "udp-echo":
        udp_echo(args.host, args.port)
    elif args.command == "udp-ping":
        udp_ping(args.host, args.port, args.count, args.interval_s)
    elif args.command == "tcp-serve":
        tcp_serve(args.host, args.port, args.file)
    else:
        tcp_fetch(args.host, args.port, args.out, args.timeout_s)


if __name__ == "__main__":
    main(sys.argv[1:])
