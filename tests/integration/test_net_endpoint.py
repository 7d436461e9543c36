"""Two Endpoints in one event loop on loopback: handshake, pinning, streams, probing."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import socket
import time
from typing import Any

import pytest
from aioquic.quic.connection import QuicConnection

from p2pcp.core.errors import (
    ConnectError,
    ConnectionLostError,
    PeerIdentityError,
    StreamResetError,
)
from p2pcp.net import EndpointConfig
from p2pcp.net._aioquic import tuning
from p2pcp.net.quic import configuration
from p2pcp.net.quic.endpoint import Endpoint
from p2pcp.net.udp.sockets import UdpSocket
from tests.support.aio import run_bounded
from tests.support.pairs import OTHER_KEY, SERVER_KEY, address_of, connected, endpoint_pair

# Every test body is bounded by this (on top of pytest-timeout).
TEST_TIMEOUT_S = 60.0


def closed_udp_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_direct_addresses_include_loopback_with_our_port() -> None:
    async def body() -> None:
        async with endpoint_pair() as (server, _client):
            addresses = server.direct_addresses()
            assert ("127.0.0.1", server.local_port) in addresses or (
                "::1",
                server.local_port,
            ) in addresses
            assert all(port == server.local_port for _host, port in addresses)
            hosts = [host for host, _port in addresses]
            loop_hosts = [h for h in hosts if h in ("127.0.0.1", "::1")]
            assert hosts[-len(loop_hosts) :] == loop_hosts  # loopback last

    run_bounded(body, TEST_TIMEOUT_S)


def test_connect_and_accept() -> None:
    async def body() -> None:
        async with endpoint_pair() as (server, client):
            connection, incoming = await connected(server, client)
            assert connection.peer_address == address_of(server)
            assert connection.path_description == f"direct 127.0.0.1:{server.local_port}"
            assert not connection.is_closed
            stream = await connection.open_stream()
            await stream.write(b"ping")
            await stream.finish()
            peer_stream = await incoming.accept_stream()
            assert await peer_stream.read_exactly(4) == b"ping"
            assert await peer_stream.read() == b""
            await peer_stream.write(b"pong")
            await peer_stream.finish()
            assert await stream.read_exactly(4) == b"pong"
            await connection.close()
            assert connection.is_closed
            await asyncio.wait_for(incoming.wait_closed(), 5)  # clean: no error

    run_bounded(body, TEST_TIMEOUT_S)


def test_each_side_knows_the_peer_node_id() -> None:
    """Interface point 4: the client knows the node it dialled (pinned by the
    server's certificate); the server learns the client's key from its
    client certificate (mutual TLS), proven by its CertificateVerify."""

    async def body() -> None:
        async with endpoint_pair() as (server, client):
            connection, incoming = await connected(server, client)
            assert connection.peer_node_id == server.node_id
            assert incoming.peer_node_id == client.node_id
            await connection.close()

    run_bounded(body, TEST_TIMEOUT_S)


def test_ipv6_address_of() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")

    async def body() -> None:
        async with endpoint_pair() as (server, client):
            if ("::1", server.local_port) not in server.direct_addresses():
                pytest.skip("no ::1 on this machine")
            connection = await client.connect(
                server.node_id, [("::1", server.local_port)], timeout_s=5
            )
            assert connection.peer_address == ("::1", server.local_port)
            await connection.close()

    run_bounded(body, TEST_TIMEOUT_S)


def test_wrong_node_id_is_refused() -> None:
    async def body() -> None:
        async with endpoint_pair() as (server, client):
            with pytest.raises(PeerIdentityError) as info:
                await client.connect(OTHER_KEY.public, [address_of(server)], timeout_s=5)
            assert info.value.exit_code == 4
            assert OTHER_KEY.public.short() in str(info.value)

    run_bounded(body, TEST_TIMEOUT_S)


def test_refused_address_fails_at_once_with_connect_error() -> None:
    """A closed port answers with ICMP port unreachable: connect says so at
    once (the error queue, net/udp/sockets.py) instead of waiting out its timeout."""

    async def body() -> None:
        async with endpoint_pair() as (_server, client):
            port = closed_udp_port()
            started = time.monotonic()
            with pytest.raises(ConnectError) as info:
                await client.connect(SERVER_KEY.public, [("127.0.0.1", port)], timeout_s=5.0)
            elapsed = time.monotonic() - started
            assert elapsed < 2.0
            message = str(info.value)
            assert "refused" in message
            assert "\n" not in message
            assert SERVER_KEY.public.short() in message
            assert f"127.0.0.1:{port}" in message
            assert info.value.exit_code == 3
            assert type(info.value) is ConnectError

    run_bounded(body, TEST_TIMEOUT_S)


def test_unreachable_address_times_out_with_connect_error() -> None:
    async def body() -> None:
        async with endpoint_pair() as (_server, client):
            # Bound and never read: datagrams vanish, nothing is refused.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:
                hole.bind(("127.0.0.1", 0))
                port = int(hole.getsockname()[1])
                started = time.monotonic()
                with pytest.raises(ConnectError) as info:
                    await client.connect(SERVER_KEY.public, [("127.0.0.1", port)], timeout_s=1.0)
                elapsed = time.monotonic() - started
            assert 0.9 <= elapsed < 3.0
            message = str(info.value)
            assert "\n" not in message
            assert SERVER_KEY.public.short() in message
            assert f"127.0.0.1:{port}" in message
            assert info.value.exit_code == 3
            assert type(info.value) is ConnectError

    run_bounded(body, TEST_TIMEOUT_S)


def test_dead_address_among_candidates_still_connects() -> None:
    async def body() -> None:
        async with endpoint_pair() as (server, client):
            dead = ("127.0.0.1", closed_udp_port())
            connection = await client.connect(
                server.node_id, [dead, address_of(server)], timeout_s=5
            )
            assert connection.peer_address == address_of(server)
            stream = await connection.open_stream()
            await stream.write(b"x")
            await stream.finish()
            await connection.close()

    run_bounded(body, TEST_TIMEOUT_S)


def _pattern(seed: int, size: int) -> bytes:
    return hashlib.shake_256(seed.to_bytes(4, "big")).digest(size)


def test_parallel_bidirectional_streams_are_byte_exact() -> None:
    size = 8 * 1024 * 1024
    count = 4

    async def body() -> None:
        async with endpoint_pair() as (server, client):

            async def echo_server() -> None:
                incoming = await server.accept()

                async def serve(stream_task: asyncio.Future[None] | None = None) -> None:
                    stream = await incoming.accept_stream()
                    index = int.from_bytes(await stream.read_exactly(4), "big")
                    digest = hashlib.sha256()
                    got = 0
                    while True:
                        data = await stream.read()
                        if not data:
                            break
                        digest.update(data)
                        got += len(data)
                    # answer with the digest of what came, then our own data
                    await stream.write(digest.digest())
                    reply = _pattern(1000 + index, size)
                    for start in range(0, size, 1 << 20):
                        await stream.write(reply[start : start + (1 << 20)])
                    await stream.finish()

                await asyncio.gather(*(serve() for _ in range(count)))

            server_task = asyncio.ensure_future(echo_server())
            connection = await client.connect(server.node_id, [address_of(server)], timeout_s=5)

            async def one(index: int) -> None:
                stream = await connection.open_stream()
                data = _pattern(index, size)

                async def send() -> None:
                    await stream.write(index.to_bytes(4, "big"))
                    view = memoryview(data)
                    for start in range(0, size, 300_000):
                        await stream.write(view[start : start + 300_000])
                    await stream.finish()

                sender = asyncio.ensure_future(send())
                digest = await stream.read_exactly(32)
                received = bytearray()
                while True:
                    if index % 2:  # read() on half the streams, read_chunks() on the rest
                        chunks = await stream.read_chunks()
                        assert all(chunks)
                        chunk = b"".join(chunks)
                    else:
                        chunk = await stream.read()
                    if not chunk:
                        break
                    received += chunk
                await sender
                assert digest == hashlib.sha256(data).digest()
                assert bytes(received) == _pattern(1000 + index, size)

            await asyncio.gather(*(one(i) for i in range(count)))
            await server_task
            await connection.close()

    run_bounded(body, TEST_TIMEOUT_S)


def test_stream_reset_reaches_the_peer() -> None:
    async def body() -> None:
        async with endpoint_pair() as (server, client):
            connection, incoming = await connected(server, client)

            stream = await connection.open_stream()
            await stream.write(b"request")
            peer_stream = await incoming.accept_stream()
            assert await peer_stream.read_exactly(7) == b"request"
            peer_stream.reset(0x10)
            with pytest.raises(StreamResetError) as info:
                while True:
                    await stream.read()
            assert info.value.code == 0x10
            # the peer also asked us to stop sending: writes fail with its code
            with pytest.raises(StreamResetError):
                for _ in range(100):
                    await stream.write(b"more")
                    await asyncio.sleep(0.01)
            # other streams are unaffected
            second = await connection.open_stream()
            await second.write(b"again")
            await second.finish()
            peer_second = await incoming.accept_stream()
            assert await peer_second.read_exactly(5) == b"again"
            await connection.close()

    run_bounded(body, TEST_TIMEOUT_S)


def test_peer_close_fails_pending_reads() -> None:
    async def body() -> None:
        async with endpoint_pair() as (server, client):
            connection, incoming = await connected(server, client)
            stream = await connection.open_stream()
            await stream.write(b"hello")
            peer_stream = await incoming.accept_stream()
            await peer_stream.read_exactly(5)
            await incoming.close("done")
            with pytest.raises(ConnectionLostError):
                await stream.read()
            await asyncio.wait_for(connection.wait_closed(), 5)

    run_bounded(body, TEST_TIMEOUT_S)


def test_endpoint_close_is_a_lost_connection_for_the_peer() -> None:
    async def body() -> None:
        async with endpoint_pair() as (server, client):
            connection, _incoming = await connected(server, client)
            await server.close()
            with pytest.raises(ConnectionLostError):
                await asyncio.wait_for(connection.wait_closed(), 5)

    run_bounded(body, TEST_TIMEOUT_S)


@pytest.mark.parametrize("cap", [None, 1452, 4000])
def test_datagram_size_is_probed_up_to_the_cap(cap: int | None) -> None:
    async def body() -> None:
        config = EndpointConfig(max_datagram_size=cap)
        async with endpoint_pair(config, config) as (server, client):
            connection, incoming = await connected(server, client)
            expected = 16000 if cap is None else cap
            for _ in range(200):
                if connection.max_datagram_size == incoming.max_datagram_size == expected:
                    break
                await asyncio.sleep(0.01)
            assert connection.max_datagram_size == expected
            assert incoming.max_datagram_size == expected
            # and data still flows at that size
            stream = await connection.open_stream()
            payload = os.urandom(1 << 20)
            await stream.write(payload)
            await stream.finish()
            peer_stream = await incoming.accept_stream()
            assert await peer_stream.read_exactly(len(payload)) == payload
            await connection.close()

    run_bounded(body, TEST_TIMEOUT_S)


def test_all_direct_addresses_at_once() -> None:
    """What a receiver does with a ticket: every address of the sender at once."""

    async def body() -> None:
        async with endpoint_pair() as (server, client):
            addresses = server.direct_addresses()
            connection, incoming = await connected(server, client, addresses)
            assert connection.peer_address in addresses
            stream = await connection.open_stream()
            payload = os.urandom(4 << 20)
            await stream.write(payload)
            await stream.finish()
            peer_stream = await incoming.accept_stream()
            assert await peer_stream.read_exactly(len(payload)) == payload
            assert await peer_stream.read() == b""
            await connection.close()

    run_bounded(body, TEST_TIMEOUT_S)


def test_many_sequential_streams() -> None:
    """One stream per request, many requests: finished streams are released."""

    async def body() -> None:
        async with endpoint_pair() as (server, client):

            async def serve() -> None:
                incoming = await server.accept()
                while True:
                    try:
                        stream = await incoming.accept_stream()
                    except ConnectionLostError:
                        return
                    request = await stream.read_exactly(4)
                    await stream.write(request * 2)
                    await stream.finish()

            server_task = asyncio.ensure_future(serve())
            connection = await client.connect(server.node_id, [address_of(server)], timeout_s=5)
            for index in range(300):
                stream = await connection.open_stream()
                await stream.write(index.to_bytes(4, "big"))
                await stream.finish()
                assert await stream.read_exactly(8) == index.to_bytes(4, "big") * 2
                assert await stream.read() == b""
            await connection.close()
            await asyncio.wait_for(server_task, 5)

    run_bounded(body, TEST_TIMEOUT_S)


class _PushBackSocket(socket.socket):
    """A real UDP socket whose next few sends fail as a full kernel buffer would."""

    pushbacks: list[OSError]

    def sendto(self, *args: Any) -> int:  # type: ignore[override]
        if self.pushbacks:
            raise self.pushbacks.pop(0)
        return super().sendto(*args)

    def sendmsg(self, *args: Any) -> int:  # type: ignore[override]
        if self.pushbacks:
            raise self.pushbacks.pop(0)
        return super().sendmsg(*args)


@pytest.mark.parametrize("errno_value", [errno.EAGAIN, errno.ENOBUFS])
def test_udp_send_survives_kernel_pushback_in_order(errno_value: int) -> None:
    async def body() -> None:
        received: list[bytes] = []
        got_all = asyncio.Event()
        datagrams = [bytes([i]) * 1200 for i in range(20)] + [b"tail"]

        def on_receive(batch: list[tuple[bytes, tuple[str, int]]]) -> None:
            received.extend(data for data, _address in batch)
            if len(received) >= len(datagrams):
                got_all.set()

        receiver = UdpSocket.bind(0, on_receive, lambda _d, _a: None)
        raw = _PushBackSocket(socket.AF_INET, socket.SOCK_DGRAM)
        raw.bind(("127.0.0.1", 0))
        raw.setblocking(False)
        raw.pushbacks = [OSError(errno_value, os.strerror(errno_value))]
        sender = UdpSocket(raw, lambda _batch: None, lambda _d, _a: None)
        try:
            sender.send(datagrams[:10], ("127.0.0.1", receiver.local_port))
            sender.send(datagrams[10:], ("127.0.0.1", receiver.local_port))
            await asyncio.wait_for(got_all.wait(), 5)
            assert received == datagrams
        finally:
            sender.close()
            receiver.close()

    run_bounded(body, TEST_TIMEOUT_S)


def test_connection_ids_by_role_routed_in_an_endpoint_of_both_roles() -> None:
    """Every data packet to a receiver (the client) carries the client's id:
    an endpoint's sole client connection has none, another beside it 4-byte
    ids, a server 8-byte ids; a client's first Destination id is 8 bytes (RFC
    9000 7.2). One endpoint accepting and connecting twice at once routes all
    three kinds."""
    size = 300_000

    async def echo(connection: Any) -> None:
        stream = await connection.accept_stream()
        await stream.write(await stream.read_exactly(size))
        await stream.finish()

    async def exchange(connection: Any, payload: bytes) -> bytes:
        stream = await connection.open_stream()
        await stream.write(payload)
        await stream.finish()
        return await stream.read_exactly(size)

    async def body() -> None:
        async with endpoint_pair() as (server, middle):
            third = await Endpoint.bind(OTHER_KEY)
            try:
                # middle serves `third` and is twice a client of `server`
                accepted_by_server = asyncio.ensure_future(server.accept())
                accepted_by_middle = asyncio.ensure_future(middle.accept())
                sole = await middle.connect(server.node_id, [address_of(server)], timeout_s=5)
                at_server = [await asyncio.wait_for(accepted_by_server, 5)]
                accepted_by_server = asyncio.ensure_future(server.accept())
                beside = await middle.connect(server.node_id, [address_of(server)], timeout_s=5)
                at_server.append(await asyncio.wait_for(accepted_by_server, 5))
                incoming = await third.connect(middle.node_id, [address_of(middle)], timeout_s=5)
                at_middle = await asyncio.wait_for(accepted_by_middle, 5)
                echoes = [asyncio.ensure_future(echo(c)) for c in [*at_server, at_middle]]
                clients = (sole, beside, incoming)
                payloads = [os.urandom(size) for _ in clients]
                echoed = await asyncio.gather(*map(exchange, clients, payloads))
                assert echoed == payloads
                await asyncio.gather(*echoes)
                assert sole.cids == {b""} and incoming.cids == {b""}
                assert beside.cids and {len(cid) for cid in beside.cids} == {4}
                for server_side in [*at_server, at_middle]:
                    first_destination = server_side._quic.original_destination_connection_id
                    assert len(first_destination) == 8
                    issued = server_side.cids - {first_destination}
                    assert issued and {len(cid) for cid in issued} == {8}
            finally:
                await third.close()

    run_bounded(body, TEST_TIMEOUT_S)


def test_initial_with_a_short_first_destination_id_is_not_accepted() -> None:
    """RFC 9000 7.2: a client's first Destination id has at least 8 bytes; an
    Initial with fewer gets no server connection (an empty one would also
    shadow the zero-length ids of the endpoint's own client connection)."""

    def first_initial(dcid: bytes) -> bytes:
        quic = QuicConnection(configuration=configuration.client_configuration(bytes(range(3, 35))))
        tuning.set_initial_destination_cid(quic, dcid)
        quic.connect(("127.0.0.1", 1), now=0.0)
        return quic.datagrams_to_send(now=0.0)[0][0]

    async def body() -> None:
        async with endpoint_pair() as (server, _client):
            sender = ("127.0.0.1", 40000)
            for short in (b"", b"\x01" * 4, b"\x02" * 7):
                assert server._maybe_accept(first_initial(short), sender, None) is None
            initial = first_initial(b"\x03" * 8)
            accepted = server._maybe_accept(initial, sender, None)
            assert accepted is not None
            accepted.receive_datagram(initial, sender, asyncio.get_running_loop().time())

    run_bounded(body, TEST_TIMEOUT_S)
