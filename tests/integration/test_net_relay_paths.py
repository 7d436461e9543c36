"""Endpoints with the real relay in process, on loopback: relay-only, relay to
direct, fallback to the relay, the relay going away, STUN.

Every test body is bounded in time; only public APIs are used. The test that
breaks the direct path in the middle of a transfer needs a firewall rule, so
it runs in a private network namespace (root and ``nft`` only; it touches
nothing outside that namespace) and is skipped elsewhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from p2pcp.core.config import RelayUrl
from p2pcp.net import Connection, Endpoint, EndpointConfig, PathKind, PathPolicy, Route
from p2pcp.relay.server import RelayServer
from tests.support.aio import run_bounded
from tests.support.pairs import SERVER_KEY, endpoint_pair
from tests.support.ports import free_port
from tests.support.relay import running_relay

TEST_TIMEOUT_S = 60.0
CHUNK_BYTES = 1 << 20


def on_relay(relay: RelayServer, policy: PathPolicy = PathPolicy.AUTO) -> EndpointConfig:
    """An endpoint whose home relay is ``relay``."""
    return EndpointConfig(relay_url=RelayUrl.parse(relay.url), path_policy=policy)


@asynccontextmanager
async def relay_and_pair(
    *, server_policy: PathPolicy = PathPolicy.AUTO, client_policy: PathPolicy = PathPolicy.AUTO
) -> AsyncIterator[tuple[RelayServer, Endpoint, Endpoint]]:
    """A relay in process and two endpoints whose home relay it is."""
    async with (
        running_relay() as relay,
        endpoint_pair(on_relay(relay, server_policy), on_relay(relay, client_policy)) as pair,
    ):
        yield relay, *pair


async def dial(
    client: Endpoint,
    server: Endpoint,
    relay: RelayServer | None,
    addresses: list[tuple[str, int]] | None = None,
) -> Connection:
    """``client`` dials ``server`` at ``addresses`` (default: all the server
    has) and over ``relay``, as a receiver does with a ticket."""
    return await client.connect(
        server.node_id,
        server.direct_addresses() if addresses is None else addresses,
        timeout_s=10,
        relay_url=None if relay is None else RelayUrl.parse(relay.url),
    )


def pattern(size: int) -> bytes:
    block = hashlib.sha256(b"p2pcp relay test").digest() * (CHUNK_BYTES // 32)
    return (block * (size // len(block) + 1))[:size]


class PathLog:
    """A connection's path when this was made, then what its listener reported."""

    def __init__(self, connection: Connection) -> None:
        self.kinds: list[PathKind] = [connection.path_kind]
        self.descriptions: list[str] = [connection.path_description]
        connection.set_path_listener(self._record)

    def _record(self, route: Route) -> None:
        self.kinds.append(route.kind)
        self.descriptions.append(str(route))


async def serve_one_download(server: Endpoint, data: bytes) -> tuple[Connection, PathLog]:
    """Accept one connection and stream ``data`` on the first stream it opens."""
    connection = await server.accept()
    log = PathLog(connection)
    stream = await connection.accept_stream()
    await stream.read_exactly(1)
    view = memoryview(data)
    for start in range(0, len(data), CHUNK_BYTES):
        await stream.write(view[start : start + CHUNK_BYTES])
    await stream.finish()
    await connection.wait_closed()
    return connection, log


async def download(
    connection: Connection,
    size: int,
    *,
    at_fraction: float = 2.0,
    action: Callable[[], Awaitable[None]] | None = None,
) -> bytes:
    """Read ``size`` bytes; run ``action`` once ``at_fraction`` of them arrived."""
    stream = await connection.open_stream()
    await stream.write(b"?")
    digest = hashlib.sha256()
    got = 0
    while True:
        chunk = await stream.read()
        if not chunk:
            break
        digest.update(chunk)
        got += len(chunk)
        if action is not None and got >= size * at_fraction:
            await action()
            action = None
    assert got == size
    return digest.digest()


