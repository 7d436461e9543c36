"""GET_MANY (many small files on one stream) against hostile peers.

Receivers that misbehave against the real sender: a blob too large for the
request, too many or repeated hashes, unknown hashes, a file changed since
the ticket. Senders that lie in a GET_MANY answer to the real receiver: a
body of another file, a corrupt byte, bytes beyond the end, an answer cut
short, or no GET_MANY at all (an older sender). After each, nothing that is
not byte-exact is under a final name.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from p2pcp.blobs.collection import Entry, Manifest
from p2pcp.blobs.encoding import ALL, LeafVerified, RangeDecoder, encoded_size
from p2pcp.blobs.tree import LEAF_SIZE
from p2pcp.core.errors import IntegrityError, P2pcpError, RemoteProtocolError
from p2pcp.net.quic.endpoint import Stream
from p2pcp.transfer import wire
from tests.support.peers import (
    Blob,
    HostileSender,
    Reply,
    blob_answer,
    client,
    fetch,
    hostile_sender,
    manifest_blob,
    raw_request,
    start_provider,
)

from .harness import final_files

RNG = random.Random(17)
SMALL_FILES = {f"src/d{i % 3}/f{i:02d}": RNG.randbytes(RNG.randrange(0, 3000)) for i in range(40)}
BIG = RNG.randbytes(2 * LEAF_SIZE + 5)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    for rel, data in SMALL_FILES.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (tmp_path / "src" / "big.bin").write_bytes(BIG)
    return tmp_path / "src"


def _many_payload(hashes: list[bytes]) -> bytes:
    """A GET_MANY written by hand (the encoder would refuse bad ones)."""
    return bytes([wire.REQUEST_GET_MANY]) + len(hashes).to_bytes(2, "big") + b"".join(hashes)


def _parse_many(reply: Reply, sizes: list[int | None]) -> list[bytes | None]:
    """Split a GET_MANY answer by the sizes expected (None: NOT_FOUND
    expected); verify each body; return each file's bytes or None."""
    data, at, out = reply.data, 0, []
    for size in sizes:
        status, at = data[at], at + 1
        if size is None:
            assert status == wire.STATUS_NOT_FOUND
            out.append(None)
            continue
        assert status == wire.STATUS_OK
        length = encoded_size(size, ALL)
        body, at = data[at : at + length], at + length
        out.append(body)
    assert at == len(data), "bytes after the last body"
    return out


def test_provider_answers_many_in_order_with_not_found_between(source: Path) -> None:
    async def scenario() -> None:
        async with start_provider([source]) as running, client(running.ticket) as connection:
            files = [e for e in running.provider.collection.manifest.files if e.size < LEAF_SIZE]
            unknown = bytes(range(32))
            asked = [files[0].root, unknown, files[1].root, files[2].root]
            reply = await raw_request(connection, _many_payload(asked))
            bodies = _parse_many(reply, [files[0].size, None, files[1].size, files[2].size])
            for entry, body in zip([files[0], None, files[1], files[2]], bodies, strict=True):
                if entry is None:
                    continue
                assert body is not None
                decoder = RangeDecoder(entry.root, ALL, expected_size=entry.size)
                decoder.receive_data(body)
                leaves = []
                while (event := decoder.next_event()) is not None:
                    if isinstance(event, LeafVerified):
                        leaves.append(event.data)
                assert decoder.is_finished
                assert b"".join(leaves) == SMALL_FILES[entry.path]

    asyncio.run(scenario())


def test_provider_bounds_many(source: Path, tmp_path: Path) -> None:
    """A blob larger than one leaf, too many hashes, a hash twice, a bad
    length: each reset with ERROR_BAD_REQUEST; the connection still serves."""

    async def scenario() -> None:
        async with start_provider([source]) as running, client(running.ticket) as connection:
            manifest = running.provider.collection.manifest
            big = next(e.root for e in manifest.files if e.path == "src/big.bin")
            small = [e.root for e in manifest.files if e.size < LEAF_SIZE]
            too_many = [i.to_bytes(32, "big") for i in range(wire.MAX_MANY_BLOBS + 1)]
            refused = {
                "larger than one leaf": _many_payload([small[0], big]),
                "too many": _many_payload(too_many),
                "twice": _many_payload([small[0], small[0]]),
                "none": _many_payload([]),
                "short": _many_payload([small[0]])[:-1],
            }
            for name, payload in refused.items():
                reply = await raw_request(connection, payload)
                assert reply == Reply(reset_code=wire.ERROR_BAD_REQUEST), name
            # The largest request allowed is answered.
            most = small + [i.to_bytes(32, "big") for i in range(wire.MAX_MANY_BLOBS - len(small))]
            reply = await raw_request(connection, _many_payload(most))
            assert reply.reset_code is None and reply.data.count(wire.STATUS_NOT_FOUND) >= 200
            await fetch(running.ticket, tmp_path / "out")
            expected = {**SMALL_FILES, "src/big.bin": BIG}
            assert final_files(tmp_path / "out") == expected

    asyncio.run(scenario())


