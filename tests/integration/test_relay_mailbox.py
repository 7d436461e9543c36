"""The relay's mailbox with real RelayClients against a relay in process (and the
real ``p2pcp relay`` process): allocate, claim, exchange, release, refusals,
expiry, close on disconnect, metrics."""

from __future__ import annotations

import logging

import pytest

from p2pcp.core.errors import CodeError, ConnectError
from p2pcp.relay import frames
from p2pcp.relay.limits import RelayLimits
from tests.support.aio import run_bounded, wait_until
from tests.support.ports import free_port
from tests.support.processes import relay_process
from tests.support.relay import (
    KEY_A,
    KEY_B,
    KEY_C,
    http_get,
    raw_login,
    relay_client,
    running_relay,
)

TEST_TIMEOUT_S = 30.0


def test_allocate_claim_exchange_release(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def body() -> None:
        async with running_relay() as server:
            sender, receiver = relay_client(server.url, KEY_A), relay_client(server.url, KEY_B)
            try:
                # Not started yet: the mailbox calls connect by themselves.
                nameplate = await sender.allocate_nameplate(5)
                assert nameplate == 1
                assert await sender.allocate_nameplate(5) == 2
                sender.release_nameplate(2)
                # Sent before anyone claimed: waits in the mailbox, in order.
                sender.mailbox_send(nameplate, b"pake from sender")
                sender.mailbox_send(nameplate, b"")
                await receiver.claim_nameplate(nameplate, 5)
                assert await receiver.mailbox_receive(nameplate, 5) == b"pake from sender"
                assert await receiver.mailbox_receive(nameplate, 5) == b""
                receiver.mailbox_send(nameplate, b"pake from receiver")
                assert await sender.mailbox_receive(nameplate, 5) == b"pake from receiver"
                big = bytes(range(256)) * 16
                sender.mailbox_send(nameplate, big)
                assert await receiver.mailbox_receive(nameplate, 5) == big
                receiver.mailbox_send(nameplate, b"confirmed")
                receiver.release_nameplate(nameplate)
                # What came before the release is still read first; then the end.
                assert await sender.mailbox_receive(nameplate, 5) == b"confirmed"
                with pytest.raises(CodeError, match=r"other side closed the code \(nameplate 1\)"):
                    await sender.mailbox_receive(nameplate, 5)
                sender.release_nameplate(nameplate)
                sender.release_nameplate(nameplate)  # idempotent
                await wait_until(lambda: server.mailbox.open_count == 0)
                # A second use of the code, by anyone: already used, not someone else's.
                third = relay_client(server.url, KEY_C)
                try:
                    with pytest.raises(CodeError, match=r"^code already used$"):
                        await third.claim_nameplate(nameplate, 5)
                    with pytest.raises(CodeError, match=r"^no such code \(nameplate 99\)$"):
                        await third.claim_nameplate(99, 5)
                    with pytest.raises(CodeError, match=r"no such code \(nameplate 99\)"):
                        third.mailbox_send(99, b"x")
                finally:
                    await third.close()
                # Ended numbers are not handed out again at once.
                assert await sender.allocate_nameplate(5) == 3
                status, text = await http_get(server.ports.http_port, "/metrics")  # type: ignore[union-attr]
                assert status == 200
                lines = text.splitlines()
                assert "p2pcp_relay_nameplates_open 1" in lines
                assert "p2pcp_relay_nameplates_allocated_total 3" in lines
                assert "p2pcp_relay_nameplates_claimed_total 1" in lines
                assert 'p2pcp_relay_nameplates_refused_total{reason="used"} 1' in lines
                assert 'p2pcp_relay_nameplates_refused_total{reason="unknown"} 1' in lines
                assert "p2pcp_relay_mailbox_messages_total 5" in lines
            finally:
                await sender.close()
                await receiver.close()

    run_bounded(body, TEST_TIMEOUT_S)
    # Neither the relay nor its clients log a message body, even at debug level.
    assert "pake from" not in caplog.text and "confirmed" not in caplog.text


def test_a_second_claim_is_refused_and_the_pair_goes_on() -> None:
    async def body() -> None:
        async with running_relay() as server:
            a, b, c = (relay_client(server.url, key) for key in (KEY_A, KEY_B, KEY_C))
            try:
                nameplate = await a.allocate_nameplate(5)
                with pytest.raises(CodeError, match=r"^code already used$"):
                    await a.claim_nameplate(nameplate, 5)  # one's own code
                await b.claim_nameplate(nameplate, 5)
                with pytest.raises(CodeError, match=r"^code already used$"):
                    await c.claim_nameplate(nameplate, 5)
                a.mailbox_send(nameplate, b"still works")
                assert await b.mailbox_receive(nameplate, 5) == b"still works"
                # Nothing of it reached the refused third client.
                with pytest.raises(CodeError, match="no such code"):
                    await c.mailbox_receive(nameplate, 1)
                assert server.metrics.nameplates_refused_total["used"] == 1
            finally:
                for client in (a, b, c):
                    await client.close()

    run_bounded(body, TEST_TIMEOUT_S)


def test_a_side_that_disconnects_closes_its_nameplates() -> None:
    async def body() -> None:
        async with running_relay() as server:
            a, b = relay_client(server.url, KEY_A), relay_client(server.url, KEY_B)
            try:
                nameplate = await a.allocate_nameplate(5)
                lonely = await a.allocate_nameplate(5)
                await b.claim_nameplate(nameplate, 5)
                a.mailbox_send(nameplate, b"last words")
                await a.close()
                assert await b.mailbox_receive(nameplate, 5) == b"last words"
                with pytest.raises(CodeError, match=r"other side of the code went away"):
                    await b.mailbox_receive(nameplate, 5)
                with pytest.raises(CodeError, match=r"went away|no such code"):
                    b.mailbox_send(nameplate, b"anyone?")
                await wait_until(lambda: server.mailbox.open_count == 0)
                # The allocator's unclaimed nameplate ended with it: nobody can claim it.
                with pytest.raises(CodeError, match=rf"no such code \(nameplate {lonely}\)"):
                    await b.claim_nameplate(lonely, 5)
            finally:
                await a.close()
                await b.close()

    run_bounded(body, TEST_TIMEOUT_S)


def test_our_own_connection_lost_is_a_connect_error() -> None:
    async def body() -> None:
        async with running_relay() as server:
            a = relay_client(server.url, KEY_A)
            try:
                nameplate = await a.allocate_nameplate(5)
                # Another process logs in with the same key: this connection is replaced.
                intruder = await raw_login(server.url, KEY_A)
                with pytest.raises(ConnectError, match="another connection logged in as you"):
                    await a.mailbox_receive(nameplate, 10)
                await intruder.close()
            finally:
                await a.close()

    run_bounded(body, TEST_TIMEOUT_S)


def test_unclaimed_and_idle_nameplates_expire() -> None:
    async def body() -> None:
        limits = RelayLimits(code_expiry_s=0.6)
        async with running_relay(relay_limits=limits) as server:
            a, b = relay_client(server.url, KEY_A), relay_client(server.url, KEY_B)
            try:
                unclaimed = await a.allocate_nameplate(5)
                idle = await a.allocate_nameplate(5)
                await b.claim_nameplate(idle, 5)
                with pytest.raises(CodeError, match=r"^code expired$"):
                    await a.mailbox_receive(unclaimed, 10)
                with pytest.raises(CodeError, match=r"^code expired$"):
                    await b.mailbox_receive(idle, 10)
                with pytest.raises(CodeError, match=r"^code expired$"):
                    await b.claim_nameplate(unclaimed, 5)
                assert server.metrics.nameplates_expired_total == 2
                assert server.mailbox.open_count == 0
            finally:
                await a.close()
                await b.close()

    run_bounded(body, TEST_TIMEOUT_S)


def test_an_unreachable_relay_is_a_connect_error() -> None:
    async def body() -> None:
        client = relay_client(f"http://127.0.0.1:{free_port()}", KEY_A)
        try:
            with pytest.raises(ConnectError, match="cannot reach the relay"):
                await client.allocate_nameplate(5)
            with pytest.raises(ConnectError, match="cannot reach the relay"):
                await client.claim_nameplate(7, 5)
        finally:
            await client.close()

    run_bounded(body, TEST_TIMEOUT_S)


def test_a_receive_that_times_out_is_a_connect_error() -> None:
    async def body() -> None:
        async with running_relay() as server:
            a = relay_client(server.url, KEY_A)
            try:
                nameplate = await a.allocate_nameplate(5)
                with pytest.raises(ConnectError, match="no answer through the relay"):
                    await a.mailbox_receive(nameplate, 0.2)
                # The nameplate is still good after a timeout.
                assert server.mailbox.open_count == 1
            finally:
                await a.close()

    run_bounded(body, TEST_TIMEOUT_S)


@pytest.mark.e2e
def test_mailbox_through_the_real_relay_process() -> None:
    with relay_process("--code-expiry", "30", "--codes-per-client", "2") as relay:

        async def body() -> None:
            a, b = relay_client(relay.url, KEY_A), relay_client(relay.url, KEY_B)
            try:
                nameplate = await a.allocate_nameplate(10)
                assert nameplate == 1
                await a.allocate_nameplate(10)
                with pytest.raises(CodeError, match="too many codes of this client"):
                    await a.allocate_nameplate(10)
                a.mailbox_send(nameplate, b"hello")
                await b.claim_nameplate(nameplate, 10)
                assert await b.mailbox_receive(nameplate, 10) == b"hello"
                b.mailbox_send(nameplate, b"bye")
                assert await a.mailbox_receive(nameplate, 10) == b"bye"
                b.release_nameplate(nameplate)
                with pytest.raises(CodeError, match="closed the code"):
                    await a.mailbox_receive(nameplate, 10)
                port = int(relay.url.rsplit(":", 1)[1])
                _, text = await http_get(port, "/metrics")
                lines = text.splitlines()
                assert "p2pcp_relay_nameplates_open 1" in lines
                assert 'p2pcp_relay_nameplates_refused_total{reason="too_many"} 1' in lines
            finally:
                await a.close()
                await b.close()

        run_bounded(body, TEST_TIMEOUT_S)
    # The relay never logs a body.
    logged = relay.stderr_after_start()
    assert "hello" not in logged and "bye" not in logged


def test_frames_stay_within_the_protocol_limit() -> None:
    assert 5 + frames.MAX_MAILBOX_BODY_BYTES < frames.MAX_MESSAGE_BYTES


@pytest.mark.e2e
def test_the_relay_refuses_a_nonsense_code_expiry_in_one_line() -> None:
    import subprocess

    from tests.support.processes import p2pcp_command

    result = subprocess.run(
        [*p2pcp_command(), "relay", "--port", "0", "--code-expiry", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "p2pcp: error: --code-expiry must be more than 0 seconds"
