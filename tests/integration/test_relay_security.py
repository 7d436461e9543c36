"""A live relay against hostile clients: impersonation, eavesdropping, garbage, floods."""

from __future__ import annotations

import asyncio
import random

from p2pcp.relay import frames
from p2pcp.relay.limits import RelayLimits
from tests.support.aio import run_bounded, wait_until
from tests.support.relay import (
    KEY_A,
    KEY_B,
    KEY_C,
    KEY_MALLORY,
    Inbox,
    expect_error,
    honest_pair_works,
    login_frame,
    raw_connect,
    relay_client,
    running_relay,
)

TEST_TIMEOUT_S = 30.0


def test_login_with_someone_elses_id_fails() -> None:
    async def body() -> None:
        async with running_relay() as server:
            connection, challenge = await raw_connect(server.url)
            # Mallory claims B's id and signs with her own key.
            node = bytes(KEY_B.public)
            signed = frames.login_message(challenge.server_id, challenge.challenge, node)
            await connection.send(frames.Login(node, KEY_MALLORY.sign(signed)).encode())
            await expect_error(connection, frames.ERROR_LOGIN_FAILED)
            # Signing the right message for another relay (other server id) fails too.
            connection, challenge = await raw_connect(server.url)
            signed = frames.login_message(bytes(32), challenge.challenge, node)
            await connection.send(frames.Login(node, KEY_B.sign(signed)).encode())
            await expect_error(connection, frames.ERROR_LOGIN_FAILED)
            assert server.metrics.login_failures_total["bad_signature"] == 2
            assert server.client_count == 0

    run_bounded(body, TEST_TIMEOUT_S)


def test_a_replayed_login_fails() -> None:
    async def body() -> None:
        async with running_relay() as server:
            first, challenge = await raw_connect(server.url)
            captured = login_frame(KEY_B, challenge)
            await first.send(captured)
            assert frames.decode_frame(await first.recv(decode=False)) == frames.LoginOk()
            replay, _ = await raw_connect(server.url)
            await replay.send(captured)
            await expect_error(replay, frames.ERROR_LOGIN_FAILED)
            assert server.client_count == 1
            await first.close()

    run_bounded(body, TEST_TIMEOUT_S)


def test_packets_reach_only_their_destination() -> None:
    async def body() -> None:
        async with running_relay() as server:
            inbox_b, inbox_c = Inbox(), Inbox()
            a = relay_client(server.url, KEY_A)
            b = relay_client(server.url, KEY_B, inbox_b)
            c = relay_client(server.url, KEY_C, inbox_c)
            lurker, _ = await raw_connect(server.url)  # never logs in
            try:
                for each in (a, b, c):
                    assert await each.start(timeout_s=5)
                secrets = [f"secret {n}".encode() for n in range(200)]
                for secret in secrets:
                    assert a.send(KEY_B.public, [secret])
                # The relay handles A's frames in order: when C has the marker,
                # anything misrouted to C would have arrived before it.
                assert a.send(KEY_C.public, [b"marker"])
                await inbox_c.until(lambda: inbox_c.datagrams == [b"marker"])
                await inbox_b.until(lambda: len(inbox_b.datagrams) == len(secrets))
                assert inbox_b.datagrams == secrets
                assert inbox_b.sources == inbox_c.sources == {KEY_A.public}
                # The connection that never logged in was sent nothing after the challenge.
                try:
                    extra = await asyncio.wait_for(lurker.recv(), 0.2)
                except asyncio.TimeoutError:
                    extra = None
                assert extra is None
            finally:
                await lurker.close()
                for each in (a, b, c):
                    await each.close()

    run_bounded(body, TEST_TIMEOUT_S)


def test_an_unauthenticated_connection_can_send_nothing() -> None:
    async def body() -> None:
        async with running_relay() as server:
            inbox = Inbox()
            b = relay_client(server.url, KEY_B, inbox)
            try:
                assert await b.start(timeout_s=5)
                for early in (
                    frames.SendPackets(bytes(KEY_B.public), [b"sneaky"]).encode(),
                    frames.Ping(bytes(8)).encode(),
                ):
                    connection, _ = await raw_connect(server.url)
                    await connection.send(early)
                    await expect_error(connection, frames.ERROR_PROTOCOL)
                connection, _ = await raw_connect(server.url)
                await connection.send("a text message")
                await expect_error(connection, frames.ERROR_PROTOCOL)
                assert inbox.datagrams == []
                assert server.metrics.datagrams_relayed_total == 0
            finally:
                await b.close()

    run_bounded(body, TEST_TIMEOUT_S)


