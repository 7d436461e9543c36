"""Hostile clients against the relay's mailbox: floods of allocations, claims,
oversized and too many messages. Each stays bounded, the hostile client is
refused with the right reason, and honest clients keep exchanging codes."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from p2pcp.core.errors import CodeError, ConnectError
from p2pcp.core.identity import SecretKey
from p2pcp.relay import frames, limits
from p2pcp.relay.limits import RelayLimits
from tests.support.aio import run_bounded, wait_until
from tests.support.processes import relay_process
from tests.support.relay import (
    KEY_A,
    KEY_B,
    KEY_MALLORY,
    expect_error,
    http_get,
    raw_login,
    relay_client,
    running_relay,
)

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

TEST_TIMEOUT_S = 60.0


async def honest_code_works(url: str) -> None:
    """Two fresh clients can still allocate, claim and exchange through ``url``."""
    a, b = relay_client(url, KEY_A), relay_client(url, KEY_B)
    try:
        nameplate = await a.allocate_nameplate(10)
        a.mailbox_send(nameplate, b"spake from a")
        await b.claim_nameplate(nameplate, 10)
        assert await b.mailbox_receive(nameplate, 10) == b"spake from a"
        b.mailbox_send(nameplate, b"spake from b")
        assert await a.mailbox_receive(nameplate, 10) == b"spake from b"
        a.release_nameplate(nameplate)
    finally:
        await a.close()
        await b.close()


async def frames_until(connection: ClientConnection, count: int) -> list[frames.Frame]:
    """The next ``count`` frames the relay sends on a raw connection."""
    received: list[frames.Frame] = []
    while len(received) < count:
        received.append(frames.decode_frame(await connection.recv(decode=False)))
    return received


def metric(text: str, line_start: str) -> int:
    [line] = [line for line in text.splitlines() if line.startswith(line_start + " ")]
    return int(line.rsplit(" ", 1)[1])


@pytest.mark.e2e
def test_an_allocation_and_claim_flood_is_refused_and_others_keep_working() -> None:
    flood = 500
    with relay_process("--codes-per-client", "8") as relay:
        port = int(relay.url.rsplit(":", 1)[1])

        async def body() -> None:
            mallory = await raw_login(relay.url, KEY_MALLORY)
            try:
                for _ in range(flood):
                    await mallory.send(frames.Allocate().encode())
                answers = await frames_until(mallory, flood)
                given = [f.nameplate for f in answers if isinstance(f, frames.Allocated)]
                refused = [f for f in answers if isinstance(f, frames.Closed)]
                assert given == list(range(1, 9))  # in order, smallest first
                assert refused == [frames.Closed(0, frames.CLOSED_TOO_MANY)] * (flood - 8)
                # Guessing nameplates: refused one by one, nothing held.
                for guess in range(9, 9 + 100):
                    await mallory.send(frames.Claim(guess).encode())
                answers = await frames_until(mallory, 100)
                assert {f for f in answers if isinstance(f, frames.Closed)} == {
                    frames.Closed(guess, frames.CLOSED_UNKNOWN) for guess in range(9, 109)
                }
                # The flooder is still connected and answered, and honest codes work.
                await mallory.send(frames.Ping(b"stillup!").encode())
                assert await frames_until(mallory, 1) == [frames.Pong(b"stillup!")]
                await honest_code_works(relay.url)
                _, text = await http_get(port, "/metrics")
                assert metric(text, "p2pcp_relay_nameplates_open") == 8
                assert metric(text, 'p2pcp_relay_nameplates_refused_total{reason="too_many"}') == (
                    flood - 8
                )
                assert metric(text, 'p2pcp_relay_nameplates_refused_total{reason="unknown"}') == 100
                assert metric(text, "p2pcp_relay_nameplates_allocated_total") == 9
            finally:
                await mallory.close()
            # Mallory gone: her nameplates are gone.
            for _ in range(100):
                _, text = await http_get(port, "/metrics")
                if metric(text, "p2pcp_relay_nameplates_open") == 0:
                    break
                await asyncio.sleep(0.05)
            assert metric(text, "p2pcp_relay_nameplates_open") == 0

        run_bounded(body, TEST_TIMEOUT_S)


def test_many_flooders_fill_the_relay_but_open_codes_keep_working() -> None:
    async def body() -> None:
        relay_limits = RelayLimits(max_nameplates=20, nameplates_per_client=4)
        async with running_relay(relay_limits=relay_limits) as server:
            a, b = relay_client(server.url, KEY_A), relay_client(server.url, KEY_B)
            keys = [SecretKey(bytes([100 + index]) * 32) for index in range(6)]
            flooders = [await raw_login(server.url, key) for key in keys]
            try:
                nameplate = await a.allocate_nameplate(10)
                for flooder in flooders:
                    for _ in range(4):
                        await flooder.send(frames.Allocate().encode())
                answers = [f for flooder in flooders for f in await frames_until(flooder, 4)]
                assert sum(isinstance(f, frames.Allocated) for f in answers) == 19
                assert answers.count(frames.Closed(0, frames.CLOSED_FULL)) == 5
                assert server.mailbox.open_count == 20
                # A new code cannot be had while full (a relay problem: exit 3)...
                with pytest.raises(ConnectError, match="holds too many codes"):
                    await b.allocate_nameplate(10)
                # ...but an open one is still claimed and used.
                await b.claim_nameplate(nameplate, 10)
                a.mailbox_send(nameplate, b"hi")
                assert await b.mailbox_receive(nameplate, 10) == b"hi"
                for flooder in flooders:
                    await flooder.close()
                await wait_until(lambda: server.mailbox.open_count == 1)
                assert isinstance(await b.allocate_nameplate(10), int)
                assert server.metrics.nameplates_refused_total["full"] == 6
            finally:
                for flooder in flooders:
                    await flooder.close()
                await a.close()
                await b.close()

    run_bounded(body, TEST_TIMEOUT_S)


def test_an_oversized_message_closes_the_sender_only() -> None:
    async def body() -> None:
        async with running_relay() as server:
            mallory = await raw_login(server.url, KEY_MALLORY)
            await mallory.send(frames.Allocate().encode())
            [allocated] = await frames_until(mallory, 1)
            assert isinstance(allocated, frames.Allocated)
            oversized = (
                bytes((frames.Add.TYPE,))
                + allocated.nameplate.to_bytes(4, "big")
                + b"x" * (frames.MAX_MAILBOX_BODY_BYTES + 1)
            )
            await mallory.send(oversized)
            await expect_error(mallory, frames.ERROR_PROTOCOL, after_login=True)
            await wait_until(lambda: server.mailbox.open_count == 0)
            await honest_code_works(server.url)
            # The client refuses to send one in the first place.
            client = relay_client(server.url, KEY_A)
            try:
                nameplate = await client.allocate_nameplate(10)
                with pytest.raises(Exception, match="at most 4096 bytes"):
                    client.mailbox_send(nameplate, b"x" * (frames.MAX_MAILBOX_BODY_BYTES + 1))
            finally:
                await client.close()

    run_bounded(body, TEST_TIMEOUT_S)


def test_too_many_messages_end_the_nameplate_with_over_limit() -> None:
    async def body() -> None:
        async with running_relay() as server:
            flooder, victim = relay_client(server.url, KEY_MALLORY), relay_client(server.url, KEY_B)
            try:
                # Waiting for a claim that never comes: bounded in count...
                nameplate = await flooder.allocate_nameplate(10)
                for _ in range(limits.MAILBOX_QUEUE_MESSAGES + 1):
                    flooder.mailbox_send(nameplate, b"m" * 100)
                with pytest.raises(CodeError, match="too many messages for the code"):
                    await flooder.mailbox_receive(nameplate, 10)
                with pytest.raises(CodeError, match="too many messages"):
                    flooder.mailbox_send(nameplate, b"more")
                # ...and through an open pair, bounded over the nameplate's life.
                flooder.release_nameplate(nameplate)
                nameplate = await flooder.allocate_nameplate(10)
                await victim.claim_nameplate(nameplate, 10)
                for _ in range(limits.MAILBOX_MESSAGES_PER_NAMEPLATE + 1):
                    flooder.mailbox_send(nameplate, b"m")
                received = 0
                with pytest.raises(CodeError, match="too many messages for the code"):
                    while True:
                        await victim.mailbox_receive(nameplate, 10)
                        received += 1
                assert received == limits.MAILBOX_MESSAGES_PER_NAMEPLATE
                assert server.metrics.nameplates_refused_total["over_limit"] == 2
                assert server.mailbox.open_count == 0
                await honest_code_works(server.url)
            finally:
                await flooder.close()
                await victim.close()

    run_bounded(body, TEST_TIMEOUT_S)


def test_mailbox_frames_before_login_are_refused() -> None:
    async def body() -> None:
        from tests.support.relay import raw_connect

        async with running_relay() as server:
            connection, _ = await raw_connect(server.url)
            await connection.send(frames.Allocate().encode())
            await expect_error(connection, frames.ERROR_PROTOCOL)
            # A relay -> client frame sent by a client is a protocol error too.
            mallory = await raw_login(server.url, KEY_MALLORY)
            await mallory.send(frames.Message(1, b"forged").encode())
            await expect_error(mallory, frames.ERROR_PROTOCOL, after_login=True)
            assert server.mailbox.open_count == 0

    run_bounded(body, TEST_TIMEOUT_S)
