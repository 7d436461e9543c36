"""UDP socket buffers: past net.core.rmem_max where the process may force them."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

from p2pcp.net.udp.sockets import SOCKET_BUFFER_BYTES, set_buffer_sizes

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux socket options")


def _sysctl(name: str) -> int:
    return int(Path("/proc/sys/net/core", name).read_text())


@pytest.mark.parametrize(
    ("option", "sysctl"), [(socket.SO_RCVBUF, "rmem_max"), (socket.SO_SNDBUF, "wmem_max")]
)
def test_buffers_get_the_requested_size_where_allowed(option: int, sysctl: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        default = sock.getsockopt(socket.SOL_SOCKET, option)
        set_buffer_sizes(sock, SOCKET_BUFFER_BYTES)
        got = sock.getsockopt(socket.SOL_SOCKET, option)
    # Linux reports twice the size asked for (its bookkeeping share)
    if os.geteuid() == 0:
        assert got >= 2 * SOCKET_BUFFER_BYTES
    else:
        assert got >= min(2 * SOCKET_BUFFER_BYTES, 2 * _sysctl(sysctl), default)
