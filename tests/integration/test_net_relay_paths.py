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

from p2pcp.core.identity import SecretKey
from p2pcp.net.quic.endpoint import Connection, Endpoint
from p2pcp.relay.server import RelayServer
from tests.support.aio import run_bounded

TEST_TIMEOUT_S = 60.0
SERVER_KEY = SecretKey(bytes(range(32)))
CLIENT_KEY = SecretKey(bytes(range(1, 33)))
CHUNK_BYTES = 1 << 20


def run(body: Callable[[], Awaitable[None]]) -> None:
    run_bounded(body, TEST_TIMEOUT_S)


@asynccontextmanager
async def relay_server() -> AsyncIterator[RelayServer]:
    relay = RelayServer("127.0.0.1", 0)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.close()


@asynccontextmanager
async def endpoints(
    relay_url: str | None,
    *,
    server_policy: str = "auto",
    client_policy: str = "auto",
) -> AsyncIterator[tuple[Endpoint, Endpoint]]:
    server = await Endpoint.bind(SERVER_KEY, relay_url=relay_url, path_policy=server_policy)
    client = await Endpoint.bind(CLIENT_KEY, relay_url=relay_url, path_policy=client_policy)
    try:
        yield server, client
    finally:
        await client.close()
        await server.close()


def pattern(size: int) -> bytes:
    block = hashlib.sha256(b"p2pcp relay test").digest() * (CHUNK_BYTES // 32)
    return (block * (size // len(block) + 1))[:size]


class PathLog:
    """A connection's path when this was made, then what its listener reported."""

    def __init__(self, connection: Connection) -> None:
        self.kinds: list[str] = [connection.path_kind]
        self.descriptions: list[str] = [connection.path_description]
        connection.set_path_listener(self._record)

    def _record(self, kind: str, description: str) -> None:
        self.kinds.append(kind)
        self.descriptions.append(description)


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


async def wait_for_kind(connection: Connection, kind: str, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while connection.path_kind != kind:
        assert asyncio.get_running_loop().time() < deadline, connection.path_description
        await asyncio.sleep(0.01)


def test_relay_only_transfer_is_byte_exact() -> None:
    size = 32 * 1024 * 1024
    data = pattern(size)

    async def body() -> None:
        async with (
            relay_server() as relay,
            endpoints(relay.url, client_policy="relay-only") as (
                server,
                client,
            ),
        ):
            assert client.direct_addresses() == []
            serving = asyncio.ensure_future(serve_one_download(server, data))
            connection = await client.connect(
                server.node_id, server.direct_addresses(), timeout_s=10, relay_url=relay.url
            )
            log = PathLog(connection)
            digest = await download(connection, size)
            assert digest == hashlib.sha256(data).digest()
            assert connection.path_kind == "relay"
            assert connection.path_description == f"relay {relay.url}"
            assert log.kinds == ["relay"]
            assert connection.max_datagram_size == 16000  # the relay carries any size
            counts = connection.bytes_by_path
            assert counts["direct"] == 0
            assert counts["relay"] >= size
            await connection.close()
            served, server_log = await serving
            assert served.path_kind == "relay"
            assert served.bytes_by_path["direct"] == 0
            assert server_log.kinds == ["relay"]

    run(body)


def test_auto_starts_on_relay_and_becomes_direct() -> None:
    size = 64 * 1024 * 1024
    data = pattern(size)

    async def body() -> None:
        async with relay_server() as relay, endpoints(relay.url) as (server, client):
            serving = asyncio.ensure_future(serve_one_download(server, data))
            connection = await client.connect(
                server.node_id, server.direct_addresses(), timeout_s=10, relay_url=relay.url
            )
            log = PathLog(connection)
            digest = await download(connection, size)
            assert digest == hashlib.sha256(data).digest()
            assert connection.path_kind == "direct"
            assert log.kinds == ["relay", "direct"]
            assert log.descriptions[0] == f"relay {relay.url}"
            assert log.descriptions[-1].startswith("direct ")
            counts = connection.bytes_by_path
            assert counts["direct"] > counts["relay"]
            assert counts["direct"] > size // 2
            await connection.close()
            served, server_log = await serving
            assert served.path_kind == "direct"
            assert server_log.kinds[-1] == "direct"  # it may have moved before accept()
            assert served.bytes_by_path["direct"] > served.bytes_by_path["relay"]
            # The direct path was probed up from 1200 after the move.
            assert connection.max_datagram_size > 1200

    run(body)


def test_dead_ticket_address_still_goes_direct_by_call_me_maybe() -> None:
    """The ticket's only address drops everything; the server punches back."""
    size = 8 * 1024 * 1024
    data = pattern(size)

    async def body() -> None:
        async with relay_server() as relay, endpoints(relay.url) as (server, client):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as black_hole:
                black_hole.bind(("127.0.0.1", 0))
                dead = black_hole.getsockname()
                serving = asyncio.ensure_future(serve_one_download(server, data))
                connection = await client.connect(
                    server.node_id, [dead], timeout_s=10, relay_url=relay.url
                )
                await wait_for_kind(connection, "direct")
                assert connection.path_description != f"direct 127.0.0.1:{dead[1]}"
                assert await download(connection, size) == hashlib.sha256(data).digest()
                await connection.close()
                await serving

    run(body)


def test_peer_that_refuses_direct_keeps_the_transfer_on_the_relay() -> None:
    size = 8 * 1024 * 1024
    data = pattern(size)

    async def body() -> None:
        async with (
            relay_server() as relay,
            endpoints(relay.url, server_policy="relay-only") as (
                server,
                client,
            ),
        ):
            serving = asyncio.ensure_future(serve_one_download(server, data))
            # The server's socket drops every direct datagram, as a firewall would.
            blocked = [("127.0.0.1", server.local_port)]
            connection = await client.connect(
                server.node_id, blocked, timeout_s=10, relay_url=relay.url
            )
            log = PathLog(connection)
            assert await download(connection, size) == hashlib.sha256(data).digest()
            assert log.kinds == ["relay"]
            assert connection.bytes_by_path["direct"] == 0
            assert connection.path_kind == "relay"
            await connection.close()
            await serving

    run(body)


def test_peer_missing_from_the_relay_is_reached_directly() -> None:
    """The ticket's relay does not lead to the peer: direct discovery starts anyway."""

    async def body() -> None:
        async with relay_server() as relay:
            server = await Endpoint.bind(SERVER_KEY)  # not on the relay
            client = await Endpoint.bind(CLIENT_KEY, relay_url=relay.url)
            try:
                data = pattern(1024 * 1024)
                serving = asyncio.ensure_future(serve_one_download(server, data))
                started = asyncio.get_running_loop().time()
                connection = await client.connect(
                    server.node_id, server.direct_addresses(), timeout_s=10, relay_url=relay.url
                )
                assert asyncio.get_running_loop().time() - started < 3.0
                assert connection.path_kind == "direct"
                assert await download(connection, len(data)) == hashlib.sha256(data).digest()
                await connection.close()
                await serving
            finally:
                await client.close()
                await server.close()

    run(body)


def test_relay_killed_after_direct_transfer_completes() -> None:
    size = 48 * 1024 * 1024
    data = pattern(size)

    async def body() -> None:
        async with relay_server() as relay, endpoints(relay.url) as (server, client):
            serving = asyncio.ensure_future(serve_one_download(server, data))
            connection = await client.connect(
                server.node_id, server.direct_addresses(), timeout_s=10, relay_url=relay.url
            )
            await wait_for_kind(connection, "direct")

            async def kill_relay() -> None:
                await relay.close()
                assert not client.is_relay_connected

            digest = await download(connection, size, at_fraction=0.3, action=kill_relay)
            assert digest == hashlib.sha256(data).digest()
            assert connection.path_kind == "direct"
            await connection.close()
            await serving

    run(body)


def test_relay_down_at_bind_is_not_fatal_and_direct_still_works() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def body() -> None:
        server = await Endpoint.bind(SERVER_KEY, relay_url=dead_url, relay_timeout_s=0.3)
        client = await Endpoint.bind(CLIENT_KEY, relay_url=dead_url, relay_timeout_s=0.3)
        try:
            assert server.relay_url == dead_url and not server.is_relay_connected
            data = pattern(1024 * 1024)
            serving = asyncio.ensure_future(serve_one_download(server, data))
            connection = await client.connect(
                server.node_id, server.direct_addresses(), timeout_s=10, relay_url=dead_url
            )
            assert connection.path_kind == "direct"
            assert await download(connection, len(data)) == hashlib.sha256(data).digest()
            await connection.close()
            await serving
        finally:
            await client.close()
            await server.close()

    run(body)


def test_stun_address_appears_in_direct_addresses() -> None:
    async def body() -> None:
        async with relay_server() as relay:
            endpoint = await Endpoint.bind(SERVER_KEY, relay_url=relay.url)
            try:
                assert endpoint.relay_url == relay.url
                assert endpoint.is_relay_connected
                observed = ("127.0.0.1", endpoint.local_port)
                assert endpoint.observed_address == observed
                assert observed in endpoint.direct_addresses()
            finally:
                await endpoint.close()
            assert not endpoint.is_relay_connected

    run(body)


def test_direct_only_ignores_the_relay() -> None:
    async def body() -> None:
        async with relay_server() as relay:
            endpoint = await Endpoint.bind(
                SERVER_KEY, relay_url=relay.url, path_policy="direct-only"
            )
            try:
                assert endpoint.relay_url is None
                assert not endpoint.is_relay_connected
                assert relay.client_count == 0
            finally:
                await endpoint.close()

    run(body)


# -- the direct path breaks mid-transfer (private network namespace) -----------

BREAK_SIZE = 48 * 1024 * 1024


async def _break_mid_transfer() -> None:
    """Runs inside the namespace: relay to direct, then drop all direct UDP."""
    data = pattern(BREAK_SIZE)
    async with relay_server() as relay, endpoints(relay.url) as (server, client):
        serving = asyncio.ensure_future(serve_one_download(server, data))
        connection = await client.connect(
            server.node_id, server.direct_addresses(), timeout_s=10, relay_url=relay.url
        )
        log = PathLog(connection)
        await wait_for_kind(connection, "direct")
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
        assert connection.path_kind == "relay"
        assert log.kinds[-2:] == ["direct", "relay"]
        await connection.close()
        served, _ = await serving
        assert served.path_kind == "relay"
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
