"""A sender that lies about content or breaks the stream: the real receiver
(Fetcher, in process) must stop with the right error and write nothing that
is not byte-exact under a final name, and nothing outside its folder.

Body layout of the 4-leaf test file (3 full leaves + 100 bytes), pre-order:
header (40) | top pair (64) | node(0,2) pair (64) | leaf 0 | leaf 1 |
node(2,2) pair (64) | leaf 2 | leaf 3 (100 bytes).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from p2pcp.blobs.collection import Entry, Manifest
from p2pcp.blobs.tree import LEAF_SIZE
from p2pcp.core.errors import (
    EXIT_INTEGRITY,
    IntegrityError,
    NotFoundError,
    P2pcpError,
    RemoteProtocolError,
)
from p2pcp.transfer import wire
from tests.support.peers import (
    Blob,
    blob_answer,
    body_answer,
    fetch,
    flip,
    hostile_sender,
    manifest_blob,
    single_file,
)

from .harness import final_files, snapshot

CONTENT = random.Random(4).randbytes(3 * LEAF_SIZE + 100)
LEAF0 = 40 + 64 + 64
LEAF2 = LEAF0 + 2 * LEAF_SIZE + 64

Lie = Callable[[bytes], bytes]

LIES: dict[str, tuple[Lie, type[P2pcpError], str]] = {
    "corrupt-leaf": (lambda body: flip(body, LEAF2 + 7), IntegrityError, "leaf 2 does not match"),
    "corrupt-last-byte": (lambda body: flip(body, -1), IntegrityError, "leaf 3 does not match"),
    "wrong-proof-node": (
        lambda body: body[:40] + random.Random(1).randbytes(64) + body[104:],
        IntegrityError,
        "proof node over leaf 0 does not match",
    ),
    "wrong-inner-proof-node": (
        lambda body: body[: LEAF2 - 64] + bytes(64) + body[LEAF2:],
        IntegrityError,
        "proof node over leaf 2 does not match",
    ),
    "wrong-size-in-header": (lambda body: flip(body, 0), IntegrityError, "header does not match"),
    "leaf-cut-short": (
        lambda body: body[: LEAF0 + LEAF_SIZE + LEAF_SIZE // 2],
        IntegrityError,
        "ended early",
    ),
    "header-only": (lambda body: body[:40], IntegrityError, "ended early"),
    "empty-body": (lambda body: b"", IntegrityError, "ended early"),
    "extra-bytes-after-response": (
        lambda body: body + b"\x00trailing",
        RemoteProtocolError,
        "after the end of a blob",
    ),
    "one-extra-byte": (lambda body: body + b"\x00", RemoteProtocolError, "after the end"),
}


def _outside(tmp_path: Path) -> dict[str, bytes]:
    return {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("out/")}


# How the receiver gets the file's body: the GET_ITEM it sends beside the
# manifest's GET (a sender that knows it), or a GET once the manifest is in.
ASKED = ["get-item", "get"]


async def _lying_file(tmp_path: Path, lie: Lie, asked: str = "get") -> None:
    async with hostile_sender() as sender:
        manifest, file_blob = single_file(sender, "victim.bin", CONTENT)
        sender.answers[file_blob.root] = body_answer(lie(file_blob.body()))
        if asked == "get-item":
            sender.items = {0: file_blob.root}
        await fetch(sender.ticket(manifest.root, len(CONTENT)), tmp_path / "out")
        # each way is the one that served the file
        file_gets = [r for r in sender.requests if r.blob_hash == file_blob.root]
        assert len(sender.item_requests) == 1
        assert len(file_gets) == (0 if asked == "get-item" else 1)


@pytest.mark.parametrize("asked", ASKED)
@pytest.mark.parametrize("name", list(LIES))
def test_lying_file_body_is_refused(tmp_path: Path, name: str, asked: str) -> None:
    lie, error, message = LIES[name]
    before = _outside(tmp_path)
    with pytest.raises(error) as caught:
        asyncio.run(_lying_file(tmp_path, lie, asked))
    assert caught.value.exit_code == EXIT_INTEGRITY
    assert message in str(caught.value)
    assert final_files(tmp_path / "out") == {}
    assert _outside(tmp_path) == before


@pytest.mark.parametrize("asked", ASKED)
def test_harness_is_honest_without_a_lie(tmp_path: Path, asked: str) -> None:
    asyncio.run(_lying_file(tmp_path, lambda body: body, asked))
    assert final_files(tmp_path / "out") == {"victim.bin": CONTENT}


async def _other_blob_for_the_first_item(tmp_path: Path) -> None:
    """GET_ITEM 0 is answered with a valid body of another blob the sender
    serves (the second file): the first file's hash, from the manifest,
    refuses it."""
    async with hostile_sender() as sender:
        first, second = Blob.of(CONTENT), Blob.of(CONTENT[:-1] + b"!")
        manifest = manifest_blob(
            Manifest(
                files=(
                    Entry("dir/a.bin", len(CONTENT), first.root),
                    Entry("dir/b.bin", len(CONTENT), second.root),
                ),
                empty_dirs=(),
                name="dir",
            )
        )
        for blob in (manifest, first, second):
            sender.answers[blob.root] = blob_answer(blob)
        sender.items = {0: second.root}
        await fetch(sender.ticket(manifest.root, 2 * len(CONTENT)), tmp_path / "out")


def test_another_files_body_for_the_early_request_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IntegrityError, match="header does not match") as caught:
        asyncio.run(_other_blob_for_the_first_item(tmp_path))
    assert caught.value.exit_code == EXIT_INTEGRITY
    assert final_files(tmp_path / "out") == {}


async def _lying_manifest(tmp_path: Path, lie: Lie) -> None:
    async with hostile_sender() as sender:
        manifest, _ = single_file(sender, "victim.bin", CONTENT)
        sender.answers[manifest.root] = body_answer(lie(manifest.body()))
        await fetch(sender.ticket(manifest.root, len(CONTENT)), tmp_path / "out")


@pytest.mark.parametrize(
    "name", ["corrupt-last-byte", "wrong-proof-node", "extra-bytes-after-response", "header-only"]
)
def test_lying_manifest_body_is_refused(tmp_path: Path, name: str) -> None:
    lie, error, _ = LIES[name]
    if name == "wrong-proof-node":
        # The manifest is one leaf: there is no proof node, so lie in the header instead.
        lie, error = (lambda body: flip(body, 20)), IntegrityError
    with pytest.raises(error) as caught:
        asyncio.run(_lying_manifest(tmp_path, lie))
    assert caught.value.exit_code == EXIT_INTEGRITY
    assert final_files(tmp_path / "out") == {}


async def _other_blob_for_the_file(tmp_path: Path) -> None:
    """The sender answers the file's hash with a valid body of another blob."""
    async with hostile_sender() as sender:
        manifest, file_blob = single_file(sender, "victim.bin", CONTENT)
        sender.answers[file_blob.root] = blob_answer(Blob.of(CONTENT[:-1] + b"!"))
        await fetch(sender.ticket(manifest.root, len(CONTENT)), tmp_path / "out")


