"""End to end: every name a Linux file system holds is sent, and arrives
byte for byte, through the real CLI on loopback; a file that cannot be read
is reported and the rest is sent (``--strict``: an error, as before).

The names here broke the whole send before manifest version 2 (case and
NFC/NFD twins, a drive-letter look-alike, a backslash, control characters,
bytes that are not UTF-8), as did a folder 1,000 levels deep (its paths are
~2 KB, well inside the limits). The output folder is on this machine's
Linux file system, which holds all of them; a receiver on a file system that
cannot is covered by the store's own tests.
"""

from __future__ import annotations

import os
import subprocess
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import p2pcp_command, stop, unprivileged_prefix

from .conftest import PROCESS_TIMEOUT_S, assert_one_line_error, json_lines

pytestmark = pytest.mark.e2e

# Each name is raw bytes, as the file system holds it.
ODD_NAMES: dict[bytes, bytes] = {
    b"README": b"upper\n",
    b"readme": b"lower\n",
    b"c:notes.txt": b"not a drive\n",
    b"back\\slash": b"one backslash\n",
    b"new\nline": b"a newline in the name\n",
    b"tab\tand\x1b[31mescape": b"control characters\n",
    unicodedata.normalize("NFC", "r\u00e9sum\u00e9").encode(): b"composed\n",
    unicodedata.normalize("NFD", "r\u00e9sum\u00e9").encode(): b"decomposed\n",
    b"latin1-\xe9t\xe9.txt": b"not UTF-8\n",
    b"\xff\xfe": b"not UTF-8 at all\n",
}
DEPTH = 1000


def tree_bytes(root: Path) -> dict[bytes, bytes | None]:
    """Every file (its bytes) and folder (None) under ``root``, by relative
    path as bytes. Iterative: the trees here are deeper than Python's
    recursion limit (which ``os.walk`` and ``Path.rglob`` hit on 3.11)."""
    top = os.fsencode(root)
    result: dict[bytes, bytes | None] = {}
    pending = [b""]
    while pending:
        rel = pending.pop()
        with os.scandir(os.path.join(top, rel) if rel else top) as entries:
            for entry in entries:
                child = os.path.join(rel, entry.name) if rel else entry.name
                if entry.is_dir(follow_symlinks=False):
                    result[child] = None
                    pending.append(child)
                else:
                    with open(entry.path, "rb") as handle:
                        result[child] = handle.read()
    return result


def remove_tree(top: Path) -> None:
    """Remove a tree too deep for ``shutil.rmtree`` (recursive on 3.11),
    which pytest would otherwise meet when it cleans its temporary folders."""
    if not top.exists():
        return
    folders: list[bytes] = []
    pending = [os.fsencode(top)]
    while pending:
        folder = pending.pop()
        folders.append(folder)
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                else:
                    os.unlink(entry.path)
    for folder in reversed(folders):
        os.rmdir(folder)


def _send_and_receive(
    tmp_path: Path, make_node: Any, start_sender: Any, src: Path
) -> tuple[subprocess.CompletedProcess[str], Path]:
    sender = start_sender(make_node(), src, extra=("--once",))
    out = tmp_path / "out"
    result = make_node().run("receive", sender.ticket, "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    assert json_lines(result.stdout)[-1]["event"] == "done"
    assert sender.wait() == 0
    return result, out


def test_every_linux_name_is_sent_and_arrives_byte_for_byte(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    src = tmp_path / "odd"
    src.mkdir()
    top = os.fsencode(src)
    for name, data in ODD_NAMES.items():
        with open(os.path.join(top, name), "wb") as handle:
            handle.write(data)
    # The same names as folders, one level down, each with a file inside.
    nested = os.path.join(top, b"folders")
    os.mkdir(nested)
    for name in ODD_NAMES:
        os.mkdir(os.path.join(nested, name))
        with open(os.path.join(nested, name, b"inside"), "wb") as handle:
            handle.write(name)
    sent = tree_bytes(src)
    assert len(sent) == 3 * len(ODD_NAMES) + 1  # no name was merged on this side

    result, out = _send_and_receive(tmp_path, make_node, start_sender, src)

    assert tree_bytes(out / "odd") == sent
    assert sorted(os.listdir(out)) == ["odd"]
    assert "Traceback" not in result.stderr
    # The JSON lines stayed UTF-8 (run() decoded them strictly), and each
    # name in them decodes back to its bytes.
    done = json_lines(result.stdout)[-1]
    assert {os.fsencode(item["path"]) for item in done["files"]} == {
        b"odd/" + rel for rel, data in sent.items() if data is not None
    }


def test_a_folder_1000_levels_deep_is_sent(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    src = tmp_path / "deep"
    try:
        path = os.fsencode(src)
        os.mkdir(path)
        for level in range(DEPTH):
            path = os.path.join(path, b"d")
            os.mkdir(path)
            if level == DEPTH // 2:
                os.mkdir(os.path.join(path, b"empty"))
        with open(os.path.join(path, b"bottom.txt"), "wb") as handle:
            handle.write(b"the bottom\n")
        sent = tree_bytes(src)
        assert len(sent) == DEPTH + 2
        assert max(len(rel) for rel in sent) < 4096 - len(b"deep/")

        _, out = _send_and_receive(tmp_path, make_node, start_sender, src)

        assert tree_bytes(out / "deep") == sent
    finally:
        remove_tree(src)
        remove_tree(tmp_path / "out")


# -- files that cannot be read ----------------------------------------------------


def _tree_with_an_unreadable_file(tmp_path: Path) -> Path:
    top = tmp_path / "top"
    (top / "sub").mkdir(parents=True)
    (top / "a.txt").write_text("a")
    (top / "sub" / "c.txt").write_text("c")
    (top / "b.txt").write_text("secret")
    (top / "b.txt").chmod(0)
    os.mkfifo(top / "fifo\x1b[2J")
    return top


def test_an_unreadable_file_is_reported_and_the_rest_sent(tmp_path: Path, make_node: Any) -> None:
    top = _tree_with_an_unreadable_file(tmp_path)
    node = make_node()
    sender = subprocess.Popen(
        [*unprivileged_prefix(), *p2pcp_command(), "send", "--once", str(top)],
        env=node.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert sender.stdout is not None
        ticket = sender.stdout.readline().strip()  # stdout is not a terminal: the ticket alone
        assert ticket.startswith("p2pcp"), ticket
        out = tmp_path / "out"
        result = make_node().run("receive", ticket, "--out", str(out), "--json")
        assert result.returncode == 0, result.stderr
        assert sender.wait(timeout=PROCESS_TIMEOUT_S) == 0
        assert sender.stderr is not None
        messages = sender.stderr.read()
    finally:
        stop(sender)
    assert tree_bytes(out / "top") == {b"a.txt": b"a", b"sub": None, b"sub/c.txt": b"c"}
    assert "skipped top/b.txt (permission denied)" in messages
    assert "skipped top/fifo\\x1b[2J (not a regular file)" in messages
    assert "\x1b" not in messages


def test_strict_send_stops_at_an_unreadable_file(tmp_path: Path, make_node: Any) -> None:
    top = _tree_with_an_unreadable_file(tmp_path)
    result = subprocess.run(
        [*unprivileged_prefix(), *p2pcp_command(), "send", "--strict", "--once", str(top)],
        env=make_node().env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=PROCESS_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""  # no ticket for a send that cannot be made
    assert_one_line_error(result.stderr)
    assert "top/b.txt: permission denied" in result.stderr
