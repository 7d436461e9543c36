"""The receive view's cost per event stays small with thousands of files.

A rich task is a bar that is drawn on every refresh, and adding one redraws
the whole display at once: a bar per tiny file made a 20,000-file receive
four times slower in a terminal. Only files big enough to watch get a bar;
the counts are checked here, on a Console that believes it is a terminal.
"""

from __future__ import annotations

import io

from rich.console import Console

from p2pcp.cli.output import OutputMode
from p2pcp.cli.progress import ReceiveView
from p2pcp.transfer import events

FILES = 20_000


def _counting_view(out: io.StringIO) -> tuple[ReceiveView, list[str]]:
    console = Console(file=out, force_terminal=True, width=100)
    view = ReceiveView(OutputMode(), out=console)
    assert view.progress is not None, "bars are on for a terminal"
    created: list[str] = []
    add_task = view.progress.add_task

    def counting_add_task(description: str, *args: object, **kwargs: object) -> object:
        created.append(description)
        return add_task(description, *args, **kwargs)  # type: ignore[arg-type]

    view.progress.add_task = counting_add_task  # type: ignore[method-assign,assignment]
    return view, created


def test_many_tiny_files_create_a_handful_of_bars() -> None:
    out = io.StringIO()
    view, created = _counting_view(out)
    with view:
        view.handle(events.ManifestReceived("many", FILES, FILES * 100, 0))
        for index in range(FILES):
            path = f"many/{index:05}.txt"
            view.handle(events.FileStarted(path, 100))
            view.handle(events.BytesReceived(path, 100))
            view.handle(events.FileFinished(path, 100, "00" * 32))
        assert view.bytes_done == FILES * 100
    assert len(created) <= 3, created
    # The overall bar still reached the end.
    assert "2.0/2.0 MB" in out.getvalue() or "2.0 MB" in out.getvalue(), out.getvalue()[-500:]


def test_a_big_file_gets_its_own_bar() -> None:
    out = io.StringIO()
    view, created = _counting_view(out)
    size = 64 * 1024 * 1024
    with view:
        view.handle(events.ManifestReceived("big.bin", 1, size, 0))
        view.handle(events.FileStarted("big.bin", size))
        for _ in range(size // (256 * 1024)):
            view.handle(events.BytesReceived("big.bin", 256 * 1024))
        view.handle(events.FileFinished("big.bin", size, "00" * 32))
    assert created == ["total", "big.bin"]


def test_a_file_name_is_never_read_as_markup() -> None:
    """A name such as "[/bold]" is text: as rich markup it raised MarkupError
    (a closing tag with nothing open) the moment its bar was drawn."""
    out = io.StringIO()
    view, created = _counting_view(out)
    size = 16 * 1024 * 1024
    name = "[/bold]x[red]\x1b.bin"
    with view:
        view.handle(events.ManifestReceived(name, 1, size, 0))
        view.handle(events.FileStarted(name, size))
        view.handle(events.BytesReceived(name, size))
        view.handle(events.FileFinished(name, size, "00" * 32))
    assert created == ["total", "[/bold]x[red]\\x1b.bin"]
    assert "\x1b.bin" not in out.getvalue()
