"""The relay in process on 127.0.0.1:0 with RelayClients: routing, login, limits, STUN, HTTP."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
from pathlib import Path

import pytest

from p2pcp.core.errors import ConnectError, UsageError
from p2pcp.relay import frames, stun
from p2pcp.relay.client import RelayClient
from p2pcp.relay.limits import RelayLimits
from p2pcp.relay.listen import server_ssl_context
from p2pcp.relay.server import RelayServer
from tests.support.aio import run_bounded, wait_until
from tests.support.ports import free_port
from tests.support.relay import (
    KEY_A,
    KEY_B,
    KEY_C,
    Inbox,
    http_get,
    logged_in_pair,
    raw_login,
    relay_client,
    running_relay,
)

TEST_TIMEOUT_S = 30.0


def test_two_clients_exchange_packets_by_node_id() -> None:
    async def body() -> None:
        async with (
            running_relay() as server,
            logged_in_pair(server) as (a, b, inbox_a, inbox_b),
        ):
            assert inbox_a.states == [True] and a.is_connected
            big = bytes(range(256)) * 256  # 65,536 bytes: one over the limit
            datagrams = [b"one", b"two", big[:65535], *(bytes([n]) * 1200 for n in range(100))]
            assert a.send(KEY_B.public, datagrams)
            assert b.send(KEY_A.public, [b"back"])
            await inbox_b.until(lambda: len(inbox_b.datagrams) == len(datagrams))
            await inbox_a.until(lambda: inbox_a.datagrams == [b"back"])
            assert inbox_b.datagrams == datagrams
            assert {source for source, _ in inbox_b.batches} == {KEY_A.public}
            assert len(inbox_b.batches) >= 2  # over a frame's limits: split
            assert a.bytes_sent == b.bytes_received == sum(map(len, datagrams))
            assert server.metrics.datagrams_relayed_total == len(datagrams) + 1
            assert server.metrics.logins_total == 2
        assert inbox_a.states == [True, False]

    run_bounded(body, TEST_TIMEOUT_S)


def test_peer_gone_for_unknown_and_departed_destinations() -> None:
    async def body() -> None:
        async with (
            running_relay() as server,
            logged_in_pair(server) as (a, b, inbox_a, inbox_b),
        ):
            assert a.send(KEY_C.public, [b"anyone?"])
            await inbox_a.until(lambda: inbox_a.gone == [KEY_C.public])
            assert server.metrics.drops_total["no_destination"] == 1
            assert a.send(KEY_B.public, [b"hello"])
            await inbox_b.until(lambda: len(inbox_b.datagrams) == 1)
            await b.close()
            await inbox_a.until(lambda: inbox_a.gone == [KEY_C.public, KEY_B.public])

    run_bounded(body, TEST_TIMEOUT_S)


def test_second_login_with_the_same_key_replaces_the_first() -> None:
    async def body() -> None:
        async with running_relay() as server:
            first, second, sender = Inbox(), Inbox(), Inbox()
            b1, b2 = relay_client(server.url, KEY_B, first), relay_client(server.url, KEY_B, second)
            a = relay_client(server.url, KEY_A, sender)
            try:
                assert await b1.start(timeout_s=5)
                assert await b2.start(timeout_s=5)
                await first.until(lambda: first.states == [True, False])
                assert isinstance(b1.last_error, ConnectError)
                assert "another connection" in str(b1.last_error)
                assert server.client_count == 1
                assert server.metrics.closes_total["replaced"] == 1
                assert await a.start(timeout_s=5)
                assert a.send(KEY_B.public, [b"for the newest"])
                await second.until(lambda: second.datagrams == [b"for the newest"])
                assert first.datagrams == []
            finally:
                for each in (a, b1, b2):
                    await each.close()

    run_bounded(body, TEST_TIMEOUT_S)


def test_stun_answers_with_the_observed_address() -> None:
    async def body() -> None:
        async with running_relay("127.0.0.1", 0) as server:
            ports = server.ports
            assert ports is not None
            assert ports.stun_port == ports.http_port
            loop = asyncio.get_running_loop()
            answers: asyncio.Queue[bytes] = asyncio.Queue()

            class Asker(asyncio.DatagramProtocol):
                def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
                    answers.put_nowait(data)

            transport, _ = await loop.create_datagram_endpoint(
                Asker, remote_addr=("127.0.0.1", ports.stun_port)
            )
            try:
                transport.sendto(b"not stun at all")
                transaction_id = stun.new_transaction_id()
                transport.sendto(stun.encode_binding_request(transaction_id))
                answer = stun.decode_binding_response(await answers.get())
                assert answer.transaction_id == transaction_id
                assert answer.address == transport.get_extra_info("sockname")[:2]
                assert server.metrics.stun_requests_total == 1
                assert server.metrics.stun_dropped_total["not_stun"] == 1
                named = RelayClient(server.url, KEY_A, on_packets=lambda s, d: None)
                assert named.stun_address == ("127.0.0.1", ports.stun_port)
            finally:
                transport.close()

    run_bounded(body, TEST_TIMEOUT_S)


@pytest.mark.skipif(not socket.has_dualstack_ipv6(), reason="no dual-stack IPv6 here")
def test_dual_stack_relay_serves_ipv4_and_ipv6() -> None:
    async def body() -> None:
        async with running_relay("::", 0) as server:
            ports = server.ports
            assert ports is not None
            inbox_a, inbox_b = Inbox(), Inbox()
            a = relay_client(f"http://127.0.0.1:{ports.http_port}", KEY_A, inbox_a)
            b = relay_client(f"http://[::1]:{ports.http_port}", KEY_B, inbox_b)
            try:
                assert await a.start(timeout_s=5) and await b.start(timeout_s=5)
                assert b.stun_address == ("::1", ports.http_port)
                assert a.send(KEY_B.public, [b"v4 to v6"])
                await inbox_b.until(lambda: inbox_b.datagrams == [b"v4 to v6"])
            finally:
                await a.close()
                await b.close()

    run_bounded(body, TEST_TIMEOUT_S)


def test_health_and_metrics() -> None:
    async def body() -> None:
        async with running_relay() as server:
            ports = server.ports
            assert ports is not None
            inbox_a, inbox_b = Inbox(), Inbox()
            a, b = (
                relay_client(server.url, KEY_A, inbox_a),
                relay_client(server.url, KEY_B, inbox_b),
            )
            try:
                status, text = await http_get(ports.http_port, "/health")
                assert status == 200 and '"status": "ok"' in text
                assert await a.start(timeout_s=5) and await b.start(timeout_s=5)
                assert a.send(KEY_B.public, [b"x" * 1000, b"y" * 500])
                await inbox_b.until(lambda: len(inbox_b.datagrams) == 2)
                status, text = await http_get(ports.http_port, "/metrics")
                assert status == 200
                lines = set(text.splitlines())
                assert "p2pcp_relay_clients 2" in lines
                assert "p2pcp_relay_logins_total 2" in lines
                assert "p2pcp_relay_datagrams_relayed_total 2" in lines
                assert "p2pcp_relay_bytes_relayed_total 1500" in lines
                assert 'p2pcp_relay_drops_total{reason="queue_full"} 0' in lines
                assert (await http_get(ports.http_port, "/nothing"))[0] == 404
                assert (await http_get(ports.http_port, "/relay"))[0] == 426
            finally:
                await a.close()
                await b.close()

    run_bounded(body, TEST_TIMEOUT_S)


def test_client_waits_for_an_unreachable_relay_and_reconnects_after_restarts() -> None:
    async def body() -> None:
        port = free_port()
        inbox = Inbox()
        waiting = relay_client(f"http://127.0.0.1:{port}", KEY_A, inbox)
        try:
            assert not await waiting.start(timeout_s=0.3)
            assert isinstance(waiting.last_error, ConnectError)
            assert "cannot reach the relay" in str(waiting.last_error)
            assert not waiting.send(KEY_B.public, [b"dropped"])
            for _ in range(2):
                server = RelayServer("127.0.0.1", port)
                await server.start()
                await inbox.until(lambda: waiting.is_connected)
                await server.close()
                await inbox.until(lambda: not waiting.is_connected)
            assert inbox.states == [True, False, True, False]
        finally:
            await waiting.close()

    run_bounded(body, TEST_TIMEOUT_S)


@pytest.mark.parametrize(
    "url", ["ftp://relay:1", "relay.example.net", "http://", "https://h:99999", "http://h/x"]
)
def test_bad_urls_are_usage_errors(url: str) -> None:
    with pytest.raises(UsageError):
        RelayClient(url, KEY_A, on_packets=lambda s, d: None)


def test_url_forms() -> None:
    relay_client = RelayClient("http://relay.example.net", KEY_A, on_packets=lambda s, d: None)
    assert relay_client.url == "http://relay.example.net:3340"
    assert relay_client.stun_address is None  # a name: known after connecting
    v6 = RelayClient("https://[2001:db8::1]:443", KEY_A, on_packets=lambda s, d: None)
    assert v6.stun_address == ("2001:db8::1", 443)


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_https_relay_with_a_trusted_and_an_untrusted_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = _self_signed(tmp_path)

    async def body() -> None:
        async with running_relay(ssl_context=server_ssl_context(cert, key)) as server:
            assert server.url.startswith("https://127.0.0.1:")
            inbox_a, inbox_b = Inbox(), Inbox()
            a, b = (
                relay_client(server.url, KEY_A, inbox_a),
                relay_client(server.url, KEY_B, inbox_b),
            )
            try:
                monkeypatch.delenv("SSL_CERT_FILE", raising=False)
                monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "none"))
                assert not await a.start(timeout_s=1)
                assert "certificate" in str(a.last_error)
                await a.close()
                monkeypatch.setenv("SSL_CERT_FILE", str(cert))
                a = relay_client(server.url, KEY_A, inbox_a)
                assert await a.start(timeout_s=5) and await b.start(timeout_s=5)
                assert a.send(KEY_B.public, [b"over TLS"])
                await inbox_b.until(lambda: inbox_b.datagrams == [b"over TLS"])
            finally:
                await a.close()
                await b.close()

    run_bounded(body, TEST_TIMEOUT_S)


def test_tls_files_that_do_not_load_are_usage_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.pem").write_text("not a certificate")
    with pytest.raises(UsageError, match="cannot load the TLS certificate"):
        server_ssl_context(tmp_path / "bad.pem", tmp_path / "bad.pem")


def test_full_relay_refuses_more_clients() -> None:
    async def body() -> None:
        async with running_relay(relay_limits=RelayLimits(max_clients=2)) as server:
            clients = [relay_client(server.url, key, Inbox()) for key in (KEY_A, KEY_B, KEY_C)]
            try:
                assert await clients[0].start(timeout_s=5)
                assert await clients[1].start(timeout_s=5)
                assert not await clients[2].start(timeout_s=1)
                assert "503" in str(clients[2].last_error)
                assert server.metrics.connections_rejected_total >= 1
                await clients[0].close()
                await wait_until(lambda: server.client_count == 1)
                await wait_until(lambda: clients[2].is_connected)  # it kept trying
            finally:
                for each in clients:
                    await each.close()

    run_bounded(body, TEST_TIMEOUT_S)


def test_idle_and_login_timeouts_close_connections() -> None:
    async def body() -> None:
        from websockets.asyncio.client import connect

        async with running_relay(
            relay_limits=RelayLimits(idle_timeout_s=0.3, login_timeout_s=0.3)
        ) as server:
            silent = await raw_login(server.url, KEY_A)
            error = frames.decode_frame(await silent.recv(decode=False))
            assert error == frames.Error(frames.ERROR_IDLE, "idle for too long")
            await silent.wait_closed()
            assert server.metrics.closes_total["idle"] == 1
            lazy = await connect(server.url.replace("http", "ws") + "/relay")
            assert isinstance(frames.decode_frame(await lazy.recv(decode=False)), frames.Challenge)
            error = frames.decode_frame(await lazy.recv(decode=False))
            assert isinstance(error, frames.Error) and error.code == frames.ERROR_LOGIN_TIMEOUT
            await lazy.wait_closed()
            assert server.metrics.login_failures_total["login_timeout"] == 1

    run_bounded(body, TEST_TIMEOUT_S)


def test_ping_is_answered_and_shutdown_is_announced() -> None:
    async def body() -> None:
        server = RelayServer()
        await server.start()
        connection = await raw_login(server.url, KEY_A)
        await connection.send(frames.Ping(b"12345678").encode())
        pong = frames.decode_frame(await connection.recv(decode=False))
        assert pong == frames.Pong(b"12345678")
        await server.close()
        error = frames.decode_frame(await connection.recv(decode=False))
        assert isinstance(error, frames.Error) and error.code == frames.ERROR_SHUTDOWN

    run_bounded(body, TEST_TIMEOUT_S)
