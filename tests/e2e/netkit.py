"""A CLI process watched as it runs, for the network end-to-end tests (the
relay process, free ports and black holes are in tests/support)."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.processes import p2pcp_command, stop

from .conftest import PROCESS_TIMEOUT_S, SLOW_LINK, Node

Event = dict[str, Any]


class Watched:
    """A running ``p2pcp`` whose JSON stdout lines (with their arrival time)
    and stderr are collected by threads as they come."""

    def __init__(self, node: Node, *args: str, env: dict[str, str] | None = None) -> None:
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [*p2pcp_command(), *args],
            env={**node.env, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.events: list[tuple[float, Event]] = []
        self._lines: queue.Queue[tuple[float, Event]] = queue.Queue()
        self._stderr: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump_stdout, daemon=True),
            threading.Thread(target=self._pump_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _pump_stdout(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            if raw.strip():
                item = (time.monotonic(), json.loads(raw))
                self.events.append(item)
                self._lines.put(item)
        self._lines.put((time.monotonic(), {"event": "<eof>"}))

    def _pump_stderr(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            self._stderr.append(raw)

    def wait_event(
        self,
        name: str,
        where: Callable[[Event], bool] = lambda _event: True,
        timeout: float = PROCESS_TIMEOUT_S,
    ) -> tuple[float, Event]:
        """(arrival time, event) of the next ``name`` event that matches ``where``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                arrival, event = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {name!r} event in {timeout} s\n{self.stderr}") from None
            if event["event"] == name and where(event):
                return arrival, event
            if event["event"] == "<eof>":
                raise AssertionError(f"ended before a {name!r} event\n{self.stderr}")

    def finish(self, timeout: float = PROCESS_TIMEOUT_S) -> int:
        """Wait for the exit (killing on timeout) and for the output threads."""
        try:
            code = self.process.wait(timeout=timeout)
        finally:
            stop(self.process)
            for thread in self._threads:
                thread.join(timeout=10)
        return code

    def close(self) -> None:
        """End the process if it still runs (never raises): for ``finally``."""
        stop(self.process)
        for thread in self._threads:
            thread.join(timeout=10)

    def signal(self, number: signal.Signals) -> None:
        self.process.send_signal(number)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def named(self, name: str) -> list[Event]:
        return [event for _at, event in self.events if event["event"] == name]


def bytes_at_least(count: int) -> Callable[[Event], bool]:
    return lambda event: int(event.get("bytes_done", 0)) >= count


def watched_receive(node: Node, ticket: str, out: Path, *args: str) -> Watched:
    """``p2pcp receive TICKET --out OUT --json ARGS`` on a slow link, watched."""
    return Watched(node, "receive", ticket, "--out", str(out), "--json", *args, env=SLOW_LINK)
