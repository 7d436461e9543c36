"""Rendering transfer events: rich bars, plain lines, or JSON lines.

One view per command. A view receives every event from the transfer layer
(``handle``) and decides, from the ``OutputMode``, what a person or a script
sees. JSON ``progress`` lines are throttled; so are bar updates.

The display's cost per event must stay small beside the transfer's: a
receive of many small files brings thousands of events a second. So a bar
is updated at most every ``BAR_UPDATE_INTERVAL_S`` (rich redraws 8 times a
second anyway), and a file gets a bar of its own only when it is worth
watching: at least ``FILE_BAR_MIN_BYTES``, or still arriving after
``FILE_BAR_AFTER_S``. Adding a bar redraws the whole display at once, and a
bar per tiny file made a 20,000-file receive four times slower in a
terminal.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from p2pcp.blobs.names import display_path
from p2pcp.cli.output import OutputMode, console, human_bytes, plural
from p2pcp.core.defaults import JSON_PROGRESS_INTERVAL_S
from p2pcp.core.ticket import TicketKind
from p2pcp.net import PathKind, Route
from p2pcp.transfer import events

# Per-file bars beyond this many would scroll the screen; the overall bar
# still counts every byte.
MAX_FILE_BARS = 6
# A file this big takes long enough to watch (~0.1 s even at LAN speed).
FILE_BAR_MIN_BYTES = 8 * 1024 * 1024
# A smaller file still arriving after this long gets a bar too (slow link).
FILE_BAR_AFTER_S = 1.0
# Bars take new figures at most this often.
BAR_UPDATE_INTERVAL_S = 0.1


def _bars(out: Console) -> Progress:
    return Progress(
        # Descriptions hold file names: never markup ("[/x]" in a name is text).
        TextColumn("{task.description}", justify="left", markup=False),
        BarColumn(bar_width=None),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=out,
        transient=False,
        refresh_per_second=8,
    )


def _where(route: Route) -> dict[str, str]:
    """``{"url": ...}`` for a relay path, ``{"address": ...}`` for a direct one."""
    return {"url": route.place} if route.kind is PathKind.RELAY else {"address": route.place}


def _shorten(path: str, width: int = 32) -> str:
    """A file name for a bar: escaped, and its end kept if it is long."""
    shown = display_path(path)
    return shown if len(shown) <= width else "…" + shown[-(width - 1) :]


def _sending(event: events.SenderReady) -> str:
    """What a sender offers, in one line."""
    if event.kind is TicketKind.TEXT:
        return f"Sending a text message ({human_bytes(event.total_size)})"
    if event.kind is TicketKind.STREAM:
        return f"Sending standard input as a stream named {display_path(event.name)}"
    if event.kind is TicketKind.SHARE:
        files = plural(event.file_count, "file")
        return (
            f"Sharing {display_path(event.name)}: {files}, {human_bytes(event.total_size)} now "
            "(each receive gets what it holds then)"
        )
    files = plural(event.file_count, "file")
    return f"Sending {display_path(event.name)}: {files}, {human_bytes(event.total_size)}"


def _local(path: str, kind: events.LocalKind) -> str:
    """A path of the output folder for people: a folder ends with a slash,
    a link says so."""
    shown = display_path(path)
    if kind is events.LocalKind.DIR:
        return shown + "/"
    return f"{shown} (link)" if kind is events.LocalKind.LINK else shown


def _touched(has_new_time: bool, has_new_mode: bool) -> str:
    return " and ".join(
        what for what, is_new in (("time", has_new_time), ("mode", has_new_mode)) if is_new
    )


def _speed(count: int, seconds: float) -> str:
    return f"{human_bytes(count / max(seconds, 1e-6))}/s"


_V = TypeVar("_V", bound="_View")


class _View:
    """Routes each event to ``_on_<EventName>``; owns the bars' lifetime."""

    def __init__(self, mode: OutputMode, *, out: Console = console) -> None:
        self.mode = mode
        self.console = out
        shows_bars = out.is_terminal and not mode.is_json and not mode.is_quiet
        self.progress: Progress | None = _bars(out) if shows_bars else None
        self._next_bar_update = 0.0

    def __enter__(self: _V) -> _V:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_bars()

    def stop_bars(self) -> None:
        if self.progress is not None:
            self.update_bars()
            self.progress.stop()
            self.progress = None

    def handle(self, event: object) -> None:
        handler = getattr(self, "_on_" + type(event).__name__, None)
        if handler is not None:
            handler(event)

    def _bars_due(self) -> bool:
        """Whether the bars should take new figures now (throttled)."""
        if self.progress is None:
            return False
        now = time.monotonic()
        if now < self._next_bar_update:
            return False
        self._next_bar_update = now + BAR_UPDATE_INTERVAL_S
        return True

    def update_bars(self) -> None:
        """Give the bars the figures counted since their last update."""

    def _say(self, text: str, **style: Any) -> None:
        if self.mode.shows_messages:
            self.console.print(text, markup=False, highlight=False, **style)


