"""Run the installed ``p2pcp`` as a user would: subprocesses on loopback.

Each node gets its own ``P2PCP_HOME``; every process is bounded in time and
killed at the end of the test.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import node_env, p2pcp_command, relay_process, stop

# Every wait in these tests is bounded by this (a transfer here takes < 5 s).
PROCESS_TIMEOUT_S = 60


@dataclass
class Node:
    home: Path

    @property
    def env(self) -> dict[str, str]:
        return node_env(self.home)

    def run(
        self, *args: str, cwd: Path | None = None, timeout: float = PROCESS_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*p2pcp_command(), *args],
            env=self.env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )


@dataclass
class Sender:
    """A running ``p2pcp send --json``; its stdout lines are parsed as they come."""

    process: subprocess.Popen[str]
    lines: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)
    ticket: str = ""

    def next_event(self, name: str, timeout: float = PROCESS_TIMEOUT_S) -> dict[str, Any]:
        while True:
            try:
                event = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"sender printed no {name!r} event") from None
            if event.get("event") == name:
                return event

    def wait(self, timeout: float = PROCESS_TIMEOUT_S) -> int:
        return self.process.wait(timeout=timeout)


def _pump(sender: Sender) -> None:
    assert sender.process.stdout is not None
    for raw in sender.process.stdout:
        if raw.strip():
            sender.lines.put(json.loads(raw))
    sender.lines.put({"event": "<eof>"})


def watch_json(process: subprocess.Popen[str]) -> Sender:
    """A ``--json`` process whose events a thread queues as they come
    (``Sender.next_event``; ``{"event": "<eof>"}`` after its last)."""
    sender = Sender(process)
    threading.Thread(target=_pump, args=(sender,), daemon=True).start()
    return sender


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[Any]:
    counter = iter(range(1000))

    def make() -> Node:
        home = tmp_path / f"home{next(counter)}"
        return Node(home)

    yield make


@pytest.fixture
def start_sender() -> Iterator[Any]:
    started: list[Sender] = []

    def start(
        node: Node,
        *paths: Path | str,
        extra: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> Sender:
        process = subprocess.Popen(
            [*p2pcp_command(), "send", "--json", *extra, *map(str, paths)],
            env={**node.env, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        sender = watch_json(process)
        started.append(sender)
        event = sender.next_event("ticket")
        sender.ticket = event["ticket"]
        return sender

    yield start
    for sender in started:
        stop(sender.process)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def tree_of(root: Path) -> dict[str, bytes | None]:
    """Every file (with its bytes) and folder (None) under root, by relative path."""
    result: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        result[rel] = None if path.is_dir() else path.read_bytes()
    return result


def assert_one_line_error(stderr: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "expected an error message on stderr"
    assert "Traceback" not in stderr
    assert lines[-1].startswith("p2pcp: error: "), stderr


# QUIC's smallest datagrams (1200 bytes) keep a loopback transfer slow
# enough to be interrupted in the middle.
SLOW_LINK = {"P2PCP_MAX_DATAGRAM_SIZE": "1200"}


def start_receive(node: Node, ticket: str, out: Path, *extra: str) -> subprocess.Popen[str]:
    """``p2pcp receive --json`` running on a slow link, its output piped."""
    return subprocess.Popen(
        [*p2pcp_command(), "receive", ticket, "--out", str(out), "--json", *extra],
        env={**node.env, **SLOW_LINK},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def wait_for_bytes(process: subprocess.Popen[str], at_least: int) -> None:
    """Read a --json process's events until its progress reaches ``at_least``."""
    assert process.stdout is not None
    for line in process.stdout:
        event = json.loads(line)
        if event["event"] == "progress" and event["bytes_done"] >= at_least:
            return
        assert event["event"] != "done", "the transfer finished before it could be interrupted"
    raise AssertionError("the process stopped before reaching the byte count")


@pytest.fixture
def relay_url(tmp_path: Path) -> Iterator[str]:
    """A real ``p2pcp relay`` process for the test; its URL."""
    with relay_process(home=tmp_path / "relay-home") as relay:
        yield relay.url
