"""send --exclude / --exclude-from / --gitignore and send --links, through
the real CLI: exactly the expected tree arrives; links arrive as links with
their targets; an unsafe link is skipped and reported unless the receiver
gives --unsafe-links; existing links and files at a link's name follow the
overwrite rules; without --links the manifest is the old one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from p2pcp.core.ticket import decode_ticket
from p2pcp.transfer.source import import_scan, scan_paths

from .conftest import assert_one_line_error, json_lines

pytestmark = pytest.mark.e2e


def files_under(root: Path) -> dict[str, str]:
    """Every entry under ``root``: a file's text, ``/`` for a folder,
    ``-> target`` for a link (never followed)."""
    found: dict[str, str] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[rel] = "-> " + os.readlink(path)
            elif path.is_dir():
                found[rel] = "/"
            else:
                found[rel] = path.read_text()
    return found


def make_tree(root: Path, texts: dict[str, str]) -> None:
    for rel, text in texts.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def receive(
    node: Any, ticket: str, out: Path, *extra: str
) -> tuple[int, list[dict[str, Any]], str]:
    result = node.run("receive", ticket, "--out", str(out), "--json", *extra)
    return result.returncode, json_lines(result.stdout), result.stderr


def test_exclude_exclude_from_and_gitignore(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    src = tmp_path / "proj"
    make_tree(
        src,
        {
            "main.py": "main",
            "notes.tmp": "tmp",
            "build/out.o": "obj",
            "lib/build/keep.c": "kept: /build is anchored at the top",
            "node_modules/pkg/index.js": "js",
            "lib/cache.pyc": "pyc",
            "lib/debug.log": "log",
            "lib/keep.log": "kept by a negation in lib/.gitignore",
            "lib/.gitignore": "!keep.log\n",
            ".gitignore": "# logs\n*.log\n",
            ".git/HEAD": "ref",
        },
    )
    patterns = tmp_path / "excludes"
    patterns.write_text("# compiled\n*.pyc\n\nnode_modules/\n")
    sender = start_sender(
        make_node(),
        src,
        extra=(
            "--exclude",
            "*.tmp",
            "--exclude",
            "/build",
            "--exclude-from",
            str(patterns),
            "--gitignore",
        ),
    )
    out = tmp_path / "out"
    code, events, stderr = receive(make_node(), sender.ticket, out)
    assert code == 0, stderr
    assert events[-1]["event"] == "done"
    assert files_under(out / "proj") == {
        ".gitignore": "# logs\n*.log\n",
        "main.py": "main",
        "lib": "/",
        "lib/.gitignore": "!keep.log\n",
        "lib/build": "/",
        "lib/build/keep.c": "kept: /build is anchored at the top",
        "lib/keep.log": "kept by a negation in lib/.gitignore",
    }


def test_a_bad_exclude_from_is_one_line_exit_2(tmp_path: Path, make_node: Any) -> None:
    src = tmp_path / "d"
    make_tree(src, {"a": "a"})
    result = make_node().run("send", str(src), "--exclude-from", str(tmp_path / "missing"))
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result.stderr)
    assert "--exclude-from" in result.stderr and result.stdout == ""


@pytest.mark.parametrize(
    ("what", "option"),
    [(["--text", "hello"], "--exclude=*.log"), (["-"], "--links"), (["-"], "--gitignore")],
)
def test_folder_options_with_text_or_a_stream_are_exit_2(
    make_node: Any, what: list[str], option: str
) -> None:
    result = make_node().run("send", *what, option)
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result.stderr)
    assert "do not apply to --text or -" in result.stderr and result.stdout == ""


def linked_tree(root: Path) -> None:
    make_tree(root, {"file.txt": "content", "sub/inner.txt": "inner"})
    os.symlink("file.txt", root / "to_file")
    os.symlink("sub", root / "to_dir")
    os.symlink("../file.txt", root / "sub" / "up")  # inside the folder: fine
    os.symlink("nowhere", root / "dangling")
    os.symlink("/etc/hostname", root / "absolute")  # unsafe
    os.symlink("../../outside", root / "sub" / "escaping")  # unsafe


SAFE_LINKS = {
    "to_file": "-> file.txt",
    "to_dir": "-> sub",
    "sub/up": "-> ../file.txt",
    "dangling": "-> nowhere",
}


def test_links_arrive_as_links_and_unsafe_ones_are_skipped(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    src = tmp_path / "d"
    linked_tree(src)
    sender = start_sender(make_node(), src, extra=("--links",))
    receiver = make_node()
    out = tmp_path / "out"
    code, events, stderr = receive(receiver, sender.ticket, out)
    assert code == 0, stderr
    assert files_under(out / "d") == {
        "file.txt": "content",
        "sub": "/",
        "sub/inner.txt": "inner",
        **SAFE_LINKS,
    }
    skipped = {event["path"]: event for event in events if event["event"] == "link_skipped"}
    assert set(skipped) == {"d/absolute", "d/sub/escaping"}
    assert skipped["d/absolute"]["target"] == "/etc/hostname"
    assert "absolute" in skipped["d/absolute"]["reason"]
    assert "leaves 'd'" in skipped["d/sub/escaping"]["reason"]
    placed = {event["path"] for event in events if event["event"] == "link_done"}
    assert placed == {"d/" + rel for rel in SAFE_LINKS}
    assert events[-1]["event"] == "done"
    # People see a warning (and the same receive again keeps what is there).
    again = receiver.run("receive", sender.ticket, "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert "warning: not creating the link d/absolute -> /etc/hostname" in again.stderr
    assert "--unsafe-links" in again.stderr
    # --unsafe-links creates them too.
    code, events, stderr = receive(receiver, sender.ticket, out, "--unsafe-links")
    assert code == 0, stderr
    assert os.readlink(out / "d" / "absolute") == "/etc/hostname"
    assert os.readlink(out / "d" / "sub" / "escaping") == "../../outside"
    kept = {event["path"] for event in events if event.get("already_present")}
    assert {"d/to_file", "d/file.txt"} <= kept


def test_an_existing_entry_at_a_link_s_name_needs_force(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    src = tmp_path / "d"
    make_tree(src, {"file.txt": "content"})
    os.symlink("file.txt", src / "link")
    sender = start_sender(make_node(), src, extra=("--links",))
    receiver = make_node()
    out = tmp_path / "out"
    victim = tmp_path / "victim"
    victim.write_text("must not change")
    (out / "d").mkdir(parents=True)
    os.symlink(victim, out / "d" / "link")  # another link at that name
    code, _events, stderr = receive(receiver, sender.ticket, out)
    assert code == 5, stderr
    assert_one_line_error(stderr)
    assert "--force" in stderr
    assert not (out / "d" / "file.txt").exists()  # nothing written before the refusal
    code, _events, stderr = receive(receiver, sender.ticket, out, "--force")
    assert code == 0, stderr
    assert os.readlink(out / "d" / "link") == "file.txt"  # the link itself replaced
    assert victim.read_text() == "must not change"


def test_without_links_the_manifest_is_the_old_one(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    src = tmp_path / "d"
    make_tree(src, {"file.txt": "content", "sub/inner.txt": "inner"})
    os.symlink("file.txt", src / "to_file")
    os.symlink("sub", src / "to_dir")
    sender = start_sender(make_node(), src)
    expected = import_scan(scan_paths([src]))
    assert expected.manifest_bytes[9] & 0x04 == 0  # no links section
    assert decode_ticket(sender.ticket).root_hash == expected.root
    out = tmp_path / "out"
    code, events, stderr = receive(make_node(), sender.ticket, out)
    assert code == 0, stderr
    assert files_under(out / "d") == {
        "file.txt": "content",
        "sub": "/",
        "sub/inner.txt": "inner",
        "to_file": "content",  # a link to a file is sent as the file
    }
    assert not any(event["event"].startswith("link") for event in events)
