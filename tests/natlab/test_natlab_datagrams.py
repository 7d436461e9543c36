"""Issue 5, "Path-adaptive datagram size", on the NAT lab's 1500-byte-MTU links.

The sender's direct path crosses two NAT routers with 1500-byte MTUs: whole
datagrams stop at 1472 bytes (IPv4), and 16,000-byte datagrams arrive only as IP
fragments (the routers' conntrack reassembles and re-fragments them). On a
clean path the sender fragments; with random loss on router A, fragmented
datagrams are lost ~11x as often as whole ones and the sender goes back to
whole datagrams; a path that is lossy from the start never fragments at all (the
guard's probation). Either way every byte arrives. The sender's ``-v`` log is
what tells us which sizes it chose (connection.py logs each decision).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.netlab.natlab import NatKind

from .conftest import MakeLab, Node
from .test_natlab_faults import MIB, SceneFactory, start_scene

pytestmark = pytest.mark.natlab

PAYLOAD_BYTES = 64 * MIB
TIMEOUT_S = 90.0
LOSS_PERCENT = 2.0

FRAGMENTING = re.compile(r"carries (\d+)-byte datagrams in fragments; whole up to (\d+)")
# (the relay path, where a transfer may start, uses 16,000 without fragments)
USING_FRAGMENTS = re.compile(r"direct [^)]*\): datagram size now 16000")
DIRECT_SIZE = re.compile(r"direct [^)]*\): datagram size now (\d+)")
POLL_S = 0.05
FELL_BACK = re.compile(
    r"fragmented datagrams lost ([\d.]+)% against ([\d.]+)% whole: back to (\d+)"
)


@pytest.fixture
def scene(tmp_path: Path, make_node: Callable[..., Node]) -> SceneFactory:
    return lambda lab, **kwargs: start_scene(lab, tmp_path, make_node, **kwargs)


def sender_log(stderr: Callable[[], str]) -> str:
    # rich wraps long log lines; the decisions are matched on joined text
    return " ".join(line.strip() for line in stderr().splitlines())


def test_clean_path_fragments_and_keeps_fragmenting(make_lab: MakeLab, scene: SceneFactory) -> None:
    lab = make_lab(NatKind.EASY, NatKind.EASY)
    run = scene(lab, total_bytes=PAYLOAD_BYTES)
    receive = run.receive(lab.b.host_ns)
    done, _ = receive.finish(run.source, TIMEOUT_S)
    run.finish_sender()
    log = sender_log(run.sender.stderr)
    found = FRAGMENTING.search(log)
    assert found is not None, run.describe()
    assert (int(found[1]), int(found[2])) == (16000, 1472), found[0]
    assert FELL_BACK.search(log) is None, run.describe()
    assert done["paths"]["direct"] > PAYLOAD_BYTES // 2, done


def test_a_lossy_path_ends_on_whole_datagrams(make_lab: MakeLab, scene: SceneFactory) -> None:
    lab = make_lab(NatKind.EASY, NatKind.EASY)
    lab.add_random_loss(lab.a, LOSS_PERCENT)
    run = scene(lab, total_bytes=PAYLOAD_BYTES)
    receive = run.receive(lab.b.host_ns)
    receive.finish(run.source, TIMEOUT_S)
    run.finish_sender()
    log = sender_log(run.sender.stderr)
    # the path carries fragments, but whole datagrams lose too much to use
    # them. Usually the probation never passes; but the lab drops whole UDP
    # GSO batches (up to 64 datagrams cross a veth as one packet, and the
    # loss rule drops packets), so a window can see no loss by chance: then
    # fragments are tried and the guard sends it back at once.
    assert FRAGMENTING.search(log) is not None, run.describe()
    sizes = [int(size) for size in DIRECT_SIZE.findall(log)]
    assert sizes and sizes[-1] == 1472, (sizes, run.describe())
    if USING_FRAGMENTS.search(log) is not None:
        assert FELL_BACK.search(log) is not None, run.describe()


def test_loss_that_starts_while_fragmenting_sends_it_back_to_whole_datagrams(
    make_lab: MakeLab, scene: SceneFactory
) -> None:
    lab = make_lab(NatKind.EASY, NatKind.EASY)
    run = scene(lab, total_bytes=2 * PAYLOAD_BYTES)
    receive = run.receive(lab.b.host_ns)
    deadline = time.monotonic() + TIMEOUT_S
    while USING_FRAGMENTS.search(sender_log(run.sender.stderr)) is None:
        assert receive.process.process.poll() is None, run.describe()
        assert time.monotonic() < deadline, run.describe()
        time.sleep(POLL_S)
    lab.add_random_loss(lab.a, LOSS_PERCENT)
    receive.finish(run.source, TIMEOUT_S)
    run.finish_sender()
    log = sender_log(run.sender.stderr)
    fell_back = FELL_BACK.search(log)
    assert fell_back is not None, run.describe()
    fragmented_loss, whole_loss, size = float(fell_back[1]), float(fell_back[2]), int(fell_back[3])
    assert size == 1472
    assert fragmented_loss > whole_loss, fell_back[0]
