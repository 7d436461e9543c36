"""The relay in process for tests: a server on 127.0.0.1:0, clients that
collect what they receive, and raw WebSocket connections that speak (or
break) the relay protocol by hand.

Keys come from fixed seeds (one per role), so runs are repeatable.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from p2pcp.core.identity import NodeId, SecretKey
from p2pcp.relay import frames
from p2pcp.relay.client import RelayClient
from p2pcp.relay.server import RelayServer

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

KEY_A = SecretKey(bytes([1] * 32))
KEY_B = SecretKey(bytes([2] * 32))
KEY_C = SecretKey(bytes([3] * 32))
KEY_MALLORY = SecretKey(bytes([66] * 32))


@contextlib.asynccontextmanager
async def running_relay(*args: Any, **kwargs: Any) -> AsyncIterator[RelayServer]:
    """``RelayServer(*args, **kwargs)`` started (default: 127.0.0.1, port 0), then closed."""
    server = RelayServer(*args, **kwargs)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


class Inbox:
    """Collects what a relay client receives; wait until a condition holds."""

    def __init__(self) -> None:
        self.batches: list[tuple[NodeId, list[bytes]]] = []
        self.gone: list[NodeId] = []
        self.states: list[bool] = []
        self._changed = asyncio.Event()

    def packets(self, source: NodeId, datagrams: list[bytes]) -> None:
        self.batches.append((source, datagrams))
        self._changed.set()

    def peer_gone(self, node: NodeId) -> None:
        self.gone.append(node)
        self._changed.set()

    def connected(self, is_connected: bool) -> None:
        self.states.append(is_connected)
        self._changed.set()

    @property
    def datagrams(self) -> list[bytes]:
        return [d for _, batch in self.batches for d in batch]

    @property
    def sources(self) -> set[NodeId]:
        return {source for source, _ in self.batches}

    async def until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            self._changed.clear()
            await self._changed.wait()


def relay_client(server_url: str, key: SecretKey, inbox: Inbox | None = None) -> RelayClient:
    """A RelayClient whose callbacks fill ``inbox`` (none: it drops what comes)."""
    if inbox is None:
        return RelayClient(server_url, key, on_packets=lambda source, datagrams: None)
    return RelayClient(
        server_url,
        key,
        on_packets=inbox.packets,
        on_peer_gone=inbox.peer_gone,
        on_connected=inbox.connected,
    )


@contextlib.asynccontextmanager
async def logged_in_pair(
    server: RelayServer,
) -> AsyncIterator[tuple[RelayClient, RelayClient, Inbox, Inbox]]:
    """Clients of A and B, logged in to ``server``, and their inboxes; closed at the end."""
    inbox_a, inbox_b = Inbox(), Inbox()
    a = relay_client(server.url, KEY_A, inbox_a)
    b = relay_client(server.url, KEY_B, inbox_b)
    try:
        assert await a.start(timeout_s=5) and await b.start(timeout_s=5)
        yield a, b, inbox_a, inbox_b
    finally:
        await a.close()
        await b.close()


async def honest_pair_works(server: RelayServer, payload: bytes) -> None:
    """Two fresh clients can still exchange ``payload`` through ``server``."""
    inbox = Inbox()
    a, b = relay_client(server.url, KEY_A), relay_client(server.url, KEY_B, inbox)
    try:
        assert await a.start(timeout_s=5) and await b.start(timeout_s=5)
        assert a.send(KEY_B.public, [payload])
        await inbox.until(lambda: payload in inbox.datagrams)
    finally:
        await a.close()
        await b.close()


async def http_get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of a plain HTTP GET to the relay on 127.0.0.1."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


# -- the protocol by hand ---------------------------------------------------------


async def raw_connect(url: str) -> tuple[ClientConnection, frames.Challenge]:
    """A WebSocket to ``url``/relay and the challenge it was sent (not logged in)."""
    from websockets.asyncio.client import connect

    connection = await connect(
        url.replace("http", "ws") + "/relay", compression=None, max_size=None
    )
    challenge = frames.decode_frame(await connection.recv(decode=False))
    assert isinstance(challenge, frames.Challenge)
    return connection, challenge


def login_frame(key: SecretKey, challenge: frames.Challenge) -> bytes:
    node = bytes(key.public)
    signed = frames.login_message(challenge.server_id, challenge.challenge, node)
    return frames.Login(node, key.sign(signed)).encode()


async def raw_login(url: str, key: SecretKey) -> ClientConnection:
    """A raw connection logged in as ``key``."""
    connection, challenge = await raw_connect(url)
    await connection.send(login_frame(key, challenge))
    assert isinstance(frames.decode_frame(await connection.recv(decode=False)), frames.LoginOk)
    return connection


async def expect_error(
    connection: ClientConnection, code: int, *, after_login: bool = False
) -> None:
    """The relay sends ERROR(code) and closes: nothing else (but PEER_GONE after login)."""
    from websockets.exceptions import ConnectionClosed

    received = []
    try:
        while True:
            received.append(frames.decode_frame(await connection.recv(decode=False)))
    except ConnectionClosed:
        pass
    if after_login:
        received = [frame for frame in received if not isinstance(frame, frames.PeerGone)]
    assert len(received) == 1, received
    assert isinstance(received[0], frames.Error) and received[0].code == code, received
