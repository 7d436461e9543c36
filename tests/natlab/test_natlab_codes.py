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
from collections.abc import Callable, Iterator
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
    # The ticket never waits for the LAN's claim of the code (about a
    # second of multicast DNS probing): the code follows in its own event.
    assert ticket["code"] is None, ticket
    code = sender.wait_event("code", timeout=30)["code"]
    assert isinstance(code, str), f"no code: {ticket}\n{sender.describe()}"
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


def test_a_code_finds_its_sender_on_the_lan_and_the_files_arrive_verified(
    lan_lab: LanLab, make_node: Callable[..., Node], tmp_path: Path
) -> None:
    source = make_files(tmp_path / "source")
    sender, code = start_sender(lan_lab, make_node(), source)
    nameplate = int(code.split("-", 1)[0])
    assert 1 <= nameplate <= 99, code
    out = tmp_path / "out"
    out.mkdir()
    result = receive(lan_lab, make_node(), code, out)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{sender.describe()}"
    assert received(out) == {f"source/{name}": data for name, data in FILES.items()}
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert any(event.get("event") == "code_opened" for event in events), result.stdout
    used = sender.wait_event("code_used", timeout=30)
    assert used["nameplate"] == nameplate


def test_a_lan_host_answering_for_someone_elses_nameplate_cannot_get_its_ticket_accepted(
    lan_lab: LanLab, make_node: Callable[..., Node], tmp_path: Path
) -> None:
    lab = lan_lab
    source = make_files(tmp_path / "source")
    sender, code = start_sender(lab, make_node(), source)
    nameplate, _, words = code.partition("-")
    # C announces A's nameplate with other words; B hears only C's answers.
    hostile_code = f"{nameplate}-{'-'.join(reversed(words.split('-')))}"
    if hostile_code == code:
        hostile_code = f"{nameplate}-{words}-{words.split('-')[0]}"
    hostile = lab.start(
        lab.c,
        [sys.executable, str(LAN_PEER), "hostile", nameplate, hostile_code, lab.c.ip],
        name="hostile",
    )
    hostile.wait_event("announced", timeout=30)
    lab.drop_udp_from(lab.b, lab.a, MDNS_PORT)

    out = tmp_path / "out"
    out.mkdir()
    result = receive(lab, make_node(), code, out)
    assert result.returncode == 2, f"{result.stdout}\n{result.stderr}\n{hostile.describe()}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("p2pcp: error: wrong code"), result.stderr
    assert received(out) == {}
    assert hostile.wait_event("claimed", timeout=10)
    assert hostile.wait_event("finished", timeout=30)["result"] == "WrongCode"
    hostile.wait(30)

    # A never saw that claim: its code is intact and works once C is gone.
    lab.restore_udp(lab.b)
    assert not any(event.get("event") == "code_rejected" for event in sender.events)
    result = receive(lab, make_node(), code, out)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{sender.describe()}"
    assert received(out) == {f"source/{name}": data for name, data in FILES.items()}


def test_receive_lan_finds_the_code_on_the_lan_even_with_a_relay_configured(
    lan_lab: LanLab, make_node: Callable[..., Node], tmp_path: Path
) -> None:
    source = make_files(tmp_path / "source")
    sender, code = start_sender(lan_lab, make_node(), source)
    out = tmp_path / "out"
    out.mkdir()
    # A relay nobody runs: without --lan the receiver would look for the code there.
    env = {**lan_env(make_node()), "P2PCP_RELAY": f"http://{lan_lab.c.ip}:3340"}
    result = lan_lab.exec(
        lan_lab.b,
        [*p2pcp_command(), "receive", "--lan", "--json", "--out", str(out), code],
        env=env,
        timeout=RECEIVE_TIMEOUT_S,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{sender.describe()}"
    assert received(out) == {f"source/{name}": data for name, data in FILES.items()}
