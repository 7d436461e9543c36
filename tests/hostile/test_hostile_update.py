"""GET_TREE and ``receive --update`` against lies, both ways.

A sender whose leaf hashes do not hash to the file's root (or claim another
size), or whose leaves do not match them, stops ``p2pcp receive --update``
with exit 4 and one line, and nothing is replaced: the old file is whole
and the partial folder is gone. A sender without GET_TREE gets the whole
file asked for instead. The real sender answers GET_TREE only for file
blobs larger than one leaf it serves.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from p2pcp.blobs.tree import HASH_BYTES, LEAF_SIZE, Outboard
from p2pcp.core.errors import EXIT_INTEGRITY, EXIT_OK
from p2pcp.core.ticket import encode_ticket
from p2pcp.transfer import wire
from tests.support.peers import (
    Blob,
    HostileSender,
    blob_answer,
    body_answer,
    client,
    flip,
    hostile_sender,
    raw_request,
    single_file,
    start_provider,
    tree_answer,
)

from .harness import Finished, error_line, final_files, run_cli

pytestmark = pytest.mark.e2e

RNG = random.Random(20)
OLD = RNG.randbytes(6 * LEAF_SIZE + 11)
NEW = OLD[: 3 * LEAF_SIZE] + RNG.randbytes(LEAF_SIZE) + OLD[4 * LEAF_SIZE :]


def _old_copy(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    (out / "f.bin").write_bytes(OLD)
    return out


async def _update(tmp_path: Path, sender: HostileSender, manifest: Blob) -> Finished:
    ticket = sender.ticket(manifest.root, len(NEW))
    return await run_cli(
        "receive",
        encode_ticket(ticket),
        "--out",
        str(tmp_path / "out"),
        "--update",
        home=tmp_path / "home",
    )


def _lying_hashes(blob: Blob) -> bytes:
    answer = bytearray(tree_answer(blob))
    answer[1 + wire.TREE_SIZE_BYTES + HASH_BYTES] ^= 1  # the second leaf's hash
    return bytes(answer)


def _other_size(blob: Blob) -> bytes:
    answer = tree_answer(blob)
    return answer[:1] + (blob.outboard.size + 1).to_bytes(8, "big") + answer[9:]


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("hashes", "leaf hashes of f.bin do not match its content hash"),
        ("size", "leaf hashes of f.bin are for"),
        ("leaf", "does not match"),
    ],
)
def test_a_lying_tree_or_leaf_replaces_nothing(tmp_path: Path, case: str, words: str) -> None:
    out = _old_copy(tmp_path)

    async def scenario() -> tuple[Finished, list[wire.GetRequest]]:
        async with hostile_sender() as sender:
            manifest, blob = single_file(sender, "f.bin", NEW)
            sender.trees = {blob.root: tree_answer(blob)}
            if case == "hashes":
                sender.trees[blob.root] = _lying_hashes(blob)
            elif case == "size":
                sender.trees[blob.root] = _other_size(blob)
            else:
                sender.answers[blob.root] = body_answer(flip(blob.body(((3, 4),)), -5))
            return await _update(tmp_path, sender, manifest), sender.requests

    finished, requests = asyncio.run(scenario())
    assert finished.returncode == EXIT_INTEGRITY, finished.stderr
    assert words in error_line(finished.stderr)
    assert final_files(out) == {"f.bin": OLD}
    assert [path.name for path in out.iterdir()] == ["f.bin"]  # no partial folder
    if case != "leaf":  # nothing but the file list was asked for
        assert [request.blob_hash for request in requests[1:]] == []


def test_an_honest_update_asks_only_for_the_changed_leaf(tmp_path: Path) -> None:
    out = _old_copy(tmp_path)

    async def scenario() -> tuple[Finished, list[wire.GetRequest]]:
        async with hostile_sender() as sender:
            manifest, blob = single_file(sender, "f.bin", NEW)
            sender.trees = {blob.root: tree_answer(blob)}
            return await _update(tmp_path, sender, manifest), sender.requests

    finished, requests = asyncio.run(scenario())
    assert finished.returncode == EXIT_OK, finished.stderr
    assert final_files(out) == {"f.bin": NEW}
    assert [request.ranges for request in requests[1:]] == [((3, 4),)]


def test_a_sender_without_get_tree_sends_the_whole_file(tmp_path: Path) -> None:
    out = _old_copy(tmp_path)

    async def scenario() -> tuple[Finished, list[wire.GetRequest]]:
        async with hostile_sender() as sender:
            manifest, blob = single_file(sender, "f.bin", NEW)
            sender.answers[blob.root] = blob_answer(blob)  # and no trees
            return await _update(tmp_path, sender, manifest), sender.requests

    finished, requests = asyncio.run(scenario())
    assert finished.returncode == EXIT_OK, finished.stderr
    assert final_files(out) == {"f.bin": NEW}
    assert len(requests) == 2 and requests[1].ranges[0][0] == 0


def test_the_real_sender_answers_get_tree_only_for_large_file_blobs(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(NEW)
    (src / "small.txt").write_bytes(b"one leaf")
    big = Outboard.from_bytes(NEW)
    small = Outboard.from_bytes(b"one leaf")

    async def scenario() -> dict[str, tuple[int | None, bytes]]:
        replies = {}
        async with start_provider([src]) as running, client(running.ticket) as connection:
            asked = {
                "big": wire.encode_request(wire.TreeRequest(big.root)),
                "small": wire.encode_request(wire.TreeRequest(small.root)),
                "unknown": wire.encode_request(wire.TreeRequest(bytes(range(32)))),
                "short": wire.encode_request(wire.TreeRequest(big.root))[:-1],
            }
            for name, payload in asked.items():
                reply = await raw_request(connection, payload)
                replies[name] = (reply.reset_code, reply.data)
        return replies

    replies = asyncio.run(scenario())
    size = len(NEW).to_bytes(wire.TREE_SIZE_BYTES, "big")
    assert replies["big"] == (None, bytes([wire.STATUS_OK]) + size + big.leaf_hashes)
    assert replies["small"][0] == wire.ERROR_BAD_REQUEST
    assert replies["unknown"] == (None, bytes([wire.STATUS_NOT_FOUND]))
    assert replies["short"][0] == wire.ERROR_BAD_REQUEST