def _garbage_frames(rng: random.Random, node: bytes) -> list[bytes | str]:
    frames_out: list[bytes | str] = [
        b"",
        b"\x10",
        b"\x10" + node,
        b"\x10" + node + b"\x00\x01",
        b"\x10" + node + b"\x00\x01\x00\x05abc",
        b"\x10" + node + b"\xff\xff" + bytes(100),
        b"\x10" + node + b"\x00\x02\x00\x00\x00\x01a",
        b"\x11" + node + b"\x00\x01\x00\x01a",  # clients may not send RECV
        frames.Challenge(bytes(32), bytes(32)).encode(),
        frames.Login(node, bytes(64)).encode(),
        frames.Error(1, "client errors are not a thing").encode(),
        b"\x99whatever",
        "text",
    ]
    frames_out += [rng.randbytes(rng.randint(1, 200)) for _ in range(30)]
    frames_out += [bytes([0x10]) + node + rng.randbytes(rng.randint(0, 300)) for _ in range(30)]
    return frames_out


def test_garbage_does_not_hurt_the_relay() -> None:
    async def body() -> None:
        async with running_relay() as server:
            ports = server.ports
            assert ports is not None
            rng = random.Random(1234)
            # Raw TCP garbage, bad HTTP, a half request.
            for junk in (
                rng.randbytes(5000),
                b"GET / HTTP/1.1\r\n" + b"X: " + b"y" * 20000 + b"\r\n\r\n",
                b"POST /relay HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
                b"GET /relay HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: bad\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n",
                b"GET /relay",
            ):
                reader, writer = await asyncio.open_connection("127.0.0.1", ports.http_port)
                writer.write(junk)
                writer.write_eof()
                await reader.read()
                writer.close()
            # Malformed frames after a proper login: each closes only its own connection.
            for garbage in _garbage_frames(rng, bytes(KEY_B.public)):
                connection, challenge = await raw_connect(server.url)
                await connection.send(login_frame(KEY_MALLORY, challenge))
                assert frames.decode_frame(await connection.recv(decode=False)) == frames.LoginOk()
                await connection.send(garbage)
                await expect_error(connection, frames.ERROR_PROTOCOL)
            # Oversized: websockets refuses it by max_size (close 1009) before we see it.
            connection, challenge = await raw_connect(server.url)
            await connection.send(login_frame(KEY_MALLORY, challenge))
            await connection.recv()
            await connection.send(b"\x10" + bytes(frames.MAX_MESSAGE_BYTES + 1))
            await connection.wait_closed()
            assert connection.close_code == 1009
            # Still alive and useful.
            reader, writer = await asyncio.open_connection("127.0.0.1", ports.http_port)
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await reader.readline()).startswith(b"HTTP/1.1 200")
            writer.close()
            await honest_pair_works(server, b"still here")
            assert server.metrics.closes_total["protocol_error"] >= 40

    run_bounded(body, TEST_TIMEOUT_S)


def test_a_flooding_client_is_throttled_while_others_keep_going() -> None:
    async def body() -> None:
        async with running_relay(relay_limits=RelayLimits(datagrams_per_s=1000)) as server:
            sink, inbox_b = Inbox(), Inbox()
            flooder = relay_client(server.url, KEY_MALLORY)
            target = relay_client(server.url, KEY_C, sink)
            a = relay_client(server.url, KEY_A)
            b = relay_client(server.url, KEY_B, inbox_b)
            clients = (flooder, target, a, b)
            try:
                for each in clients:
                    assert await each.start(timeout_s=5)
                flood = 5000
                for _ in range(flood // 50):
                    assert flooder.send(KEY_C.public, [b"f" * 100] * 50)
                honest = [n.to_bytes(2, "big") * 50 for n in range(500)]
                for index in range(0, len(honest), 10):
                    assert a.send(KEY_B.public, honest[index : index + 10])
                await inbox_b.until(lambda: len(inbox_b.datagrams) == len(honest))
                assert inbox_b.datagrams == honest  # nothing of theirs dropped
                drops = server.metrics.drops_total
                await wait_until(lambda: drops["rate_limited"] + len(sink.datagrams) == flood)
                assert drops["rate_limited"] >= flood - 2 * 1000  # bucket: ~1 s of rate passes
                assert len(sink.datagrams) >= 1000 - 50
                assert flooder.is_connected  # throttled, not thrown out
                assert server.metrics.closes_total["flooding"] == 0
            finally:
                for each in clients:
                    await each.close()

    run_bounded(body, TEST_TIMEOUT_S)


def test_an_abusive_flood_is_disconnected() -> None:
    async def body() -> None:
        async with running_relay(relay_limits=RelayLimits(datagrams_per_s=100)) as server:
            connection, challenge = await raw_connect(server.url)
            await connection.send(login_frame(KEY_MALLORY, challenge))
            await connection.recv()
            batch = frames.SendPackets(bytes(KEY_A.public), [b"x"] * 64).encode()
            from websockets.exceptions import ConnectionClosed

            try:
                for _ in range(100):  # 6,400 datagrams: 64 s of its rate
                    await connection.send(batch)
            except ConnectionClosed:
                pass
            await expect_error(connection, frames.ERROR_FLOODING, after_login=True)
            assert server.metrics.closes_total["flooding"] == 1
            await honest_pair_works(server, b"after the flood")

    run_bounded(body, TEST_TIMEOUT_S)
