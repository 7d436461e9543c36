"""The receiver's session: fetch a collection, verify it, write it safely.

Order of work, and why:
1. Connect to the ticket's node id (QUIC pins the peer's key to it).
2. Fetch the manifest blob and verify it against the ticket's root hash;
   check every path in it (``blobs.names``) before anything is written.
   The first file is asked for in the same flight (GET_ITEM, wire.py), its
   answer checked against the manifest's hash for it once that is in.
3. Plan against the output folder: identical files count as done, different
   ones stop the receive (exit 5) unless ``force`` (``--update``: they are
   rebuilt from the leaves they share, ``updater.py``); check free space.
4. Fetch the distinct file blobs over parallel streams; each leaf is
   verified before it is written to the hidden partial folder; a complete
   file is fsynced and renamed into place. Files of one leaf are asked for
   up to MAX_MANY_BLOBS at a time (GET_MANY: one request, the answers back
   to back, each verified as the answer to a GET is) and placed as a group (``batch.py``);
   a sender that does not know GET_MANY gets a GET per file.
5. Tell the sender we are done (so ``send --once`` can exit), close.
6. Only then, with everything verified and in place: ``--update`` fixes
   the time and mode of files that were already right (``changes.py``),
   ``--delete`` removes what the snapshot does not hold (``prune.py``).
   ``--dry-run`` stops after step 3 instead, writes nothing and sends no
   DONE (it is not a finished receive).

On any failure the partial folder is removed (resume arrives with a resume
record later) and no unverified byte is ever under a final name.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import blake3

from p2pcp.blobs.collection import MAX_MANIFEST_BYTES, Entry, Manifest
from p2pcp.blobs.encoding import (
    MAX_LEAF_INDEX,
    LeafReceived,
    LeafVerified,
    RangeDecoder,
    one_leaf_size,
    verify_one_leaf,
)
from p2pcp.blobs.names import display_path
from p2pcp.blobs.tree import LEAF_SIZE
from p2pcp.core.config import RelayUrl
from p2pcp.core.defaults import (
    CONNECT_TIMEOUT_S,
    FETCH_CONCURRENCY,
    PROGRESS_TIMEOUT_S,
    RETRY_FIRST_DELAY_S,
    RETRY_FOR_S,
    RETRY_MAX_DELAY_S,
)
from p2pcp.core.errors import (
    ConnectError,
    ConnectionLostError,
    IntegrityError,
    LocalProtocolError,
    LocalUpdateError,
    NotFoundError,
    RemoteProtocolError,
    StorageError,
    StreamResetError,
    UsageError,
)
from p2pcp.core.identity import NodeId, SecretKey
from p2pcp.core.ticket import Ticket, TicketKind
from p2pcp.net import Connection, Endpoint, EndpointConfig, PathKind, PathPolicy, Stream
from p2pcp.transfer import changes, events, wire
from p2pcp.transfer.batch import SmallBatch, SmallFile
from p2pcp.transfer.hashcache import HashCache
from p2pcp.transfer.links import LinkPlan, place_links, plan_links
from p2pcp.transfer.metadata import MetadataPolicy
from p2pcp.transfer.placed import PlacedFiles
from p2pcp.transfer.prune import prune
from p2pcp.transfer.ratelimit import Pacer
from p2pcp.transfer.requests import (
    BodyReader,
    accept_first,
    check_status,
    close_quietly,
    drop,
    fetch_blob,
    fetch_manifest,
    send_done,
    send_request,
    watched,
)
from p2pcp.transfer.snapshot import ContentChangedError, ShareFollower
from p2pcp.transfer.store import Plan, Store
from p2pcp.transfer.updater import update_file

Emit = Callable[[object], None]

# A GET_MANY asks for at most this many bytes of files (and at most
# wire.MAX_MANY_BLOBS files): small enough that a batch's files are
# reported finished often and that the 8 streams share the work, large
# enough that a request's round trip is small next to its data.
MANY_BATCH_BYTES = 8 * 1024 * 1024

# Small files verified but not yet in place, at most (more wait): a few
# GET_MANY answers' worth, so that writing and the group commits keep up
# while memory stays bounded (a file's bytes are held until written).
MAX_UNPLACED_FILES = 4 * 1024
MAX_UNPLACED_BYTES = 32 * 1024 * 1024

# A job of the fetch queue: one blob (GET), or several small ones (GET_MANY).
_Item = tuple[bytes, tuple[Entry, ...]]


@dataclass(frozen=True)
class FetchOptions:
    out_dir: Path
    force: bool = False
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    endpoint: EndpointConfig = dataclasses.field(default_factory=EndpointConfig)
    """How to bind and which paths to use. Its ``relay_url``, when set,
    overrides the ticket's (e.g. the relay has another name here)."""
    # How long to keep reconnecting after a connection is lost mid-transfer.
    retry_for_s: float = RETRY_FOR_S
    # A response that yields no verified leaf for this long is abandoned.
    progress_timeout_s: float = PROGRESS_TIMEOUT_S
    # Read at most this many bytes a second (--limit-rate; ratelimit.py):
    # the reads drive QUIC's receive credit, so the sender slows too.
    limit_rate_bps: int | None = None
    # --delete: once everything is verified and in place, remove what the
    # snapshot does not hold inside its top-level folders (prune.py).
    delete: bool = False
    # --dry-run: plan and list the changes, write nothing (changes.py).
    dry_run: bool = False
    # --no-times, --no-perms: what metadata a file gets (metadata.py).
    keep_times: bool = True
    keep_perms: bool = True
    # --update: a file that differs is replaced by its new version, built
    # from the leaves it shares with the old one (patch.py).
    update: bool = False
    # Look the files already here up in the hash cache (hashcache.py) and
    # remember what is hashed: the CLI's receive does; tests need not.
    use_hash_cache: bool = False
    # --unsafe-links: also create links whose target leaves the received
    # folder or is absolute (links.py; by default they are skipped).
    unsafe_links: bool = False

    @property
    def metadata(self) -> MetadataPolicy:
        return MetadataPolicy(keep_times=self.keep_times, keep_perms=self.keep_perms)