def test_provider_refuses_a_small_file_changed_since_the_ticket(source: Path) -> None:
    async def scenario() -> None:
        async with start_provider([source]) as running, client(running.ticket) as connection:
            entry = running.provider.collection.manifest.files[1]
            assert entry.path in SMALL_FILES
            (source.parent / entry.path).write_bytes(b"changed" + SMALL_FILES[entry.path])
            reply = await raw_request(connection, _many_payload([entry.root]))
            assert reply.reset_code == wire.ERROR_CONTENT_CHANGED

    asyncio.run(scenario())


# -- senders that lie in a GET_MANY answer ---------------------------------------


def _offer(sender: HostileSender, count: int) -> tuple[Manifest, bytes, dict[bytes, Blob]]:
    """Offer ``count`` small files honestly (manifest and per-file GETs);
    return the manifest, its root and the files' blobs."""
    blobs = {}
    entries = []
    for number in range(count):
        blob = Blob.of(f"file {number}\n".encode() * (number + 1))
        blobs[blob.root] = blob
        entries.append(Entry(f"top/f{number:03d}", len(blob.data), blob.root))
    manifest = Manifest.folder("top", entries, [])
    manifest_b = manifest_blob(manifest)
    sender.answers[manifest_b.root] = blob_answer(manifest_b)
    for blob in blobs.values():
        sender.answers[blob.root] = blob_answer(blob)
    return manifest, manifest_b.root, blobs


ManyAnswer = Callable[[Stream, wire.ManyRequest], Awaitable[None]]


def _many_answer(blobs: dict[bytes, Blob], lie: Callable[[list[bytes]], bytes]) -> ManyAnswer:
    """Answer a GET_MANY with ``lie`` applied to the honest per-blob answers."""

    async def answer(stream: Stream, request: wire.ManyRequest) -> None:
        honest = [bytes([wire.STATUS_OK]) + blobs[h].body() for h in request.blob_hashes]
        await stream.write(lie(honest))
        await stream.finish()

    return answer


def _swap_second(parts: list[bytes]) -> bytes:
    """The second file's answer is the first file's body (another file's proof)."""
    return parts[0] + parts[0] + b"".join(parts[2:])


def _flip_third(parts: list[bytes]) -> bytes:
    third = bytearray(parts[2])
    third[-1] ^= 0x40
    return b"".join(parts[:2]) + bytes(third) + b"".join(parts[3:])


LIES: dict[str, tuple[Callable[[list[bytes]], bytes], type[P2pcpError]]] = {
    "another file's body": (_swap_second, IntegrityError),
    "a corrupt byte": (_flip_third, IntegrityError),
    "bytes after the end": (lambda parts: b"".join(parts) + b"\x00", RemoteProtocolError),
    "cut short": (lambda parts: b"".join(parts)[:-3], IntegrityError),
    "unknown status": (lambda parts: b"\x07" + b"".join(parts)[1:], RemoteProtocolError),
}


@pytest.mark.parametrize("name", list(LIES))
def test_lying_many_answer_leaves_only_exact_files(name: str, tmp_path: Path) -> None:
    lie, error = LIES[name]

    async def scenario() -> None:
        async with hostile_sender() as sender:
            manifest, root, blobs = _offer(sender, 30)
            sender.many = _many_answer(blobs, lie)
            ticket = sender.ticket(root, manifest.total_size)
            out = tmp_path / "out"
            with pytest.raises(error):
                await fetch(ticket, out)
            assert sender.many_requests
            truth = {e.path: blobs[e.root].data for e in manifest.files}
            for rel, data in final_files(out).items():
                assert truth[rel] == data, rel

    asyncio.run(scenario())


def test_a_sender_without_get_many_is_asked_per_file(tmp_path: Path) -> None:
    """The harness resets GET_MANY as an older sender does: the receiver
    asks with a GET per file, once, and gets everything."""

    async def scenario() -> None:
        async with hostile_sender() as sender:
            manifest, root, blobs = _offer(sender, 30)
            await fetch(sender.ticket(root, manifest.total_size), tmp_path / "out")
            assert len(sender.many_requests) == 1  # asked once, then per file
            fetched = {request.blob_hash for request in sender.requests}
            assert set(blobs) <= fetched
            truth = {e.path: blobs[e.root].data for e in manifest.files}
            assert final_files(tmp_path / "out") == truth

    asyncio.run(scenario())