def test_valid_body_of_another_blob_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IntegrityError, match="header does not match"):
        asyncio.run(_other_blob_for_the_file(tmp_path))
    assert final_files(tmp_path / "out") == {}


async def _manifest_size_lies(tmp_path: Path) -> None:
    """The manifest says 10 bytes; the blob (whose root binds its size) has more."""
    async with hostile_sender() as sender:
        file_blob = Blob.of(CONTENT)
        manifest = manifest_blob(Manifest.single_file("victim.bin", 10, file_blob.root))
        sender.answers[manifest.root] = blob_answer(manifest)
        sender.answers[file_blob.root] = blob_answer(file_blob)
        await fetch(sender.ticket(manifest.root, 10), tmp_path / "out")


def test_manifest_size_that_disagrees_with_the_blob_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IntegrityError, match="where the manifest says 10"):
        asyncio.run(_manifest_size_lies(tmp_path))
    assert final_files(tmp_path / "out") == {}


async def _status(tmp_path: Path, status: int) -> None:
    async with hostile_sender() as sender:
        manifest, file_blob = single_file(sender, "victim.bin", CONTENT)
        sender.answers[file_blob.root] = body_answer(file_blob.body(), status=status)
        await fetch(sender.ticket(manifest.root, len(CONTENT)), tmp_path / "out")


def test_not_found_for_a_listed_file(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"does not have victim\.bin"):
        asyncio.run(_status(tmp_path, wire.STATUS_NOT_FOUND))
    assert final_files(tmp_path / "out") == {}


def test_unknown_status_byte(tmp_path: Path) -> None:
    with pytest.raises(RemoteProtocolError, match="unknown status 7"):
        asyncio.run(_status(tmp_path, 7))
    assert final_files(tmp_path / "out") == {}


async def _folder_with_one_bad_file(tmp_path: Path) -> dict[str, bytes]:
    """Several good files and one lying one: whatever is placed must be exact."""
    rng = random.Random(9)
    contents = {f"d/good{i}.bin": rng.randbytes(LEAF_SIZE + i) for i in range(5)}
    contents["d/sub/bad.bin"] = rng.randbytes(2 * LEAF_SIZE)
    blobs = {path: Blob.of(data) for path, data in contents.items()}
    manifest = manifest_blob(
        Manifest.folder(
            "d", [Entry(path, len(contents[path]), blobs[path].root) for path in contents], []
        )
    )
    async with hostile_sender() as sender:
        sender.answers[manifest.root] = blob_answer(manifest)
        for blob in blobs.values():
            sender.answers[blob.root] = blob_answer(blob)
        bad = blobs["d/sub/bad.bin"]
        sender.answers[bad.root] = body_answer(flip(bad.body(), -5))
        total = sum(len(data) for data in contents.values())
        with pytest.raises(IntegrityError):
            await fetch(sender.ticket(manifest.root, total), tmp_path / "out")
    return contents


def test_one_lying_file_in_a_folder_leaves_only_exact_files(tmp_path: Path) -> None:
    contents = asyncio.run(_folder_with_one_bad_file(tmp_path))
    placed = final_files(tmp_path / "out")
    assert "d/sub/bad.bin" not in placed
    for path, data in placed.items():
        assert contents[path] == data, path
