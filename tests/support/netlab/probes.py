"""Tiny network probes the labs run inside their namespaces (there is no ping here).

Run as a script, ``python probes.py COMMAND ARGS...``, under
``ip netns exec``. Each command prints one JSON object per line on stdout and
is bounded in time unless it is a server (killed by the lab). Standard
library only: it runs in any namespace.

For the NAT lab (natlab.py):

``serve HOST UDP_PORT...``
    The "address server" on the relay host: every UDP port answers each
    datagram with the sender's address as seen here (``ip:port``), and a TCP
    listener on the first port writes the same for each connection. Prints
    ``{"ready": true}`` once bound; runs until killed.
``udp-ask HOST PORT``
    Send a datagram to an address server and print what it saw
    (``{"mapping": "ip:port"}``) or ``{"mapping": null}`` after ~2 s.
``udp-ask-twice HOST PORT1 PORT2``
    The same from one socket to two ports: shows whether the NAT keeps one
    mapping for every destination (endpoint-independent) or not.
``tcp-ask HOST PORT``
    Connect by TCP and print ``{"mapping": "ip:port"}``, or
    ``{"mapping": null, "error": ...}``.
``udp-listen PORT SECONDS``
    Print ``{"ready": true}``, then count datagrams for SECONDS and print
    ``{"received": N}``.
``udp-send HOST PORT SECONDS``
    Send a datagram every 50 ms for SECONDS.
``punch SERVER_HOST SERVER_PORT SECONDS``
    A plain UDP hole punch: learn our public mapping from the address server
    and print ``{"mapping": ...}``; read the peer's mapping (``ip:port``) from
    stdin; then send to it every 50 ms for SECONDS while counting what comes
    back, and print ``{"received": N, "sources": [...]}``.

For the bench's link (link.py, bench/network_tools.py):

``udp-echo HOST PORT``
    Answer every datagram with itself (until killed).
``udp-ping HOST PORT [--count N] [--interval-s S]``
    Numbered round trips, a reply counting only for its own ping:
    ``{"rtts_ms": [...], "sent": N}``.
``tcp-serve HOST PORT FILE``
    ``{"ready": ..., "congestion": ...}``, then send FILE to the first
    client and exit: ``{"sent": bytes}``.
``tcp-fetch HOST PORT OUT [--timeout-s S]``
    Connect, read to EOF into OUT (or /dev/null), time connect to EOF:
    ``{"bytes", "seconds", "finished", "congestion"}``; at the deadline it
    stops and reports what it got with ``finished: false``. The TCP
    congestion control is the namespace's
    ``net.ipv4.tcp_congestion_control``; both ends report their socket's.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import TypeVar

ASK_TIMEOUT_S = 2.0
SEND_INTERVAL_S = 0.05
RECV_BUFFER_BYTES = 4 * 1024 * 1024
PING_PAYLOAD = b"p2pcp-bench-ping"

T = TypeVar("T")


def _say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def _before(deadline: float, sock: socket.socket, receive: Callable[[], T]) -> T | None:
    """receive() with the socket's timeout set to what is left until deadline;
    None once the deadline has passed or the wait timed out."""
    left = deadline - time.monotonic()
    if left <= 0:
        return None
    sock.settimeout(left)
    try:
        return receive()
    except (TimeoutError, ConnectionRefusedError):
        return None


# -- the NAT lab's probes ----------------------------------------------------


def _ask(sock: socket.socket, host: str, port: int) -> str | None:
    deadline = time.monotonic() + ASK_TIMEOUT_S
    while time.monotonic() < deadline:
        sock.sendto(b"?", (host, port))
        answer = _before(min(deadline, time.monotonic() + 0.2), sock, lambda: sock.recvfrom(256))
        if answer is not None:
            return answer[0].decode()
    return None


def serve(host: str, ports: list[int]) -> None:
    def udp_loop(sock: socket.socket) -> None:
        while True:
            _, addr = sock.recvfrom(2048)
            sock.sendto(f"{addr[0]}:{addr[1]}".encode(), addr)

    def tcp_loop(listener: socket.socket) -> None:
        while True:
            conn, addr = listener.accept()
            with conn:
                conn.sendall(f"{addr[0]}:{addr[1]}".encode())

    threads = []
    for port in ports:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((host, port))
        threads.append(threading.Thread(target=udp_loop, args=(udp,), daemon=True))
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, ports[0]))
    listener.listen(16)
    threads.append(threading.Thread(target=tcp_loop, args=(listener,), daemon=True))
    for thread in threads:
        thread.start()
    _say(ready=True)
    while True:
        time.sleep(3600)


def udp_ask(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        _say(mapping=_ask(sock, host, port))


def udp_ask_twice(host: str, port1: int, port2: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        _say(mappings=[_ask(sock, host, port1), _ask(sock, host, port2)])


def tcp_ask(host: str, port: int) -> None:
    try:
        with socket.create_connection((host, port), timeout=ASK_TIMEOUT_S) as sock:
            sock.settimeout(ASK_TIMEOUT_S)
            _say(mapping=sock.recv(256).decode())
    except OSError as error:
        _say(mapping=None, error=repr(error))


def udp_listen(port: int, seconds: float) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", port))
        _say(ready=True)
        received = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if _before(min(deadline, time.monotonic() + 0.1), sock, lambda: sock.recvfrom(2048)):
                received += 1
        _say(received=received)


def udp_send(host: str, port: int, seconds: float) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        deadline = time.monotonic() + seconds
        sent = 0
        while time.monotonic() < deadline:
            try:
                sock.sendto(b"hello", (host, port))
                sent += 1
            except OSError as error:  # no route: the probe's answer, not a crash
                _say(sent=sent, error=repr(error))
                return
            time.sleep(SEND_INTERVAL_S)
        _say(sent=sent)


def punch(server_host: str, server_port: int, seconds: float) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", 0))
        _say(mapping=_ask(sock, server_host, server_port))
        peer_host, peer_port = sys.stdin.readline().strip().rsplit(":", 1)
        peer = (peer_host, int(peer_port))
        received = 0
        sources: set[str] = set()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sock.sendto(b"punch", peer)
            wait_until = min(deadline, time.monotonic() + SEND_INTERVAL_S)
            answer = _before(wait_until, sock, lambda: sock.recvfrom(256))
            if answer is not None and answer[0] == b"punch":
                received += 1
                sources.add(f"{answer[1][0]}:{answer[1][1]}")
        _say(received=received, sources=sorted(sources))


# -- the bench link's probes -------------------------------------------------


def _congestion_of(sock: socket.socket) -> str:
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16)
    return raw.split(b"\0", 1)[0].decode()


def udp_echo(host: str, port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, port))
    _say(ready=True)
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
        while (data := _before(deadline, sock, lambda: sock.recv(2048))) is not None:
            if data == tag:
                rtts_ms.append((time.monotonic() - started) * 1000)
                break
        pause = started + interval_s - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    _say(sent=count, rtts_ms=[round(rtt, 4) for rtt in rtts_ms])


def tcp_serve(host: str, port: int, path: str) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(1)
    _say(ready=True, congestion=_congestion_of(listener))
    conn, _ = listener.accept()
    congestion = _congestion_of(conn)
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
    _say(sent=sent, congestion=congestion)


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
            congestion = _congestion_of(sock)
            while (count := _before(deadline, sock, lambda: sock.recv_into(buffer))) is not None:
                if count == 0:
                    finished = True
                    break
                os.write(fd, view[:count])
                received += count
    finally:
        os.close(fd)
    _say(
        bytes=received,
        seconds=round(time.monotonic() - started, 4),
        finished=finished,
        congestion=congestion,
    )


# Each command's positional arguments: (name, type, nargs).
_ARGUMENTS: dict[str, list[tuple[str, type, str | int | None]]] = {
    "serve": [("host", str, None), ("ports", int, "+")],
    "udp-ask": [("host", str, None), ("port", int, None)],
    "udp-ask-twice": [("host", str, None), ("ports", int, 2)],
    "tcp-ask": [("host", str, None), ("port", int, None)],
    "udp-listen": [("port", int, None), ("seconds", float, None)],
    "udp-send": [("host", str, None), ("port", int, None), ("seconds", float, None)],
    "punch": [("host", str, None), ("port", int, None), ("seconds", float, None)],
    "udp-echo": [("host", str, None), ("port", int, None)],
    "udp-ping": [("host", str, None), ("port", int, None)],
    "tcp-serve": [("host", str, None), ("port", int, None), ("file", str, None)],
    "tcp-fetch": [("host", str, None), ("port", int, None), ("out", str, None)],
}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, arguments in _ARGUMENTS.items():
        command = sub.add_parser(name)
        for argument, kind, nargs in arguments:
            command.add_argument(argument, type=kind, nargs=nargs)
    sub.choices["udp-ping"].add_argument("--count", type=int, default=100)
    sub.choices["udp-ping"].add_argument("--interval-s", type=float, default=0.02)
    sub.choices["tcp-fetch"].add_argument("--timeout-s", type=float, default=60.0)
    args = parser.parse_args(argv)
    commands: dict[str, Callable[[], None]] = {
        "serve": lambda: serve(args.host, args.ports),
        "udp-ask": lambda: udp_ask(args.host, args.port),
        "udp-ask-twice": lambda: udp_ask_twice(args.host, *args.ports),
        "tcp-ask": lambda: tcp_ask(args.host, args.port),
        "udp-listen": lambda: udp_listen(args.port, args.seconds),
        "udp-send": lambda: udp_send(args.host, args.port, args.seconds),
        "punch": lambda: punch(args.host, args.port, args.seconds),
        "udp-echo": lambda: udp_echo(args.host, args.port),
        "udp-ping": lambda: udp_ping(args.host, args.port, args.count, args.interval_s),
        "tcp-serve": lambda: tcp_serve(args.host, args.port, args.file),
        "tcp-fetch": lambda: tcp_fetch(args.host, args.port, args.out, args.timeout_s),
    }
    commands[args.command]()


if __name__ == "__main__":
    main(sys.argv[1:])
