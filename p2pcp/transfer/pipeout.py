"""Pipes, the receiver's side: ``receive --out -`` and stream tickets.

- A stream ticket (``send -``): GET_STREAM, then the frames of
  ``stream.py`` to standard output (``--out -``) or to a file under the
  output folder. Every byte comes from the QUIC connection pinned to the
  ticket's node id, so it was sent by the holder of the sender's key before
  it is written; the length and standard BLAKE3 of the whole stream are
  checked at its end, and a mismatch is exit 4. On stdout the bytes before
  the end cannot be taken back (the one-line error says so); into a folder
  they go to a partial file that is renamed into place only after the end
  matched, and removed otherwise. A stream is sent once: no retry.
- A file ticket with ``--out -``: the manifest must be a single file; its
  leaves are each verified against the ticket's root before they are
  written to stdout, in order, one leaf at a time (bounded memory). A lost
  connection is retried as any receive is, from the next leaf.

Writes to stdout run on a daemon thread of their own (``pipe.FdThread``): a
reader that does not read (``| less``) blocks that thread, never the event
loop, so the connection stays alive while QUIC's windows stop the sender.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import time
from pathlib import Path
from typing import Protocol

import blake3

from p2pcp.blobs.collection import Entry
from p2pcp.blobs.encoding import MAX_LEAF_INDEX, LeafVerified, RangeDecoder
from p2pcp.blobs.names import display_path
from p2pcp.blobs.tree import LEAF_SIZE
from p2pcp.core.config import RelayUrl
from p2pcp.core.defaults import PARTIAL_DIR_PREFIX
from p2pcp.core.errors import (
    ConnectionLostError,
    IntegrityError,
    P2pcpError,
    RemoteProtocolError,
    StorageError,
    StreamResetError,
    UsageError,
    WouldOverwriteError,
)
from p2pcp.core.ticket import Ticket, TicketKind
from p2pcp.net import Connection, Endpoint, Stream
from p2pcp.transfer import events, wire
from p2pcp.transfer.fetcher import Emit, Fetcher, FetchOptions
from p2pcp.transfer.pipe import FdThread
from p2pcp.transfer.requests import (
    accept_first,
    close_quietly,
    drop,
    explain_reset,
    fetch_blob,
    fetch_manifest,
    send_done,
    send_request,
)
from p2pcp.transfer.stream import StreamData, StreamDecoder, StreamEnded, StreamHead
from p2pcp.transfer.text import TextFetcher

STDOUT_FD = 1
# What out_path says for standard output.
STDOUT = "-"


def _add_note(error: P2pcpError, note: str) -> None:
    """Append ``note`` to ``error``'s one line."""
    error.message += note
    error.args = (error.message,)


def fetcher_for(ticket: Ticket, options: FetchOptions, emit: Emit, *, to_stdout: bool) -> Fetcher:
    """The fetcher for this ticket's kind, writing to stdout or the folder."""
    if ticket.kind is TicketKind.TEXT:
        return TextFetcher(ticket, options, emit)
    if ticket.kind is TicketKind.STREAM:
        return StreamFetcher(ticket, options, emit, to_stdout=to_stdout)
    if to_stdout and ticket.kind is TicketKind.SHARE:
        raise UsageError("a share's files go to a folder: give --out DIR, not -")
    if to_stdout:
        return StdoutFetcher(ticket, options, emit)
    return Fetcher(ticket, options, emit)


class Sink(Protocol):
    async def write(self, data: bytes) -> None: ...
    async def finish(self) -> None: ...
    def abort(self) -> None: ...


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class StdoutSink:
    """Bytes to standard output, in order, on a thread of their own."""

    def __init__(self) -> None:
        self._thread = FdThread("p2pcp-stdout")
        self.bytes_written = 0

    async def write(self, data: bytes) -> None:
        try:
            await self._thread.call(_write_all, STDOUT_FD, data)
        except OSError as exc:
            reason = "its reader closed it" if isinstance(exc, BrokenPipeError) else exc.strerror
            raise StorageError(f"cannot write to standard output: {reason}") from None
        self.bytes_written += len(data)

    async def finish(self) -> None:
        self._thread.close()

    def abort(self) -> None:
        self._thread.close()

    def not_taken_back(self) -> str:
        """What a failure message adds: stdout already has some bytes."""
        return (
            f"; the {self.bytes_written} bytes already written to standard output cannot "
            "be taken back: discard them"
        )


