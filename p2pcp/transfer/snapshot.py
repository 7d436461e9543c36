"""The receiver's side of a share (``p2pcp share``): its current snapshot.

A share ticket holds no content hash but the share's capability secret.
After connecting (QUIC pins the connection to the ticket's node id, which is
what authenticates the answer), the receiver sends GET_SNAPSHOT with the
secret; the sender rescans and answers the manifest root of what it holds
now. From there the receive is a files ticket's with that root: every byte
is verified against it.

Rules:
- The partial folder of a share is named after the secret, not the root
  (``partial_key``): an interrupted pull resumes even when the next
  snapshot has another root.
- Every connection asks again (a reconnection too): the sender answers blob
  requests only on a connection that was given a snapshot. A reconnection
  keeps fetching the snapshot it started (the sender keeps it a while).
- A file that changed after the snapshot was made (the sender resets with
  "content changed"), or a snapshot the sender no longer keeps (NOT FOUND),
  starts the receive again with a new snapshot, keeping what verified (files
  in place, the partial folder); at most MAX_SNAPSHOTS snapshots per
  receive, so a folder that never stops changing ends it (exit 4).
- NOT FOUND and DENIED answers to GET_SNAPSHOT are ``AccessDeniedError``
  (exit 2) saying what to do. The secret is never shown.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Container, Iterable

import blake3

from p2pcp.blobs.collection import Manifest
from p2pcp.core.errors import (
    AccessDeniedError,
    IntegrityError,
    P2pcpError,
    RemoteProtocolError,
    StorageError,
    StreamResetError,
)
from p2pcp.core.ticket import Ticket, TicketKind
from p2pcp.net import Connection
from p2pcp.transfer import wire

# Snapshots one receive may start from: the first, and two more after a file
# changed under it (a log being written, a file saved during the scan).
MAX_SNAPSHOTS = 3


class ContentChangedError(IntegrityError):
    """The sender's file ``what`` no longer matches the hash it committed to
    (reset 0x11): for a files ticket final, for a share a new snapshot."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"the sender's copy of {what} changed since the ticket was made; ask for a new ticket"
        )
        self.what = what


def partial_key(secret: bytes) -> bytes:
    """What names a share's partial folder (``.p2pcp-partial-`` and the first
    16 hex digits of this): BLAKE3 of the secret, so the name reveals nothing
    of it."""
    return bytes(blake3.blake3(secret).digest())


async def request_snapshot(connection: Connection, secret: bytes, node_id: str) -> wire.Snapshot:
    """GET_SNAPSHOT on ``connection``: the share's current snapshot, made for
    this request (``node_id``: ours, for the error that says to allow it)."""
    stream = await connection.open_stream()
    await stream.write(wire.encode_request(wire.SnapshotRequest(secret)))
    await stream.finish()
    try:
        status = (await stream.read_exactly(1))[0]
        if status == wire.STATUS_OK:
            body = await stream.read_exactly(wire.SNAPSHOT_ANSWER_BYTES)
            if await stream.read():
                raise RemoteProtocolError("the sender's snapshot answer is too long")
            return wire.decode_snapshot(body)
    except StreamResetError as exc:
        if exc.code == wire.ERROR_NOT_FOUND:
            raise StorageError(
                "the share cannot read its files now (its output says why); try again later"
            ) from None
        if exc.code == wire.ERROR_BAD_REQUEST:
            raise AccessDeniedError(
                "the sender does not know share tickets: update p2pcp on the sender"
            ) from None
        raise
    if status == wire.STATUS_NOT_FOUND:
        raise AccessDeniedError(
            "the share does not know this ticket: the share's ticket changed (share --rotate, "
            "or other paths or options), or it is another share's; ask for its current ticket"
        )
    if status == wire.STATUS_DENIED:
        raise AccessDeniedError(
            f"the share refused this receiver: its node id {node_id} is not on the share's "
            f"allow list; the sender must add --allow {node_id}"
        )
    raise RemoteProtocolError(f"the sender answered GET_SNAPSHOT with unknown status {status}")


class ShareFollower:
    """A share ticket's part of one receive: the snapshot being fetched and
    how many were started (module doc)."""

    def __init__(self, ticket: Ticket) -> None:
        self.share_ticket = ticket
        self.node_id = ""
        """This receiver's node id (set once its key is loaded)."""
        self.snapshot: wire.Snapshot | None = None
        self.snapshots_started = 0
        self.placed: frozenset[str] = frozenset()
        """Paths this receive placed from an earlier snapshot: the next one
        may replace them (they were not the user's)."""

    def __repr__(self) -> str:  # the ticket holds the secret
        return f"ShareFollower({self.snapshots_started} snapshots)"

    @property
    def partial_key(self) -> bytes:
        return partial_key(self.share_ticket.root_hash)

    async def ticket_for(self, connection: Connection, *, is_started: bool) -> Ticket:
        """Ask for a snapshot on ``connection`` (which lets it fetch); the
        files ticket to go on with: the new snapshot's when none is started
        (``is_started`` False), else the one being fetched."""
        snapshot = await request_snapshot(connection, self.share_ticket.root_hash, self.node_id)
        if not is_started or self.snapshot is None:
            self.snapshot = snapshot
            self.snapshots_started += 1
        return dataclasses.replace(
            self.share_ticket,
            root_hash=self.snapshot.root,
            total_size=self.snapshot.total_size,
            kind=TicketKind.FILES,
        )

    def note_placed(
        self, manifest: Manifest, present: Iterable[str], done: Container[bytes]
    ) -> None:
        """Before a new snapshot: the paths of ``manifest`` this receive put
        in place (their content is ``done``; ``present`` were there already)."""
        before = set(present)
        placed = {e.path for e in manifest.files if e.root in done and e.path not in before}
        self.placed = self.placed | placed

    def check_file_count(self, file_count: int) -> None:
        """The manifest (verified against the root) must agree with the answer."""
        if self.snapshot is not None and file_count != self.snapshot.file_count:
            raise IntegrityError("the share's file list does not match its snapshot answer")

    def may_start_again(self, error: P2pcpError) -> bool:
        """Whether a receive stopped by ``error`` (a file changed, or the
        snapshot is gone) starts again from a new snapshot; raises the
        final error when MAX_SNAPSHOTS were started."""
        if self.snapshots_started < MAX_SNAPSHOTS:
            return True
        if isinstance(error, ContentChangedError):
            last = f"the last time {error.what} changed"
        else:
            last = "the last one was gone before it was fetched"
        raise IntegrityError(
            f"the share's files kept changing while they were fetched ({self.snapshots_started} "
            f"snapshots, {last}): run the receive again later"
        ) from None