@dataclass
class Progress:
    """What a receive has established so far; survives reconnections."""

    manifest: Manifest | None = None
    store: Store | None = None
    plan: Plan | None = None
    # The standard BLAKE3 of each content root in place (the done report).
    blake3_by_root: dict[bytes, bytes] = dataclasses.field(default_factory=dict)
    bytes_by_path: Counter[PathKind] = dataclasses.field(default_factory=Counter)
    # Per blob not yet in place, bytes already counted (fetched or found) in
    # this run, so that a retry does not count them twice.
    accounted: dict[bytes, int] = dataclasses.field(default_factory=dict)
    manifest_connection: Connection | None = None
    # GET_ITEM for the manifest's first file, sent with the manifest's GET on
    # manifest_connection; taken by that file's fetch or reset unused.
    first_stream: Stream | None = None
    # False once the sender refused a GET_MANY: it is asked per file then.
    has_get_many: bool = True
    # --dry-run: what the receive would do, once planned (nothing more follows).
    dry_run: events.DryRunFinished | None = None
    # --update: per blob being updated, bytes fetched for it in this run.
    fetched_for_update: Counter[bytes] = dataclasses.field(default_factory=Counter)


class Fetcher:
    def __init__(self, ticket: Ticket, options: FetchOptions, emit: Emit) -> None:
        self.ticket = ticket
        self.options = options
        self.emit = emit
        self.bytes_received = 0
        self.bytes_resumed = 0
        self.bytes_reused = 0  # --update: taken from the old files
        self.hash_cache: HashCache | None = None  # opened by _start when asked for
        # What this receive placed, remembered in the hash cache at its end.
        self.placed = PlacedFiles(is_on=options.use_hash_cache)
        self.link_plan = LinkPlan()  # the manifest's links (links.py), planned by _start
        # When the sender's first verified byte arrived: the transfer's time
        # (``seconds``, hence the speed) runs from it, so the time spent
        # binding, joining a relay or dialling never counts as transfer.
        self.first_byte_at: float | None = None
        rate = options.limit_rate_bps
        self.pacer = Pacer(rate) if rate else None
        # A share ticket: each connection asks for the snapshot (snapshot.py).
        self.share = ShareFollower(ticket) if ticket.kind is TicketKind.SHARE else None

    async def run(self, secret_key: SecretKey) -> events.TransferFinished | events.DryRunFinished:
        started = time.monotonic()
        if self.share is not None:
            self.share.node_id = str(secret_key.public)
        relay_url = self._relay_url()
        config = dataclasses.replace(self.options.endpoint, relay_url=relay_url)
        endpoint = await Endpoint.bind(secret_key, config)
        try:
            return await self._session(endpoint, relay_url, started)
        finally:
            await endpoint.close()
            if self.hash_cache is not None:
                await asyncio.to_thread(self.hash_cache.close)

    def _relay_url(self) -> RelayUrl | None:
        """The relay to reach the sender through, by policy and ticket (the
        ticket's URL is checked here, once: a bad one is a usage error)."""
        policy = self.options.endpoint.path_policy
        if policy is PathPolicy.DIRECT_ONLY:
            return None
        relay_url = self.options.endpoint.relay_url
        if relay_url is None and self.ticket.relay_url is not None:
            relay_url = RelayUrl.parse(self.ticket.relay_url)
        if relay_url is None and policy is PathPolicy.RELAY_ONLY:
            raise UsageError("--relay-only: this ticket names no relay (give --relay URL)")
        if relay_url is None and not self.ticket.addresses:
            raise UsageError("this ticket names neither a relay nor an address")
        return relay_url

    async def _connect(
        self, endpoint: Endpoint, relay_url: RelayUrl | None, timeout_s: float
    ) -> Connection:
        node = NodeId(self.ticket.node_id)
        is_relay_only = self.options.endpoint.path_policy is PathPolicy.RELAY_ONLY
        addresses = [] if is_relay_only else list(self.ticket.addresses)
        self.emit(events.Connecting(node.short(), len(addresses), relay_url))
        connection = await endpoint.connect(
            node, addresses, timeout_s=timeout_s, relay_url=relay_url
        )
        self.emit(events.PeerConnected(connection.route))
        connection.set_path_listener(lambda route: self.emit(events.PathChanged(route)))
        return connection

    async def _session(
        self, endpoint: Endpoint, relay_url: RelayUrl | None, started: float
    ) -> events.TransferFinished | events.DryRunFinished:
        """Connect (a first failure is final: exit 3), then transfer; a connection
        lost mid-way is retried for ``retry_for_s``, resuming where it stopped."""
        progress = Progress()
        connection = await self._connect(endpoint, relay_url, self.options.connect_timeout_s)
        keep_partial = True
        # The retry budget runs from the first loss and starts afresh only
        # after a connection made progress: a sender that accepts and then
        # stalls or resets every request cannot keep us reconnecting forever.
        deadline: float | None = None
        received_at_connect = self.bytes_received
        try:
            while True:
                try:
                    result = await self._transfer(connection, progress, started)
                except ConnectionLostError as exc:
                    progress.bytes_by_path.update(connection.bytes_by_path)
                    await close_quietly(connection, "lost")
                    if deadline is None or self.bytes_received > received_at_connect:
                        deadline = time.monotonic() + self.options.retry_for_s
                    connection = await self._reconnect(endpoint, relay_url, exc, deadline)
                    received_at_connect = self.bytes_received
                    continue
                except (ContentChangedError, NotFoundError) as exc:
                    if self.share is None or not self.share.may_start_again(exc):
                        raise
                    self._forget_snapshot(progress)  # a new one, keeping what verified
                    continue
                keep_partial = False
                progress.bytes_by_path.update(connection.bytes_by_path)
                await close_quietly(connection, "done")
                if isinstance(result, events.DryRunFinished):
                    return result
                return dataclasses.replace(result, bytes_by_path=dict(progress.bytes_by_path))
        except (IntegrityError, RemoteProtocolError):
            keep_partial = False  # nothing from this ticket can be completed
            raise
        except LocalUpdateError:
            keep_partial = False  # everything arrived; only --delete or a fix failed
            raise
        except StorageError as exc:
            # Every file has stopped by now: say what a rerun can resume.
            if progress.store is None:
                raise
            raise StorageError(f"{exc}; {progress.store.resume_note()}") from None
        finally:
            await close_quietly(connection, "stopped")
            if progress.store is not None:
                progress.store.close(keep_partial=keep_partial)

    async def _reconnect(
        self, endpoint: Endpoint, relay_url: RelayUrl | None, lost: ConnectError, deadline: float
    ) -> Connection:
        """Reconnect with exponential backoff until ``deadline``."""
        if self.options.retry_for_s <= 0:
            raise lost
        attempt = 0
        error: ConnectError = lost
        while True:
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                raise error
            delay_s = min(RETRY_MAX_DELAY_S, RETRY_FIRST_DELAY_S * 2**attempt, left_s)
            self.emit(events.RetryScheduled(str(error), delay_s, left_s))
            await asyncio.sleep(delay_s)
            timeout_s = max(1.0, min(self.options.connect_timeout_s, deadline - time.monotonic()))
            try:
                return await self._connect(endpoint, relay_url, timeout_s)
            except ConnectError as exc:
                error = exc
                attempt += 1

    def _forget_snapshot(self, progress: Progress) -> None:
        """Set the share's snapshot aside; the partial folder stays."""
        if self.share is not None and progress.manifest is not None and progress.plan is not None:
            present = (entry.path for entry, _digest in progress.plan.present)
            self.share.note_placed(progress.manifest, present, progress.blake3_by_root)
        drop(progress.first_stream)
        if progress.store is not None:
            progress.store.close(keep_partial=True)
        progress.manifest = progress.store = progress.plan = None
        progress.manifest_connection = progress.first_stream = None

    async def _transfer(
        self, connection: Connection, progress: Progress, started: float
    ) -> events.TransferFinished | events.DryRunFinished:
        if self.share is not None:
            is_started = progress.manifest is not None
            self.ticket = await self.share.ticket_for(connection, is_started=is_started)
        if progress.manifest is None:
            await self._start(connection, progress)
        if progress.dry_run is not None:
            return progress.dry_run  # no DONE: a dry run is not a finished receive
        manifest, store, plan = progress.manifest, progress.store, progress.plan
        if manifest is None or store is None or plan is None:
            raise LocalProtocolError("internal: the receive has no plan")
        has_fetched_here = bool(plan.to_fetch) or progress.manifest_connection is connection
        await self._fetch_all(connection, store, plan, progress)
        store.make_empty_dirs()
        place_links(self.options.out_dir, self.link_plan, self.emit)  # after every file
        if not has_fetched_here:
            # The sender counts DONE only from a connection that fetched
            # something (a stranger must not end `send --once`): after a
            # reconnection with nothing left, prove we hold the ticket.
            await self._fetch_header(connection)
        # The transfer's time ends here, with every file verified and in
        # place, as a TCP copy's ends at the last byte: the notice below is
        # the protocol's goodbye (a round trip, more when it is lost).
        seconds = time.monotonic() - (self.first_byte_at or started)
        await send_done(connection, self.bytes_received)
        missing = [e.path for e in manifest.files if e.root not in progress.blake3_by_root]
        if missing:
            raise LocalProtocolError(f"internal error: {len(missing)} files were never finished")
        # Everything is verified and in place: only now fix metadata and
        # prune, while the files placed are remembered (a rerun reads none
        # of them; that waits out the racy margin first, placed.py).
        remembering = None
        if self.hash_cache is not None:
            remembering = asyncio.ensure_future(
                asyncio.to_thread(self.placed.remember, self.hash_cache, self.options.out_dir)
            )
        try:
            await self._finish_locally(manifest, plan)
        finally:
            if remembering is not None:
                await asyncio.wait([remembering])
                remembering.result()
        files = events.FileReports(manifest.files, progress.blake3_by_root)
        return events.TransferFinished(
            out_path=str(_arrival_path(self.options.out_dir, manifest)),
            bytes_received=self.bytes_received,
            bytes_present=plan.bytes_present + self.bytes_resumed,
            seconds=seconds,
            files=files,
            bytes_reused=self.bytes_reused,
        )

    def _mark_first_byte(self) -> None:
        if self.first_byte_at is None:
            self.first_byte_at = time.monotonic()

    async def _fetch_header(self, connection: Connection) -> None:
        """A header-only GET of the root: proves to the sender we know the ticket."""
        ranges = ((MAX_LEAF_INDEX - 1, MAX_LEAF_INDEX),)
        stream = await send_request(connection, wire.GetRequest(self.ticket.root_hash, ranges))
        decoder = RangeDecoder(self.ticket.root_hash, ranges, max_size=MAX_MANIFEST_BYTES)

        async def ignore(leaf: LeafVerified) -> None:
            pass

        await fetch_blob(
            stream,
            decoder,
            ignore,
            "the file list",
            self.options.progress_timeout_s,
            leaf_type=LeafVerified,
        )

    async def _start(self, connection: Connection, progress: Progress) -> None:
        """Fetch and check the manifest, plan against the output folder."""
        manifest, first = await fetch_manifest(
            connection,
            self.ticket,
            self.options.progress_timeout_s,
            self._mark_first_byte,
            ask_first=not (self.options.update or self.options.dry_run),
        )
        progress.first_stream = first
        if self.share is not None:
            self.share.check_file_count(len(manifest.files))
        partial_key = self.ticket.root_hash if self.share is None else self.share.partial_key
        store = Store(self.options.out_dir, manifest, partial_key, force=self.options.force)
        store.replaceable = self.share.placed if self.share is not None else frozenset()
        # Metadata of the files placed; a dry run writes nothing and lists every difference.
        store.metadata, store.is_dry_run = self.options.metadata, self.options.dry_run
        store.force = store.force or self.options.dry_run
        if self.options.use_hash_cache and self.hash_cache is None:
            self.hash_cache = await asyncio.to_thread(HashCache.open_default)
        store.update, store.hash_cache = self.options.update, self.hash_cache
        plan = await asyncio.to_thread(store.plan)
        if self.options.dry_run:
            drop(first)
            progress.store = store  # closed by the session (it never took a lock)
            progress.dry_run = await self._dry_run(store, manifest, plan)
            return
        self.link_plan = await asyncio.to_thread(
            plan_links,
            self.options.out_dir,
            manifest,
            replace=self.options.force or self.options.update,
            allow_unsafe=self.options.unsafe_links,
        )
        if not manifest.files or manifest.files[0].root not in plan.to_fetch:
            drop(progress.first_stream)  # nothing to fetch of the first file
            progress.first_stream = None
        store.check_free_space(plan)
        self.emit(
            events.ManifestReceived(
                manifest.name,
                len(manifest.files),
                manifest.total_size,
                plan.bytes_present,
                store.resumable_bytes(plan),
                plan.files_checked,
                plan.files_from_cache,
            )
        )
        for entry, digest in plan.present:
            progress.blake3_by_root[entry.root] = bytes.fromhex(digest)
            self.emit(events.FileFinished(entry.path, entry.size, digest, was_present=True))
        store.prepare()
        progress.manifest, progress.store, progress.plan = manifest, store, plan
        progress.manifest_connection = connection
        # The manifest and the plan live until the end (an object or more per
        # file): out of the collector's sight, a full collection no longer
        # walks 100,000 files' objects again and again while they arrive.
        gc.freeze()

    async def _dry_run(self, store: Store, manifest: Manifest, plan: Plan) -> events.DryRunFinished:
        """--dry-run: report what the receive would change (changes.py)."""
        store.check_free_space(plan)
        self.emit(
            events.ManifestReceived(
                manifest.name, len(manifest.files), manifest.total_size, plan.bytes_present
            )
        )
        report = _from_thread(self.emit)
        return await asyncio.to_thread(
            changes.find_changes,
            self.options.out_dir,
            manifest,
            plan,
            report,
            metadata=self.options.metadata,
            is_update=self.options.update,
            may_replace=self.options.force or self.options.update,
            has_delete=self.options.delete,
            allow_unsafe_links=self.options.unsafe_links,
        )

    async def _finish_locally(self, manifest: Manifest, plan: Plan) -> None:
        """With everything verified and in place: --update fixes the metadata
        of the files that were already here, --delete prunes (prune.py). A
        path that cannot be changed is reported, the rest done, then exit 1."""
        report = _from_thread(self.emit)
        problems: list[str] = []
        if self.options.update:
            failures = await asyncio.to_thread(
                changes.fix_metadata,
                self.options.out_dir,
                plan.present,
                self.options.metadata,
                report,
            )
            if failures:
                problems.append(
                    f"could not fix the time or mode of {len(failures)} files ({failures[0]})"
                )
        if self.options.delete:
            pruned = await asyncio.to_thread(prune, self.options.out_dir, manifest, report)
            if pruned.failures:
                first = pruned.failures[0]
                problems.append(
                    f"could not delete {len(pruned.failures)} paths the snapshot does not hold "
                    f"({display_path(first.path)}: {first.reason})"
                )
        if problems:
            raise LocalUpdateError(
                "; ".join(problems) + "; everything received is verified and in place"
            )

    async def _fetch_all(
        self, connection: Connection, store: Store, plan: Plan, progress: Progress
    ) -> None:
        await self._place_leftovers(store, plan, progress)
        queue = _plan_jobs(plan, progress)
        queue.reverse()
        # One group-committing batch for every small file of this attempt.
        batch = store.small_batch()
        batch.on_placed = lambda placed: self._finish_small_files(placed, plan, progress)

        async def worker() -> None:
            while queue:
                is_many, roots = queue.pop()
                if not is_many or not progress.has_get_many:
                    for root in roots:
                        entries = plan.to_fetch[root]
                        await self._fetch_file(connection, store, root, entries, progress)
                        del plan.to_fetch[root]
                    continue
                job = [(root, plan.to_fetch[root]) for root in roots]
                refused = await self._fetch_many(connection, batch, job, progress)
                # A sender without GET_MANY: the same files, one GET each,
                # shared out among the workers.
                queue.extend((False, [root]) for root, _entries in reversed(refused))

        workers = [asyncio.ensure_future(worker()) for _ in range(FETCH_CONCURRENCY)]
        try:
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            drop(progress.first_stream)
            progress.first_stream = None
            # Whatever verified is placed, even when the fetch failed half-way:
            # a retry then asks only for the rest.
            await batch.commit()

    async def _place_leftovers(self, store: Store, plan: Plan, progress: Progress) -> None:
        """Place the small files an earlier run verified and wrote but did
        not place (it was killed): checked again, they need no fetching."""
        wanted = {
            root: entries for root, entries in plan.to_fetch.items() if entries[0].size <= LEAF_SIZE
        }
        if not wanted:
            return
        found = await store.find_leftovers(wanted)
        if not found:
            return
        batch = store.small_batch()
        for small in found:
            batch.add(small)
        try:
            await batch.commit()
        finally:
            for small in batch.placed:
                size = small.entries[0].size
                found_bytes = size - progress.accounted.get(small.root, 0)
                if found_bytes > 0:
                    self.bytes_resumed += found_bytes
                    progress.accounted[small.root] = size
                    self.emit(events.BytesReceived(small.entries[0].path, found_bytes))
                self._finish_small(small, plan, progress)

    def _finish_small_files(self, placed: list[SmallFile], plan: Plan, progress: Progress) -> None:
        for small in placed:
            self._finish_small(small, plan, progress)

    def _finish_small(self, small: SmallFile, plan: Plan, progress: Progress) -> None:
        """A placed small file: report it, and do not fetch it again."""
        plan.to_fetch.pop(small.root, None)
        progress.accounted.pop(small.root, None)  # counted for good: never fetched again
        progress.blake3_by_root[small.root] = bytes.fromhex(small.blake3_hex)
        self.placed.add(small.entries, small.blake3_hex)
        self.files_done(small.entries, small.blake3_hex, progress)

    async def _fetch_many(
        self,
        connection: Connection,
        batch: SmallBatch,
        items: list[_Item],
        progress: Progress,
    ) -> list[_Item]:
        """Fetch small blobs with one GET_MANY and hand each verified one to
        ``batch`` (which places them, group by group, and reports them).
        Returns the items to fetch one by one instead (all of them, when the
        sender does not know GET_MANY; none otherwise)."""
        request = wire.ManyRequest(tuple(root for root, _entries in items))
        stream = await send_request(connection, request)
        body = BodyReader(stream)
        with watched(stream, items[0][1][0].path, self.options.progress_timeout_s) as watchdog:
            for number, (root, entries) in enumerate(items):
                first = entries[0]
                watchdog.what = first.path
                try:
                    status = body.take_now(1) or await body.take(1)
                except StreamResetError as exc:
                    if number == 0 and exc.code == wire.ERROR_BAD_REQUEST:
                        progress.has_get_many = False
                        return items
                    raise
                check_status(status[0], first.path)
                size = first.size
                answer = body.take_now(one_leaf_size(size))
                if answer is None:
                    answer = await body.take(one_leaf_size(size))
                data = verify_one_leaf(root, size, answer)
                watchdog.feed()
                if self.pacer is not None:
                    await self.pacer.pace(size)
                self._mark_first_byte()
                batch.add(SmallFile(root, entries, _blake3_hex(data), data))
                self.bytes_received += size
                progress.accounted[root] = size
                self.emit(events.BytesReceived(first.path, size))
            await body.expect_end()
        # Ask for more only while the files not yet placed are few: memory
        # holds their bytes until written, and their reports until placed.
        await batch.wait_room(MAX_UNPLACED_FILES, MAX_UNPLACED_BYTES)
        return []

    async def _fetch_file(
        self,
        connection: Connection,
        store: Store,
        root: bytes,
        entries: tuple[Entry, ...],
        progress: Progress,
    ) -> None:
        plan = progress.plan
        if plan is not None and root in plan.updates:
            if await update_file(self, connection, store, root, entries, progress):
                return
            del plan.updates[root]  # a sender without GET_TREE: the whole file, as before
        first = entries[0]
        self.emit(events.FileStarted(first.path, first.size))
        partial = await store.open_partial(root, first.size)
        found = partial.resumed_bytes - progress.accounted.get(root, 0)
        if found > 0:  # verified by an earlier run (or attempt), checked again just now
            self.bytes_resumed += found
            progress.accounted[root] = partial.resumed_bytes
            self.emit(events.BytesReceived(first.path, found))
        try:
            if not partial.is_complete:
                ranges = ((partial.verified_leaves, MAX_LEAF_INDEX),)
                stream = await self._first_stream(
                    connection, root, partial.verified_leaves, progress
                )
                has_status = stream is not None
                if stream is None:
                    stream = await send_request(connection, wire.GetRequest(root, ranges))
                # Leaves are checked on the writer thread, before they are
                # written (partial.py says why).
                decoder = RangeDecoder(root, ranges, expected_size=first.size, check_leaves=False)

                async def on_leaf(leaf: LeafReceived) -> None:
                    if self.pacer is not None:  # no more is read until allowed
                        await self.pacer.pace(len(leaf.data))
                    await partial.write_leaf(leaf)
                    self.bytes_received += len(leaf.data)
                    progress.accounted[root] = leaf.offset + len(leaf.data)
                    self.emit(events.BytesReceived(first.path, len(leaf.data)))

                await fetch_blob(
                    stream,
                    decoder,
                    on_leaf,
                    first.path,
                    self.options.progress_timeout_s,
                    has_status=has_status,
                    leaf_type=LeafReceived,
                )
            digest = await partial.finish()
            store.place(partial, entries)
        except BaseException:
            # Every leaf written was verified: keep them for the next attempt
            # (the session removes the partial folder if none can follow).
            await partial.suspend()
            raise
        progress.accounted.pop(root, None)  # counted for good: never fetched again
        progress.blake3_by_root[root] = bytes.fromhex(digest)
        self.placed.add(entries, digest, partial.leaf_hashes)
        self.files_done(entries, digest, progress)

    def files_done(
        self,
        entries: tuple[Entry, ...],
        digest: str,
        progress: Progress,
        reused: tuple[Path, int] | None = None,
    ) -> None:
        """Report each path of a blob now in place: ``was_updated`` when it
        replaced a different file (--update); ``reused``: the old file the
        update started from, and the bytes it gave."""
        replaced = progress.plan.replaced if progress.plan is not None else set()
        for entry in entries:
            is_base = reused is not None and self.options.out_dir / entry.path == reused[0]
            self.emit(
                events.FileFinished(
                    entry.path,
                    entry.size,
                    digest,
                    was_updated=entry.path in replaced,
                    bytes_reused=reused[1] if reused is not None and is_base else 0,
                )
            )

    async def _first_stream(
        self, connection: Connection, root: bytes, from_leaf: int, progress: Progress
    ) -> Stream | None:
        """The GET_ITEM stream, if it answers for ``root`` from its start on
        ``connection`` (whose answer the manifest's hash then verifies)."""
        stream = progress.first_stream
        manifest = progress.manifest
        if stream is None or manifest is None or not manifest.files:
            return None
        if manifest.files[0].root != root:
            return None
        progress.first_stream = None
        if progress.manifest_connection is not connection or from_leaf != 0:
            drop(stream)  # a resume, or a connection since lost
            return None
        if await accept_first(stream, manifest.files[0].path, self.options.progress_timeout_s):
            return stream
        return None


