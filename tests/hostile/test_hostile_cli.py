"""The same attacks against the real CLI processes: the exit code, the one
line on stderr, the JSON error line, and what is on disk.

The hostile sender runs in the test's event loop; ``p2pcp receive`` is a
subprocess awaited without blocking that loop.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest

from p2pcp.blobs.collection import Manifest
from p2pcp.blobs.tree import LEAF_SIZE
from p2pcp.core.errors import EXIT_INTEGRITY, EXIT_OK, EXIT_UNEXPECTED
from p2pcp.core.identity import NodeId
from p2pcp.core.ticket import Ticket, decode_ticket, encode_ticket
from p2pcp.net import EndpointConfig, PathPolicy
from p2pcp.net.quic.endpoint import Endpoint
from p2pcp.transfer import wire
from tests.support.peers import (
    IMPOSTOR_KEY,
    SENDER_KEY,
    STEP_TIMEOUT_S,
    Blob,
    HostileSender,
    blob_answer,
    body_answer,
    flip,
    get_payload,
    hostile_sender,
    manifest_blob,
    raw_manifest,
    raw_request,
    single_file,
)
from tests.support.processes import node_env, p2pcp_command

from .harness import error_line, final_files, run_cli, snapshot

pytestmark = pytest.mark.e2e

CONTENT = random.Random(6).randbytes(2 * LEAF_SIZE + 9)


def _json_error(stdout: str) -> dict[str, object]:
    lines = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    assert lines and lines[-1]["event"] == "error", stdout
    return lines[-1]


async def _receive(tmp_path: Path, ticket: Ticket) -> tuple[int, str, dict[str, object]]:
    result = await run_cli(
        "receive",
        encode_ticket(ticket),
        "--out",
        str(tmp_path / "out"),
        "--json",
        home=tmp_path / "home",
    )
    return result.returncode, error_line(result.stderr), _json_error(result.stdout)


def _offer_corrupt_file(sender: HostileSender) -> Ticket:
    manifest, file_blob = single_file(sender, "victim.bin", CONTENT)
    sender.answers[file_blob.root] = body_answer(flip(file_blob.body(), -3))
    return sender.ticket(manifest.root, len(CONTENT))


def _offer_traversal(sender: HostileSender) -> Ticket:
    data = Blob.of(b"pwned")
    manifest = Blob.of(raw_manifest("d", [("d/../../../pwned", 5, data.root)]))
    sender.answers[manifest.root] = blob_answer(manifest)
    sender.answers[data.root] = blob_answer(data)
    return sender.ticket(manifest.root, 5)


def _offer_petabyte(sender: HostileSender) -> Ticket:
    manifest = manifest_blob(Manifest.single_file("huge.bin", 2**50, bytes(32)))
    sender.answers[manifest.root] = blob_answer(manifest)
    return sender.ticket(manifest.root, 2**50)


CASES = {
    "corrupt-leaf": (SENDER_KEY, _offer_corrupt_file, EXIT_INTEGRITY, "leaf 2 does not match"),
    "traversal-name": (SENDER_KEY, _offer_traversal, EXIT_INTEGRITY, "unsafe path in manifest"),
    "petabyte": (SENDER_KEY, _offer_petabyte, EXIT_UNEXPECTED, "not enough free space"),
    "impostor-key": (IMPOSTOR_KEY, _offer_corrupt_file, EXIT_INTEGRITY, "the peer is not"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_cli_receiver_against_a_hostile_sender(tmp_path: Path, case: str) -> None:
    key, offer, exit_code, words = CASES[case]

    async def scenario() -> tuple[int, str, dict[str, object]]:
        async with hostile_sender(key) as sender:
            return await _receive(tmp_path, offer(sender))

    returncode, line, event = asyncio.run(scenario())
    assert returncode == exit_code, line
    assert words in line
    assert event["exit_code"] == exit_code
    assert words in str(event["message"])
    assert final_files(tmp_path / "out") == {}
    outside = {k for k in snapshot(tmp_path) if not k.startswith(("out/", "home/"))}
    assert outside == set()


async def _start_cli_sender(home: Path, path: Path) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        *p2pcp_command(),
        "send",
        "--once",
        "--json",
        str(path),
        env=node_env(home),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    while True:
        raw = await asyncio.wait_for(process.stdout.readline(), STEP_TIMEOUT_S)
        assert raw, "the sender exited before printing its ticket"
        event = json.loads(raw)
        if event.get("event") == "ticket":
            return process, str(event["ticket"])


def test_cli_sender_survives_a_hostile_receiver(tmp_path: Path) -> None:
    """`p2pcp send --once`: a stranger asks for unknown hashes, absurd ranges,
    garbage and says DONE; the sender keeps serving, the real receiver gets
    every byte, and only then does the sender exit 0."""
    src = tmp_path / "victim.bin"
    src.write_bytes(CONTENT)

    async def scenario() -> tuple[int, int, str, list[dict[str, object]]]:
        process, text = await _start_cli_sender(tmp_path / "sender-home", src)
        try:
            ticket = decode_ticket(text)
            stranger = await Endpoint.bind(
                IMPOSTOR_KEY, EndpointConfig(path_policy=PathPolicy.DIRECT_ONLY)
            )
            try:
                loopback = [a for a in ticket.addresses if a[0] == "127.0.0.1"]
                connection = await stranger.connect(
                    NodeId(ticket.node_id), loopback, timeout_s=STEP_TIMEOUT_S
                )
                unknown = await raw_request(connection, get_payload(bytes(32), [(0, 1)]))
                assert unknown.status == wire.STATUS_NOT_FOUND
                for ranges in ([(5, 2)], [(0, 4), (2, 6)], [(2**62, 2**63)]):
                    reply = await raw_request(connection, get_payload(ticket.root_hash, ranges))
                    assert reply.reset_code == wire.ERROR_BAD_REQUEST
                garbage = await raw_request(connection, b"\xff" * 64)
                assert garbage.reset_code == wire.ERROR_BAD_REQUEST
                done = await raw_request(connection, wire.encode_request(wire.DoneRequest(0)))
                assert done.status == wire.STATUS_OK
            finally:
                await stranger.close()
            received = await run_cli(
                "receive", text, "--out", str(tmp_path / "out"), "--json", home=tmp_path / "rx"
            )
            sender_exit = await asyncio.wait_for(process.wait(), STEP_TIMEOUT_S)
            assert process.stdout is not None
            rest = await asyncio.wait_for(process.stdout.read(), STEP_TIMEOUT_S)
            reports = [json.loads(line) for line in rest.decode().splitlines() if line.strip()]
            return received.returncode, sender_exit, received.stderr, reports
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    receive_exit, sender_exit, stderr, reports = asyncio.run(scenario())
    assert receive_exit == EXIT_OK, stderr
    assert final_files(tmp_path / "out") == {"victim.bin": CONTENT}
    assert sender_exit == EXIT_OK
    # The stranger's failure is its own event, told apart from the sender's
    # own `error` (which always carries an exit code): the sender did fine.
    failures = [event for event in reports if event["event"] == "receiver_error"]
    assert failures and all(event["receiver"] and event["reason"] for event in failures), reports
    assert not [event for event in reports if event["event"] == "error"], reports
    finished = [event for event in reports if event["event"] == "done"]
    assert [event["receiver"] for event in finished] != [failures[0]["receiver"]]