class FileSink:
    """A stream into ``out_dir/name``: a partial file in the partial folder,
    renamed into place (fsynced) only after the stream's end matched."""

    def __init__(self, out_dir: Path, name: str, stream_id: bytes, *, force: bool) -> None:
        self.final = out_dir / name
        self.force = force
        self._check_destination()
        self.partial_dir = out_dir / f"{PARTIAL_DIR_PREFIX}{stream_id.hex()[:16]}"
        self.part = self.partial_dir / "stream.part"
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            self.partial_dir.mkdir(exist_ok=True)
            self.fd: int | None = os.open(
                self.part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666
            )
        except OSError as exc:
            raise StorageError(
                f"cannot write into {display_path(str(out_dir))}: {exc.strerror}"
            ) from None
        self.bytes_written = 0

    def _check_destination(self) -> None:
        shown = display_path(str(self.final))
        try:
            found = os.lstat(self.final)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StorageError(f"cannot check {shown}: {exc.strerror}") from None
        if stat.S_ISDIR(found.st_mode):
            raise WouldOverwriteError(f"{shown} is a folder; the stream is a file")
        if not self.force:
            raise WouldOverwriteError(f"{shown} exists (--force replaces it)")

    async def write(self, data: bytes) -> None:
        fd = self.fd
        if fd is None:
            raise StorageError("internal: write after the end of the stream")
        try:
            await asyncio.to_thread(_write_all, fd, data)
        except OSError as exc:
            raise StorageError(
                f"cannot write {display_path(str(self.part))}: {exc.strerror}"
            ) from None
        self.bytes_written += len(data)

    async def finish(self) -> None:
        await asyncio.to_thread(self._place)

    def _place(self) -> None:
        fd = self.fd
        if fd is None:
            return
        try:
            os.fsync(fd)
            os.close(fd)
            self.fd = None
            self._check_destination()  # again: it may have appeared meanwhile
            os.replace(self.part, self.final)
            folder = os.open(self.final.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
            os.rmdir(self.partial_dir)
        except OSError as exc:
            raise StorageError(
                f"cannot place {display_path(str(self.final))}: {exc.strerror}"
            ) from None

    def abort(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        with contextlib.suppress(OSError):
            os.unlink(self.part)
        with contextlib.suppress(OSError):
            os.rmdir(self.partial_dir)

    def not_taken_back(self) -> str:
        return ""


class StreamFetcher(Fetcher):
    """Receive a stream ticket's stream, to stdout or to a file."""

    def __init__(
        self, ticket: Ticket, options: FetchOptions, emit: Emit, *, to_stdout: bool
    ) -> None:
        super().__init__(ticket, options, emit)
        self.to_stdout = to_stdout

    async def _session(
        self, endpoint: Endpoint, relay_url: RelayUrl | None, started: float
    ) -> events.TransferFinished:
        connection = await self._connect(endpoint, relay_url, self.options.connect_timeout_s)
        sink: StdoutSink | FileSink | None = None
        is_placed = False
        try:
            stream = await send_request(connection, wire.StreamRequest(self.ticket.root_hash))
            decoder = StreamDecoder()
            try:
                await self._read_status(stream)
                name = ""
                ended: StreamEnded | None = None
                while chunks := await stream.read_chunks():
                    if self.pacer is not None:  # no more is read until allowed
                        await self.pacer.pace(sum(map(len, chunks)))
                    pending = bytearray()
                    for chunk in chunks:
                        decoder.receive_data(chunk)
                    while (event := decoder.next_event()) is not None:
                        if isinstance(event, StreamHead):
                            name = event.name
                            sink = self._open(name)
                        elif isinstance(event, StreamData):
                            pending += event.data
                        else:
                            ended = event
                    if pending and sink is not None:
                        self._mark_first_byte()
                        await sink.write(bytes(pending))
                        self.bytes_received += len(pending)
                        self.emit(events.BytesReceived(name, len(pending)))
                if stream.is_connection_lost and ended is None:
                    raise ConnectionLostError("the connection closed during the stream")
                decoder.receive_end()
            except StreamResetError as exc:
                raise explain_reset(exc, "the stream") from None
            except (IntegrityError, RemoteProtocolError, ConnectionLostError) as exc:
                if sink is not None:
                    _add_note(exc, sink.not_taken_back())
                raise
            if sink is None or ended is None:
                raise RemoteProtocolError("internal: a finished stream without its head")
            seconds = time.monotonic() - (self.first_byte_at or started)
            await sink.finish()
            is_placed = True
            out_path = STDOUT if self.to_stdout else str(self.options.out_dir / name)
            self.emit(events.FileFinished(name, ended.length, ended.blake3.hex()))
            await send_done(connection, self.bytes_received)
        finally:
            if sink is not None and not is_placed:
                sink.abort()
            await close_quietly(connection, "done")
        report = events.FileReport(name, ended.length, ended.blake3.hex())
        return events.TransferFinished(
            out_path=out_path,
            bytes_received=self.bytes_received,
            bytes_present=0,
            seconds=seconds,
            files=(report,),
            bytes_by_path=dict(connection.bytes_by_path),
        )

    async def _read_status(self, stream: Stream) -> None:
        status = (await stream.read_exactly(1))[0]
        if status == wire.STATUS_TAKEN:
            raise UsageError(
                "another receiver already took this stream (a stream is sent once; "
                "ask for a new ticket)"
            )
        if status == wire.STATUS_NOT_FOUND:
            raise UsageError("the sender no longer offers this stream (ask for a new ticket)")
        if status != wire.STATUS_OK:
            raise RemoteProtocolError(f"the sender answered with unknown status {status}")

    def _open(self, name: str) -> StdoutSink | FileSink:
        sink: StdoutSink | FileSink
        if self.to_stdout:
            sink = StdoutSink()
            out_path = STDOUT
        else:
            sink = FileSink(
                self.options.out_dir, name, self.ticket.root_hash, force=self.options.force
            )
            out_path = str(sink.final)
        self.emit(events.StreamStarted(name, out_path))
        return sink


class StdoutFetcher(Fetcher):
    """A single-file ticket to stdout: each leaf verified, then written, in order."""

    async def _session(
        self, endpoint: Endpoint, relay_url: RelayUrl | None, started: float
    ) -> events.TransferFinished:
        connection = await self._connect(endpoint, relay_url, self.options.connect_timeout_s)
        sink = StdoutSink()
        hasher = blake3.blake3()
        try:
            manifest, first = await fetch_manifest(
                connection, self.ticket, self.options.progress_timeout_s, self._mark_first_byte
            )
            if not manifest.is_single_file:
                drop(first)
                raise UsageError(
                    "--out -: this ticket offers a folder or several files; standard output "
                    "takes a single file (give --out DIR)"
                )
            entry = manifest.files[0]
            self.emit(events.ManifestReceived(entry.path, 1, entry.size, 0))
            self.emit(events.FileStarted(entry.path, entry.size))
            first_stream: Stream | None = first
            # The retry budget runs from the first loss, afresh after progress.
            deadline: float | None = None
            while True:
                received_before = self.bytes_received
                try:
                    await self._fetch_from(connection, entry, first_stream, sink, hasher)
                    break
                except ConnectionLostError as exc:
                    first_stream = None
                    await close_quietly(connection, "lost")
                    if deadline is None or self.bytes_received > received_before:
                        deadline = time.monotonic() + self.options.retry_for_s
                    connection = await self._reconnect(endpoint, relay_url, exc, deadline)
            seconds = time.monotonic() - (self.first_byte_at or started)
            await sink.finish()
            digest = hasher.hexdigest()
            self.emit(events.FileFinished(entry.path, entry.size, digest))
            await send_done(connection, self.bytes_received)
        except (IntegrityError, RemoteProtocolError, ConnectionLostError) as exc:
            if sink.bytes_written:
                _add_note(exc, sink.not_taken_back())
            raise
        finally:
            sink.abort()
            await close_quietly(connection, "done")
        return events.TransferFinished(
            out_path=STDOUT,
            bytes_received=self.bytes_received,
            bytes_present=0,
            seconds=seconds,
            files=(events.FileReport(entry.path, entry.size, digest),),
            bytes_by_path=dict(connection.bytes_by_path),
        )

    async def _fetch_from(
        self,
        connection: Connection,
        entry: Entry,
        first: Stream | None,
        sink: StdoutSink,
        hasher: blake3.blake3,
    ) -> None:
        """Fetch ``entry`` from the first leaf not yet written to the end."""
        # Every leaf but the last is whole: what is written ends at a leaf.
        from_leaf = sink.bytes_written // LEAF_SIZE
        ranges = ((from_leaf, MAX_LEAF_INDEX),)
        stream: Stream | None = None
        has_status = False
        timeout_s = self.options.progress_timeout_s
        if (
            first is not None
            and from_leaf == 0
            and await accept_first(first, entry.path, timeout_s)
        ):
            stream, has_status = first, True
        if stream is None:
            drop(first)
            stream = await send_request(connection, wire.GetRequest(entry.root, ranges))

        async def on_leaf(leaf: LeafVerified) -> None:
            if self.pacer is not None:
                await self.pacer.pace(len(leaf.data))
            await sink.write(leaf.data)
            hasher.update(leaf.data)
            self.bytes_received += len(leaf.data)
            self.emit(events.BytesReceived(entry.path, len(leaf.data)))

        decoder = RangeDecoder(entry.root, ranges, expected_size=entry.size)
        await fetch_blob(
            stream,
            decoder,
            on_leaf,
            entry.path,
            timeout_s,
            has_status=has_status,
            leaf_type=LeafVerified,
        )
