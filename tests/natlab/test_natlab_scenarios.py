"""Issue 3's scenarios: the real CLI behind NATs, a real relay, real bytes on disk.

In every test the sender runs ``p2pcp send --relay http://198.18.0.1:3340
--json --once DIR`` in host A, the receiver ``p2pcp receive --json TICKET``
in host B (the ticket alone tells it the relay), and ``p2pcp relay`` runs on
the relay host. Each node has its own P2PCP_HOME. Each test checks the files
that arrived, both exit codes, and the path facts the receiver reports:

- ``connected``: {path: "direct"|"relay", address (direct) or url (relay)};
- ``path``: {kind, description} on every switch;
- ``done``: ``paths`` {"direct": bytes, "relay": bytes} and ``main_path``.

A rate cap on router B's LAN leg (tc tbf; netem does not exist in the
test kernels) slows both paths alike, so a test can act while bytes still flow.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.netlab.natlab import RELAY_URL, NatKind, NatLab
from tests.support.netlab.plumbing import LabProcess
from tests.support.processes import p2pcp_command

from .conftest import MakeLab, Node

pytestmark = pytest.mark.natlab

MIB = 1024 * 1024
# Bounds on each step; a transfer here moves <= 48 MiB at >= 8 MB/s.
TICKET_TIMEOUT_S = 30.0
DIRECT_TIMEOUT_S = 20.0
TRANSFER_TIMEOUT_S = 90.0
SENDER_EXIT_TIMEOUT_S = 20.0
# Issue 3: moving between paths stalls the transfer "no more than a couple of
# seconds"; the bound allows for two busy cores.
STALL_LIMIT_S = 5.0
# A path never taken may still have carried a few probes (disco pings).
STRAY_BYTES_FRACTION = 0.02
# The rate cap for the tests that act mid-transfer: 80 Mbit/s = 10 MB/s, so a
# 48 MiB folder takes ~5 s, several times what punching should take.
CAPPED_MBIT = 80
# 1200-byte datagrams under the cap: no fragments for tbf to drop piecemeal.
CAPPED_ENV = {"P2PCP_MAX_DATAGRAM_SIZE": "1200"}


def make_payload(root: Path, total_bytes: int) -> Path:
    """A folder of a few files (nested, one empty) adding up to total_bytes."""
    folder = root / "payload"
    sizes = {
        "big.bin": total_bytes // 2,
        "docs/medium.bin": total_bytes * 3 // 10,
        "deep/er/tail.bin": total_bytes - total_bytes // 2 - total_bytes * 3 // 10 - 1000,
        "docs/notes.txt": 1000,
        "empty": 0,
    }
    for rel, size in sizes.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    return folder


def digests(root: Path) -> dict[str, str | None]:
    """sha256 of every file (None for a folder) under root, by relative path."""
    result: dict[str, str | None] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_dir():
            result[rel] = None
            continue
        digest = hashlib.sha256()
        with path.open("rb") as file:
            while chunk := file.read(MIB):
                digest.update(chunk)
        result[rel] = digest.hexdigest()
    return result


@dataclass
class Transfer:
    """One send/receive pair in the lab, with everything needed to judge it."""

    lab: NatLab
    source: Path
    total_bytes: int
    out: Path
    sender: LabProcess
    receiver: LabProcess
    ticket: str

    def describe(self) -> str:
        """Both nodes' and the relay's output, and the relay's counters."""
        parts = [self.sender.describe(), self.receiver.describe()]
        if self.lab.relay is not None:
            parts.append(self.lab.relay.describe())
            if self.lab.relay.process.poll() is None:
                parts.append(f"[relay /metrics]\n{self.lab.relay_metrics()}")
        return "\n\n".join(parts)

    def path_history(self) -> list[str]:
        """Path kinds in the order the receiver reported them, repeats folded."""
        history: list[str] = []
        for event in self.receiver.events:
            kind = None
            if event.get("event") == "connected":
                kind = event.get("path")
            elif event.get("event") == "path":
                kind = event.get("kind")
            if kind is not None and (not history or history[-1] != kind):
                history.append(kind)
        return history

    def bytes_done_now(self) -> int:
        done = [e["bytes_done"] for e in self.receiver.events if e.get("event") == "progress"]
        return max(done, default=0)

    def wait_for_path(self, kind: str, timeout: float) -> None:
        """Wait for the receiver's next report (connected or path) of path ``kind``.

        Reads the receiver's lines from where the previous wait stopped, so a
        second wait only sees reports that came after the first one.
        """

        def is_on(line: str) -> bool:
            try:
                event = json.loads(line)
            except ValueError:
                return False
            if not isinstance(event, dict):
                return False
            return (event.get("event") == "connected" and event.get("path") == kind) or (
                event.get("event") == "path" and event.get("kind") == kind
            )

        try:
            self.receiver.wait_line(is_on, timeout)
        except AssertionError as error:
            raise AssertionError(
                f"the receiver never reported path {kind!r} (history {self.path_history()})"
                f"\n{self.describe()}"
            ) from error

    def assert_still_moving(self, what: str) -> None:
        """The transfer has not finished yet, so ``what`` happens mid-transfer."""
        assert self.receiver.process.poll() is None, (
            f"the transfer ended before {what}: raise the payload or lower the cap"
            f"\n{self.describe()}"
        )
        assert self.bytes_done_now() < self.total_bytes, f"done before {what}\n{self.describe()}"

    def finish(self) -> dict[str, Any]:
        """Wait for both ends; check exit codes, files and path facts; return ``done``."""
        code = self.receiver.wait(TRANSFER_TIMEOUT_S)
        assert code == 0, f"receiver exited {code}\n{self.describe()}"
        assert digests(self.out / "payload") == digests(self.source), "files differ"
        sender_code = self.sender.wait(SENDER_EXIT_TIMEOUT_S)
        assert sender_code == 0, f"sender exited {sender_code}\n{self.describe()}"
        done = [e for e in self.receiver.events if e.get("event") == "done"]
        assert len(done) == 1, f"expected one done event\n{self.describe()}"
        event = done[0]
        assert event.get("bytes_received") == self.total_bytes, event
        self._check_path_facts(event)
        return event

    def path_events(self) -> list[dict[str, Any]]:
        """The receiver's connected, path and done events (done without its file list)."""
        return [
            {key: value for key, value in event.items() if key != "files"}
            for event in self.receiver.events
            if event.get("event") in ("connected", "path", "done")
        ]

    def _check_path_facts(self, done: dict[str, Any]) -> None:
        """Every path fact of the --json contract, all gaps listed in one failure."""
        problems: list[str] = []
        events = self.receiver.events
        connected = [e for e in events if e.get("event") == "connected"]
        if not connected:
            problems.append("no connected event")
        else:
            first = connected[0]
            if first.get("path") not in ("direct", "relay"):
                problems.append("connected.path must be 'direct' or 'relay'")
            elif first["path"] == "relay" and first.get("url") != RELAY_URL:
                problems.append(f"connected over the relay needs url={RELAY_URL!r}")
            elif first["path"] == "direct" and not isinstance(first.get("address"), str):
                problems.append("connected directly needs address='ip:port'")
        reported = None  # the path the receiver last said it was on
        for event in events:
            if event.get("event") == "connected":
                reported = event.get("path")
            elif event.get("event") == "path":
                if event.get("kind") not in ("direct", "relay") or not isinstance(
                    event.get("description"), str
                ):
                    problems.append(
                        f"path events need kind (direct|relay) and description: {event}"
                    )
                elif event["kind"] == reported:
                    problems.append(f"a path event that is no switch (already on {reported})")
                reported = event.get("kind")
        paths = done.get("paths")
        main = done.get("main_path")
        history = self.path_history()
        if not isinstance(paths, dict) or set(paths) != {"direct", "relay"}:
            problems.append("done.paths must be {'direct': bytes, 'relay': bytes}")
        elif not all(isinstance(n, int) and n >= 0 for n in paths.values()):
            problems.append("done.paths values must be byte counts")
        else:
            if sum(paths.values()) < self.total_bytes:
                problems.append("done.paths add up to less than the bytes received")
            if main not in ("direct", "relay"):
                problems.append("done.main_path must be 'direct' or 'relay'")
            elif paths[main] != max(paths.values()):
                problems.append("done.main_path is not the path that carried the most")
            elif main not in history:
                problems.append(f"done.main_path {main!r} was never reported as the path")
            for kind in ("direct", "relay"):
                if kind not in history and paths[kind] > STRAY_BYTES_FRACTION * self.total_bytes:
                    problems.append(f"{paths[kind]} bytes counted on {kind}, a path never taken")
        assert not problems, "\n".join(
            ["the receiver's path facts break the --json contract:", *problems, "events:"]
            + [json.dumps(event) for event in self.path_events()]
        )

    def longest_stall_s(self) -> float:
        """The longest gap between the receiver's progress reports (or to done)."""
        times = [
            arrival
            for arrival, event in self.receiver.timed_events()
            if event.get("event") in ("progress", "done")
        ]
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        return max(gaps, default=0.0)


