"""``p2pcp share`` as one function: a long-lived sender whose ticket stays.

A share's ticket names the node, the relay, the addresses and the share's
capability secret, never a content hash, so it stays the same while the
node key, the relay, the port (and the secret) do. Each receive asks for a
snapshot (GET_SNAPSHOT, provider.py): the share rescans its PATHs
(``scan_paths`` with the share's exclude and link options, then
``import_scan`` with the hash cache, so an unchanged file is not read
again and an unchanged tree gives the same root), commits to the new
manifest root, and serves it. Meanwhile watch.py hashes what changes
under the PATHs as it settles, so that the rescan a receive waits for
finds the hash cache warm and reads nothing.

The secret (32 random bytes) is kept per share in
``<home>/shares/<share id>.secret`` (home: ``$P2PCP_HOME`` or the user data
dir, as for the node key; folder 0700, file 0600, written atomically). The
share id is a hash of what defines the share: the canonical absolute paths
(symbolic links resolved), in order, and the options that change what is
in it (exclude patterns, the exclude file's path, ``--gitignore``,
``--links``). The same command line therefore finds the same secret after a
restart; other paths or options are another share with its own secret (a
ticket for a share that leaves out some files never opens one that does
not). ``--rotate`` replaces the secret: earlier tickets are then refused
(NOT FOUND). The secret appears only inside the ticket: never in a
message, a log line or a ``repr``.

The ticket's addresses are this machine's interface addresses with the
share's port, not the public address the relay's STUN port observed (a NAT
may change it between runs, and it may arrive after the ticket is made):
a receiver beyond the NAT finds the direct path through the relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2pcp.core.errors import P2pcpError, StorageError
from p2pcp.core.identity import NodeId, default_home, load_or_create_secret_key
from p2pcp.core.ticket import Ticket, TicketKind, TicketType, encode_ticket
from p2pcp.net import Endpoint, EndpointConfig
from p2pcp.transfer import events
from p2pcp.transfer.exclude import ScanFilter
from p2pcp.transfer.hashcache import HashCache
from p2pcp.transfer.provider import Provider
from p2pcp.transfer.ratelimit import Pacer
from p2pcp.transfer.source import Collection, import_scan, scan_paths
from p2pcp.transfer.watch import watch_and_warm

Emit = Callable[[object], None]

SECRET_BYTES = 32
SHARES_DIR_NAME = "shares"
_SECRET_MAGIC = b"p2pcp-share-secret-v1\n"
_SHARE_ID_CONTEXT = b"p2pcp share id v1\n"
# Hex digits of the share id in its file name: 128 bits, no collisions.
_SHARE_ID_HEX = 32


@dataclass(frozen=True)
class ShareOptions:
    paths: tuple[Path, ...]
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    """How to bind: port, home relay (named in the ticket), controller, ..."""
    allow: tuple[NodeId, ...] = ()
    """Only these receivers (their proven node ids) get snapshots; empty: any."""
    rotate: bool = False
    """Make a new secret first: earlier tickets of this share stop working."""
    ticket_type: TicketType = TicketType.FULL
    limit_rate_bps: int | None = None
    """Pace everything written to receivers (``--limit-rate``), all together."""
    scan_filter: ScanFilter | None = None
    """What each scan leaves out (``--exclude``, ``--exclude-from``, ``--gitignore``)."""
    links: bool = False
    """Symbolic links inside the folders go as links (``--links``)."""
    defining_options: tuple[str, ...] = ()
    """The options that change what the share holds, as words (exclude
    patterns, the exclude file's path, ...): part of the share's id, hence
    of its secret (``defining_words``)."""


def defining_words(
    excludes: tuple[str, ...], exclude_from: Path | None, *, gitignore: bool, links: bool
) -> tuple[str, ...]:
    """The options that make a share another share, as words: the same
    command line gives the same words (the exclude file by its canonical
    path: editing it keeps the share)."""
    words = [f"--exclude={pattern}" for pattern in excludes]
    if exclude_from is not None:
        words.append(f"--exclude-from={os.path.realpath(exclude_from)}")
    if gitignore:
        words.append("--gitignore")
    if links:
        words.append("--links")
    return tuple(words)


# -- the secret ----------------------------------------------------------------


def share_id(paths: tuple[Path, ...], defining_options: tuple[str, ...]) -> str:
    """The id of the share of ``paths`` with these options (module doc)."""
    import blake3

    canonical = json.dumps(
        {"paths": [os.path.realpath(path) for path in paths], "options": list(defining_options)},
        ensure_ascii=False,
    )
    digest = blake3.blake3(_SHARE_ID_CONTEXT + canonical.encode("utf-8", "surrogateescape"))
    return str(digest.hexdigest())[:_SHARE_ID_HEX]


def load_share_secret(share: str, *, rotate: bool, home: Path | None = None) -> tuple[bytes, bool]:
    """The secret of share ``share`` (its id) and whether it was made now
    (first run, or ``rotate``)."""
    folder = (default_home() if home is None else home) / SHARES_DIR_NAME
    path = folder / f"{share}.secret"
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not rotate:
            with contextlib.suppress(FileNotFoundError):
                data = path.read_bytes()
                if data.startswith(_SECRET_MAGIC) and len(data) == len(_SECRET_MAGIC) + 32:
                    return data[len(_SECRET_MAGIC) :], False
                raise StorageError(
                    f"the share's secret file {path} is damaged; run with --rotate to make a new "
                    "one (the share's ticket then changes)"
                )
        secret = os.urandom(SECRET_BYTES)
        fd, tmp_name = tempfile.mkstemp(prefix=".share.", dir=folder)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, _SECRET_MAGIC + secret)
            os.fsync(fd)
        finally:
            os.close(fd)
        if rotate:
            os.replace(tmp_name, path)
        else:
            try:  # another share of the same paths made it meanwhile: use theirs
                os.link(tmp_name, path)
            except FileExistsError:
                os.unlink(tmp_name)
                return load_share_secret(share, rotate=False, home=home)
            os.unlink(tmp_name)
    except OSError as exc:
        raise StorageError(f"cannot keep the share's secret in {folder}: {exc.strerror}") from None
    return secret, True


# -- snapshots -----------------------------------------------------------------


class ShareSource:
    """The share as the provider sees it (``provider.SnapshotSource``): its
    secret, its allow list, and snapshots made on request. One scan runs at
    a time; every request that arrives while one runs waits for the next,
    which they all share, so each answer was scanned after its request
    came (a change made before a receive began is in what it gets)."""

    def __init__(
        self,
        options: ShareOptions,
        secret: bytes,
        emit: Emit,
        cache: HashCache | None = None,
    ) -> None:
        self._options = options
        self._secret = secret
        self._allow = frozenset(options.allow)
        self._emit = emit
        self._cache = cache
        # The scan running or last started (a request's or a prehash), and
        # the one the requests that came since wait for.
        self._running: asyncio.Task[Any] | None = None
        self._queued: asyncio.Task[Collection] | None = None

    def __repr__(self) -> str:
        return f"ShareSource({len(self._options.paths)} paths)"

    def matches(self, secret: bytes) -> bool:
        return hmac.compare_digest(secret, self._secret)

    def is_allowed(self, node_id: NodeId | None) -> bool:
        if not self._allow:
            return True
        return node_id is not None and node_id in self._allow

    async def snapshot(self) -> Collection:
        if self._queued is None:
            self._queued = asyncio.ensure_future(self._scan_after(self._running))
            self._queued.add_done_callback(_retrieve)
        return await asyncio.shield(self._queued)

    async def warm(self) -> None:
        """Hash what changed now (watch.py calls this once changes settle),
        after the scan running or queued; requests that come meanwhile
        queue behind it, and their own scan then finds the cache warm."""
        while True:
            pending = self._queued or self._running
            if pending is None or pending.done():
                break
            await asyncio.wait([pending])
        task = asyncio.ensure_future(self._prehash())
        task.add_done_callback(_retrieve)
        self._running = task
        await asyncio.wait([task])

    async def _prehash(self) -> None:
        started = time.monotonic()
        try:
            collection = await scan_share(self._options, self._cache)
        except P2pcpError:
            return  # a PATH is gone: the next request's scan says so
        stats = collection.stats
        self._emit(
            events.SharePrehashed(
                files_hashed=stats.files_hashed,
                bytes_hashed=stats.bytes_hashed,
                seconds=time.monotonic() - started,
            )
        )

    async def _scan_after(self, previous: asyncio.Task[Any] | None) -> Collection:
        if previous is not None:
            await asyncio.wait([previous])
        # From here on, new requests queue behind this scan.
        self._running, self._queued = self._queued, None
        try:
            return await take_snapshot(self._options, self._emit, self._cache)
        except P2pcpError as exc:  # a PATH is gone, or nothing is left to send
            self._emit(events.SnapshotFailed(str(exc)))
            raise


async def take_snapshot(
    options: ShareOptions, emit: Emit, cache: HashCache | None, *, shows_progress: bool = False
) -> Collection:
    """Scan and hash the share's PATHs now (on threads) and report it as a
    SnapshotTaken event; ``shows_progress``: ImportProgressed events too."""
    started = time.monotonic()
    collection = await scan_share(options, cache, emit if shows_progress else None)
    manifest = collection.manifest
    emit(
        events.SnapshotTaken(
            root=collection.root.hex(),
            file_count=len(manifest.files),
            total_size=manifest.total_size,
            files_hashed=collection.stats.files_hashed,
            bytes_hashed=collection.stats.bytes_hashed,
            seconds=time.monotonic() - started,
            skipped=tuple(collection.skipped),
        )
    )
    return collection


async def scan_share(
    options: ShareOptions, cache: HashCache | None, progress: Emit | None = None
) -> Collection:
    """Scan and hash the share's PATHs (on threads), through the hash cache;
    ``progress``: where ImportProgressed events go, if anywhere."""
    loop = asyncio.get_running_loop()
    done = 0
    try:
        scan = await asyncio.to_thread(
            scan_paths, list(options.paths), scan_filter=options.scan_filter, links=options.links
        )
        total = scan.total_size

        def on_bytes(count: int) -> None:  # runs in the hashing thread
            nonlocal done
            done += count
            if progress is not None:
                loop.call_soon_threadsafe(progress, events.ImportProgressed(done, total))

        return await asyncio.to_thread(
            import_scan, scan, on_bytes if progress is not None else None, cache=cache
        )
    finally:
        if cache is not None:
            await asyncio.to_thread(cache.flush)


def _retrieve(task: asyncio.Task[Any]) -> None:
    """A scan's error reached every waiter, or none was left: never logged."""
    if not task.cancelled():
        task.exception()


# -- the command ---------------------------------------------------------------


async def run_share(options: ShareOptions, emit: Emit) -> None:
    """Scan once (a bad PATH stops here), then serve snapshots until cancelled."""
    cache = await asyncio.to_thread(HashCache.open_default)
    try:
        await _serve(options, emit, cache)
    finally:
        await asyncio.to_thread(cache.close)


async def _serve(options: ShareOptions, emit: Emit, cache: HashCache) -> None:
    # The first scan checks the PATHs before anything is stored or bound.
    first = await take_snapshot(options, emit, cache, shows_progress=True)
    key = share_id(options.paths, options.defining_options)
    secret, is_new = await asyncio.to_thread(load_share_secret, key, rotate=options.rotate)
    source = ShareSource(options, secret, emit, cache)
    secret_key = await asyncio.to_thread(load_or_create_secret_key)
    endpoint = await Endpoint.bind(secret_key, options.endpoint)
    try:
        ticket = _ticket(endpoint, bytes(secret_key.public), secret, options.ticket_type)
        emit(events.ShareOpened(is_new_secret=is_new, is_rotated=options.rotate))
        emit(
            events.SenderReady(
                ticket=encode_ticket(ticket),
                node_id=str(secret_key.public),
                addresses=ticket.addresses,
                total_size=first.manifest.total_size,
                file_count=len(first.manifest.files),
                name=first.manifest.name,
                skipped=tuple(first.skipped),
                relay_url=endpoint.relay_url if ticket.relay_url is not None else None,
                is_relay_connected=endpoint.is_relay_connected,
                kind=TicketKind.SHARE,
            )
        )
        pacer = Pacer(options.limit_rate_bps) if options.limit_rate_bps else None
        # What changes is hashed as it settles, not when a receive asks.
        watcher = asyncio.create_task(watch_and_warm(options.paths, source.warm, emit))
        try:
            await Provider(None, endpoint, emit, pacer=pacer, share=source).serve()
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
    finally:
        await endpoint.close()


def _ticket(endpoint: Endpoint, node_id: bytes, secret: bytes, ticket_type: TicketType) -> Ticket:
    """The share's ticket (module doc: the interface addresses only)."""
    addresses: tuple[tuple[str, int], ...] = ()
    if ticket_type is not TicketType.RELAY:
        observed = endpoint.observed_address
        addresses = tuple(a for a in endpoint.direct_addresses() if a != observed)
    relay_url = None
    if ticket_type is not TicketType.ADDRESSES and endpoint.relay_url is not None:
        relay_url = str(endpoint.relay_url)
    return Ticket(
        node_id=node_id,
        relay_url=relay_url,
        addresses=addresses,
        root_hash=secret,
        total_size=0,
        kind=TicketKind.SHARE,
    )
