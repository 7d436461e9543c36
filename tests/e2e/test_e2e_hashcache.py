"""The hash cache through the CLI: a second ``send`` of an unchanged folder
reads no file and gives the same root; a changed file is read again. The
ticket stays the first line of ``send --json``; ``import_done`` follows it."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from p2pcp.core.ticket import decode_ticket
from p2pcp.transfer.hashcache import RACY_MARGIN_NS
from tests.e2e.conftest import PROCESS_TIMEOUT_S, Node, tree_of
from tests.support.processes import p2pcp_command, stop

pytestmark = pytest.mark.e2e


def _send_until_ticket(node: Node, *args: str) -> list[dict[str, Any]]:
    """``p2pcp send --json ARGS``'s first two lines, the ticket and then
    ``import_done`` (scripts read the first line as the ticket); then stopped."""
    process = subprocess.Popen(
        [*p2pcp_command(), "send", "--json", *args],
        env=node.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    lines: list[dict[str, Any]] = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + PROCESS_TIMEOUT_S
        for raw in process.stdout:
            lines.append(json.loads(raw))
            if len(lines) == 2 or time.monotonic() > deadline:
                break
    finally:
        stop(process)
        if process.stdout is not None:
            process.stdout.close()
    assert [line["event"] for line in lines] == ["ticket", "import_done"], lines
    return lines


def _event(lines: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(line for line in lines if line["event"] == name)


def _root(lines: list[dict[str, Any]]) -> bytes:
    """The manifest root the ticket commits to (the port changes per run)."""
    return decode_ticket(_event(lines, "ticket")["ticket"]).root_hash


def test_a_second_send_reads_nothing_and_gives_the_same_ticket(
    make_node: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for number in range(300):
        (folder / "sub" / f"small{number}").write_bytes(os.urandom(number * 7))
    (folder / "large").write_bytes(os.urandom(3 * 1024 * 1024 + 11))
    time.sleep(2 * RACY_MARGIN_NS / 1e9)  # older than the racy margin: cacheable
    node = make_node()

    first = _send_until_ticket(node, str(folder))
    done = _event(first, "import_done")
    assert (done["files_hashed"], done["files_cached"]) == (301, 0)
    total = _event(first, "ticket")["total_size"]
    assert done["bytes_hashed"] == total

    second = _send_until_ticket(node, str(folder))
    done = _event(second, "import_done")
    assert done == {
        "event": "import_done",
        "files_hashed": 0,
        "bytes_hashed": 0,
        "files_cached": 301,
        "bytes_cached": total,
    }
    assert _root(second) == _root(first)
    assert (node.home / "cache" / "hashes.sqlite").is_file()

    (folder / "sub" / "small5").write_bytes(b"changed")
    time.sleep(2 * RACY_MARGIN_NS / 1e9)
    third = _send_until_ticket(node, str(folder))
    done = _event(third, "import_done")
    assert (done["files_hashed"], done["bytes_hashed"], done["files_cached"]) == (1, 7, 300)
    assert _root(third) != _root(first)


def test_files_from_the_cache_arrive_whole(
    make_node: Any, start_sender: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for number in range(20):
        (folder / f"f{number}").write_bytes(os.urandom(number * 40_000))
    time.sleep(2 * RACY_MARGIN_NS / 1e9)
    sender_node = make_node()
    _send_until_ticket(sender_node, str(folder))  # fills the cache
    sender = start_sender(sender_node, folder)
    out = tmp_path / "out"
    result = make_node().run("receive", sender.ticket, "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    assert tree_of(out / "docs") == tree_of(folder)


def test_verbose_send_says_what_came_from_the_cache(make_node: Any, tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"some notes")
    time.sleep(2 * RACY_MARGIN_NS / 1e9)
    node = make_node()
    _send_until_ticket(node, str(path))
    process = subprocess.Popen(
        [*p2pcp_command(), "send", "-v", str(path)],
        env=node.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
    finally:
        stop(process)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    assert "0 files hashed (0 B), 1 unchanged (10 B) from the hash cache" in line
