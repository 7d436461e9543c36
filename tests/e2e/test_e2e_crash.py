"""Crash safety of the small-file batches, through the CLI.

A receiver killed with SIGKILL in the middle of a folder of thousands of
small files (written, made durable and renamed a batch at a time) must leave
nothing unverified under a final name: every file present has exactly the
sender's bytes. The same command run again completes, keeps what is there
(files in place, and files written to the partial folder but not yet
renamed) and fetches only the rest.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
from pathlib import Path
from typing import Any

from p2pcp.transfer.fetcher import MAX_UNPLACED_FILES
from tests.support.processes import p2pcp_command, stop

from .conftest import PROCESS_TIMEOUT_S, json_lines, tree_of

# Why the receiver cannot finish before the kill, however fast the machine:
# a file_done line is written once its batch is placed, and the receiver's
# event loop blocks on stdout once the pipe (64 KiB, ~400 lines) and its own
# buffer are full, since the test stops reading at KILL_AFTER_FILES. With the
# loop blocked nothing more is received, and the writer can place only what
# was already received: at most the fetcher's unplaced bound (4,096 files)
# plus the requests in flight (256 files each). 10,000 files leave a wide
# margin; 4,000 did not (a slow reader once saw all of them placed).
FILE_COUNT = 10_000
FOLDERS = 40
KILL_AFTER_FILES = 300


def _make_source(root: Path) -> dict[str, bytes]:
    """FILE_COUNT small files of 1 byte to 2 KiB in FOLDERS folders."""
    rng = random.Random(1717)
    files: dict[str, bytes] = {}
    for number in range(FILE_COUNT):
        rel = f"d{number % FOLDERS:02d}/f{number:05d}"
        data = rng.randbytes(rng.randrange(1, 2 * 1024))
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files[f"{root.name}/{rel}"] = data
    return files


def _final_files(out: Path) -> dict[str, bytes]:
    return {
        rel: data
        for rel, data in tree_of(out).items()
        if data is not None and not rel.startswith(".p2pcp-partial-")
    }


def test_kill_9_mid_folder_leaves_only_exact_files_and_resumes(
    make_node: Any, start_sender: Any, tmp_path: Path
) -> None:
    assert FILE_COUNT > 2 * MAX_UNPLACED_FILES, "the kill could come after the last file"
    source = tmp_path / "many"
    expected = _make_source(source)
    total = sum(len(data) for data in expected.values())
    sender = start_sender(make_node(), source)
    receiver = make_node()
    out = tmp_path / "out"

    process = subprocess.Popen(
        [*p2pcp_command(), "receive", "--json", "--out", str(out), sender.ticket],
        env=receiver.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        # Kill it once a batch is in place (a batch is at most 256 files):
        # other batches are then being written or renamed.
        assert process.stdout is not None
        finished = 0
        for line in process.stdout:
            finished += json.loads(line).get("event") == "file_done"
            if finished >= KILL_AFTER_FILES:
                break
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=PROCESS_TIMEOUT_S) == -signal.SIGKILL
    finally:
        stop(process)

    present = _final_files(out)
    assert len(present) >= KILL_AFTER_FILES
    assert len(present) < FILE_COUNT, "the receiver finished before it was killed"
    for rel, data in present.items():
        assert expected.get(rel) == data, f"{rel} is not the sender's file"
    present_bytes = sum(len(data) for data in present.values())

    rerun = receiver.run("receive", "--json", "--out", str(out), sender.ticket)
    assert rerun.returncode == 0, rerun.stderr
    done = next(event for event in json_lines(rerun.stdout) if event["event"] == "done")
    assert done["bytes_received"] + done["bytes_present"] == total
    assert done["bytes_present"] >= present_bytes > 0
    assert done["bytes_received"] < total
    assert _final_files(out) == expected
    assert not [p for p in out.iterdir() if p.name.startswith(".p2pcp-partial-")]
