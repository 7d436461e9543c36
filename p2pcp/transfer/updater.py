"""``receive --update``, the network side: a file that differs from the
sender's is replaced by a new version built from the leaves it shares with
the old one (patch.py does the file work and says why each step is safe).

For a blob larger than one leaf whose old version is here (the plan's
``updates``), the receiver asks for its leaf hashes (GET_TREE, wire.py) and
trusts them only once they hash up to the blob's root
(``patch.check_tree``); the patch then plans which leaves the old file
gives, the rest are fetched with GET requests of ranges
(``patch.request_ranges``), each leaf proven against the root on its way,
and the new version is verified whole before it is renamed over the old
file. A sender that does not know GET_TREE has the file fetched whole, as
before (the fetcher's usual GET).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from p2pcp.blobs.collection import Entry
from p2pcp.blobs.encoding import LeafReceived, RangeDecoder
from p2pcp.blobs.names import display_path
from p2pcp.blobs.tree import leaf_count
from p2pcp.core.errors import IntegrityError, LocalProtocolError, StorageError, StreamResetError
from p2pcp.net import Connection
from p2pcp.transfer import events, wire
from p2pcp.transfer.patch import PLAN_ATTEMPTS, Patch, check_tree, request_ranges
from p2pcp.transfer.requests import (
    BodyReader,
    check_status,
    drop,
    fetch_blob,
    send_request,
    watched,
)
from p2pcp.transfer.store import Store

if TYPE_CHECKING:
    from p2pcp.transfer.fetcher import Fetcher, Progress

# The leaf hashes are read in pieces of at most this many bytes, the
# watchdog fed after each (a 64 GiB file has 8 MiB of them).
TREE_PIECE_BYTES = 8 * 1024 * 1024


async def update_file(
    fetcher: Fetcher,
    connection: Connection,
    store: Store,
    root: bytes,
    entries: tuple[Entry, ...],
    progress: Progress,
) -> bool:
    """--update of a blob larger than one leaf: its leaf hashes (GET_TREE),
    then its new version built from the old file's leaves and the
    sender's for the rest, verified whole and renamed over the old file
    (patch.py says why each step is safe). False, with nothing done, from
    a sender without GET_TREE: the caller fetches the whole file."""
    plan = progress.plan
    if plan is None:
        raise LocalProtocolError("internal: an update without a plan")
    base = plan.updates[root]
    first = entries[0]
    timeout_s = fetcher.options.progress_timeout_s
    tree = await _fetch_tree(connection, root, first.size, first.path, timeout_s)
    if tree is None:
        return False
    fetcher.emit(events.FileStarted(first.path, first.size))
    patch = store.open_patch(root, first.size, base, tree)
    fetched = progress.fetched_for_update
    try:
        for _attempt in range(PLAN_ATTEMPTS):
            fetched_before = fetched[root]
            work = await patch.prepare(base.leaf_hashes)
            reported = progress.accounted.get(root, 0)
            if patch.reused_bytes > reported:  # the progress bar's share of it
                progress.accounted[root] = patch.reused_bytes
                fetcher.emit(events.BytesReceived(first.path, patch.reused_bytes - reported))
            # The pass runs while the changed leaves come (patch.py, step 4).
            fetching = _fetch_leaves(fetcher, connection, root, first, patch, work.fetch, progress)
            if await patch.finish_while(fetching):
                break
        else:
            raise StorageError(
                f"the new version of {display_path(first.path)} changed in the partial "
                "folder while it was built; run the same command again"
            )
        store.place_patch(patch, entries)
    finally:
        await patch.close()
    result = patch.result
    if result is None or result.blake3_hex is None:
        raise LocalProtocolError("internal: an update placed without its hash")
    # Leaves this run fetched and a later plan kept count as fetched.
    reused = max(0, patch.reused_bytes - fetched_before)
    fetcher.bytes_reused += reused
    progress.accounted.pop(root, None)
    fetched.pop(root, None)
    progress.blake3_by_root[root] = bytes.fromhex(result.blake3_hex)
    fetcher.placed.add(entries, result.blake3_hex, result.leaf_hashes)
    fetcher.files_done(entries, result.blake3_hex, progress, (base.path, reused))
    return True


async def _fetch_tree(
    connection: Connection, root: bytes, size: int, what: str, progress_timeout_s: float
) -> bytes | None:
    """The leaf hashes of blob ``root`` (GET_TREE), checked against it;
    None from a sender that does not know GET_TREE."""
    stream = await send_request(connection, wire.TreeRequest(root))
    body = BodyReader(stream)
    hashes = bytearray()
    with watched(stream, what, progress_timeout_s) as watchdog:
        try:
            status = await body.take(1)
        except StreamResetError as exc:
            if exc.code == wire.ERROR_BAD_REQUEST:
                return None
            raise
        check_status(status[0], what)
        claimed = int.from_bytes(await body.take(wire.TREE_SIZE_BYTES), "big")
        if claimed != size:
            raise IntegrityError(
                f"the sender's leaf hashes of {what} are for {claimed:,} bytes "
                f"where the file list says {size:,}"
            )
        wanted = leaf_count(size) * wire.HASH_BYTES
        while len(hashes) < wanted:
            hashes += await body.take(min(wanted - len(hashes), TREE_PIECE_BYTES))
            watchdog.feed()
        await body.expect_end()
    leaf_hashes = bytes(hashes)
    await asyncio.to_thread(check_tree, root, size, leaf_hashes, what)
    return leaf_hashes


async def _fetch_leaves(
    fetcher: Fetcher,
    connection: Connection,
    root: bytes,
    entry: Entry,
    patch: Patch,
    leaves: list[int],
    progress: Progress,
) -> None:
    """Fetch ``leaves`` of ``root`` into ``patch``: GET requests of up to
    wire.MAX_RANGES ranges, the next one asked for while the current
    one arrives; each leaf proven against the root on the way."""
    requests = request_ranges(leaves)
    if not requests:
        return

    async def on_leaf(leaf: LeafReceived) -> None:
        if fetcher.pacer is not None:  # no more is read until allowed
            await fetcher.pacer.pace(len(leaf.data))
        await patch.write_leaf(leaf)
        count = len(leaf.data)
        fetcher.bytes_received += count
        progress.fetched_for_update[root] += count
        progress.accounted[root] = progress.accounted.get(root, 0) + count
        fetcher.emit(events.BytesReceived(entry.path, count))

    upcoming = await send_request(connection, wire.GetRequest(root, requests[0]))
    try:
        for number, ranges in enumerate(requests):
            stream = upcoming
            if number + 1 < len(requests):
                request = wire.GetRequest(root, requests[number + 1])
                upcoming = await send_request(connection, request)
            decoder = RangeDecoder(root, ranges, expected_size=entry.size, check_leaves=False)
            await fetch_blob(
                stream,
                decoder,
                on_leaf,
                entry.path,
                fetcher.options.progress_timeout_s,
                leaf_type=LeafReceived,
            )
    finally:
        drop(upcoming)
