"""Tiny network probes the lab runs inside its namespaces (there is no ping here).

Run as a script, ``python probes.py COMMAND ARGS...``, under
``ip netns exec``. Each command prints one JSON object per line on stdout and
is bounded in time. Standard library only: it runs in any namespace.

Commands:

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
    back, and print ``{"received": N, "from": [...]}``.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time

ASK_TIMEOUT_S = 2.0


def _say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def _ask(sock: socket.socket, host: str, port: int) -> str | None:
    sock.settimeout(0.2)
    deadline = time.monotonic() + ASK_TIMEOUT_S
    while time.monotonic() < deadline:
        sock.sendto(b"?", (host, port))
        try:
            data, _ = sock.recvfrom(256)
        except (TimeoutError, ConnectionRefusedError):
            continue
        return data.decode()
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
        sock.settimeout(0.1)
        _say(ready=True)
        received = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                sock.recvfrom(2048)
            except TimeoutError:
                continue
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
            time.sleep(0.05)
        _say(sent=sent)


def punch(server_host: str, server_port: int, seconds: float) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", 0))
        _say(mapping=_ask(sock, server_host, server_port))
        peer_text = sys.stdin.readline().strip()
        peer_host, peer_port = peer_text.rsplit(":", 1)
        peer = (peer_host, int(peer_port))
        sock.settimeout(0.05)
        received = 0
        sources: set[str] = set()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sock.sendto(b"punch", peer)
            try:
                data, addr = sock.recvfrom(256)
            except (TimeoutError, ConnectionRefusedError):
                continue
            if data == b"punch":
                received += 1
                sources.add(f"{addr[0]}:{addr[1]}")
        _say(received=received, sources=sorted(sources))


def main(argv: list[str]) -> None:
    command, args = argv[0], argv[1:]
    if command == "serve":
        serve(args[0], [int(port) for port in args[1:]])
    elif command == "udp-ask":
        udp_ask(args[0], int(args[1]))
    elif command == "udp-ask-twice":
        udp_ask_twice(args[0], int(args[1]), int(args[2]))
    elif command == "tcp-ask":
        tcp_ask(args[0], int(args[1]))
    elif command == "udp-listen":
        udp_listen(int(args[0]), float(args[1]))
    elif command == "udp-send":
        udp_send(args[0], int(args[1]), float(args[2]))
    elif command == "punch":
        punch(args[0], int(args[1]), float(args[2]))
    else:
        raise SystemExit(f"unknown probe {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
