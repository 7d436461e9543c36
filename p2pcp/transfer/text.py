"""Text messages (``send --text``): a collection marked as text.

The sender offers a manifest with the text flag (``blobs.collection``:
one file, at most MAX_TEXT_BYTES) whose one blob is the message's UTF-8
bytes, held in memory; the ticket says TEXT. The receiver fetches the
manifest and the blob like any others, each verified against the ticket's
root, then hands the text out (``events.TextReceived``) and writes nothing
to disk. A manifest that does not agree with the ticket's kind (a text
ticket whose manifest is files, or the reverse) is refused by
``requests.fetch_manifest``: exit 4.
"""

from __future__ import annotations

import dataclasses
import time

from p2pcp.blobs.collection import MAX_TEXT_BYTES, Manifest, encode_manifest
from p2pcp.blobs.encoding import ALL, LeafVerified, RangeDecoder
from p2pcp.blobs.tree import Outboard
from p2pcp.core.config import RelayUrl
from p2pcp.core.errors import RemoteProtocolError, UsageError
from p2pcp.net import Endpoint
from p2pcp.transfer import events, wire
from p2pcp.transfer.fetcher import Fetcher
from p2pcp.transfer.requests import (
    accept_first,
    close_quietly,
    fetch_blob,
    fetch_manifest,
    send_done,
    send_request,
)
from p2pcp.transfer.source import BlobIndex, Collection

# The manifest's name for a text message (never a file on the receiver).
TEXT_NAME = "text"


def check_text_size(data: bytes) -> None:
    if len(data) > MAX_TEXT_BYTES:
        raise UsageError(
            f"the text is larger than {MAX_TEXT_BYTES // (1024 * 1024)} MiB: send it as a "
            "file (p2pcp send FILE) or as a stream (p2pcp send -)"
        )


def text_collection(text: str) -> tuple[Collection, dict[bytes, bytes]]:
    """The collection of a text message, and its one blob (served from memory)."""
    data = text.encode("utf-8")
    check_text_size(data)
    root = bytes(Outboard.from_bytes(data).root)
    manifest = dataclasses.replace(Manifest.single_file(TEXT_NAME, len(data), root), is_text=True)
    manifest_bytes = encode_manifest(manifest)
    collection = Collection(
        manifest=manifest,
        manifest_bytes=manifest_bytes,
        manifest_outboard=Outboard.from_bytes(manifest_bytes),
        blobs=BlobIndex({}),
    )
    return collection, {root: data}


class TextFetcher(Fetcher):
    """Fetch a text ticket's message: verified, held in memory, never written."""

    async def _session(
        self, endpoint: Endpoint, relay_url: RelayUrl | None, started: float
    ) -> events.TransferFinished:
        connection = await self._connect(endpoint, relay_url, self.options.connect_timeout_s)
        try:
            manifest, first = await fetch_manifest(
                connection, self.ticket, self.options.progress_timeout_s, self._mark_first_byte
            )
            entry = manifest.files[0]
            timeout_s = self.options.progress_timeout_s
            has_status = await accept_first(first, "the text", timeout_s)
            stream = first
            if not has_status:
                stream = await send_request(connection, wire.GetRequest(entry.root, ALL))
            data = bytearray()

            async def on_leaf(leaf: LeafVerified) -> None:
                data.extend(leaf.data)

            decoder = RangeDecoder(entry.root, ALL, expected_size=entry.size)
            await fetch_blob(
                stream,
                decoder,
                on_leaf,
                "the text",
                timeout_s,
                has_status=has_status,
                leaf_type=LeafVerified,
            )
            try:
                text = bytes(data).decode("utf-8")
            except UnicodeDecodeError:
                raise RemoteProtocolError("the sender's text is not UTF-8") from None
            self.bytes_received = len(data)
            seconds = time.monotonic() - (self.first_byte_at or started)
            self.emit(events.TextReceived(text))
            await send_done(connection, self.bytes_received)
        finally:
            await close_quietly(connection, "done")
        return events.TransferFinished(
            out_path="", bytes_received=len(data), bytes_present=0, seconds=seconds
        )
