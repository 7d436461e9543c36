"""The home relay at bind: what the ticket learns when the relay is slow.

A relay that accepts TCP but never finishes its login (overloaded, or a
proxy that hangs) must not cost the sender its public address: the STUN
answer comes over UDP on its own and is kept, whatever the login does.
"""

from __future__ import annotations

import asyncio

from p2pcp.core.config import RelayUrl
from p2pcp.core.identity import SecretKey
from p2pcp.net import Endpoint, EndpointConfig
from p2pcp.net.config import RELAY_JOIN_WAIT_S
from p2pcp.relay.listen import StunResponder
from p2pcp.relay.metrics import RelayMetrics
from tests.support.ports import black_hole

TEST_TIMEOUT_S = 30.0
KEY = SecretKey(bytes(range(3, 35)))


def test_stun_answer_is_kept_when_the_relay_login_hangs() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        with black_hole(udp_free=True) as port:  # the login never ends
            transport, _protocol = await loop.create_datagram_endpoint(
                lambda: StunResponder(RelayMetrics()), local_addr=("127.0.0.1", port)
            )
            try:
                started = loop.time()
                url = RelayUrl.parse(f"http://127.0.0.1:{port}")
                endpoint = await Endpoint.bind(KEY, EndpointConfig(relay_url=url))
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