async def wait_for_kind(connection: Connection, kind: PathKind, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while connection.path_kind != kind:
        assert asyncio.get_running_loop().time() < deadline, connection.path_description
        await asyncio.sleep(0.01)


def test_relay_only_transfer_is_byte_exact() -> None:
    size = 32 * 1024 * 1024
    data = pattern(size)

    async def body() -> None:
        async with relay_and_pair(client_policy=PathPolicy.RELAY_ONLY) as (relay, server, client):
            assert client.direct_addresses() == []
            serving = asyncio.ensure_future(serve_one_download(server, data))
            connection = await dial(client, server, relay)
            log = PathLog(connection)
            digest = await download(connection, size)
            assert digest == hashlib.sha256(data).digest()
            assert connection.path_kind is PathKind.RELAY
            assert connection.path_description == f"relay {relay.url}"
            assert log.kinds == ["relay"]
            assert connection.max_datagram_size == 16000  # the relay carries any size
            counts = connection.bytes_by_path
            assert counts["direct"] == 0
            assert counts["relay"] >= size
            await connection.close()
            served, server_log = await serving
            assert served.path_kind is PathKind.RELAY
            assert served.bytes_by_path["direct"] == 0
            assert server_log.kinds == ["relay"]

    run_bounded(body, TEST_TIMEOUT_S)


def test_auto_starts_on_relay_and_becomes_direct() -> None:
    size = 64 * 1024 * 1024
    data = pattern(size)

    async def body() -> None:
        async with relay_and_pair() as (relay, server, client):
            serving = asyncio.ensure_future(serve_one_download(server, data))
            connection = await dial(client, server, relay)
            log = PathLog(connection)
            digest = await download(connection, size)
            assert digest == hashlib.sha256(data).digest()
            assert connection.path_kind is PathKind.DIRECT
            assert log.kinds == ["relay", "direct"]
            assert log.descriptions[0] == f"relay {relay.url}"
            assert log.descriptions[-1].startswith("direct ")
            counts = connection.bytes_by_path
            assert counts["direct"] > counts["relay"]
            assert counts["direct"] > size // 2
            await connection.close()
            served, server_log = await serving
            assert served.path_kind is PathKind.DIRECT
            assert server_log.kinds[-1] == "direct"  # it may have moved before accept()
            assert served.bytes_by_path["direct"] > served.bytes_by_path["relay"]
            # The direct path was probed up from 1200 after the move.
            assert connection.max_datagram_size > 1200

    run_bounded(body, TEST_TIMEOUT_S)


def test_dead_ticket_address_still_goes_direct_by_call_me_maybe() -> None:
    """The ticket's only address drops everything; the server punches back."""
    size = 8 * 1024 * 1024
    data = pattern(size)

    async def body() -> None:
        async with relay_and_pair() as (relay, server, client):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as black_hole:
                black_hole.bind(("127.0.0.1", 0))
                dead = black_hole.getsockname()
                serving = asyncio.ensure_future(serve_one_download(server, data))
                connection = await client.connect(
                    server.node_id, [dead], timeout_s=10, relay_url=RelayUrl.parse(relay.url)
                )
                await wait_for_kind(connection, PathKind.DIRECT)
                assert connection.path_description != f"direct 127.0.0.1:{dead[1]}"
                assert await download(connection, size) == hashlib.sha256(data).digest()
                await connection.close()
                await serving

    run_bounded(body, TEST_TIMEOUT_S)


def test_peer_that_refuses_direct_keeps_the_transfer_on_the_relay() -> None:
    size = 8 * 1024 * 1024
    data = pattern(size)

    async def body() -> None:
        async with relay_and_pair(server_policy=PathPolicy.RELAY_ONLY) as (relay, server, client):
            serving = asyncio.ensure_future(serve_one_download(server, data))
            # The server's socket drops every direct datagram, as a firewall would.
            blocked = [("127.0.0.1", server.local_port)]
            connection = await dial(client, server, relay, blocked)
            log = PathLog(connection)
            assert await download(connection, size) == hashlib.sha256(data).digest()
            assert log.kinds == ["relay"]
            assert connection.bytes_by_path["direct"] == 0
            assert connection.path_kind is PathKind.RELAY
            await connection.close()
            await serving

    run_bounded(body, TEST_TIMEOUT_S)


def test_peer_missing_from_the_relay_is_reached_directly() -> None:
    """The ticket's relay does not lead to the peer: direct discovery starts anyway."""

    async def body() -> None:
        async with (
            running_relay() as relay,
            endpoint_pair(None, on_relay(relay)) as (server, client),  # server not on it
        ):
            data = pattern(1024 * 1024)
            serving = asyncio.ensure_future(serve_one_download(server, data))
            started = asyncio.get_running_loop().time()
            connection = await dial(client, server, relay)
            assert asyncio.get_running_loop().time() - started < 3.0
            assert connection.path_kind is PathKind.DIRECT
            assert await download(connection, len(data)) == hashlib.sha256(data).digest()
            await connection.close()
            await serving

    run_bounded(body, TEST_TIMEOUT_S)


def test_relay_killed_after_direct_transfer_completes() -> None:
    size = 48 * 1024 * 1024
    data = pattern(size)

    async def body() -> None:
        async with relay_and_pair() as (relay, server, client):
            serving = asyncio.ensure_future(serve_one_download(server, data))
            connection = await dial(client, server, relay)
            await wait_for_kind(connection, PathKind.DIRECT)

            async def kill_relay() -> None:
                await relay.close()
                assert not client.is_relay_connected

            digest = await download(connection, size, at_fraction=0.3, action=kill_relay)
            assert digest == hashlib.sha256(data).digest()
            assert connection.path_kind is PathKind.DIRECT
            await connection.close()
            await serving

    run_bounded(body, TEST_TIMEOUT_S)


def test_relay_down_at_bind_is_not_fatal_and_direct_still_works() -> None:
    dead_url = f"http://127.0.0.1:{free_port()}"

    async def body() -> None:
        dead = EndpointConfig(relay_url=RelayUrl.parse(dead_url), relay_timeout_s=0.3)
        async with endpoint_pair(dead, dead) as (server, client):
            assert str(server.relay_url) == dead_url and not server.is_relay_connected
            data = pattern(1024 * 1024)
            serving = asyncio.ensure_future(serve_one_download(server, data))
            connection = await client.connect(
                server.node_id, server.direct_addresses(), timeout_s=10, relay_url=dead.relay_url
            )
            assert connection.path_kind is PathKind.DIRECT
            assert await download(connection, len(data)) == hashlib.sha256(data).digest()
            await connection.close()
            await serving

    run_bounded(body, TEST_TIMEOUT_S)


def test_stun_address_appears_in_direct_addresses() -> None:
    async def body() -> None:
        async with running_relay() as relay:
            endpoint = await Endpoint.bind(
                SERVER_KEY, EndpointConfig(relay_url=RelayUrl.parse(relay.url))
            )
            try:
                assert str(endpoint.relay_url) == relay.url
                assert endpoint.is_relay_connected
                observed = ("127.0.0.1", endpoint.local_port)
                assert endpoint.observed_address == observed
                assert observed in endpoint.direct_addresses()
            finally:
                await endpoint.close()
            assert not endpoint.is_relay_connected

    run_bounded(body, TEST_TIMEOUT_S)


def test_direct_only_ignores_the_relay() -> None:
    async def body() -> None:
        async with running_relay() as relay:
            endpoint = await Endpoint.bind(
                SERVER_KEY,
                EndpointConfig(
                    relay_url=RelayUrl.parse(relay.url), path_policy=PathPolicy.DIRECT_ONLY
                ),
            )
            try:
                assert endpoint.relay_url is None
                assert not endpoint.is_relay_connected
                assert relay.client_count == 0
            finally:
                await endpoint.close()

    run_bounded(body, TEST_TIMEOUT_S)


# -- the direct path breaks mid-transfer (private network namespace) -----------

BREAK_SIZE = 48 * 1024 * 1024


async def _break_mid_transfer() -> None:
    """Runs inside the namespace: relay to direct, then drop all direct UDP."""
    data = pattern(BREAK_SIZE)
    async with relay_and_pair() as (relay, server, client):
        serving = asyncio.ensure_future(serve_one_download(server, data))
        connection = await dial(client, server, relay)
        log = PathLog(connection)
        await wait_for_kind(connection, PathKind.DIRECT)
        ports = f"{server.local_port}, {client.local_port}"
        loop = asyncio.get_running_loop()
        timings: dict[str, float] = {}

        async def block_udp() -> None:
            rules = (
                "add table inet lab\n"
                "add chain inet lab out { type filter hook output priority 0; }\n"
                f"add rule inet lab out udp dport {{ {ports} }} drop\n"
            )
            subprocess.run(["nft", "-f", "-"], input=rules.encode(), check=True)
            timings["blocked"] = loop.time()

        digest = await download(connection, BREAK_SIZE, at_fraction=0.25, action=block_udp)
        assert digest == hashlib.sha256(data).digest()
        assert connection.path_kind is PathKind.RELAY
        assert log.kinds[-2:] == ["direct", "relay"]
        await connection.close()
        served, _ = await serving
        assert served.path_kind is PathKind.RELAY
        print(f"fallback: blocked -> done in {loop.time() - timings['blocked']:.2f} s")


def _child_main() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    asyncio.run(asyncio.wait_for(_break_mid_transfer(), TEST_TIMEOUT_S))


def test_direct_path_broken_mid_transfer_falls_back_to_relay() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for a private network namespace")
    for tool in ("unshare", "nft", "ip"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    code = (
        "import runpy, sys; sys.path.insert(0, sys.argv[2]); "
        "runpy.run_path(sys.argv[1])['_child_main']()"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", code, __file__, str(root)],
        check=False,
        capture_output=True,
        text=True,
        timeout=TEST_TIMEOUT_S + 10,
        cwd=root,
    )
    if result.returncode != 0 and "unshare failed" in result.stderr:
        pytest.skip(f"cannot make a network namespace: {result.stderr.strip()}")
    assert result.returncode == 0, result.stdout + result.stderr
