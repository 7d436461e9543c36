"""The JSON channel: one valid UTF-8 line per event, lists written item by item."""

from __future__ import annotations

import json
import os

import pytest

from p2pcp.cli.output import OutputMode

# A name whose bytes are not UTF-8, as os.scandir hands it over.
ODD_NAME = os.fsdecode(b"menu\xe9\nx")


def test_a_list_written_item_by_item_is_the_same_json(capsys: pytest.CaptureFixture[str]) -> None:
    mode = OutputMode(is_json=True)
    files = [{"path": f"d/{index}", "size": index} for index in range(1000)]
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
