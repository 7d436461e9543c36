"""End to end through a real relay process on loopback: relay-only, relay then
direct, and the relay-related command-line rules."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from p2pcp.blobs.tree import LEAF_SIZE
from p2pcp.core.ticket import decode_ticket
from tests.support.disks import big_file
from tests.support.processes import p2pcp_command, relay_process

from .conftest import SLOW_LINK, assert_one_line_error, json_lines, tree_of
from .netkit import Watched, bytes_at_least, watched_receive

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024


def _folder(root: Path) -> Path:
    src = root / "stuff"
    (src / "inner").mkdir(parents=True)
    (src / "inner" / "a.bin").write_bytes(os.urandom(3 * LEAF_SIZE + 5))
    (src / "b.txt").write_text("bee\n")
    (src / "empty").mkdir()
    return src


def test_relay_only_transfer(
    tmp_path: Path, relay_url: str, make_node: Any, start_sender: Any
) -> None:
    src = _folder(tmp_path)
    sender = start_sender(make_node(), src, extra=("--relay", relay_url, "--once"))
    assert decode_ticket(sender.ticket).relay_url == relay_url
    out = tmp_path / "out"
    result = make_node().run("receive", sender.ticket, "--out", str(out), "--json", "--relay-only")
    assert result.returncode == 0, result.stderr
    events = json_lines(result.stdout)
    connected = next(e for e in events if e["event"] == "connected")
    assert connected["path"] == "relay" and relay_url in connected["description"]
    done = events[-1]
    assert done["event"] == "done" and done["main_path"] == "relay"
    assert done["paths"].get("direct", 0) == 0 and done["paths"]["relay"] > 0
    assert not any(e["event"] == "path" for e in events)
    assert tree_of(out / "stuff") == tree_of(src)
    assert sender.wait() == 0


def test_auto_starts_on_relay_and_moves_direct(
    tmp_path: Path, relay_url: str, make_node: Any, start_sender: Any
) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(48 * 1024 * 1024))
    sender = start_sender(make_node(), src, extra=("--relay", relay_url, "--once"))
    out = tmp_path / "out"
    result = make_node().run("receive", sender.ticket, "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    events = json_lines(result.stdout)
    assert next(e for e in events if e["event"] == "connected")["path"] == "relay"
    switches = [e["kind"] for e in events if e["event"] == "path"]
    assert "direct" in switches
    done = events[-1]
    assert done["main_path"] == "direct", done["paths"]
    assert (out / "big.bin").read_bytes() == src.read_bytes()


def test_direct_only_never_uses_the_relay(
    tmp_path: Path, relay_url: str, make_node: Any, start_sender: Any
) -> None:
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(LEAF_SIZE * 2))
    sender = start_sender(make_node(), src, extra=("--relay", relay_url))
    out = tmp_path / "out"
    result = make_node().run("receive", sender.ticket, "--out", str(out), "--json", "--direct-only")
    assert result.returncode == 0, result.stderr
    done = json_lines(result.stdout)[-1]
    assert done["main_path"] == "direct" and done["paths"].get("relay", 0) == 0
    assert (out / "f.bin").read_bytes() == src.read_bytes()


def test_relay_flag_rules(tmp_path: Path, make_node: Any, start_sender: Any) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"x")
    node = make_node()
    sender = start_sender(node, src, extra=("--no-relay",))
    assert decode_ticket(sender.ticket).relay_url is None
    # --relay-only with a ticket that names no relay: a usage error.
    result = node.run("receive", sender.ticket, "--relay-only", "--out", str(tmp_path / "o"))
    assert result.returncode == 2
    assert_one_line_error(result.stderr)
    assert "relay" in result.stderr
    for args in (
        ("--relay-only", "--direct-only"),
        ("--relay", "http://127.0.0.1:9", "--no-relay"),
        ("--relay", "gopher://x"),
    ):
        bad = node.run("receive", sender.ticket, *args, "--out", str(tmp_path / "o"))
        assert bad.returncode == 2, args
        assert_one_line_error(bad.stderr)
    bad_env = subprocess.run(
        [*p2pcp_command(), "send", str(src)],
        env={**node.env, "P2PCP_RELAY": "not a url"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad_env.returncode == 2
    assert_one_line_error(bad_env.stderr)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
@pytest.mark.parametrize("policy", ["--relay-only", "auto"])
def test_relay_stopped_mid_transfer(
    tmp_path: Path, make_node: Any, how: signal.Signals, policy: str
) -> None:
    """Defects 4 and 9: the relay is stopped (SIGTERM: it says goodbye) or
    killed (SIGKILL) while a transfer runs. No traceback ever reaches either
    side's stderr (websockets' used to). In "auto" the transfer goes on
    direct and completes; with --relay-only the receiver says at once what
    happened (the relay closed, then the connection was refused) and stops
    with one line and exit 3, instead of 30 s of silence and a wrong reason."""
    src = big_file(tmp_path / "big.bin", 96 * MIB)
    with relay_process(home=tmp_path / "relay-home") as running:
        relay, url = running.process, running.url
        sender = Watched(make_node(), "send", "--json", "--relay", url, str(src), env=SLOW_LINK)
        receiver: Watched | None = None
        try:
            _at, ready = sender.wait_event("ticket", timeout=30)
            args = ("--retry-for", "2") + ((policy,) if policy != "auto" else ())
            receiver = watched_receive(make_node(), ready["ticket"], tmp_path / "out", *args)
            receiver.wait_event("progress", where=bytes_at_least(8 * MIB), timeout=60)
            relay.send_signal(how)
            stopped = time.monotonic()
            code = receiver.finish(timeout=90)
            took = time.monotonic() - stopped
            if policy == "auto":
                assert code == 0, receiver.stderr
                assert (tmp_path / "out" / "big.bin").read_bytes() == src.read_bytes()
            else:
                assert code == 3, receiver.stderr
                assert_one_line_error(receiver.stderr)
                assert took < 20.0, (took, receiver.stderr)
                reasons = [event["reason"] for event in receiver.named("retry")]
                assert reasons, receiver.stderr
                if how == signal.SIGTERM:
                    assert "stopping" in reasons[0], reasons
                assert "refused" in receiver.stderr.splitlines()[-1], receiver.stderr
            assert sender.process.poll() is None, sender.stderr
        finally:
            sender.close()
            if receiver is not None:
                receiver.close()
        assert "Traceback" not in sender.stderr, sender.stderr
        assert receiver is not None and "Traceback" not in receiver.stderr, receiver.stderr