StartTransfer = Callable[..., Transfer]


@pytest.fixture
def start_transfer(tmp_path: Path, make_node: Callable[..., Node]) -> StartTransfer:
    def start(
        lab: NatLab,
        *,
        total_bytes: int,
        env: dict[str, str] | None = None,
    ) -> Transfer:
        extra_env = env or {}
        lab.start_relay(p2pcp_command(), make_node().env)
        source = make_payload(tmp_path / "src", total_bytes)
        sender = lab.start(
            lab.a.host_ns,
            [*p2pcp_command(), "send", "--relay", RELAY_URL, "--json", "--once", "-v", str(source)],
            name="sender",
            env=make_node(**extra_env).env,
        )
        ticket_event = sender.wait_event("ticket", TICKET_TIMEOUT_S)
        ticket = ticket_event["ticket"]
        decoded = subprocess.run(
            [*p2pcp_command(), "ticket", "--json", ticket],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert json.loads(decoded.stdout)["relay_url"] == RELAY_URL, decoded.stdout
        out = tmp_path / "out"
        out.mkdir()
        receiver = lab.start(
            lab.b.host_ns,
            [*p2pcp_command(), "receive", "--json", "-v", "--out", str(out), ticket],
            name="receiver",
            env=make_node(**extra_env).env,
        )
        return Transfer(lab, source, total_bytes, out, sender, receiver, ticket)

    return start


def test_easy_nats_start_on_the_relay_and_go_direct(
    make_lab: MakeLab, start_transfer: StartTransfer
) -> None:
    """Two endpoint-independent NATs: the ticket alone gets the receiver connected
    through the relay, hole punching opens a direct path, the connection moves
    to it without a break, and the direct path carries most of the bytes."""
    lab = make_lab(NatKind.EASY, NatKind.EASY)
    lab.limit_rate(lab.b, CAPPED_MBIT)
    transfer = start_transfer(lab, total_bytes=48 * MIB, env=CAPPED_ENV)
    done = transfer.finish()
    history = transfer.path_history()
    assert history[:2] == ["relay", "direct"], f"expected relay then direct: {history}"
    assert done["paths"]["relay"] > 0, f"the relay carried nothing, not even the handshake: {done}"
    assert done["main_path"] == "direct", done
    assert done["paths"]["direct"] > done["paths"]["relay"], done
    stall = transfer.longest_stall_s()
    assert stall <= STALL_LIMIT_S, f"progress stalled {stall:.1f} s"


def test_symmetric_nat_on_one_side_still_completes(
    make_lab: MakeLab, start_transfer: StartTransfer
) -> None:
    """Receiver behind a symmetric (hard) NAT, sender behind an easy one: the
    transfer completes; direct if punching managed, otherwise relayed. Either
    way the reported path is consistent: main_path carried the most bytes and
    was a path the receiver reported; a path never taken carried ~nothing."""
    lab = make_lab(NatKind.EASY, NatKind.HARD)
    transfer = start_transfer(lab, total_bytes=24 * MIB)
    transfer.finish()


@pytest.mark.parametrize("blocked", ["sender", "receiver"])
def test_udp_blocked_on_one_side_completes_over_the_relay(
    make_lab: MakeLab, start_transfer: StartTransfer, blocked: str
) -> None:
    """One router drops all UDP from its LAN: no STUN, no QUIC over UDP, no
    punching. The node reaches the relay by WebSocket over TCP, and the whole
    transfer goes through the relay."""
    kinds = (NatKind.UDP_BLOCKED, NatKind.EASY)
    lab = make_lab(*(kinds if blocked == "sender" else kinds[::-1]))
    transfer = start_transfer(lab, total_bytes=24 * MIB)
    done = transfer.finish()
    assert transfer.path_history() == ["relay"], transfer.path_history()
    assert done["main_path"] == "relay", done
    assert done["paths"]["relay"] >= transfer.total_bytes, done


def test_relay_killed_after_going_direct_completes(
    make_lab: MakeLab, start_transfer: StartTransfer
) -> None:
    """Once the path is direct the relay is no longer needed: killing it
    (SIGKILL, no goodbye) mid-transfer does not disturb the transfer, which
    completes on the direct path."""
    lab = make_lab(NatKind.EASY, NatKind.EASY)
    lab.limit_rate(lab.b, CAPPED_MBIT)
    transfer = start_transfer(lab, total_bytes=48 * MIB, env=CAPPED_ENV)
    transfer.wait_for_path("direct", DIRECT_TIMEOUT_S)
    transfer.assert_still_moving("the relay was killed")
    lab.kill_relay()
    done = transfer.finish()
    assert transfer.path_history()[-1] == "direct", transfer.path_history()
    assert done["main_path"] == "direct", done
    stall = transfer.longest_stall_s()
    assert stall <= STALL_LIMIT_S, f"progress stalled {stall:.1f} s"


def test_direct_path_broken_mid_transfer_falls_back_to_the_relay(
    make_lab: MakeLab, start_transfer: StartTransfer
) -> None:
    """After the path went direct, every UDP datagram between the two public
    addresses is dropped: the direct path goes quiet, the connection moves back
    to the relay within a couple of seconds, and the transfer completes there."""
    lab = make_lab(NatKind.EASY, NatKind.EASY)
    lab.limit_rate(lab.b, CAPPED_MBIT)
    transfer = start_transfer(lab, total_bytes=48 * MIB, env=CAPPED_ENV)
    transfer.wait_for_path("direct", DIRECT_TIMEOUT_S)
    transfer.assert_still_moving("the direct path was broken")
    bytes_before_break = transfer.bytes_done_now()
    lab.break_direct_path()
    transfer.wait_for_path("relay", DIRECT_TIMEOUT_S)
    done = transfer.finish()
    history = transfer.path_history()
    assert history[-2:] == ["direct", "relay"], history
    # What was left after the break went over the relay. Progress reports lag
    # (four a second), so ``remaining`` overstates it a little: ask for half.
    remaining = transfer.total_bytes - bytes_before_break
    assert done["paths"]["relay"] >= remaining // 2, (remaining, done)
    stall = transfer.longest_stall_s()
    assert stall <= STALL_LIMIT_S, f"progress stalled {stall:.1f} s"


def test_a_short_code_through_the_relay_across_two_nats(
    tmp_path: Path, make_lab: MakeLab, make_node: Callable[..., Node]
) -> None:
    """Issue 19: a person reads the code to another across two NATs. The
    sender (host A) offers a code on the shared relay; the receiver (host B)
    runs ``p2pcp receive CODE --relay URL`` with nothing else, the PAKE runs
    through the relay's mailbox, and the files arrive verified."""
    lab = make_lab(NatKind.EASY, NatKind.EASY)
    lab.start_relay(p2pcp_command(), make_node().env)
    source = make_payload(tmp_path / "src", 4 * MIB)
    sender = lab.start(
        lab.a.host_ns,
        [*p2pcp_command(), "send", "--relay", RELAY_URL, "--json", "--once", str(source)],
        name="sender",
        env=make_node().env,
    )
    ticket = sender.wait_event("ticket", TICKET_TIMEOUT_S)
    # The ticket waits a moment for the first code; a slower one follows it.
    code = ticket.get("code") or sender.wait_event("code", TICKET_TIMEOUT_S)["code"]
    assert isinstance(code, str) and code[0].isdigit(), f"no code: {ticket}\n{sender.describe()}"
    out = tmp_path / "out"
    out.mkdir()
    receiver = lab.start(
        lab.b.host_ns,
        [*p2pcp_command(), "receive", "--json", "--out", str(out), "--relay", RELAY_URL, code],
        name="receiver",
        env=make_node().env,
    )
    described = f"{sender.describe()}\n\n{receiver.describe()}"
    assert receiver.wait(TRANSFER_TIMEOUT_S) == 0, described
    assert sender.wait(SENDER_EXIT_TIMEOUT_S) == 0, described
    assert [e["event"] for e in receiver.events].count("done") == 1, described
    assert digests(out / "payload") == digests(source)
    assert "code_opened" in [e["event"] for e in receiver.events], described
