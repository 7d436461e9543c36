"""Receivers against a real share (Provider + ShareSource in process): no
blob before a snapshot, a wrong secret and a receiver not on the allow list
get nothing, only kept snapshots are served; the real Fetcher with a share
ticket follows the share as it changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from p2pcp.blobs.tree import LEAF_SIZE
from p2pcp.core.errors import AccessDeniedError
from p2pcp.core.identity import NodeId, SecretKey
from p2pcp.core.ticket import Ticket, TicketKind
from p2pcp.net import Endpoint
from p2pcp.transfer import events, wire
from p2pcp.transfer.provider import MAX_KEPT_SNAPSHOTS, Provider
from p2pcp.transfer.share import ShareOptions, ShareSource
from tests.support.peers import (
    IMPOSTOR_KEY,
    RECEIVER_KEY,
    SENDER_KEY,
    Reply,
    client,
    fetch,
    get_payload,
    raw_request,
)

from .harness import final_files

BIG = os.urandom(3 * LEAF_SIZE + 5)


@dataclass
class RunningShare:
    provider: Provider
    ticket: Ticket
    secret: bytes
    events: list[object]


@contextlib.asynccontextmanager
async def start_share(
    paths: list[Path], allow: tuple[NodeId, ...] = ()
) -> AsyncIterator[RunningShare]:
    """The real Provider serving a real ShareSource on loopback."""
    secret = os.urandom(32)
    seen: list[object] = []
    source = ShareSource(ShareOptions(paths=tuple(paths), allow=allow), secret, seen.append)
    endpoint = await Endpoint.bind(SENDER_KEY)
    provider = Provider(None, endpoint, seen.append, share=source)
    ticket = Ticket(
        node_id=bytes(SENDER_KEY.public),
        relay_url=None,
        addresses=(("127.0.0.1", endpoint.local_port),),
        root_hash=secret,
        total_size=0,
        kind=TicketKind.SHARE,
    )
    serving = asyncio.ensure_future(provider.serve())
    try:
        yield RunningShare(provider, ticket, secret, seen)
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        await endpoint.close()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(BIG)
    (src / "small.txt").write_bytes(b"small\n")
    return src


def _snapshot_payload(secret: bytes) -> bytes:
    return wire.encode_request(wire.SnapshotRequest(secret))


def _answer(reply: Reply) -> wire.Snapshot:
    assert reply.status == wire.STATUS_OK, reply
    return wire.decode_snapshot(reply.data[1:])


def test_blobs_only_after_a_snapshot_and_only_of_kept_snapshots(
    source: Path, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with start_share([source]) as share, client(share.ticket) as connection:
            first = _answer(await raw_request(connection, _snapshot_payload(share.secret)))
            assert first.file_count == 2 and first.total_size == len(BIG) + 6
            # Another connection has had no snapshot: nothing at all.
            async with client(share.ticket) as stranger:
                reply = await raw_request(stranger, get_payload(first.root, [(0, 1)]))
                assert reply.status == wire.STATUS_NOT_FOUND
                item = wire.encode_request(wire.ItemRequest(first.root, 0))
                assert (await raw_request(stranger, item)).status == wire.STATUS_NOT_FOUND
            # This one has: the manifest is served.
            reply = await raw_request(connection, get_payload(first.root, [(0, 2**62)]))
            assert reply.status == wire.STATUS_OK
            # Change the share MAX_KEPT_SNAPSHOTS + 1 times, asking each time on
            # fresh connections that then close: the first snapshot goes.
            for number in range(MAX_KEPT_SNAPSHOTS + 1):
                (source / "small.txt").write_bytes(f"version {number}\n".encode())
                async with client(share.ticket) as other:
                    latest = _answer(await raw_request(other, _snapshot_payload(share.secret)))
                    assert latest.root != first.root
                    await other.close("done")
            # The first connection still holds its snapshot ...
            reply = await raw_request(connection, get_payload(first.root, [(0, 1)]))
            assert reply.status == wire.STATUS_OK
            # ... and, having had one, may fetch the newest (kept) one too.
            reply = await raw_request(connection, get_payload(latest.root, [(0, 1)]))
            assert reply.status == wire.STATUS_OK
            # A connection that asked for only the newest cannot have one
            # that nobody holds any more (the second snapshot).
            taken = [e for e in share.events if isinstance(e, events.SnapshotTaken)]
            second = bytes.fromhex(taken[1].root)
            assert second not in (first.root, latest.root)
            async with client(share.ticket) as late:
                _answer(await raw_request(late, _snapshot_payload(share.secret)))
                reply = await raw_request(late, get_payload(second, [(0, 1)]))
                assert reply.status == wire.STATUS_NOT_FOUND

    asyncio.run(scenario())


def test_a_wrong_secret_is_not_found_and_a_receiver_not_allowed_is_denied(
    source: Path, tmp_path: Path
) -> None:
    async def scenario() -> None:
        allowed = (RECEIVER_KEY.public,)
        async with start_share([source], allow=allowed) as share:
            async with client(share.ticket, key=IMPOSTOR_KEY) as connection:
                reply = await raw_request(connection, _snapshot_payload(os.urandom(32)))
                assert reply == Reply(bytes([wire.STATUS_NOT_FOUND]))
                reply = await raw_request(connection, _snapshot_payload(share.secret))
                assert reply == Reply(bytes([wire.STATUS_DENIED]))
                # Denied means nothing else either, whatever it asks for.
                taken = [e for e in share.events if isinstance(e, events.SnapshotTaken)]
                assert not taken  # no scan was even made for it
            refused = [e for e in share.events if isinstance(e, events.ShareRefused)]
            assert [e.is_unknown_ticket for e in refused] == [True, False]
            assert refused[1].node_id == str(IMPOSTOR_KEY.public)
            with pytest.raises(AccessDeniedError, match=str(IMPOSTOR_KEY.public)):
                await _fetch_as(share.ticket, tmp_path / "denied", IMPOSTOR_KEY)
            assert not (tmp_path / "denied").exists()
            # The allowed receiver gets everything.
            await fetch(share.ticket, tmp_path / "out")
            assert final_files(tmp_path / "out") == {
                "src/big.bin": BIG,
                "src/small.txt": b"small\n",
            }

    asyncio.run(scenario())


async def _fetch_as(ticket: Ticket, out: Path, key: SecretKey) -> None:
    from p2pcp.transfer.fetcher import Fetcher
    from tests.support.peers import fetch_options

    fetcher = Fetcher(ticket, fetch_options(out), lambda event: None)
    await asyncio.wait_for(fetcher.run(key), 20)


def test_the_fetcher_follows_the_share_and_resumes_in_the_secrets_partial_folder(
    source: Path, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with start_share([source]) as share:
            out = tmp_path / "out"
            await fetch(share.ticket, out)
            assert final_files(out)["src/small.txt"] == b"small\n"
            (source / "small.txt").write_bytes(b"changed\n")
            (source / "new.txt").write_bytes(b"new\n")
            await fetch(share.ticket, tmp_path / "out2")
            assert final_files(tmp_path / "out2") == {
                "src/big.bin": BIG,
                "src/small.txt": b"changed\n",
                "src/new.txt": b"new\n",
            }
            assert not [p for p in (tmp_path / "out2").iterdir() if p.name.startswith(".p2pcp")]

    asyncio.run(scenario())


def test_a_manifest_root_is_not_a_share_secret(source: Path) -> None:
    async def scenario() -> None:
        async with start_share([source]) as share, client(share.ticket) as connection:
            first = _answer(await raw_request(connection, _snapshot_payload(share.secret)))
            reply = await raw_request(connection, _snapshot_payload(first.root))
            assert reply == Reply(bytes([wire.STATUS_NOT_FOUND]))

    asyncio.run(scenario())