@dataclass
class _Arriving:
    """A file being received: its size, when it started, its bytes so far,
    and its bar if it has one."""

    size: int
    started: float
    done: int = 0
    task: TaskID | None = None


class ReceiveView(_View):
    def __init__(
        self, mode: OutputMode, *, out: Console = console, is_dry_run: bool = False
    ) -> None:
        super().__init__(mode, out=out)
        # --dry-run: lists changes, no bars (nothing arrives).
        self.is_dry_run = is_dry_run
        if is_dry_run:
            self.progress = None
        self.overall: TaskID | None = None
        self.arriving: dict[str, _Arriving] = {}
        self.file_bars = 0
        self.bytes_done = 0
        self.total = 0
        # True once the file list arrived: an interrupted receive from then
        # on can be resumed by running the same command again.
        self.has_manifest = False
        self.is_text = False  # a text message: shown, nothing written

    def _on_Connecting(self, event: events.Connecting) -> None:
        count = event.address_count
        tried = [f"{count} address" if count == 1 else f"{count} addresses"] if count else []
        if event.relay_url is not None:
            tried.append(f"relay {event.relay_url}")
        self._say(f"Connecting to {event.node} (trying {', '.join(tried)})")
        if self.mode.is_json:
            self.mode.json(
                "connecting",
                node=event.node,
                address_count=event.address_count,
                relay_url=str(event.relay_url) if event.relay_url is not None else None,
            )

    def _on_PeerConnected(self, event: events.PeerConnected) -> None:
        self._say(f"Connected to the sender: {event.route}")
        if self.mode.is_json:
            self.mode.json(
                "connected",
                path=event.route.kind,
                description=str(event.route),
                **_where(event.route),
            )

    def _on_PathChanged(self, event: events.PathChanged) -> None:
        self._say(f"Path changed: {event.route}")
        if self.mode.is_json:
            self.mode.json(
                "path",
                kind=event.route.kind,
                description=str(event.route),
                **_where(event.route),
            )

    def _on_RetryScheduled(self, event: events.RetryScheduled) -> None:
        self._say(
            f"Connection lost ({event.reason}); retrying in {event.delay_s:.1f} s "
            f"({event.seconds_left:.0f} s left)"
        )
        if self.mode.is_json:
            self.mode.json(
                "retry",
                reason=event.reason,
                delay_s=round(event.delay_s, 1),
                seconds_left=round(event.seconds_left, 1),
            )

    def _on_ManifestReceived(self, event: events.ManifestReceived) -> None:
        self.has_manifest = True
        self.total = event.total_size
        self.bytes_done = event.bytes_present
        files = plural(event.file_count, "file")
        doing = "Dry run (nothing is written) of" if self.is_dry_run else "Receiving"
        self._say(f"{doing} {display_path(event.name)}: {files}, {human_bytes(event.total_size)}")
        if event.bytes_resumable:
            kept = event.bytes_present + event.bytes_resumable
            self._say(f"resuming: {human_bytes(kept)} already here")
        if self.mode.is_json:
            self.mode.json(
                "manifest",
                name=event.name,
                files=event.file_count,
                total_size=event.total_size,
                bytes_present=event.bytes_present,
                bytes_resumable=event.bytes_resumable,
                files_checked=event.files_checked,
                files_from_cache=event.files_from_cache,
            )
        if self.progress is not None:
            self.overall = self.progress.add_task(
                "total", total=event.total_size, completed=event.bytes_present
            )

    def _on_TextReceived(self, event: events.TextReceived) -> None:
        import sys

        self.is_text = True
        if self.mode.is_json:
            self.mode.json("text", text=event.text)
            return
        # The message exactly, and a line end if it has none (a prompt after it).
        sys.stdout.write(event.text if event.text.endswith("\n") else event.text + "\n")
        sys.stdout.flush()

    def _on_StreamStarted(self, event: events.StreamStarted) -> None:
        where = "standard output" if event.out_path == "-" else display_path(event.out_path)
        self._say(f"Receiving the stream {display_path(event.name)} into {where}")
        if self.mode.is_json:
            self.mode.json("stream", name=event.name, path=event.out_path)
        if self.progress is not None:
            self.overall = self.progress.add_task("stream", total=None)

    def _add_file_bar(self, path: str, arriving: _Arriving) -> None:
        if self.progress is not None and self.file_bars < MAX_FILE_BARS:
            arriving.task = self.progress.add_task(
                _shorten(path), total=arriving.size, completed=arriving.done
            )
            self.file_bars += 1

    def _on_FileStarted(self, event: events.FileStarted) -> None:
        arriving = _Arriving(event.size, time.monotonic())
        self.arriving[event.path] = arriving
        if event.size >= FILE_BAR_MIN_BYTES:
            self._add_file_bar(event.path, arriving)

    def _on_BytesReceived(self, event: events.BytesReceived) -> None:
        self.bytes_done += event.count
        arriving = self.arriving.get(event.path)
        if arriving is not None:
            arriving.done += event.count
        if self._bars_due():
            self.update_bars()
        if self.mode.is_json and self.mode.json_progress_due(JSON_PROGRESS_INTERVAL_S):
            self.mode.json("progress", bytes_done=self.bytes_done, bytes_total=self.total)

    def update_bars(self) -> None:
        if self.progress is None:
            return
        if self.overall is not None:
            self.progress.update(self.overall, completed=self.bytes_done)
        slow_since = time.monotonic() - FILE_BAR_AFTER_S
        for path, arriving in self.arriving.items():
            if arriving.task is None and arriving.started <= slow_since:
                self._add_file_bar(path, arriving)
            if arriving.task is not None:
                self.progress.update(arriving.task, completed=arriving.done)

    def _on_FileFinished(self, event: events.FileFinished) -> None:
        arriving = self.arriving.pop(event.path, None)
        if self.progress is not None:
            if arriving is not None and arriving.task is not None:
                self.progress.remove_task(arriving.task)
                self.file_bars -= 1
        elif self.mode.verbosity and self.mode.shows_messages:
            updated = f" (updated, {human_bytes(event.bytes_reused)} reused)"
            self._say(f"  {display_path(event.path)} {event.blake3}{updated * event.was_updated}")
        if self.mode.is_json:
            self.mode.json_grouped(
                "file_done",
                path=event.path,
                size=event.size,
                blake3=event.blake3,
                already_present=event.was_present,
                updated=event.was_updated,
                bytes_reused=event.bytes_reused,
            )

    def _on_LinkPlaced(self, event: events.LinkPlaced) -> None:
        if self.mode.verbosity and not event.was_present:
            self._say(f"  {display_path(event.path)} -> {display_path(event.target)}")
        if self.mode.is_json:
            self.mode.json_grouped(
                "link_done",
                path=event.path,
                target=event.target,
                already_present=event.was_present,
            )

    def _on_LinkSkipped(self, event: events.LinkSkipped) -> None:
        self._say(
            f"warning: not creating the link {display_path(event.path)} -> "
            f"{display_path(event.target)}: {event.reason} (--unsafe-links creates it)",
            style="yellow",
        )
        if self.mode.is_json:
            self.mode.json(
                "link_skipped", path=event.path, target=event.target, reason=event.reason
            )

    def _on_FileDeleted(self, event: events.FileDeleted) -> None:
        self._say(f"deleted {_local(event.path, event.kind)}")
        if self.mode.is_json:
            self.mode.json_grouped("deleted", path=event.path, kind=event.kind)

    def _on_DeleteFailed(self, event: events.DeleteFailed) -> None:
        self._say(f"warning: could not delete {_local(event.path, event.kind)}: {event.reason}")
        if self.mode.is_json:
            self.mode.json("delete_failed", path=event.path, kind=event.kind, reason=event.reason)

    def _on_FileTouched(self, event: events.FileTouched) -> None:
        if self.mode.verbosity:
            what = _touched(event.has_new_time, event.has_new_mode)
            self._say(f"fixed the {what} of {display_path(event.path)}")
        if self.mode.is_json:
            self.mode.json_grouped(
                "touched", path=event.path, time=event.has_new_time, mode=event.has_new_mode
            )

    def _on_ChangeFound(self, event: events.ChangeFound) -> None:
        change = event.change
        if change is events.Change.DELETE:
            shown = f"would delete {_local(event.path, event.kind)}"
            fields: dict[str, Any] = {"kind": event.kind}
        elif change is events.Change.TOUCH:
            what = _touched(event.has_new_time, event.has_new_mode)
            shown = f"would fix the {what} of {display_path(event.path)}"
            fields = {"time": event.has_new_time, "mode": event.has_new_mode}
        else:
            size = f" ({human_bytes(event.size)})" if event.kind is events.LocalKind.FILE else ""
            shown = f"would {change} {_local(event.path, event.kind)}{size}"
            fields = {"size": event.size, "kind": event.kind}
        self._say(shown)
        if self.mode.is_json:
            self.mode.json_grouped(f"would_{change}", path=event.path, **fields)

    def _dry_run_done(self, result: events.DryRunFinished) -> None:
        self._say(
            f"Dry run: would add {plural(result.files_to_add, 'file')} "
            f"({human_bytes(result.bytes_to_add)}), update {result.files_to_update} "
            f"({human_bytes(result.bytes_to_update)}), fix the time or mode of "
            f"{result.files_to_touch}, delete {plural(result.paths_to_delete, 'path')}; "
            f"{result.files_unchanged} unchanged. Nothing was written."
        )
        if result.reason:
            self._say(f"note: {result.reason}")
        if self.mode.is_json:
            self.mode.json(
                "dry_run_done",
                path=result.out_path,
                files_to_add=result.files_to_add,
                bytes_to_add=result.bytes_to_add,
                files_to_update=result.files_to_update,
                bytes_to_update=result.bytes_to_update,
                files_to_touch=result.files_to_touch,
                paths_to_delete=result.paths_to_delete,
                files_unchanged=result.files_unchanged,
                bytes_unchanged=result.bytes_unchanged,
                would_exit=result.would_exit,
                reason=result.reason or None,
            )

    def finished(self, result: events.TransferFinished | events.DryRunFinished) -> None:
        self.stop_bars()
        if isinstance(result, events.DryRunFinished):
            self._dry_run_done(result)
            return
        kept = f", {human_bytes(result.bytes_present)} already here" if result.bytes_present else ""
        if result.bytes_reused:
            kept += f", {human_bytes(result.bytes_reused)} reused from the old versions"
        where = "standard output" if result.out_path == "-" else display_path(result.out_path)
        count = plural(len(result.files), "file")
        if self.is_text:
            where, count = "a text message", "shown above"
        self._say(
            f"Done: {where} ({count}, "
            f"{human_bytes(result.bytes_received)} received{kept}; {result.seconds:.1f} s at "
            f"{_speed(result.bytes_received, result.seconds)}, mostly {result.main_path})"
        )
        if self.mode.is_json:
            self.mode.json_with_list(
                "done",
                "files",
                ({"path": f.path, "size": f.size, "blake3": f.blake3} for f in result.files),
                path=result.out_path,
                bytes_received=result.bytes_received,
                bytes_present=result.bytes_present,
                bytes_reused=result.bytes_reused,
                seconds=round(result.seconds, 3),
                paths=result.bytes_by_path,
                main_path=result.main_path,
            )


