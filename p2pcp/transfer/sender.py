"""``send`` as one function: import the paths (or take the text), bind,
make the ticket, serve. ``announce`` (bind and say the ticket) is shared
with the stream sender (``pipe.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from p2pcp.core.identity import SecretKey, load_or_create_secret_key
from p2pcp.core.ticket import Ticket, TicketKind, TicketType, encode_ticket
from p2pcp.net import Endpoint, EndpointConfig
from p2pcp.transfer import events
from p2pcp.transfer.exclude import ScanFilter
from p2pcp.transfer.hashcache import HashCache
from p2pcp.transfer.provider import Provider
from p2pcp.transfer.ratelimit import Pacer
from p2pcp.transfer.source import Collection, import_scan, scan_paths
from p2pcp.transfer.text import text_collection

Emit = Callable[[object], None]


@dataclass(frozen=True)
class SendOptions:
    paths: tuple[Path, ...]
    once: bool = False
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    """How to bind: port, home relay (named in the ticket), controller, ..."""
    strict: bool = False
    """The first file that cannot be read or sent is an error, not a skip."""
    scan_filter: ScanFilter | None = None
    """What to leave out (``--exclude``, ``--exclude-from``, ``--gitignore``)."""
    links: bool = False
    """Symbolic links inside the folders travel as links (``--links``)."""
    text: str | None = None
    """Send this text message instead of ``paths`` (``send --text``)."""
    stream_name: str | None = None
    """Send standard input as a stream of this name instead (``send -``:
    ``pipe.run_send_stream``)."""
    ticket_type: TicketType = TicketType.FULL
    """What the ticket names: relay and addresses, the relay only (no IP
    address), or the addresses only (no relay)."""
    limit_rate_bps: int | None = None
    """Pace everything written to receivers to this many bytes a second
    (``--limit-rate``; ratelimit.py), all receivers together."""


async def run_send(options: SendOptions, emit: Emit) -> None:
    """Serve ``options.paths`` (or the text) until cancelled (or one receiver
    finished, with once)."""
    memory_blobs: dict[bytes, bytes] = {}
    if options.text is not None:
        collection, memory_blobs = text_collection(options.text)
    else:
        collection = await _import(options, emit)
    secret_key = await asyncio.to_thread(load_or_create_secret_key)
    endpoint = await Endpoint.bind(secret_key, options.endpoint)
    try:
        announce(
            endpoint,
            secret_key,
            emit,
            kind=TicketKind.TEXT if collection.manifest.is_text else TicketKind.FILES,
            root=collection.root,
            total_size=collection.manifest.total_size,
            file_count=len(collection.manifest.files),
            name=collection.manifest.name,
            skipped=tuple(collection.skipped),
            ticket_type=options.ticket_type,
        )
        pacer = Pacer(options.limit_rate_bps) if options.limit_rate_bps else None
        provider = Provider(collection, endpoint, emit, memory_blobs=memory_blobs, pacer=pacer)
        await provider.serve(once=options.once)
    finally:
        await endpoint.close()


async def _import(options: SendOptions, emit: Emit) -> Collection:
    scan = await asyncio.to_thread(
        scan_paths,
        list(options.paths),
        strict=options.strict,
        scan_filter=options.scan_filter,
        links=options.links,
    )
    loop = asyncio.get_running_loop()
    total = scan.total_size
    done = 0

    def on_bytes(count: int) -> None:  # runs in the hashing thread
        nonlocal done
        done += count
        loop.call_soon_threadsafe(emit, events.ImportProgressed(done, total))

    # The hash cache (hashcache.py): unchanged files are not read again.
    cache = await asyncio.to_thread(HashCache.open_default)
    try:
        collection = await asyncio.to_thread(import_scan, scan, on_bytes, cache=cache)
    finally:
        await asyncio.to_thread(cache.close)
    stats = collection.stats
    emit(
        events.ImportFinished(
            stats.files_hashed, stats.bytes_hashed, stats.files_cached, stats.bytes_cached
        )
    )
    return collection


def announce(
    endpoint: Endpoint,
    secret_key: SecretKey,
    emit: Emit,
    *,
    kind: TicketKind,
    root: bytes,
    total_size: int,
    file_count: int,
    name: str,
    skipped: tuple[str, ...] = (),
    ticket_type: TicketType = TicketType.FULL,
) -> None:
    """Make the ticket for what ``endpoint`` serves and emit SenderReady
    (which says what the ticket names). A RELAY ticket holds no address, an
    ADDRESSES one no relay (the sender stays on its relay all the same, for
    a receiver that gives ``--relay``)."""
    addresses = tuple(endpoint.direct_addresses())
    if ticket_type is TicketType.RELAY:
        addresses = ()
    relay_url = str(endpoint.relay_url) if endpoint.relay_url is not None else None
    if ticket_type is TicketType.ADDRESSES:
        relay_url = None
    ticket = Ticket(
        node_id=bytes(secret_key.public),
        relay_url=relay_url,
        addresses=addresses,
        root_hash=root,
        total_size=total_size,
        kind=kind,
    )
    emit(
        events.SenderReady(
            ticket=encode_ticket(ticket),
            node_id=str(secret_key.public),
            addresses=addresses,
            total_size=total_size,
            file_count=file_count,
            name=name,
            skipped=skipped,
            relay_url=endpoint.relay_url if relay_url is not None else None,
            is_relay_connected=endpoint.is_relay_connected,
            kind=kind,
        )
    )
