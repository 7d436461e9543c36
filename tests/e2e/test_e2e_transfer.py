"""End to end: the real CLI, two nodes, real UDP on loopback, real files."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from p2pcp.blobs.tree import LEAF_SIZE
from p2pcp.core.ticket import decode_ticket, encode_ticket
from tests.support.processes import p2pcp_command, stop

from .conftest import assert_one_line_error, json_lines, tree_of

pytestmark = pytest.mark.e2e


def _receive(node: Any, ticket: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return node.run("receive", ticket, "--out", str(out), "--json", *extra)


def _done(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    events = json_lines(result.stdout)
    assert events[-1]["event"] == "done", events
    return events[-1]


def test_single_file(tmp_path: Path, make_node: Any, start_sender: Any) -> None:
    src = tmp_path / "report.bin"
    src.write_bytes(os.urandom(3 * LEAF_SIZE + 123))
    sender = start_sender(make_node(), src, extra=("--once",))
    out = tmp_path / "out"
    done = _done(_receive(make_node(), sender.ticket, out))
    assert (out / "report.bin").read_bytes() == src.read_bytes()
    assert done["path"] == str(out / "report.bin")
    assert done["bytes_received"] == src.stat().st_size
    assert done["files"] == [
        {"path": "report.bin", "size": src.stat().st_size, "blake3": done["files"][0]["blake3"]}
    ]
    import blake3

    assert done["files"][0]["blake3"] == blake3.blake3(src.read_bytes()).hexdigest()
    assert sender.wait() == 0
    assert sender.next_event("done")["bytes_sent"] == src.stat().st_size
    # Nothing left behind but the file.
    assert sorted(p.name for p in out.iterdir()) == ["report.bin"]


@pytest.mark.skipif(shutil.which("b3sum") is None, reason="b3sum is not installed")
def test_reported_hash_agrees_with_b3sum(tmp_path: Path, make_node: Any, start_sender: Any) -> None:
    src = tmp_path / "data"
    src.write_bytes(os.urandom(5 * LEAF_SIZE // 2))
    sender = start_sender(make_node(), src, extra=("--once",))
    done = _done(_receive(make_node(), sender.ticket, tmp_path / "out"))
    b3sum = subprocess.run(
        ["b3sum", "--no-names", str(src)], capture_output=True, text=True, check=True
    )
    assert done["files"][0]["blake3"] == b3sum.stdout.strip()


def _make_folder(root: Path) -> None:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty-folder").mkdir()
    (root / "Ünïcødé ☃ names").mkdir()
    (root / "a.txt").write_text("alpha\n")
    (root / "empty-file").write_bytes(b"")
    (root / "sub" / "b.bin").write_bytes(os.urandom(LEAF_SIZE + 1))
    (root / "sub" / "deeper" / "c.txt").write_text("gamma")
    (root / "Ünïcødé ☃ names" / "日本語.txt").write_text("こんにちは")
    (root / "sub" / "same-as-a.txt").write_text("alpha\n")
    tool = root / "tool.sh"
    tool.write_text("#!/bin/sh\necho hi\n")
    tool.chmod(0o755)


def test_folder_with_nested_empty_and_unicode_names(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    src = tmp_path / "photos"
    src.mkdir()
    _make_folder(src)
    sender = start_sender(make_node(), src, extra=("--once",))
    out = tmp_path / "out"
    done = _done(_receive(make_node(), sender.ticket, out))
    assert tree_of(out / "photos") == tree_of(src)
    assert os.access(out / "photos" / "tool.sh", os.X_OK)
    assert not os.access(out / "photos" / "a.txt", os.X_OK)
    assert done["path"] == str(out / "photos")
    assert sorted(f["path"] for f in done["files"]) == sorted(
        p.relative_to(tmp_path).as_posix() for p in src.rglob("*") if p.is_file()
    )
    assert sorted(p.name for p in out.iterdir()) == ["photos"]


@pytest.mark.parametrize(
    "size", [0, 1, LEAF_SIZE - 1, LEAF_SIZE, LEAF_SIZE + 1], ids=lambda s: f"{s}B"
)
def test_leaf_boundary_sizes(size: int, tmp_path: Path, make_node: Any, start_sender: Any) -> None:
    src = tmp_path / "f"
    src.write_bytes(os.urandom(size))
    sender = start_sender(make_node(), src, extra=("--once",))
    _done(_receive(make_node(), sender.ticket, tmp_path / "out"))
    assert (tmp_path / "out" / "f").read_bytes() == src.read_bytes()


def test_overwrite_rules(tmp_path: Path, make_node: Any, start_sender: Any) -> None:
    src = tmp_path / "doc.txt"
    src.write_bytes(b"the real content\n" * 1000)
    sender = start_sender(make_node(), src)
    receiver = make_node()
    out = tmp_path / "out"
    out.mkdir()
    # Identical content: left as it is, counts as done.
    shutil.copyfile(src, out / "doc.txt")
    before = (out / "doc.txt").stat()
    done = _done(_receive(receiver, sender.ticket, out))
    assert done["bytes_received"] == 0 and done["bytes_present"] == src.stat().st_size
    assert (out / "doc.txt").stat().st_ino == before.st_ino
    # Different content: exit 5, nothing changed.
    (out / "doc.txt").write_bytes(b"mine, do not touch")
    result = _receive(receiver, sender.ticket, out)
    assert result.returncode == 5
    assert_one_line_error(result.stderr)
    assert "--force" in result.stderr
    assert (out / "doc.txt").read_bytes() == b"mine, do not touch"
    assert json_lines(result.stdout)[-1]["event"] == "error"
    assert sorted(p.name for p in out.iterdir()) == ["doc.txt"]
    # --force replaces it.
    _done(_receive(receiver, sender.ticket, out, "--force"))
    assert (out / "doc.txt").read_bytes() == src.read_bytes()


def test_folder_where_a_file_would_go_is_never_replaced(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    src = tmp_path / "thing"
    src.write_bytes(b"x")
    sender = start_sender(make_node(), src)
    out = tmp_path / "out"
    (out / "thing").mkdir(parents=True)
    result = _receive(make_node(), sender.ticket, out, "--force")
    assert result.returncode == 5
    assert (out / "thing").is_dir()


@pytest.mark.parametrize(
    "ticket",
    ["", "hello", "p2pcp", "p2pcpaaaa", "p2pcp!!!!", "sendmeaaaaaaaaaaaaaaaaaaaaaaaaa"],
)
def test_bad_tickets_exit_2(ticket: str, tmp_path: Path, make_node: Any) -> None:
    result = make_node().run("receive", ticket, "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert_one_line_error(result.stderr)
    assert not (tmp_path / "out").exists()


def test_truncated_real_ticket_exits_2(tmp_path: Path, make_node: Any, start_sender: Any) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"data")
    sender = start_sender(make_node(), src)
    for bad in (sender.ticket[:-1], sender.ticket + "a", sender.ticket[:30]):
        result = make_node().run("receive", bad, "--out", str(tmp_path / "out"))
        assert result.returncode == 2, result.stderr
        assert "ticket" in result.stderr
    assert not (tmp_path / "out").exists()


def test_wrong_node_key_in_ticket_never_succeeds(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    src = tmp_path / "secret.txt"
    src.write_bytes(b"only for the right peer")
    sender = start_sender(make_node(), src)
    real = decode_ticket(sender.ticket)
    forged = encode_ticket(
        real.__class__(
            node_id=bytes(32 * [7]),
            relay_url=real.relay_url,
            addresses=real.addresses,
            root_hash=real.root_hash,
            total_size=real.total_size,
        )
    )
    out = tmp_path / "out"
    result = _receive(make_node(), forged, out)
    assert result.returncode in (3, 4), result.stderr
    assert_one_line_error(result.stderr)
    assert not (out / "secret.txt").exists()


def test_file_changed_after_ticket_fails_without_unverified_file(
    tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(4 * LEAF_SIZE))
    sender = start_sender(make_node(), src)
    with open(src, "r+b") as handle:  # same size, different bytes in leaf 2
        handle.seek(2 * LEAF_SIZE + 10)
        handle.write(b"tampered")
    out = tmp_path / "out"
    result = _receive(make_node(), sender.ticket, out)
    assert result.returncode == 4, result.stderr
    assert_one_line_error(result.stderr)
    assert "changed" in result.stderr
    assert not (out / "big.bin").exists()
    leftovers = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert leftovers == []


def test_many_receivers_at_once(tmp_path: Path, make_node: Any, start_sender: Any) -> None:
    src = tmp_path / "shared"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}").write_bytes(os.urandom(LEAF_SIZE * i + 17))
    sender = start_sender(make_node(), src)
    results: list[subprocess.CompletedProcess[str]] = []

    def fetch(i: int) -> None:
        results.append(_receive(make_node(), sender.ticket, tmp_path / f"out{i}"))

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == 4
    for i in range(4):
        assert tree_of(tmp_path / f"out{i}" / "shared") == tree_of(src)
    for result in results:
        _done(result)
    assert sender.process.poll() is None  # still serving


def test_plain_stdout_carries_only_the_ticket_and_ticket_file(
    tmp_path: Path, make_node: Any
) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"hello")
    node = make_node()
    ticket_file = tmp_path / "ticket.txt"
    process = subprocess.Popen(
        [*p2pcp_command(), "send", str(src), "--ticket-file", str(ticket_file), "--once"],
        env=node.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("p2pcp") and decode_ticket(line).total_size == 5
        assert ticket_file.read_text().strip() == line
        result = make_node().run("receive", line, "--out", str(tmp_path / "out"), "-q")
        assert result.returncode == 0, result.stderr
        assert result.stdout == "" and result.stderr == ""
        assert process.wait(timeout=30) == 0
        assert process.stdout.read() == ""
    finally:
        stop(process)


def test_ticket_and_id_commands(tmp_path: Path, make_node: Any, start_sender: Any) -> None:
    node = make_node()
    node_id = node.run("id").stdout.strip()
    assert len(node_id) == 52
    src = tmp_path / "f"
    src.write_bytes(b"12345")
    sender = start_sender(node, src)
    shown = node.run("ticket", sender.ticket)
    assert shown.returncode == 0
    assert node_id in shown.stdout and "5 bytes" in shown.stdout
    bad = node.run("ticket", sender.ticket[:-3])
    assert bad.returncode == 2
    assert_one_line_error(bad.stderr)


def test_version_and_help(make_node: Any) -> None:
    node = make_node()
    version = node.run("--version")
    assert version.returncode == 0 and version.stdout.startswith("p2pcp ")
    helped = node.run("receive", "--help")
    assert helped.returncode == 0 and "Exit codes" in helped.stdout
    wrong = node.run("receive")
    assert wrong.returncode == 2
    assert "Traceback" not in wrong.stderr


def test_unreachable_sender_exits_3(tmp_path: Path, make_node: Any) -> None:
    import socket

    from p2pcp.core.ticket import Ticket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nobody listens on that port any more.
    ticket = encode_ticket(Ticket(bytes(32), None, (("127.0.0.1", port),), bytes(32), 1))
    result = make_node().run("receive", ticket, "--out", str(tmp_path / "out"))
    assert result.returncode == 3, result.stderr
    assert_one_line_error(result.stderr)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("congestion", ["bbr", "cubic", "reno"])
def test_each_congestion_controller_moves_a_file(
    congestion: str, tmp_path: Path, make_node: Any, start_sender: Any
) -> None:
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(8 * LEAF_SIZE + 5))
    sender = start_sender(make_node(), src, extra=("--once", "--congestion", congestion))
    out = tmp_path / "out"
    _done(_receive(make_node(), sender.ticket, out, "--congestion", congestion.upper()))
    assert (out / "data.bin").read_bytes() == src.read_bytes()
    assert sender.wait() == 0


def test_unknown_congestion_controller_exits_2(tmp_path: Path, make_node: Any) -> None:
    result = make_node().run("send", "--congestion", "vegas", str(tmp_path))
    assert result.returncode == 2
    assert "vegas" in result.stderr
