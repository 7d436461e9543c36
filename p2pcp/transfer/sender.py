"""``send`` as one function: import the paths, bind, make the ticket, serve."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from p2pcp.core.identity import load_or_create_secret_key
from p2pcp.core.ticket import Ticket, encode_ticket
from p2pcp.net import Endpoint, EndpointConfig
from p2pcp.transfer import events
from p2pcp.transfer.provider import Provider
from p2pcp.transfer.source import import_scan, scan_paths

Emit = Callable[[object], None]


@dataclass(frozen=True)
class SendOptions:
    paths: tuple[Path, ...]
    once: bool = False
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    """How to bind: port, home relay (named in the ticket), controller, ..."""
    strict: bool = False
    """The first file that cannot be read or sent is an error, not a skip."""


async def run_send(options: SendOptions, emit: Emit) -> None:
    """Serve ``options.paths`` until cancelled (or one receiver finished, with once)."""
    scan = await asyncio.to_thread(scan_paths, list(options.paths), strict=options.strict)
    loop = asyncio.get_running_loop()
    total = scan.total_size
    done = 0

    def on_bytes(count: int) -> None:  # runs in the hashing thread
        nonlocal done
        done += count
        loop.call_soon_threadsafe(emit, events.ImportProgressed(done, total))

    collection = await asyncio.to_thread(import_scan, scan, on_bytes)
    del scan  # an object per file, not needed while serving
    secret_key = await asyncio.to_thread(load_or_create_secret_key)
    endpoint = await Endpoint.bind(secret_key, options.endpoint)
    try:
        addresses = tuple(endpoint.direct_addresses())
        relay_url = str(endpoint.relay_url) if endpoint.relay_url is not None else None
        ticket = Ticket(
            node_id=bytes(secret_key.public),
            relay_url=relay_url,
            addresses=addresses,
            root_hash=collection.root,
            total_size=collection.manifest.total_size,
        )
        emit(
            events.SenderReady(
                ticket=encode_ticket(ticket),
                node_id=str(secret_key.public),
                addresses=addresses,
                total_size=collection.manifest.total_size,
                file_count=len(collection.manifest.files),
                name=collection.manifest.name,
                skipped=tuple(collection.skipped),
                relay_url=endpoint.relay_url,
                is_relay_connected=endpoint.is_relay_connected,
            )
        )
        await Provider(collection, endpoint, emit).serve(once=options.once)
    finally:
        await endpoint.close()
