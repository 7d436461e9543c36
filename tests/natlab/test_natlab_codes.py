"""Short codes on a LAN with no server at all (issue 19), in the LAN lab.

Three hosts on one Ethernet segment (tests/support/netlab/lanlab.py), no
relay, no router: ``p2pcp send`` on host A shows a code, ``p2pcp receive
CODE`` on host B finds A by multicast DNS, runs the PAKE with it directly
and fetches the files, verified. Host C is a LAN host that answers for A's
nameplate with a code of its own (lan_peer.py ``hostile``): the receiver
that reaches it opens no ticket (wrong code, exit 2, one line), and A's code
is not burnt by it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.netlab.lanlab import LanLab, build_lan_lab
from tests.support.processes import p2pcp_command

from .conftest import Node

pytestmark = pytest.mark.natlab

LAN_PEER = Path(__file__).with_name("lan_peer.py")
MDNS_PORT = 5353
RECEIVE_TIMEOUT_S = 120.0
FILES = {"a.txt": b"hello over the LAN\n", "sub/b.bin": bytes(range(256)) * 4000}


@pytest.fixture
def lan_lab(tmp_path: Path) -> Iterator[LanLab]:
    lab = build_lan_lab(tmp_path)
    yield lab
    lab.teardown()


def make_files(root: Path) -> Path:
    for name, data in FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def received(out: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(out)): path.read_bytes()
        for path in sorted(out.rglob("*"))
        if path.is_file()
    }


def lan_env(node: Node) -> dict[str, str]:
    """The node's environment for a user: no debug tracebacks, the LAN on."""
    env = node.env
    env.pop("P2PCP_DEBUG", None)
    env["P2PCP_LAN"] = "on"
    return env


def start_sender(lab: LanLab, node: Node, source: Path) -> tuple[Any, str]:
    sender = lab.start(
        lab.a,
        [*p2pcp_command(), "send", "--json", "-v", str(source)],
        name="sender",
        env=lan_env(node),
    )
    ticket = sender.wait_event("ticket", timeout=60)
    code = ticket.get("code")
    assert isinstance(code, str), f"no code in the ticket event: {ticket}\n{sender.describe()}"
    return sender, code


def receive(lab: LanLab, node: Node, code: str, out: Path) -> Any:
    return lab.exec(
        lab.b,
        [*p2pcp_command(), "receive", "--json", "--out", str(out), code],
        env=lan_env(node),
        timeout=RECEIVE_TIMEOUT_S,
    )


def test_the_lan_lab_carries_multicast_dns_between_its_hosts(lan_lab: LanLab) -> None:
    """rendezvous/lan.py on every interface: announced on A, found from B, one
    message each way (lan_peer.py); the lab's multicast works."""
    announcer = lan_lab.start(lan_lab.a, [sys.executable, str(LAN_PEER), "announce"], name="a")
    nameplate = announcer.wait_event("announced", timeout=30)["nameplate"]
    found = lan_lab.exec(lan_lab.b, [sys.executable, str(LAN_PEER), "find", str(nameplate)])
    assert found.returncode == 0, f"{found.stderr}\n{announcer.describe()}"
    assert json.loads(found.stdout.splitlines()[-1]) == {"event": "received", "message": "pong"}
    assert announcer.wait_event("received", timeout=10)["message"] == "ping"
    assert announcer.wait(10) == 0
