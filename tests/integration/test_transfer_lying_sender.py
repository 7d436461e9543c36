"""A sender that lies about content: the real fetcher must stop with an
IntegrityError (exit 4) and leave no file, partial or final, behind.

The lying sender is the hostile tests' ``HostileSender`` (tests/support/peers.py:
the project's own sans-IO parts over a real Endpoint on loopback), answering
the file whether it is asked for by hash or early, as the first item.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from p2pcp.blobs.tree import LEAF_SIZE
from p2pcp.core.errors import EXIT_INTEGRITY, IntegrityError
from p2pcp.transfer.fetcher import Fetcher, FetchOptions
from tests.support.peers import RECEIVER_KEY, body_answer, flip, hostile_sender, single_file


async def _lying_transfer(out: Path, corrupt_at: int | None) -> None:
    content = os.urandom(3 * LEAF_SIZE + 100)
    async with hostile_sender() as sender:
        manifest, file_blob = single_file(sender, "victim.bin", content)
        sender.items = {0: file_blob.root}
        # Corrupt one byte of the file's response body (header, a parent or a leaf).
        if corrupt_at is not None:
            sender.answers[file_blob.root] = body_answer(flip(file_blob.body(), corrupt_at))
        ticket = sender.ticket(manifest.root, len(content))
        fetcher = Fetcher(ticket, FetchOptions(out_dir=out), lambda event: None)
        await asyncio.wait_for(fetcher.run(RECEIVER_KEY), 30)


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