def _plan_jobs(plan: Plan, progress: Progress) -> list[tuple[bool, list[bytes]]]:
    """The fetch queue, in manifest order, as blob roots: each blob larger
    than one leaf alone (as is the first file when its GET_ITEM is on its
    way), the small ones in groups (True) of at most MAX_MANY_BLOBS files
    and MANY_BATCH_BYTES. Roots only: the plan holds their entries."""
    jobs: list[tuple[bool, list[bytes]]] = []
    group: list[bytes] = []
    group_bytes = 0
    first_root = None
    if progress.first_stream is not None and progress.manifest is not None:
        first_root = progress.manifest.files[0].root
    for root, entries in plan.to_fetch.items():
        size = entries[0].size
        if size > LEAF_SIZE or root == first_root:
            jobs.append((False, [root]))
            continue
        if len(group) >= wire.MAX_MANY_BLOBS or group_bytes + size > MANY_BATCH_BYTES:
            jobs.append((True, group))
            group, group_bytes = [], 0
        group.append(root)
        group_bytes += size
    if group:
        jobs.append((True, group))
    return jobs


def _blake3_hex(data: bytes) -> str:
    return str(blake3.blake3(data).hexdigest())


def _from_thread(emit: Emit) -> Emit:
    """``emit`` for a worker thread: each event is handed to the event loop,
    in order (the views are not thread-safe)."""
    loop = asyncio.get_running_loop()

    def report(event: object) -> None:
        loop.call_soon_threadsafe(emit, event)

    return report


def _arrival_path(out_dir: Path, manifest: Manifest) -> Path:
    """Where the collection arrived: its single top-level item, or the folder."""
    tops = {path.split("/", 1)[0] for path in manifest.empty_dirs}
    tops.update(entry.path.split("/", 1)[0] for entry in manifest.files)
    return out_dir / tops.pop() if len(tops) == 1 else out_dir
