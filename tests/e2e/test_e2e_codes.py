"""Short codes end to end: ``p2pcp send`` beside a real ``p2pcp relay``
process offers ``7-crossbow-puzzle``, ``p2pcp receive 7-crossbow-puzzle``
learns the ticket through the relay's mailbox and receives as with it."""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p2pcp.rendezvous.codes import Code, parse_code
from tests.support.processes import node_env, p2pcp_command, relay_process, stop

from .conftest import PROCESS_TIMEOUT_S, assert_one_line_error, json_lines, tree_of

pytestmark = pytest.mark.e2e

WRONG_CODE_LINE = re.compile(
    r"^p2pcp: error: wrong code: .*; the nameplate is burnt, ask the sender for a new code$"
)


class CodeSender:
    """A running ``p2pcp send --json``: its JSON lines as they come, and the
    ticket event (with its code)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.ticket_event = self.next_event("ticket")
        self.ticket: str = self.ticket_event["ticket"]
        self.code: str = self.ticket_event["code"]

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            if raw.strip():
                self.lines.put(json.loads(raw))
        self.lines.put({"event": "<eof>"})

    def next_event(self, name: str) -> dict[str, Any]:
        while True:
            try:
                event = self.lines.get(timeout=PROCESS_TIMEOUT_S)
            except queue.Empty:
                raise AssertionError(f"sender printed no {name!r} event") from None
            assert event["event"] != "<eof>", f"the sender ended before a {name!r} event"
            if event["event"] == name:
                return event

    def wait(self) -> int:
        return self.process.wait(timeout=PROCESS_TIMEOUT_S)


@pytest.fixture
def start_code_sender(make_node: Any) -> Iterator[Any]:
    """``p2pcp send --json ARGS...`` on a node of its own."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str | Path) -> CodeSender:
        process = subprocess.Popen(
            [*p2pcp_command(), "send", "--json", *map(str, args)],
            env=make_node().env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        started.append(process)
        return CodeSender(process)

    yield start
    for process in started:
        stop(process)


def _files(root: Path) -> Path:
    src = root / "stuff"
    (src / "inner").mkdir(parents=True)
    (src / "inner" / "a.bin").write_bytes(os.urandom(300_000))
    (src / "b.txt").write_text("bee\n")
    return src


def _wrong(code: str) -> str:
    """The same nameplate, another last word."""
    parsed = parse_code(code)
    last = "apple" if parsed.words[-1] != "apple" else "banjo"
    return str(Code(parsed.nameplate, (*parsed.words[:-1], last)))


def test_a_code_through_a_live_relay_receives_and_verifies(
    tmp_path: Path, relay_url: str, make_node: Any, start_code_sender: Any
) -> None:
    src = _files(tmp_path)
    sender = start_code_sender("--relay", relay_url, "--once", src)
    code = parse_code(sender.code)
    assert len(code.words) == 2
    out = tmp_path / "out"
    result = make_node().run(
        "receive", sender.code, "--relay", relay_url, "--out", str(out), "--json"
    )
    assert result.returncode == 0, result.stderr
    events = json_lines(result.stdout)
    assert events[0] == {"event": "code_opened", "nameplate": code.nameplate, "verifier": None}
    assert events[-1]["event"] == "done"
    assert tree_of(out / "stuff") == tree_of(src)
    used = sender.next_event("code_used")
    assert used == {"event": "code_used", "nameplate": code.nameplate, "verifier": None}
    assert sender.wait() == 0


def test_a_wrong_code_burns_the_nameplate_and_the_sender_goes_on(
    tmp_path: Path, relay_url: str, make_node: Any, start_code_sender: Any
) -> None:
    src = _files(tmp_path)
    sender = start_code_sender("--relay", relay_url, src)
    wrong = make_node().run(
        "receive", _wrong(sender.code), "--relay", relay_url, "--out", str(tmp_path / "no")
    )
    assert wrong.returncode == 2
    assert_one_line_error(wrong.stderr)
    assert WRONG_CODE_LINE.match(wrong.stderr.strip().splitlines()[-1]), wrong.stderr
    assert not (tmp_path / "no").exists() or not any((tmp_path / "no").iterdir())
    rejected = sender.next_event("code_rejected")
    assert rejected["nameplate"] == parse_code(sender.code).nameplate
    new_code = sender.next_event("code")["code"]
    assert parse_code(new_code).nameplate != parse_code(sender.code).nameplate
    # The sender still serves its ticket...
    by_ticket = make_node().run("receive", sender.ticket, "--out", str(tmp_path / "t"))
    assert by_ticket.returncode == 0, by_ticket.stderr
    assert tree_of(tmp_path / "t" / "stuff") == tree_of(src)
    # ...and its new code works; the burnt one does not.
    burnt = make_node().run("receive", sender.code, "--relay", relay_url, "--out", str(tmp_path))
    assert burnt.returncode == 2
    assert_one_line_error(burnt.stderr)
    by_code = make_node().run(
        "receive", new_code, "--relay", relay_url, "--out", str(tmp_path / "c")
    )
    assert by_code.returncode == 0, by_code.stderr
    assert tree_of(tmp_path / "c" / "stuff") == tree_of(src)
    assert sender.next_event("code_used")["nameplate"] == parse_code(new_code).nameplate


def test_a_code_is_single_use(
    tmp_path: Path, relay_url: str, make_node: Any, start_code_sender: Any
) -> None:
    src = _files(tmp_path)
    sender = start_code_sender("--relay", relay_url, src)
    first = make_node().run(
        "receive", sender.code, "--relay", relay_url, "--out", str(tmp_path / "1")
    )
    assert first.returncode == 0, first.stderr
    sender.next_event("code_used")
    second = make_node().run(
        "receive", sender.code, "--relay", relay_url, "--out", str(tmp_path / "2")
    )
    assert second.returncode == 2
    assert_one_line_error(second.stderr)
    assert re.search(r"code already used|no such code", second.stderr), second.stderr
    assert not (tmp_path / "2").exists()


def test_an_expired_code_is_refused_and_the_ticket_still_works(
    tmp_path: Path, make_node: Any, start_code_sender: Any
) -> None:
    src = _files(tmp_path)
    with relay_process("--code-expiry", "1", home=tmp_path / "relay-home") as relay:
        sender = start_code_sender("--relay", relay.url, src)
        assert sender.next_event("code_expired")["nameplate"] == parse_code(sender.code).nameplate
        late = make_node().run("receive", sender.code, "--relay", relay.url, "--out", str(tmp_path))
        assert late.returncode == 2
        assert_one_line_error(late.stderr)
        assert "code expired" in late.stderr
        by_ticket = make_node().run("receive", sender.ticket, "--out", str(tmp_path / "t"))
        assert by_ticket.returncode == 0, by_ticket.stderr


def test_verify_shows_the_same_string_on_both_sides(
    tmp_path: Path, relay_url: str, make_node: Any, start_code_sender: Any
) -> None:
    src = _files(tmp_path)
    sender = start_code_sender("--relay", relay_url, "--verify", "--once", src)
    result = make_node().run(
        "receive", sender.code, "--relay", relay_url, "--verify", "--out", str(tmp_path / "o")
    )
    assert result.returncode == 0, result.stderr
    shown = re.search(r"^Verifier: ([0-9a-f]{4}-[0-9a-f]{4}) ", result.stderr, re.MULTILINE)
    assert shown, result.stderr
    assert sender.next_event("code_used")["verifier"] == shown.group(1)


def test_a_chosen_code_and_the_json_ticket_event(
    tmp_path: Path, relay_url: str, make_node: Any, start_code_sender: Any
) -> None:
    src = _files(tmp_path)
    sender = start_code_sender(
        "--relay", relay_url, "--code", "Crossbow-Puzzle-Apple", "--once", src
    )
    assert re.fullmatch(r"[1-9][0-9]*-crossbow-puzzle-apple", sender.code), sender.code
    # A script needs only the event: the code, then the receive.
    result = make_node().run(
        "receive", sender.code, "--relay", relay_url, "--out", str(tmp_path / "o"), "-q"
    )
    assert result.returncode == 0, result.stderr
    assert tree_of(tmp_path / "o" / "stuff") == tree_of(src)


def test_a_chosen_full_code_is_exactly_the_code_and_receives(
    tmp_path: Path, relay_url: str, make_node: Any, start_code_sender: Any
) -> None:
    """``send --code 42-crossbow-puzzle``: the script chose the number too;
    the receiver uses exactly that code and the files verify."""
    src = _files(tmp_path)
    sender = start_code_sender("--relay", relay_url, "--code", "42-crossbow-puzzle", "--once", src)
    assert sender.code == "42-crossbow-puzzle"
    result = make_node().run(
        "receive", "42-crossbow-puzzle", "--relay", relay_url, "--out", str(tmp_path / "o")
    )
    assert result.returncode == 0, result.stderr
    assert tree_of(tmp_path / "o" / "stuff") == tree_of(src)
    assert sender.next_event("code_used")["nameplate"] == 42
    assert sender.wait() == 0


def test_a_chosen_nameplate_in_use_is_one_clear_line_and_the_first_goes_on(
    tmp_path: Path, relay_url: str, make_node: Any, start_code_sender: Any
) -> None:
    src = _files(tmp_path)
    first = start_code_sender("--relay", relay_url, "--code", "42-crossbow-puzzle", "--once", src)
    assert first.code == "42-crossbow-puzzle"
    second = make_node().run(
        "send", "--relay", relay_url, "--code", "42-apple-banjo", str(src), timeout=60
    )
    assert second.returncode == 2, second.stderr
    assert_one_line_error(second.stderr)
    last = second.stderr.strip().splitlines()[-1]
    assert "nameplate 42 is in use on the relay" in last, second.stderr
    assert "choose another code" in last
    assert "apple" not in second.stderr and "banjo" not in second.stderr  # a code is a secret
    # The first sender and its code are untouched.
    result = make_node().run(
        "receive", first.code, "--relay", relay_url, "--out", str(tmp_path / "o")
    )
    assert result.returncode == 0, result.stderr
    assert tree_of(tmp_path / "o" / "stuff") == tree_of(src)
    assert first.wait() == 0


def test_stdout_that_is_not_a_terminal_carries_the_ticket_alone(
    tmp_path: Path, relay_url: str, make_node: Any
) -> None:
    src = _files(tmp_path)
    process = subprocess.Popen(
        [*p2pcp_command(), "send", "--relay", relay_url, str(src)],
        env=make_node().env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        ticket = process.stdout.readline()
        # The stderr lines for people come with the ticket; read to the code.
        seen = []
        for line in process.stderr:
            seen.append(line)
            if line.startswith("Code: "):
                break
        process.terminate()
        rest, _ = process.communicate(timeout=PROCESS_TIMEOUT_S)
    finally:
        stop(process)
    assert ticket.startswith("p2pcp") and rest == ""
    code = seen[-1].split()[1]
    parse_code(code)
    assert code not in ticket


def test_code_option_rules(tmp_path: Path, relay_url: str, make_node: Any) -> None:
    src = _files(tmp_path)
    node = make_node()
    cases = [
        (("--relay", relay_url, "--code-words", "9"), "2 to 8 words"),
        # A chosen number is one people type: checked before any network.
        (("--relay", relay_url, "--code", "1000000-crossbow-puzzle"), "1 to 999,999"),
        (("--relay", relay_url, "--code", "0-crossbow-puzzle"), "out of range"),
        (("--relay", relay_url, "--code", "crossbow-puzzel"), "not one of p2pcp's code words"),
        (("--relay", relay_url, "--code", "crossbow-puzzle", "--no-code"), "contradict"),
        (("--no-relay", "--code", "crossbow-puzzle"), "needs a relay"),
    ]
    for extra, message in cases:
        result = node.run("send", *extra, str(src), timeout=30)
        assert result.returncode == 2, (extra, result.stderr)
        assert_one_line_error(result.stderr)
        assert message in result.stderr, (extra, result.stderr)


def test_receive_rules_for_codes(tmp_path: Path, make_node: Any) -> None:
    node = make_node()
    env = {k: v for k, v in node_env(node.home).items() if k != "P2PCP_RELAY"}
    typo = subprocess.run(
        [*p2pcp_command(), "receive", "7-crossbow-puzzel", "--out", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
        check=False,
    )
    assert typo.returncode == 2
    assert_one_line_error(typo.stderr)
    assert "word 2 is not one of p2pcp's code words" in typo.stderr
    assert "puzzel" not in typo.stderr
    no_relay = subprocess.run(
        [*p2pcp_command(), "receive", "7-crossbow-puzzle", "--no-relay", "--out", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
        check=False,
    )
    assert no_relay.returncode == 2
    assert_one_line_error(no_relay.stderr)
    assert "a code needs a relay" in no_relay.stderr
