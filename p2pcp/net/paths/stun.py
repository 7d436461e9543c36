"""The STUN client: which public address a node's UDP socket has, as a
relay's STUN port sees it (the relay's codec: relay/stun.py).

A request goes out every STUN_RETRY_S, at most STUN_ATTEMPTS times: a lost
UDP packet costs one retry, and a relay without STUN costs bind at most
~1 s (only the public address is then missing). Answers arrive through
MagicSock, which hands every STUN packet of the socket to ``receive``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from p2pcp.core.errors import RemoteProtocolError
from p2pcp.net.udp.transport import Address
from p2pcp.relay.stun import decode_binding_response, encode_binding_request, new_transaction_id

logger = logging.getLogger(__name__)

STUN_RETRY_S = 0.25
STUN_ATTEMPTS = 4

SendStun = Callable[[bytes, Address], None]


def parse_stun_response(data: bytes) -> tuple[bytes, Address] | None:
    """(transaction id, mapped address) of a STUN response, or None."""
    try:
        response = decode_binding_response(data)
    except RemoteProtocolError:
        return None
    return response.transaction_id, response.address


class StunClient:
    """Binding requests over one socket (``send``), answers from ``receive``."""

    def __init__(self, send: SendStun, show: Callable[[Address], str] = str) -> None:
        self._send = send
        self._show = show
        self._waiters: dict[bytes, asyncio.Future[Address]] = {}

    async def query(self, server: Address) -> Address | None:
        """Our socket's public address as ``server`` sees it, or None."""
        loop = asyncio.get_running_loop()
        for _attempt in range(STUN_ATTEMPTS):
            transaction_id = new_transaction_id()
            waiter: asyncio.Future[Address] = loop.create_future()
            self._waiters[transaction_id] = waiter
            self._send(encode_binding_request(transaction_id), server)
            try:
                return await asyncio.wait_for(waiter, STUN_RETRY_S)
            except asyncio.TimeoutError:
                continue
            finally:
                self._waiters.pop(transaction_id, None)
        logger.info("no STUN answer from %s", self._show(server))
        return None

    def receive(self, data: bytes, address: Address) -> None:
        """A STUN packet that arrived on the socket (from ``address``)."""
        parsed = parse_stun_response(data)
        if parsed is None:
            return
        waiter = self._waiters.get(parsed[0])
        if waiter is not None and not waiter.done():
            waiter.set_result(parsed[1])