class SendView(_View):
    def __init__(self, mode: OutputMode, *, ticket_to_stdout: bool, out: Console = console) -> None:
        super().__init__(mode, out=out)
        self.ticket_to_stdout = ticket_to_stdout
        # The short code offered beside the ticket, if any (cli/codes.py).
        self.code: str | None = None
        self.hash_task: TaskID | None = None
        self.hashed = 0
        self.receivers: dict[int, TaskID] = {}
        self.total: int | None = 0  # None: a stream (its size is unknown)
        # File bytes sent to each receiver so far, for the summary.
        self.sent_to: dict[int, int] = {}
        # Receivers connected and neither finished nor failed.
        self.active: set[int] = set()
        self.receivers_served = 0
        # --json: the import_done line waits for the ticket line, which
        # stays the first line on stdout (scripts read it as the ticket).
        self.import_done: dict[str, Any] | None = None

    def _on_ImportProgressed(self, event: events.ImportProgressed) -> None:
        if self.progress is None:
            return
        if self.hash_task is None:
            self.hash_task = self.progress.add_task("hashing", total=event.bytes_total)
        self.hashed = event.bytes_done
        if self._bars_due():
            self.update_bars()

    def _on_ImportFinished(self, event: events.ImportFinished) -> None:
        if self.mode.is_json:  # printed right after the ticket line
            self.import_done = {
                "files_hashed": event.files_hashed,
                "bytes_hashed": event.bytes_hashed,
                "files_cached": event.files_cached,
                "bytes_cached": event.bytes_cached,
            }
        elif self.mode.verbosity > 0:
            hashed = f"{plural(event.files_hashed, 'file')} hashed"
            self._say(
                f"{hashed} ({human_bytes(event.bytes_hashed)}), "
                f"{event.files_cached} unchanged ({human_bytes(event.bytes_cached)}) "
                "from the hash cache"
            )

    def update_bars(self) -> None:
        if self.progress is None:
            return
        if self.hash_task is not None:
            self.progress.update(self.hash_task, completed=self.hashed)
        for connection_id, task in self.receivers.items():
            self.progress.update(task, completed=self.sent_to.get(connection_id, 0))

    def _on_SenderReady(self, event: events.SenderReady) -> None:
        import sys

        self.total = None if event.kind is TicketKind.STREAM else event.total_size
        if self.progress is not None and self.hash_task is not None:
            self.progress.remove_task(self.hash_task)
            self.hash_task = None
        for item in event.skipped:
            self._say(f"skipped {item}")
        if self.mode.is_json:
            self.mode.json(
                "ticket",
                ticket=event.ticket,
                node_id=event.node_id,
                addresses=[
                    f"{h}:{p}" if ":" not in h else f"[{h}]:{p}" for h, p in event.addresses
                ],
                total_size=event.total_size,
                files=event.file_count,
                name=event.name,
                relay_url=str(event.relay_url) if event.relay_url is not None else None,
                skipped=list(event.skipped),
                code=self.code,
                kind=str(event.kind),
            )
            if self.import_done is not None:
                self.mode.json("import_done", **self.import_done)
                self.import_done = None
        elif self.ticket_to_stdout:
            sys.stdout.write(event.ticket + "\n")
            sys.stdout.flush()
        self._say(_sending(event))
        if event.relay_url:
            state = "connected" if event.is_relay_connected else "not reachable yet, retrying"
            self._say(f"Relay: {event.relay_url} ({state})")
        self._say("On the other machine, run:")
        self._say(f"p2pcp receive {event.ticket}", style="bold")
        if self.code is not None and not self.mode.is_json:
            # Shown even with -q: like the ticket, it is what send is for.
            self.console.print(
                f"Code: {self.code} (p2pcp receive {self.code}; single use, valid for 1 h)",
                markup=False,
                highlight=False,
            )

    def _on_ReceiverConnected(self, event: events.ReceiverConnected) -> None:
        self.active.add(event.connection_id)
        self.sent_to.setdefault(event.connection_id, 0)
        who = f"receiver {event.connection_id}" + (f" {event.peer}" if event.peer else "")
        if self.progress is not None:
            self.receivers[event.connection_id] = self.progress.add_task(
                f"{who} ({event.route.kind})", total=self.total
            )
        self._say(f"{who} connected: {event.route}")
        if self.mode.is_json:
            fields: dict[str, Any] = {"node_id": event.peer} if event.peer else {}
            self.mode.json(
                "connected",
                receiver=event.connection_id,
                path=event.route.kind,
                description=str(event.route),
                **_where(event.route),
                **fields,
            )

    def _on_ReceiverPathChanged(self, event: events.ReceiverPathChanged) -> None:
        task = self.receivers.get(event.connection_id)
        if self.progress is not None and task is not None:
            self.progress.update(
                task, description=f"receiver {event.connection_id} ({event.route.kind})"
            )
        self._say(f"receiver {event.connection_id}: path changed: {event.route}")
        if self.mode.is_json:
            self.mode.json(
                "path",
                receiver=event.connection_id,
                kind=event.route.kind,
                description=str(event.route),
                **_where(event.route),
            )

    def _on_ReceiverProgressed(self, event: events.ReceiverProgressed) -> None:
        self.sent_to[event.connection_id] = event.bytes_sent
        if self._bars_due():
            self.update_bars()
        if self.mode.is_json and self.mode.json_progress_due(JSON_PROGRESS_INTERVAL_S):
            self.mode.json(
                "progress",
                receiver=event.connection_id,
                bytes_done=event.bytes_sent,
                bytes_total=self.total,
            )

    def _drop_bar(self, connection_id: int) -> None:
        self.active.discard(connection_id)
        task = self.receivers.pop(connection_id, None)
        if self.progress is not None and task is not None:
            self.progress.remove_task(task)

    def _on_ReceiverFinished(self, event: events.ReceiverFinished) -> None:
        self._drop_bar(event.connection_id)
        self.sent_to[event.connection_id] = event.bytes_sent
        self.receivers_served += 1
        self._say(
            f"receiver {event.connection_id} finished, it has everything: "
            f"{human_bytes(event.bytes_sent)} sent in {event.seconds:.1f} s "
            f"({_speed(event.bytes_sent, event.seconds)})"
        )
        if self.mode.is_json:
            self.mode.json(
                "done",
                receiver=event.connection_id,
                bytes_sent=event.bytes_sent,
                seconds=round(event.seconds, 3),
                bytes_per_second=round(event.bytes_sent / max(event.seconds, 1e-6)),
            )

    def _on_ReceiverFailed(self, event: events.ReceiverFailed) -> None:
        self._drop_bar(event.connection_id)
        if event.bytes_sent:
            self.sent_to[event.connection_id] = event.bytes_sent
        self._say(
            f"receiver {event.connection_id} stopped: {event.reason} "
            f"({human_bytes(event.bytes_sent)} sent in {event.seconds:.1f} s)"
        )
        if self.mode.is_json:
            # Not "error": that name is the sender's own failure (with its
            # exit code); one receiver stopping leaves the sender serving.
            self.mode.json(
                "receiver_error",
                receiver=event.connection_id,
                reason=event.reason,
                bytes_sent=event.bytes_sent,
                seconds=round(event.seconds, 3),
            )

    @property
    def is_mid_transfer(self) -> bool:
        """A receiver is connected and has not got everything yet."""
        return bool(self.active)

    def stopped(self) -> None:
        """The sender was stopped (Ctrl-C, SIGTERM): say what it served."""
        self.stop_bars()
        sent = sum(self.sent_to.values())
        self._say(
            f"stopped: {plural(self.receivers_served, 'receiver')} served, {human_bytes(sent)} sent"
        )
        if self.mode.is_json:
            self.mode.json("stopped", receivers_served=self.receivers_served, bytes_sent=sent)


