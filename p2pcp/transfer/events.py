"""Events the transfer layer emits; only cli/ renders them.

Small frozen dataclasses named as past-tense facts. They never carry
secrets (no keys; the ticket is public by design).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol, overload

from p2pcp.core.config import RelayUrl
from p2pcp.core.ticket import TicketKind
from p2pcp.net import PathKind, Route


@dataclass(frozen=True)
class ImportProgressed:
    """The sender hashed ``bytes_done`` of ``bytes_total`` while importing."""

    bytes_done: int
    bytes_total: int


@dataclass(frozen=True)
class SenderReady:
    ticket: str
    node_id: str
    addresses: tuple[tuple[str, int], ...]
    total_size: int
    file_count: int
    name: str
    skipped: tuple[str, ...] = ()
    relay_url: RelayUrl | None = None
    is_relay_connected: bool = False
    kind: TicketKind = TicketKind.FILES


@dataclass(frozen=True)
class ReceiverConnected:
    """A receiver connected over ``route`` (its ``str()`` describes it,
    e.g. "direct 198.18.0.5:4433"); ``peer`` is the short form of the node
    id it proved, when it proved one."""

    connection_id: int
    route: Route
    peer: str | None = None


@dataclass(frozen=True)
class ReceiverPathChanged:
    connection_id: int
    route: Route


@dataclass(frozen=True)
class ReceiverProgressed:
    connection_id: int
    bytes_sent: int


@dataclass(frozen=True)
class ReceiverFinished:
    connection_id: int
    bytes_sent: int
    seconds: float


@dataclass(frozen=True)
class ReceiverFailed:
    """A receiver's connection ended before it had everything (``reason``),
    after ``bytes_sent`` file bytes in ``seconds``."""

    connection_id: int
    reason: str
    bytes_sent: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class PeerConnected:
    """The receiver reached the sender over ``route`` (its ``str()`` says
    where: "direct 198.18.0.5:4433" or "relay http://198.18.0.1:3340")."""

    route: Route


@dataclass(frozen=True)
class PathChanged:
    """The connection moved to another path (relay -> direct or back)."""

    route: Route


@dataclass(frozen=True)
class RetryScheduled:
    """The connection was lost; the next attempt starts in ``delay_s``."""

    reason: str
    delay_s: float
    seconds_left: float


@dataclass(frozen=True)
class ManifestReceived:
    """The file list arrived. ``bytes_present``: identical files already in
    place; ``bytes_resumable``: partial data an earlier run left for the
    files still to fetch (checked again before it counts);
    ``files_checked``: files already here compared with the list, of which
    ``files_from_cache`` the hash cache answered without reading them."""

    name: str
    file_count: int
    total_size: int
    bytes_present: int
    bytes_resumable: int = 0
    files_checked: int = 0
    files_from_cache: int = 0


@dataclass(frozen=True)
class FileStarted:
    path: str
    size: int


@dataclass(frozen=True)
class BytesReceived:
    """``count`` more verified bytes of ``path`` were written."""

    path: str
    count: int


@dataclass(frozen=True)
class FileFinished:
    """``path`` is in place, verified. ``was_updated`` (``--update``): it
    replaced a different file there, of which ``bytes_reused`` bytes were
    kept or copied instead of fetched."""

    path: str
    size: int
    blake3: str
    was_present: bool = False
    was_updated: bool = False
    bytes_reused: int = 0


@dataclass(frozen=True, slots=True)
class FileReport:
    """One file of the done report (one per file: slots keep 100,000 of
    them small)."""

    path: str
    size: int
    blake3: str


class _Entry(Protocol):
    @property
    def path(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def root(self) -> bytes: ...


class FileReports(Sequence[FileReport]):
    """The done report's files in manifest order, each made when asked for
    from its manifest entry and the standard BLAKE3 of its content (by
    content root): 100,000 reports held as objects cost ~25 MB."""

    def __init__(self, entries: Sequence[_Entry], blake3_by_root: Mapping[bytes, bytes]) -> None:
        self._entries = entries
        self._blake3 = blake3_by_root

    def __len__(self) -> int:
        return len(self._entries)

    @overload
    def __getitem__(self, index: int) -> FileReport: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[FileReport, ...]: ...
    def __getitem__(self, index: int | slice) -> FileReport | tuple[FileReport, ...]:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(len(self))))
        entry = self._entries[index]
        return FileReport(entry.path, entry.size, self._blake3[entry.root].hex())

    def __repr__(self) -> str:
        return f"<{len(self)} file reports>"


@dataclass(frozen=True, repr=False)
class TransferFinished:
    out_path: str
    bytes_received: int
    bytes_present: int
    seconds: float
    files: Sequence[FileReport] = ()
    # UDP payload bytes carried by each path kind, both ways.
    bytes_by_path: dict[PathKind, int] = field(default_factory=dict)
    # --update: bytes of the new versions taken from the old files, not fetched.
    bytes_reused: int = 0

    def __repr__(self) -> str:
        # Short: asyncio's Runner formats the main task's repr (and with it
        # this result) when it ends; a repr of 100,000 reports took ~30 MB.
        return (
            f"TransferFinished({self.out_path!r}, {self.bytes_received} bytes received, "
            f"{len(self.files)} files)"
        )

    @property
    def main_path(self) -> PathKind:
        """The path that carried the most bytes."""
        if not self.bytes_by_path:
            return PathKind.DIRECT
        return max(self.bytes_by_path.items(), key=lambda item: item[1])[0]


@dataclass(frozen=True)
class TextReceived:
    """A text message arrived, verified (``send --text``); nothing was written."""

    text: str


@dataclass(frozen=True)
class StreamStarted:
    """A stream's answer began (``send -``): its ``name``, and where its
    bytes go (``out_path``: a file's final path, or "-" for stdout)."""

    name: str
    out_path: str


@dataclass(frozen=True)
class Connecting:
    """The receiver is about to dial the sender ``node`` (its short id) at
    ``address_count`` direct addresses and, if not None, over ``relay_url``."""

    node: str
    address_count: int
    relay_url: RelayUrl | None


@dataclass(frozen=True)
class ImportFinished:
    """The sender's import is done: ``files_hashed`` files
    (``bytes_hashed`` bytes) were read and hashed, ``files_cached``
    (``bytes_cached``) came from the hash cache unread."""

    files_hashed: int
    bytes_hashed: int
    files_cached: int
    bytes_cached: int


@dataclass(frozen=True)
class LinkPlaced:
    """A symbolic link of the manifest is in place at ``path`` (pointing at
    ``target``); ``was_present``: the same link was there already."""

    path: str
    target: str
    was_present: bool = False


@dataclass(frozen=True)
class LinkSkipped:
    """A symbolic link of the manifest was not created: its target is
    unsafe (``reason``: absolute, or it leaves the received folder), and
    the receive did not allow it (``--unsafe-links``)."""

    path: str
    target: str
    reason: str


class _Word(str, Enum):
    """A member is its word (``str()``, format and JSON), as 3.11's
    ``StrEnum`` (the package supports 3.10)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class LocalKind(_Word):
    """What a path in the output folder is (never followed: a link is a link)."""

    FILE = "file"
    DIR = "dir"
    LINK = "link"


@dataclass(frozen=True)
class FileDeleted:
    """``--delete`` removed ``path`` (relative to the output folder): the
    snapshot does not hold it."""

    path: str
    kind: LocalKind


@dataclass(frozen=True)
class DeleteFailed:
    """``--delete`` could not remove ``path`` (``reason``); the rest goes on
    and the receive then ends with exit 1."""

    path: str
    kind: LocalKind
    reason: str


@dataclass(frozen=True)
class FileTouched:
    """``--update``: ``path`` held the right content with another
    modification time or mode; its metadata was fixed in place."""

    path: str
    has_new_time: bool
    has_new_mode: bool


class Change(_Word):
    """What a receive would do to one path (``--dry-run``)."""

    ADD = "add"
    UPDATE = "update"
    DELETE = "delete"
    TOUCH = "touch"


@dataclass(frozen=True)
class ChangeFound:
    """``--dry-run``: the receive would make ``change`` to ``path`` (relative
    to the output folder): add or update a file of ``size`` bytes, delete
    a path of ``kind``, or fix a file's time and/or mode."""

    change: Change
    path: str
    size: int = 0
    kind: LocalKind = LocalKind.FILE
    has_new_time: bool = False
    has_new_mode: bool = False


@dataclass(frozen=True)
class DryRunFinished:
    """``--dry-run`` is over and nothing was written: what the receive
    would do, in counts and bytes. ``would_exit``: the exit code the receive
    would end with before writing anything (5: files differ and neither
    ``--update`` nor ``--force`` was given; ``reason`` says so)."""

    out_path: str
    files_to_add: int = 0
    bytes_to_add: int = 0
    files_to_update: int = 0
    bytes_to_update: int = 0
    files_to_touch: int = 0
    paths_to_delete: int = 0
    files_unchanged: int = 0
    bytes_unchanged: int = 0
    would_exit: int = 0
    reason: str = ""


@dataclass(frozen=True)
class SnapshotTaken:
    """A share made a snapshot (``p2pcp share``: at start, then for each
    GET_SNAPSHOT, one scan for the requests that arrived together): its
    manifest ``root`` (hex), ``file_count`` files of ``total_size`` bytes,
    of which ``files_hashed`` (``bytes_hashed`` bytes) were read and
    hashed (the others came from the hash cache), in ``seconds``;
    ``skipped``: what could not be read."""

    root: str
    file_count: int
    total_size: int
    files_hashed: int
    seconds: float
    skipped: tuple[str, ...] = ()
    bytes_hashed: int = 0


@dataclass(frozen=True)
class ShareRefused:
    """A share refused receiver ``connection_id``'s GET_SNAPSHOT: its
    ticket's secret is not the share's (``is_unknown_ticket``: an old
    ticket after ``--rotate``, or another share's), or the node id it
    proved (``node_id``, in full) is not on the ``--allow`` list."""

    connection_id: int
    node_id: str | None
    is_unknown_ticket: bool


@dataclass(frozen=True)
class SnapshotFailed:
    """A share could not make a snapshot (a PATH is gone, nothing is left
    to send): the receiver that asked is told so; the share keeps serving."""

    reason: str


@dataclass(frozen=True)
class ShareOpened:
    """A share is about to print its ticket: ``is_new_secret`` when its
    secret was made now (a first run, or ``is_rotated``: earlier tickets of
    this share no longer work)."""

    is_new_secret: bool
    is_rotated: bool


@dataclass(frozen=True)
class SharePrehashed:
    """A share hashed what changed under its PATHs before any receive asked
    (transfer/watch.py): ``files_hashed`` files, ``bytes_hashed`` bytes, in
    ``seconds``; the next snapshot finds them in the hash cache."""

    files_hashed: int
    bytes_hashed: int
    seconds: float


@dataclass(frozen=True)
class ShareWatchStopped:
    """A share cannot watch its PATHs for changes (``reason``): each
    receive's snapshot then hashes what changed, as it always may."""

    reason: str
