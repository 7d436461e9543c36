"""A lying sender on a pipe: the real ``p2pcp receive`` against a stream
whose announced end does not match its bytes, or that lies otherwise.

On stdout the bytes before the end cannot be taken back: the receiver
exits 4 with one line that says so. Into a folder nothing is left under
the final name and no partial folder remains.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from pathlib import Path

import pytest

from p2pcp.core.errors import EXIT_INTEGRITY, EXIT_USAGE
from p2pcp.core.ticket import Ticket, TicketKind, encode_ticket
from p2pcp.transfer import wire
from tests.support.peers import STEP_TIMEOUT_S, HostileSender, hostile_sender, stream_answer
from tests.support.processes import node_env, p2pcp_command

from .harness import error_line, files_under, run_cli

pytestmark = pytest.mark.e2e

DATA = random.Random(19).randbytes(700_000)


async def _receive_to_stdout(ticket: Ticket, home: Path) -> tuple[int, bytes, str]:
    """``p2pcp receive TICKET --out -``: its exit code, stdout's bytes, stderr."""
    process = await asyncio.create_subprocess_exec(
        *p2pcp_command(),
        "receive",
        encode_ticket(ticket),
        "--out",
        "-",
        env=node_env(home),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), STEP_TIMEOUT_S)
    assert process.returncode is not None
    return process.returncode, stdout, stderr.decode()


def _stream_ticket(sender: HostileSender) -> Ticket:
    ticket = sender.ticket(bytes(range(32)), 0)
    return dataclasses.replace(ticket, kind=TicketKind.STREAM)


LIES = {
    "wrong-blake3": {"announced_blake3": bytes(32)},
    "wrong-length": {"announced_length": len(DATA) + 1},
}


@pytest.mark.parametrize("lie", list(LIES))
def test_a_lying_stream_to_stdout_exits_4_in_one_line(tmp_path: Path, lie: str) -> None:
    async def scenario() -> tuple[int, bytes, str]:
        async with hostile_sender() as sender:
            sender.stream = stream_answer(DATA, **LIES[lie])  # type: ignore[arg-type]
            return await _receive_to_stdout(_stream_ticket(sender), tmp_path / "home")

    returncode, stdout, stderr = asyncio.run(scenario())
    line = error_line(stderr)
    assert returncode == EXIT_INTEGRITY, line
    assert "does not match" in line
    assert "cannot be taken back" in line, line
    # What was written came from the sender's key, in order, before the end
    # was checked: that is a pipe's limit, and the line says so.
    assert DATA.startswith(stdout)


def test_a_lying_stream_into_a_folder_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"

    async def scenario() -> tuple[int, str]:
        async with hostile_sender() as sender:
            sender.stream = stream_answer(DATA, announced_blake3=bytes(32), name="data.bin")
            ticket = encode_ticket(_stream_ticket(sender))
            result = await run_cli("receive", ticket, "--out", str(out), home=tmp_path / "home")
            return result.returncode, result.stderr

    returncode, stderr = asyncio.run(scenario())
    line = error_line(stderr)
    assert returncode == EXIT_INTEGRITY, line
    assert "cannot be taken back" not in line
    assert files_under(out) == {}
    assert not out.exists() or not any(out.iterdir())  # no partial folder either


def test_an_unsafe_stream_name_is_refused(tmp_path: Path) -> None:
    """The name comes from the sender: one safe component or nothing."""
    out = tmp_path / "out"

    async def scenario() -> tuple[int, str]:
        async with hostile_sender() as sender:
            # A name with a slash, written past the encoder's own check.
            async def answer(stream, request):  # type: ignore[no-untyped-def]
                await stream.write(bytes([wire.STATUS_OK, 5]) + b"../xy")
                await stream.finish()

            sender.stream = answer
            ticket = encode_ticket(_stream_ticket(sender))
            result = await run_cli("receive", ticket, "--out", str(out), home=tmp_path / "home")
            return result.returncode, result.stderr

    returncode, stderr = asyncio.run(scenario())
    line = error_line(stderr)
    assert returncode == EXIT_INTEGRITY, line
    assert "is not one short name" in line
    assert files_under(out) == {}
    assert not (tmp_path / "xy").exists()


def test_a_stream_taken_twice_is_refused(tmp_path: Path) -> None:
    """A receiver told the stream was taken (a sender gives it to one
    receiver) stops with exit 2 and says why."""

    async def scenario() -> tuple[int, str]:
        async with hostile_sender() as sender:

            async def taken(stream, request):  # type: ignore[no-untyped-def]
                await stream.write(bytes([wire.STATUS_TAKEN]))
                await stream.finish()

            sender.stream = taken
            returncode, _stdout, stderr = await _receive_to_stdout(
                _stream_ticket(sender), tmp_path / "home"
            )
            return returncode, stderr

    returncode, stderr = asyncio.run(scenario())
    line = error_line(stderr)
    assert returncode == EXIT_USAGE, line
    assert "already took this stream" in line