class ShareView(SendView):
    """``p2pcp share``: a sender's view, and each snapshot and refusal."""

    def note(self, text: str) -> None:
        self._say(text)

    def _on_ShareOpened(self, event: events.ShareOpened) -> None:
        if event.is_rotated:
            self._say("New secret (--rotate): this share's earlier tickets no longer work.")
        elif event.is_new_secret:
            self._say("A new share: its ticket stays the same while this command line does.")

    def _on_SnapshotTaken(self, event: events.SnapshotTaken) -> None:
        self.total = event.total_size
        for item in event.skipped:
            self._say(f"skipped {item}")
        self._say(
            f"snapshot {event.root[:12]}: {plural(event.file_count, 'file')}, "
            f"{human_bytes(event.total_size)} ({event.files_hashed} hashed, "
            f"{event.seconds:.1f} s)"
        )
        if self.mode.is_json:
            self.mode.json(
                "snapshot",
                root=event.root,
                files=event.file_count,
                bytes=event.total_size,
                files_hashed=event.files_hashed,
                bytes_hashed=event.bytes_hashed,
                seconds=round(event.seconds, 3),
                skipped=list(event.skipped),
            )

    def _on_SharePrehashed(self, event: events.SharePrehashed) -> None:
        if event.files_hashed:
            self._say(
                f"hashed {plural(event.files_hashed, 'changed file')} "
                f"({human_bytes(event.bytes_hashed)}) for the next receive "
                f"({event.seconds:.1f} s)"
            )
        if self.mode.is_json:
            self.mode.json(
                "prehashed",
                files_hashed=event.files_hashed,
                bytes_hashed=event.bytes_hashed,
                seconds=round(event.seconds, 3),
            )

    def _on_ShareWatchStopped(self, event: events.ShareWatchStopped) -> None:
        self._say(f"not watching for changes ({event.reason}): each receive hashes them")
        if self.mode.is_json:
            self.mode.json("watch_stopped", reason=event.reason)

    def _on_SnapshotFailed(self, event: events.SnapshotFailed) -> None:
        self._say(f"cannot make a snapshot: {event.reason}")
        if self.mode.is_json:
            self.mode.json("snapshot_error", reason=event.reason)

    def _on_ShareRefused(self, event: events.ShareRefused) -> None:
        who = f"receiver {event.connection_id}" + (f" {event.node_id}" if event.node_id else "")
        if event.is_unknown_ticket:
            why = "its ticket is not this share's (an old one, from before --rotate?)"
        else:
            why = "not on the --allow list"
        self._say(f"{who} refused: {why}")
        if self.mode.is_json:
            self.mode.json(
                "refused",
                receiver=event.connection_id,
                node_id=event.node_id,
                reason="unknown_ticket" if event.is_unknown_ticket else "not_allowed",
            )
