"""Issue 20's done-when: a nightly pull from a share, unattended, across NATs.

The share runs on host A (behind its NAT) with a relay-type ticket (no
address: A's are private) and ``--allow`` for the receiving node only; the
receiver on host B (behind another NAT) pulls with ``receive TICKET --out
DIR --update --delete --json``, as the README's timer does, through the
lab's shared relay. Then the share's folder changes (a file modified in
place, a small one rewritten, one added, one file and one folder deleted)
and the same command pulls again: only the changed files move (the large
one by its changed leaves), the deleted ones are removed, and every file
is verified (its BLAKE3 in the report is the source's).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import blake3
import pytest

from tests.support.netlab.natlab import RELAY_URL, NatKind, NatLab
from tests.support.processes import p2pcp_command

from .conftest import MakeLab, Node

pytestmark = pytest.mark.natlab

MIB = 1024 * 1024
LEAF = 256 * 1024
TICKET_TIMEOUT_S = 60.0
RECEIVE_TIMEOUT_S = 120.0


def make_source(root: Path) -> Path:
    folder = root / "backup"
    files = {
        "big.bin": os.urandom(4 * MIB),
        "docs/a.txt": b"first version of a\n" * 50,
        "docs/b.txt": b"b stays the same\n",
        "old.txt": b"deleted before the second pull\n",
        "sub/deep/c.bin": os.urandom(MIB + 7),
    }
    for rel, data in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return folder


def tree(root: Path) -> dict[str, str | None]:
    """BLAKE3 (hex) of every file, None for every folder, by relative path."""
    return {
        path.relative_to(root).as_posix(): (
            None if path.is_dir() else blake3.blake3(path.read_bytes()).hexdigest()
        )
        for path in sorted(root.rglob("*"))
    }


def pull(lab: NatLab, node: Node, ticket: str, out: Path) -> list[dict[str, Any]]:
    result = lab.exec(
        lab.b.host_ns,
        [
            *p2pcp_command(),
            "receive",
            ticket,
            *("--out", str(out), "--update", "--delete", "--json"),
        ],
        env=node.env,
        timeout=RECEIVE_TIMEOUT_S,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def check_verified(events: list[dict[str, Any]], source: Path) -> None:
    """Every file of the source was reported, with the source's BLAKE3."""
    expected = {f"backup/{rel}": digest for rel, digest in tree(source).items() if digest}
    reported = {e["path"]: e["blake3"] for e in events if e["event"] == "file_done"}
    assert reported == expected


def test_a_nightly_pull_from_a_share_across_two_nats_moves_only_what_changed(
    tmp_path: Path, make_lab: MakeLab, make_node: Callable[..., Node]
) -> None:
    lab = make_lab(NatKind.EASY, NatKind.EASY)
    lab.start_relay(p2pcp_command(), make_node().env)
    source = make_source(tmp_path / "src")
    receiver = make_node()
    receiver_id = lab.exec(lab.b.host_ns, [*p2pcp_command(), "id"], env=receiver.env)
    assert receiver_id.returncode == 0, receiver_id.stderr
    share = lab.start(
        lab.a.host_ns,
        [
            *p2pcp_command(),
            *("share", "--relay", RELAY_URL, "--ticket-type", "relay", "--json"),
            *("--allow", receiver_id.stdout.strip(), str(source)),
        ],
        name="share",
        env=make_node().env,
    )
    ticket = share.wait_event("ticket", TICKET_TIMEOUT_S)
    assert ticket["kind"] == "share" and ticket["addresses"] == [], ticket
    out = tmp_path / "out"
    out.mkdir()

    first = pull(lab, receiver, ticket["ticket"], out)
    assert tree(out / "backup") == tree(source)
    check_verified(first, source)

    # The day's changes: 1 leaf of the large file in place, a small file
    # rewritten, one added, one file and a whole folder deleted.
    with (source / "big.bin").open("r+b") as handle:
        handle.seek(2 * MIB + 100)
        handle.write(os.urandom(1000))
    (source / "docs" / "a.txt").write_bytes(b"second version of a\n" * 50)
    (source / "docs" / "new.txt").write_bytes(b"added today\n")
    (source / "old.txt").unlink()
    shutil.rmtree(source / "sub")

    second = pull(lab, receiver, ticket["ticket"], out)
    described = share.describe()
    assert tree(out / "backup") == tree(source), described
    check_verified(second, source)
    done = next(e for e in second if e["event"] == "done")
    files = {e["path"]: e for e in second if e["event"] == "file_done"}
    assert files["backup/docs/b.txt"]["already_present"], files
    assert files["backup/big.bin"]["updated"], files
    assert files["backup/big.bin"]["bytes_reused"] == 4 * MIB - LEAF, files
    assert files["backup/docs/a.txt"]["updated"], files
    # Only the changed leaf and the changed and new files moved.
    changed = LEAF + len(b"second version of a\n" * 50) + len(b"added today\n")
    assert changed <= done["bytes_received"] <= 1.1 * changed, done
    deleted = {e["path"] for e in second if e["event"] == "deleted"}
    assert {"backup/old.txt", "backup/sub"} <= deleted, deleted
    assert not [p for p in out.iterdir() if p.name.startswith(".p2pcp")]
    # The share served both pulls and is still serving.
    assert [e["event"] for e in share.events].count("done") == 2, described
    assert share.process.poll() is None
