"""The receiver's session: fetch a collection, verify it, write it safely.

Order of work, and why:
1. Connect to the ticket's node id (QUIC pins the peer's key to it).
2. Fetch the manifest blob and verify it against the ticket's root hash;
   check every path in it (``blobs.names``) before anything is written.
3. Plan against the output folder: identical files count as done, different
   ones stop the receive (exit 5) unless ``force``; check free space.
4. Fetch the distinct file blobs over parallel streams; each leaf is
   verified before it is written to the hidden partial folder; a complete
   file is fsynced and renamed into place.
5. Tell the sender we are done (so ``send --once`` can exit), close.

On any failure the partial folder is removed (resume arrives with a resume
record later) and no unverified byte is ever under a final name.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from p2pcp.blobs.collection import Entry, Manifest, decode_manifest
from p2pcp.blobs.encoding import ALL, DecodeFinished, LeafVerified, RangeDecoder
from p2pcp.core.defaults import CONNECT_TIMEOUT_S, FETCH_CONCURRENCY, MAX_MANIFEST_BYTES
from p2pcp.core.errors import (
    ConnectionLostError,
    IntegrityError,
    NotFoundError,
    P2pcpError,
    RemoteProtocolError,
    StreamResetError,
    UsageError,
)
from p2pcp.core.identity import NodeId, SecretKey
from p2pcp.core.ticket import Ticket
from p2pcp.net.endpoint import Connection, Endpoint, Stream
from p2pcp.transfer import events, wire
from p2pcp.transfer.store import Plan, Store

Emit = Callable[[object], None]


@dataclass(frozen=True)
class FetchOptions:
    out_dir: Path
    force: bool = False
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    max_datagram_size: int | None = None
    # "auto" (relay first, then direct when a path opens), "relay-only", "direct-only".
    path_policy: str = "auto"
    # Overrides the ticket's relay URL (e.g. the relay has another name here).
    relay_url: str | None = None


async def _request(connection: Connection, request: wire.Request) -> Stream:
    stream = await connection.open_stream()
    await stream.write(wire.encode_request(request))
    await stream.finish()
    return stream


async def _read_status(stream: Stream, what: str) -> None:
    status = await stream.read_exactly(1)
    if status[0] == wire.STATUS_NOT_FOUND:
        raise NotFoundError(f"the sender does not have {what} any more")
    if status[0] != wire.STATUS_OK:
        raise RemoteProtocolError(f"the sender answered with unknown status {status[0]}")


def _explain_reset(exc: StreamResetError, what: str) -> P2pcpError:
    if exc.code == wire.ERROR_CONTENT_CHANGED:
        return IntegrityError(
            f"the sender's copy of {what} changed since the ticket was made; ask for a new ticket"
        )
    if exc.code == wire.ERROR_SHUTTING_DOWN:
        return ConnectionLostError("the sender stopped before the transfer finished")
    return exc


async def _fetch_blob(
    stream: Stream,
    decoder: RangeDecoder,
    on_leaf: Callable[[LeafVerified], Awaitable[None]],
    what: str,
) -> None:
    """Feed a response body into ``decoder``, handing out verified leaves."""
    try:
        await _read_status(stream, what)
        while True:
            chunk = await stream.read()
            if not chunk:
                break
            decoder.receive_data(chunk)
            while (event := decoder.next_event()) is not None:
                if isinstance(event, LeafVerified):
                    await on_leaf(event)
    except StreamResetError as exc:
        raise _explain_reset(exc, what) from None
    if not decoder.is_finished:
        raise IntegrityError(f"the sender's answer for {what} ended early")
    while (event := decoder.next_event()) is not None:
        if not isinstance(event, DecodeFinished):
            raise RemoteProtocolError("internal: decoder produced data after its end")


async def _fetch_manifest(connection: Connection, ticket: Ticket) -> Manifest:
    data = bytearray()

    async def on_leaf(leaf: LeafVerified) -> None:
        data.extend(leaf.data)
        if len(data) > MAX_MANIFEST_BYTES:
            raise RemoteProtocolError("the manifest is larger than p2pcp accepts")

    stream = await _request(connection, wire.GetRequest(ticket.root_hash, ALL))
    await _fetch_blob(stream, RangeDecoder(ticket.root_hash, ALL), on_leaf, "the file list")
    manifest = decode_manifest(bytes(data))
    if manifest.total_size != ticket.total_size:
        raise IntegrityError("the ticket's total size does not match the sender's file list")
    return manifest


class Fetcher:
    def __init__(self, ticket: Ticket, options: FetchOptions, emit: Emit) -> None:
        self.ticket = ticket
        self.options = options
        self.emit = emit
        self.bytes_received = 0

    async def run(self, secret_key: SecretKey) -> events.TransferFinished:
        started = time.monotonic()
        relay_url = self._relay_url()
        endpoint = await Endpoint.bind(
            secret_key,
            max_datagram_size=self.options.max_datagram_size,
            relay_url=relay_url,
            path_policy=self.options.path_policy,
        )
        try:
            connection = await endpoint.connect(
                NodeId(self.ticket.node_id),
                [] if self.options.path_policy == "relay-only" else list(self.ticket.addresses),
                timeout_s=self.options.connect_timeout_s,
                relay_url=relay_url,
            )
            self.emit(events.PeerConnected(connection.path_kind, connection.path_description))
            connection.set_path_listener(
                lambda kind, description: self.emit(events.PathChanged(kind, description))
            )
            try:
                result = await self._transfer(connection, started)
                result = dataclasses.replace(result, bytes_by_path=dict(connection.bytes_by_path))
            finally:
                await connection.close("done")
        finally:
            await endpoint.close()
        return result

    def _relay_url(self) -> str | None:
        """The relay to reach the sender through, by policy and ticket."""
        if self.options.path_policy == "direct-only":
            return None
        relay_url = self.options.relay_url or self.ticket.relay_url
        if relay_url is None and self.options.path_policy == "relay-only":
            raise UsageError("--relay-only: this ticket names no relay (give --relay URL)")
        if relay_url is None and not self.ticket.addresses:
            raise UsageError("this ticket names neither a relay nor an address")
        return relay_url

    async def _transfer(self, connection: Connection, started: float) -> events.TransferFinished:
        manifest = await _fetch_manifest(connection, self.ticket)
        store = Store(
            self.options.out_dir, manifest, self.ticket.root_hash, force=self.options.force
        )
        plan = await asyncio.to_thread(store.plan)
        store.check_free_space(plan)
        self.emit(
            events.ManifestReceived(
                manifest.name, len(manifest.files), manifest.total_size, plan.bytes_present
            )
        )
        reports = {
            entry.path: events.FileReport(entry.path, entry.size, digest)
            for entry, digest in plan.present
        }
        for entry, digest in plan.present:
            self.emit(events.FileFinished(entry.path, entry.size, digest, was_present=True))
        store.prepare()
        try:
            await self._fetch_all(connection, store, plan, reports)
            store.make_empty_dirs()
        finally:
            store.remove_partial_dir()
        # Tell the sender we have everything; it may exit (--once).
        stream = await _request(connection, wire.DoneRequest(self.bytes_received))
        await _read_status(stream, "the end of the transfer")
        files = tuple(reports[entry.path] for entry in manifest.files)
        return events.TransferFinished(
            out_path=str(_arrival_path(self.options.out_dir, manifest)),
            bytes_received=self.bytes_received,
            bytes_present=plan.bytes_present,
            seconds=time.monotonic() - started,
            files=files,
        )

    async def _fetch_all(
        self,
        connection: Connection,
        store: Store,
        plan: Plan,
        reports: dict[str, events.FileReport],
    ) -> None:
        queue = list(plan.to_fetch.items())
        queue.reverse()

        async def worker() -> None:
            while queue:
                root, entries = queue.pop()
                await self._fetch_file(connection, store, root, entries, reports)

        workers = [asyncio.ensure_future(worker()) for _ in range(FETCH_CONCURRENCY)]
        try:
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _fetch_file(
        self,
        connection: Connection,
        store: Store,
        root: bytes,
        entries: list[Entry],
        reports: dict[str, events.FileReport],
    ) -> None:
        first = entries[0]
        self.emit(events.FileStarted(first.path, first.size))
        partial = store.open_partial(root)
        try:
            stream = await _request(connection, wire.GetRequest(root, ALL))
            decoder = RangeDecoder(root, ALL, expected_size=first.size)

            async def on_leaf(leaf: LeafVerified) -> None:
                await partial.write_verified(leaf.offset, leaf.data)
                self.bytes_received += len(leaf.data)
                self.emit(events.BytesReceived(first.path, len(leaf.data)))

            await _fetch_blob(stream, decoder, on_leaf, first.path)
            digest = await partial.finish()
            store.place(partial, entries)
        except BaseException:
            await partial.discard()
            raise
        for entry in entries:
            reports[entry.path] = events.FileReport(entry.path, entry.size, digest)
            self.emit(events.FileFinished(entry.path, entry.size, digest))


def _arrival_path(out_dir: Path, manifest: Manifest) -> Path:
    """Where the collection arrived: its single top-level item, or the folder."""
    tops = {path.split("/", 1)[0] for path in manifest.empty_dirs}
    tops.update(entry.path.split("/", 1)[0] for entry in manifest.files)
    return out_dir / tops.pop() if len(tops) == 1 else out_dir
