"""A sender that lies about content: the real fetcher must stop with an
IntegrityError (exit 4) and leave no file, partial or final, behind.

The lying sender is built from the project's own sans-IO parts (tree,
encoding, manifest, wire) over a real Endpoint on loopback.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from p2pcp.blobs.collection import Manifest, encode_manifest
from p2pcp.blobs.encoding import encode_bytes
from p2pcp.blobs.tree import LEAF_SIZE, Outboard
from p2pcp.core.errors import EXIT_INTEGRITY, IntegrityError
from p2pcp.core.identity import SecretKey
from p2pcp.core.ticket import Ticket
from p2pcp.net.quic.endpoint import Endpoint, Stream
from p2pcp.transfer import wire
from p2pcp.transfer.fetcher import Fetcher, FetchOptions

SENDER_KEY = SecretKey(bytes(range(32)))
RECEIVER_KEY = SecretKey(bytes(range(1, 33)))


async def _read_all(stream: Stream) -> bytes:
    data = bytearray()
    while chunk := await stream.read():
        data += chunk
    return bytes(data)


def _flip(body: bytes, position: int) -> bytes:
    position %= len(body)
    return body[:position] + bytes([body[position] ^ 0x01]) + body[position + 1 :]


async def _lying_transfer(out: Path, corrupt_at: int | None) -> None:
    content = os.urandom(3 * LEAF_SIZE + 100)
    file_outboard = Outboard.from_bytes(content)
    manifest = Manifest.single_file("victim.bin", len(content), file_outboard.root)
    manifest_bytes = encode_manifest(manifest)
    manifest_outboard = Outboard.from_bytes(manifest_bytes)
    bodies = {
        manifest_outboard.root: encode_bytes(manifest_outboard, manifest_bytes),
        file_outboard.root: encode_bytes(file_outboard, content),
    }
    # Corrupt one byte of the file's response body (header, a parent or a leaf).
    if corrupt_at is not None:
        bodies[file_outboard.root] = _flip(bodies[file_outboard.root], corrupt_at)

    sender = await Endpoint.bind(SENDER_KEY)

    async def serve() -> None:
        connection = await sender.accept()
        while True:
            stream = await connection.accept_stream()
            request = wire.decode_request(await _read_all(stream))
            if isinstance(request, wire.ItemRequest):  # the first file, asked for early
                body = bodies[manifest.files[request.index].root]
            elif isinstance(request, wire.GetRequest):
                body = bodies[request.blob_hash]
            else:
                body = b""
            await stream.write(bytes([wire.STATUS_OK]) + body)
            await stream.finish()

    server_task = asyncio.ensure_future(serve())
    try:
        ticket = Ticket(
            node_id=bytes(SENDER_KEY.public),
            relay_url=None,
            addresses=(("127.0.0.1", sender.local_port),),
            root_hash=manifest_outboard.root,
            total_size=len(content),
        )
        fetcher = Fetcher(ticket, FetchOptions(out_dir=out), lambda event: None)
        await asyncio.wait_for(fetcher.run(RECEIVER_KEY), 30)
    finally:
        server_task.cancel()
        await asyncio.gather(server_task, return_exceptions=True)
        await sender.close()


@pytest.mark.parametrize(
    "corrupt_at",
    [0, 8, 40, 41, 100, 40 + 3 * 64 + 5, 40 + 3 * 64 + LEAF_SIZE * 2 + 7, -1],
    ids=["size", "top", "parent", "parent2", "parent3", "first-leaf", "third-leaf", "last"],
)
def test_corrupt_byte_stops_with_integrity_error_and_no_file(
    tmp_path: Path, corrupt_at: int
) -> None:
    out = tmp_path / "out"
    with pytest.raises(IntegrityError) as caught:
        asyncio.run(_lying_transfer(out, corrupt_at))
    assert caught.value.exit_code == EXIT_INTEGRITY
    leftovers = (
        sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) if out.exists() else []
    )
    assert leftovers == []


def test_honest_sender_in_the_same_harness_succeeds(tmp_path: Path) -> None:
    """The harness itself is sound: without corruption the fetch succeeds."""
    asyncio.run(_lying_transfer(tmp_path / "out", None))
    assert (tmp_path / "out" / "victim.bin").stat().st_size == 3 * LEAF_SIZE + 100
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["victim.bin"]
