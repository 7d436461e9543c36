"""A relay that tampers with the code exchange never makes a receiver accept
anything but the sender's ticket.

The real ``p2pcp relay`` runs as a process; between it and both p2pcp
processes sits a small WebSocket proxy (here, in the test's loop) that
passes every frame through unchanged except the mailbox MESSAGE frames it
is told to alter: a flipped byte in the sender's SPAKE2 message or in its
sealed ticket, a ticket the proxy sealed itself, or a flipped byte in the
receiver's SPAKE2 message on its way to the sender. Each time the receiver
exits 2 with one line and writes nothing, and the sender, still serving,
says a wrong code was tried and offers a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from p2pcp.relay import frames
from p2pcp.rendezvous.exchange import PHASE_TICKET
from tests.hostile.harness import error_line, final_files, run_cli
from tests.support.aio import run_bounded
from tests.support.peers import flip
from tests.support.processes import node_env, p2pcp_command, relay_process

TEST_TIMEOUT_S = 90.0
STEP_TIMEOUT_S = 30.0

# (is the frame going to the receiver, the MESSAGE's number on that side, body) -> body
Tamper = Callable[[bool, int, bytes], bytes]


def _own_ticket(body: bytes) -> bytes:
    """A ticket sealed by the relay under a key of its own (it has no other)."""
    from nacl.secret import SecretBox

    fake = "p2pcp" + "q" * 200
    return bytes([PHASE_TICKET]) + bytes(SecretBox(os.urandom(32)).encrypt(fake.encode()))


TAMPERS: dict[str, Tamper] = {
    "sender's SPAKE2 message, flipped": lambda to_receiver, number, body: (
        flip(body, 7) if to_receiver and number == 0 else body
    ),
    "sealed ticket, flipped": lambda to_receiver, number, body: (
        flip(body, 30) if to_receiver and number == 1 else body
    ),
    "sealed ticket, the relay's own": lambda to_receiver, number, body: (
        _own_ticket(body) if to_receiver and number == 1 else body
    ),
    "receiver's SPAKE2 message, flipped": lambda to_receiver, number, body: (
        flip(body, 12) if not to_receiver and number == 0 else body
    ),
}


@contextlib.asynccontextmanager
async def tampering_proxy(relay_url: str, tamper: Tamper) -> AsyncIterator[str]:
    """A WebSocket proxy to ``relay_url``'s /relay on 127.0.0.1 that alters
    MESSAGE frames with ``tamper``; yields its URL."""
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import ServerConnection, serve

    upstream_url = relay_url.replace("http://", "ws://") + "/relay"

    async def handle(downstream: ServerConnection) -> None:
        # A connection that CLAIMs is a receiver's; MESSAGE frames are
        # numbered per connection.
        state = {"is_receiver": False, "messages": 0}
        async with connect(
            upstream_url, max_size=frames.MAX_MESSAGE_BYTES, compression=None
        ) as upstream:

            async def up() -> None:
                async for message in downstream:
                    data = bytes(message) if isinstance(message, bytes) else message.encode()
                    if data[:1] == bytes([frames.Claim.TYPE]):
                        state["is_receiver"] = True
                    await upstream.send(data)

            async def down() -> None:
                async for message in upstream:
                    data = bytes(message) if isinstance(message, bytes) else message.encode()
                    if data[:1] == bytes([frames.Message.TYPE]):
                        frame = frames.Message.decode(data)
                        body = tamper(bool(state["is_receiver"]), state["messages"], frame.body)
                        state["messages"] += 1
                        data = frames.Message(frame.nameplate, body).encode()
                    await downstream.send(data)

            tasks = [asyncio.ensure_future(up()), asyncio.ensure_future(down())]
            with contextlib.suppress(Exception):
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async with serve(
        handle, "127.0.0.1", 0, max_size=frames.MAX_MESSAGE_BYTES, compression=None
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"http://127.0.0.1:{port}"


async def _next_event(stdout: asyncio.StreamReader, name: str) -> dict[str, object]:
    while True:
        line = await asyncio.wait_for(stdout.readline(), STEP_TIMEOUT_S)
        assert line, f"the sender ended before a {name!r} event"
        event = json.loads(line)
        if event["event"] == name:
            return dict(event)


@pytest.mark.parametrize("what", list(TAMPERS))
def test_a_tampering_relay_never_hands_the_receiver_another_ticket(
    what: str, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "real.txt").write_text("the sender's file\n")
    out = tmp_path / "out"

    async def body() -> None:
        with relay_process(home=tmp_path / "relay-home") as relay:
            async with tampering_proxy(relay.url, TAMPERS[what]) as proxy_url:
                sender = await asyncio.create_subprocess_exec(
                    *p2pcp_command(),
                    "send",
                    "--json",
                    "--relay",
                    proxy_url,
                    str(src),
                    env=node_env(tmp_path / "sender-home"),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.DEVNULL,
                )
                try:
                    assert sender.stdout is not None
                    ticket = await _next_event(sender.stdout, "ticket")
                    code = str(ticket["code"])
                    result = await run_cli(
                        "receive",
                        code,
                        "--relay",
                        proxy_url,
                        "--out",
                        str(out),
                        home=tmp_path / "receiver-home",
                        timeout_s=STEP_TIMEOUT_S,
                    )
                    assert result.returncode == 2, result.stderr
                    assert error_line(result.stderr).startswith("p2pcp: error: wrong code: ")
                    assert final_files(out) == {}
                    # The sender noticed, goes on, and offers a new code.
                    rejected = await _next_event(sender.stdout, "code_rejected")
                    assert rejected["nameplate"] == int(code.split("-", maxsplit=1)[0])
                    new_code = await _next_event(sender.stdout, "code")
                    assert new_code["code"] != code
                finally:
                    if sender.returncode is None:
                        sender.terminate()
                    await asyncio.wait_for(sender.wait(), STEP_TIMEOUT_S)

    run_bounded(body, TEST_TIMEOUT_S)
