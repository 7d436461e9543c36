"""Loopback ports for tests and benches: a free one, and a black hole."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator


def _tcp_and_udp_port() -> tuple[socket.socket, socket.socket]:
    """A TCP socket and a UDP socket bound to the same loopback port."""
    while True:
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.bind(("127.0.0.1", 0))
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            udp.bind(("127.0.0.1", int(tcp.getsockname()[1])))
        except OSError:
            tcp.close()
            udp.close()
            continue
        return tcp, udp


def free_port() -> int:
    """A port free on 127.0.0.1 for both TCP and UDP (nothing listens on it):
    a relay serves WebSocket on TCP and STUN on UDP with one number."""
    tcp, udp = _tcp_and_udp_port()
    port = int(tcp.getsockname()[1])
    tcp.close()
    udp.close()
    return port


@contextlib.contextmanager
def black_hole(*, udp_free: bool = False) -> Iterator[int]:
    """A loopback port where a relay never answers: TCP connections are taken
    by the kernel (a listener that never accepts) and hang; UDP (STUN) is
    bound and never read, so no ICMP refusal comes back either.
    ``udp_free``: leave the UDP port free (for a STUN responder of the test)."""
    tcp, udp = _tcp_and_udp_port()
    if udp_free:
        udp.close()
    tcp.listen(64)
    try:
        yield int(tcp.getsockname()[1])
    finally:
        tcp.close()
        udp.close()
