"""The home relay at bind: what the ticket learns when the relay is slow.

A relay that accepts TCP but never finishes its login (overloaded, or a
proxy that hangs) must not cost the sender its public address: the STUN
answer comes over UDP on its own and is kept, whatever the login does.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

from p2pcp.core.identity import SecretKey
from p2pcp.net.quic.endpoint import RELAY_JOIN_WAIT_S, Endpoint
from p2pcp.relay.listen import StunResponder
from p2pcp.relay.metrics import RelayMetrics

TEST_TIMEOUT_S = 30.0
KEY = SecretKey(bytes(range(3, 35)))


@contextlib.contextmanager
def hanging_tcp_listener() -> Iterator[tuple[socket.socket, int]]:
    """A loopback TCP port that takes connections (the kernel completes the
    handshake) but never answers: a relay whose login never finishes. The
    UDP port of the same number is free for a STUN responder."""
    while True:
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.bind(("127.0.0.1", 0))
        port = int(tcp.getsockname()[1])
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            tcp.close()
            continue
        finally:
            probe.close()
        break
    tcp.listen(16)
    try:
        yield tcp, port
    finally:
        tcp.close()


def test_stun_answer_is_kept_when_the_relay_login_hangs() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        with hanging_tcp_listener() as (_tcp, port):
            transport, _protocol = await loop.create_datagram_endpoint(
                lambda: StunResponder(RelayMetrics()), local_addr=("127.0.0.1", port)
            )
            try:
                started = loop.time()
                endpoint = await Endpoint.bind(KEY, relay_url=f"http://127.0.0.1:{port}")
                try:
                    # Bind waited for the relay no longer than its short wait...
                    assert loop.time() - started < RELAY_JOIN_WAIT_S + 2.0
                    assert not endpoint.is_relay_connected
                    # ...and kept what STUN said, though the login never ended.
                    assert endpoint.observed_address == ("127.0.0.1", endpoint.local_port)
                finally:
                    await endpoint.close()
            finally:
                transport.close()

    asyncio.run(asyncio.wait_for(body(), TEST_TIMEOUT_S))
