"""The JSON channel: one valid UTF-8 line per event, lists written item by item."""

from __future__ import annotations

import asyncio
import io
import json
import os

import pytest

from p2pcp.cli.output import OutputMode

# A name whose bytes are not UTF-8, as os.scandir hands it over.
ODD_NAME = os.fsdecode(b"menu\xe9\nx")


def test_a_list_written_item_by_item_is_the_same_json(capsys: pytest.CaptureFixture[str]) -> None:
    mode = OutputMode(is_json=True)
    files = [{"path": f"d/{index}", "size": index} for index in range(2500)]
    files.append({"path": ODD_NAME, "size": 5})
    mode.json_with_list("done", "files", iter(files), path="out", seconds=1.5)
    mode.json_with_list("done", "files", iter([]), path="empty")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first == {"event": "done", "path": "out", "seconds": 1.5, "files": files}
    # The name's bytes come back from the line, and the line is UTF-8.
    assert os.fsencode(first["files"][-1]["path"]) == b"menu\xe9\nx"
    lines[0].encode("utf-8")
    assert json.loads(lines[1]) == {"event": "done", "path": "empty", "files": []}


def test_one_event_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    OutputMode(is_json=True).json("error", message=f"cannot write {ODD_NAME}", exit_code=1)
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert json.loads(out)["message"] == f"cannot write {ODD_NAME}"


class _CountingStdout(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0
        self.flushed_text = ""

    def flush(self) -> None:
        self.flushes += 1
        self.flushed_text = self.getvalue()


def test_a_burst_of_lines_is_flushed_in_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    """file_done lines of 10,000 small files: a handful of flushes, each line
    out within JSON_GROUP_S, and any other event flushes what waits."""
    out = _CountingStdout()
    monkeypatch.setattr("sys.stdout", out)
    mode = OutputMode(is_json=True)

    async def burst() -> None:
        for index in range(10_000):
            mode.json_grouped("file_done", path=f"d/{index}", size=index)
        assert out.flushes == 0  # nothing written yet: the group waits
        await asyncio.sleep(0.2)
        assert out.flushes == 1  # the group's timer flushed once
        assert out.flushed_text.count("\n") == 10_000
        mode.json_grouped("file_done", path="last", size=1)
        mode.json("done", path="out")  # flushes the waiting line with it
        assert out.flushes == 2
        assert out.flushed_text.splitlines()[-2:] == [
            '{"event":"file_done","path":"last","size":1}',
            '{"event":"done","path":"out"}',
        ]
        await asyncio.sleep(0.2)  # the group's timer, once more: harmless

    asyncio.run(burst())
    # Outside an event loop nothing would flush it later: at once.
    mode.json_grouped("file_done", path="x", size=0)
    assert out.flushed_text.endswith('{"event":"file_done","path":"x","size":0}\n')
