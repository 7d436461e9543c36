"""Rendering transfer events: rich bars, plain lines, or JSON lines.

One view per command. A view receives every event from the transfer layer
(``handle``) and decides, from the ``OutputMode``, what a person or a script
sees. JSON ``progress`` lines are throttled; bars refresh on their own.
"""

from __future__ import annotations

from typing import Any, TypeVar

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from p2pcp.cli.output import OutputMode, console, human_bytes
from p2pcp.core.defaults import JSON_PROGRESS_INTERVAL_S
from p2pcp.transfer import events

# Per-file bars beyond this many would scroll the screen; the overall bar
# still counts every byte.
MAX_FILE_BARS = 6


def _bars() -> Progress:
    return Progress(
        TextColumn("{task.description}", justify="left"),
        BarColumn(bar_width=None),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        refresh_per_second=8,
    )


def _where(path: str, description: str) -> dict[str, str]:
    """``{"url": ...}`` for a relay path, ``{"address": ...}`` for a direct one."""
    place = description.split(" ", 1)[1] if " " in description else ""
    return {"url": place} if path == "relay" else {"address": place}


def _shorten(path: str, width: int = 32) -> str:
    return path if len(path) <= width else "…" + path[-(width - 1) :]


_V = TypeVar("_V", bound="_View")


class _View:
    """Routes each event to ``_on_<EventName>``; owns the bars' lifetime."""

    def __init__(self, mode: OutputMode) -> None:
        self.mode = mode
        self.progress: Progress | None = _bars() if mode.shows_bars else None

    def __enter__(self: _V) -> _V:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def handle(self, event: object) -> None:
        handler = getattr(self, "_on_" + type(event).__name__, None)
        if handler is not None:
            handler(event)

    def _say(self, text: str, **style: Any) -> None:
        if self.mode.shows_messages:
            console.print(text, markup=False, highlight=False, **style)


class ReceiveView(_View):
    def __init__(self, mode: OutputMode) -> None:
        super().__init__(mode)
        self.overall: TaskID | None = None
        self.file_tasks: dict[str, TaskID] = {}
        self.bytes_done = 0
        self.total = 0

    def _on_PeerConnected(self, event: events.PeerConnected) -> None:
        self._say(f"Connected to the sender: {event.description}")
        if self.mode.is_json:
            self.mode.json(
                "connected",
                path=event.path,
                description=event.description,
                **_where(event.path, event.description),
            )

    def _on_PathChanged(self, event: events.PathChanged) -> None:
        self._say(f"Path changed: {event.description}")
        if self.mode.is_json:
            self.mode.json(
                "path",
                kind=event.path,
                description=event.description,
                **_where(event.path, event.description),
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
                delay_s=round(event.delay_s, 2),
                seconds_left=round(event.seconds_left, 1),
            )

    def _on_ManifestReceived(self, event: events.ManifestReceived) -> None:
        self.total = event.total_size
        self.bytes_done = event.bytes_present
        files = "1 file" if event.file_count == 1 else f"{event.file_count} files"
        self._say(f"Receiving {event.name}: {files}, {human_bytes(event.total_size)}")
        if self.progress is not None:
            self.overall = self.progress.add_task(
                "total", total=event.total_size, completed=event.bytes_present
            )

    def _on_FileStarted(self, event: events.FileStarted) -> None:
        if self.progress is not None and len(self.file_tasks) < MAX_FILE_BARS:
            self.file_tasks[event.path] = self.progress.add_task(
                _shorten(event.path), total=event.size
            )

    def _on_BytesReceived(self, event: events.BytesReceived) -> None:
        self.bytes_done += event.count
        if self.progress is not None:
            if self.overall is not None:
                self.progress.advance(self.overall, event.count)
            task = self.file_tasks.get(event.path)
            if task is not None:
                self.progress.advance(task, event.count)
        if self.mode.is_json and self.mode.json_progress_due(JSON_PROGRESS_INTERVAL_S):
            self.mode.json("progress", bytes_done=self.bytes_done, bytes_total=self.total)

    def _on_FileFinished(self, event: events.FileFinished) -> None:
        if self.progress is not None:
            task = self.file_tasks.pop(event.path, None)
            if task is not None:
                self.progress.remove_task(task)
        elif self.mode.verbosity and self.mode.shows_messages:
            self._say(f"  {event.path} {event.blake3}")
        if self.mode.is_json:
            self.mode.json(
                "file_done",
                path=event.path,
                size=event.size,
                blake3=event.blake3,
                already_present=event.was_present,
            )

    def finished(self, result: events.TransferFinished) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        seconds = max(result.seconds, 1e-6)
        speed = human_bytes(result.bytes_received / seconds)
        self._say(
            f"Done: {result.out_path} ({len(result.files)} files, "
            f"{human_bytes(result.bytes_received)} received in {result.seconds:.1f} s, {speed}/s, "
            f"mostly {result.main_path})"
        )
        if self.mode.is_json:
            self.mode.json(
                "done",
                path=result.out_path,
                bytes_received=result.bytes_received,
                bytes_present=result.bytes_present,
                seconds=round(result.seconds, 3),
                files=[{"path": f.path, "size": f.size, "blake3": f.blake3} for f in result.files],
                paths=result.bytes_by_path,
                main_path=result.main_path,
            )


class SendView(_View):
    def __init__(self, mode: OutputMode, *, ticket_to_stdout: bool) -> None:
        super().__init__(mode)
        self.ticket_to_stdout = ticket_to_stdout
        self.hash_task: TaskID | None = None
        self.receivers: dict[int, TaskID] = {}
        self.total = 0

    def _on_ImportProgressed(self, event: events.ImportProgressed) -> None:
        if self.progress is None:
            return
        if self.hash_task is None:
            self.hash_task = self.progress.add_task("hashing", total=event.bytes_total)
        self.progress.update(self.hash_task, completed=event.bytes_done)

    def _on_SenderReady(self, event: events.SenderReady) -> None:
        import sys

        self.total = event.total_size
        if self.progress is not None and self.hash_task is not None:
            self.progress.remove_task(self.hash_task)
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
                relay_url=event.relay_url,
            )
        elif self.ticket_to_stdout:
            sys.stdout.write(event.ticket + "\n")
            sys.stdout.flush()
        files = "1 file" if event.file_count == 1 else f"{event.file_count} files"
        self._say(f"Sending {event.name}: {files}, {human_bytes(event.total_size)}")
        if event.relay_url:
            state = "connected" if event.is_relay_connected else "not reachable yet, retrying"
            self._say(f"Relay: {event.relay_url} ({state})")
        self._say("On the other machine, run:")
        self._say(f"p2pcp receive {event.ticket}", style="bold")

    def _on_ReceiverConnected(self, event: events.ReceiverConnected) -> None:
        label = f"receiver {event.connection_id} ({event.path})"
        if self.progress is not None:
            self.receivers[event.connection_id] = self.progress.add_task(label, total=self.total)
        else:
            self._say(f"{label} connected")
        if self.mode.is_json:
            self.mode.json("connected", receiver=event.connection_id, path=event.path)

    def _on_ReceiverPathChanged(self, event: events.ReceiverPathChanged) -> None:
        label = f"receiver {event.connection_id} ({event.description})"
        task = self.receivers.get(event.connection_id)
        if self.progress is not None and task is not None:
            self.progress.update(task, description=label)
        else:
            self._say(f"{label}: path changed")
        if self.mode.is_json:
            self.mode.json(
                "path",
                receiver=event.connection_id,
                kind=event.path,
                description=event.description,
            )

    def _on_ReceiverProgressed(self, event: events.ReceiverProgressed) -> None:
        task = self.receivers.get(event.connection_id)
        if self.progress is not None and task is not None:
            self.progress.update(task, completed=event.bytes_sent)
        if self.mode.is_json and self.mode.json_progress_due(JSON_PROGRESS_INTERVAL_S):
            self.mode.json(
                "progress",
                receiver=event.connection_id,
                bytes_done=event.bytes_sent,
                bytes_total=self.total,
            )

    def _on_ReceiverFinished(self, event: events.ReceiverFinished) -> None:
        task = self.receivers.pop(event.connection_id, None)
        if self.progress is not None and task is not None:
            self.progress.remove_task(task)
        self._say(
            f"receiver {event.connection_id} finished: {human_bytes(event.bytes_sent)} sent "
            f"in {event.seconds:.1f} s"
        )
        if self.mode.is_json:
            self.mode.json(
                "done",
                receiver=event.connection_id,
                bytes_sent=event.bytes_sent,
                seconds=round(event.seconds, 3),
            )

    def _on_ReceiverFailed(self, event: events.ReceiverFailed) -> None:
        task = self.receivers.pop(event.connection_id, None)
        if self.progress is not None and task is not None:
            self.progress.remove_task(task)
        self._say(f"receiver {event.connection_id} stopped: {event.reason}")
        if self.mode.is_json:
            self.mode.json("error", receiver=event.connection_id, message=event.reason)
