"""Issue 4, "Faults under real conditions": the real CLI on a damaged network.

Each test builds a NAT lab (natlab.py: two hosts behind easy NATs, a relay on
the lab internet), damages the network in one way, and proves the promise of
issue 4: the receive completes, every file on disk is byte-for-byte the
source, the exit codes are 0, and the receiver reports it (the ``done`` JSON
event with the byte counts and each file's standard BLAKE3, or the ``Done:``
line for people). The faults, emulated with what the test kernels have
(tbf and nftables; no ``tc netem``):

- 5% random loss each way (nftables ``numgen random`` on a router's netdev
  ingress hooks);
- 100 ms round trip with ±20 ms jitter per frame, so frames reorder, and
  the same jitter kept in order (the lab's delay line, delayline.c, on a
  router's WAN link);
- a 30-second blackout of the receiver's router mid-transfer (a netdev drop
  rule, then removed): the receive rides it out with ``--retry-for``;
- the relay killed and restarted mid-transfer while the transfer runs over
  it (``--relay-only``);
- 20 receivers fetching one folder from one sender at once.

The emulations are checked as well as p2pcp: the delay line reports that it
really reordered frames, so a passing test cannot mean a silent no-op.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3
import pytest

from tests.support.netlab.natlab import ADDRESS_SERVER_PORTS, RELAY_IP, RELAY_URL, NatKind, NatLab
from tests.support.netlab.plumbing import LabProcess
from tests.support.processes import p2pcp_command

from .conftest import MakeLab, Node
from .test_natlab_scenarios import digests, make_payload

pytestmark = pytest.mark.natlab

MIB = 1024 * 1024
TICKET_TIMEOUT_S = 30.0
SENDER_EXIT_TIMEOUT_S = 20.0
# The rate cap for tests that act mid-transfer (80 Mbit/s = 10 MB/s) and the
# datagram size that keeps tbf from dropping fragments piecemeal under it.
CAPPED_MBIT = 80
CAPPED_ENV = {"P2PCP_MAX_DATAGRAM_SIZE": "1200"}

# 5% loss: 16 MiB, a few seconds at the goodput such loss leaves, well inside the bound.
LOSS_PERCENT = 5.0
LOSS_PAYLOAD_BYTES = 16 * MIB
LOSS_TIMEOUT_S = 90.0

# 50 ms each way ± 20 ms per frame on router A's WAN: a 100 ms round trip on
# the direct path, and frames reorder freely within the 40 ms window.
DELAY_MS = 50.0
JITTER_MS = 20.0
# Reordering keeps the congestion window at its floor (aioquic declares a
# packet overtaken by 3 others lost), so that case moves a small folder to
# stay bounded; jitter kept in order costs little, so that case moves more.
REORDER_PAYLOAD_BYTES = 1 * MIB
IN_ORDER_PAYLOAD_BYTES = 16 * MIB
DELAY_TIMEOUT_S = 120.0

# The blackout: 30 s, from a quarter of the way through a capped transfer.
BLACKOUT_S = 30.0
RETRY_FOR_S = 60
BLACKOUT_PAYLOAD_BYTES = 24 * MIB
# After the blackout ends: the retry's backoff, a new handshake, the rest.
AFTER_BLACKOUT_TIMEOUT_S = RETRY_FOR_S + 30.0

# The relay restart: down for this long, mid-transfer over the relay.
RELAY_DOWN_S = 2.0
RELAY_PAYLOAD_BYTES = 32 * MIB
RELAY_TIMEOUT_S = 90.0

RECEIVER_COUNT = 20
CROWD_PAYLOAD_BYTES = 8 * MIB
# 20 CLI processes start at once on two cores and share one sender's core.
CROWD_TIMEOUT_S = 180.0


def blake3_hex(path: Path) -> str:
    hasher = blake3.blake3()
    with path.open("rb") as file:
        while chunk := file.read(MIB):
            hasher.update(chunk)
    return hasher.hexdigest()


def progress_at_least(fraction: float, total: int) -> Callable[[dict[str, Any]], bool]:
    return lambda event: event.get("bytes_done", 0) >= fraction * total


def timeline(process: LabProcess, started: float) -> str:
    """Every event but progress, at seconds since started, and the longest gap
    between progress reports: what happened when, for failure messages."""
    lines = []
    last_progress: float | None = None
    longest_gap = (0.0, 0.0)  # (gap, when it ended)
    for arrival, event in process.timed_events():
        at = arrival - started
        if event.get("event") == "progress":
            if last_progress is not None and at - last_progress > longest_gap[0]:
                longest_gap = (at - last_progress, at)
            last_progress = at
            continue
        shown = {key: value for key, value in event.items() if key not in ("files", "ticket")}
        lines.append(f"  {at:7.2f} s {json.dumps(shown)}")
    gap, ended = longest_gap
    lines.append(f"  longest gap between progress reports: {gap:.1f} s (ended {ended:.1f} s)")
    return "\n".join(lines)


@dataclass
class Receive:
    """One receiver process and where it writes."""

    process: LabProcess
    out: Path
    started: float
    # The rest of the scene (sender, relay) for failure messages.
    context: Callable[[], str] | None = None

    def timeline(self) -> str:
        return timeline(self.process, self.started)

    def explain(self) -> str:
        text = f"{self.process.describe()}\n--- timeline ---\n{self.timeline()}"
        return text if self.context is None else f"{text}\n\n{self.context()}"

    def finish(self, source: Path, timeout: float) -> tuple[dict[str, Any], float]:
        """Wait for exit 0 and identical files; return (``done`` event, seconds)."""
        code = self.process.wait(timeout)
        seconds = time.monotonic() - self.started
        assert code == 0, f"receiver exited {code}\n{self.explain()}"
        assert digests(self.out / source.name) == digests(source), f"files differ\n{self.explain()}"
        done = [e for e in self.process.events if e.get("event") == "done"]
        assert len(done) == 1, f"expected one done event\n{self.explain()}"
        problem = check_done_event(done[0], source)
        assert problem is None, f"{problem}\n{self.explain()}"
        return done[0], seconds


def check_done_event(done: dict[str, Any], source: Path) -> str | None:
    """What is wrong with done, or None: it must account for every byte once
    (received + present = total) and name each file's standard BLAKE3."""
    files = sorted(path for path in source.rglob("*") if path.is_file())
    total = sum(path.stat().st_size for path in files)
    received, present = done.get("bytes_received"), done.get("bytes_present")
    if not isinstance(received, int) or not isinstance(present, int):
        return f"done needs byte counts: {done}"
    if received + present != total:
        return f"bytes_received {received} + bytes_present {present} != total {total}"
    expected = {
        f"{source.name}/{path.relative_to(source).as_posix()}": (
            path.stat().st_size,
            blake3_hex(path),
        )
        for path in files
    }
    reported = {f["path"]: (f["size"], f["blake3"]) for f in done.get("files", [])}
    if reported != expected:
        return f"done.files {reported} != {expected}"
    return None


@dataclass
class Scene:
    """A lab with a relay, a payload folder and a sender serving it."""

    lab: NatLab
    tmp_path: Path
    make_node: Callable[..., Node]
    source: Path
    sender: LabProcess
    ticket: str
    relay_env: dict[str, str]
    started: float
    # Extra environment for every p2pcp node of the scene (sender, receivers).
    extra_env: dict[str, str]
    _outs: int = 0

    def receive(self, ns: str, *args: str, is_json: bool = True) -> Receive:
        """Start ``p2pcp receive`` of the ticket in ns, into a fresh folder."""
        self._outs += 1
        out = self.tmp_path / f"out{self._outs}"
        out.mkdir()
        flags = ["--json"] if is_json else []
        process = self.lab.start(
            ns,
            [*p2pcp_command(), "receive", *flags, "-v", "--out", str(out), *args, self.ticket],
            name=f"receiver{self._outs}",
            env=self.make_node(**self.extra_env).env,
        )
        return Receive(process, out, time.monotonic(), self.describe)

    def describe(self) -> str:
        parts = [
            f"{self.sender.describe()}\n--- sender timeline ---\n"
            f"{timeline(self.sender, self.started)}"
        ]
        if self.lab.relay is not None:
            parts.append(self.lab.relay.describe())
        return "\n\n".join(parts)

    def finish_sender(self) -> None:
        """A --once sender exits 0 after its receiver has everything."""
        code = self.sender.wait(SENDER_EXIT_TIMEOUT_S)
        assert code == 0, f"sender exited {code}\n{self.sender.describe()}"


def start_scene(
    lab: NatLab,
    tmp_path: Path,
    make_node: Callable[..., Node],
    *,
    total_bytes: int,
    sender_ns: str | None = None,
    send_args: tuple[str, ...] = ("--once",),
    with_relay: bool = True,
    extra_env: dict[str, str] | None = None,
) -> Scene:
    """Start the relay (if asked), make the payload, start the sender, read its ticket."""
    relay_env = make_node().env
    if with_relay:
        lab.start_relay(p2pcp_command(), relay_env)
    source = make_payload(tmp_path / "src", total_bytes)
    relay_args = ["--relay", RELAY_URL] if with_relay else ["--no-relay"]
    extra = extra_env or {}
    started = time.monotonic()
    sender = lab.start(
        sender_ns or lab.a.host_ns,
        [*p2pcp_command(), "send", *relay_args, "--json", "-v", *send_args, str(source)],
        name="sender",
        env=make_node(**extra).env,
    )
    ticket = sender.wait_event("ticket", TICKET_TIMEOUT_S)["ticket"]
    return Scene(lab, tmp_path, make_node, source, sender, ticket, relay_env, started, extra)


SceneFactory = Callable[..., Scene]


@pytest.fixture
def scene(tmp_path: Path, make_node: Callable[..., Node]) -> SceneFactory:
    def make(lab: NatLab, **kwargs: Any) -> Scene:
        return start_scene(lab, tmp_path, make_node, **kwargs)

    return make


# Run in a host: send COUNT datagrams to the lab's address server, one every
# GAP seconds (GAP 0: one at a time, each waiting for its answer), and print
# how many were answered and the round trips of those sent one at a time.
PING_SCRIPT = """
import json, socket, sys, time
host, port, count, gap = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
rtts, answered = [], 0
if gap == 0:
    sock.settimeout(0.5)
    for _ in range(count):
        sent = time.monotonic()
        sock.sendto(b"?", (host, port))
        try:
            sock.recvfrom(256)
        except TimeoutError:
            continue
        answered += 1
        rtts.append(time.monotonic() - sent)
else:
    sock.setblocking(False)
    def drain():
        global answered
        while True:
            try:
                sock.recvfrom(256)
            except BlockingIOError:
                return
            answered += 1
    for _ in range(count):
        sock.sendto(b"?", (host, port))
        drain()
        time.sleep(gap)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        drain()
        time.sleep(0.005)
print(json.dumps({"answered": answered, "rtts": rtts}))
"""


def ping(lab: NatLab, ns: str, count: int, gap_s: float = 0.0) -> dict[str, Any]:
    result = lab.exec(
        ns,
        [sys.executable, "-c", PING_SCRIPT, RELAY_IP, str(ADDRESS_SERVER_PORTS[0]),
         str(count), str(gap_s)],
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_the_emulated_faults_are_real(make_lab: MakeLab) -> None:
    """The lab's fault helpers do what they claim, measured with plain UDP from
    host A to the address server on the relay host (no p2pcp): the delay line
    adds 100 ms ± 40 ms to the round trip, 5% loss each way loses ~10% of
    round trips, a blackout answers nothing and ends cleanly."""
    lab = make_lab(NatKind.EASY, NatKind.EASY)
    lab.start_address_server()
    host = lab.a.host_ns
    base = ping(lab, host, 20)
    assert base["answered"] == 20 and max(base["rtts"]) < 0.02, base

    lab.attach_delay_line(lab.a, delay_ms=DELAY_MS, jitter_ms=JITTER_MS, seed=7)
    delayed = ping(lab, host, 20)["rtts"]
    lab.detach_delay_line(lab.a)
    assert len(delayed) == 20, delayed
    low, high = 2 * (DELAY_MS - JITTER_MS) / 1000, 2 * (DELAY_MS + JITTER_MS) / 1000
    assert low <= min(delayed) and max(delayed) <= high + 0.02, delayed
    assert max(delayed) - min(delayed) > JITTER_MS / 1000, f"no jitter: {delayed}"

    lab.add_random_loss(lab.a, LOSS_PERCENT)
    lossy = ping(lab, host, 1000, gap_s=0.002)["answered"]
    lab.remove_random_loss(lab.a)
    # Expected 1000 x 0.95^2 = 902 answered; +-4 standard deviations.
    assert 865 <= lossy <= 940, f"{lossy} of 1000 answered through 5% loss each way"

    lab.start_blackout(lab.a)
    dark = ping(lab, host, 50, gap_s=0.01)["answered"]
    lab.end_blackout(lab.a)
    assert dark == 0, f"{dark} answers through a blackout"
    after = ping(lab, host, 20)
    assert after["answered"] == 20, after
    print(
        f"round trip {max(base['rtts']) * 1000:.1f} ms, through the line "
        f"{min(delayed) * 1000:.0f}-{max(delayed) * 1000:.0f} ms; "
        f"{lossy}/1000 answered through 5% loss each way"
    )


def test_five_percent_loss_each_way_completes(make_lab: MakeLab, scene: SceneFactory) -> None:
    """5% of the frames entering router A from either side are dropped, on every
    path (relay, STUN, punching, the direct QUIC flow). The receive still
    completes with identical files, exit 0, and the ``Done:`` line for people."""
    lab = make_lab(NatKind.EASY, NatKind.EASY)
    lab.add_random_loss(lab.a, LOSS_PERCENT)
    run = scene(lab, total_bytes=LOSS_PAYLOAD_BYTES)
    # Human output this time (no --json): the message is the contract.
    receive = run.receive(lab.b.host_ns, is_json=False)
    code = receive.process.wait(LOSS_TIMEOUT_S)
    seconds = time.monotonic() - receive.started
    assert code == 0, f"receiver exited {code}\n{receive.process.describe()}\n{run.describe()}"
    assert digests(receive.out / "payload") == digests(run.source), "files differ"
    done_lines = [line for line in receive.process.stderr().splitlines() if "Done:" in line]
    assert len(done_lines) == 1, receive.process.describe()
    assert f"{receive.out / 'payload'} (5 files, " in done_lines[0], done_lines[0]
    assert "p2pcp: error" not in receive.process.stderr(), receive.process.describe()
    run.finish_sender()
    print(f"5% loss: {LOSS_PAYLOAD_BYTES / MIB:.0f} MiB in {seconds:.1f} s")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("is_reordering", "total_bytes"),
    [(True, REORDER_PAYLOAD_BYTES), (False, IN_ORDER_PAYLOAD_BYTES)],
    ids=["reordering", "in-order"],
)
def test_delay_and_jitter_completes(
    make_lab: MakeLab, scene: SceneFactory, is_reordering: bool, total_bytes: int
) -> None:
    """A delay line on router A's WAN holds every frame 50 ms ± 20 ms each way:
    a 100 ms round trip on the direct path. "reordering": each frame's delay
    is drawn on its own, so frames overtake each other; "in-order": the same
    jitter as a queue makes it, order kept. The receive completes with
    identical files either way, and the line's own counters prove it
    reordered frames both ways (or none, in order)."""
    lab = make_lab(NatKind.EASY, NatKind.EASY)
    lab.attach_delay_line(
        lab.a, delay_ms=DELAY_MS, jitter_ms=JITTER_MS, is_ordered=not is_reordering, seed=4
    )
    run = scene(lab, total_bytes=total_bytes)
    receive = run.receive(lab.b.host_ns)
    done, seconds = receive.finish(run.source, DELAY_TIMEOUT_S)
    assert done["bytes_received"] == total_bytes, done
    run.finish_sender()
    stats = lab.detach_delay_line(lab.a)
    for direction, counts in stats.items():
        assert counts["frames_out"] > 0, (direction, stats)
        if is_reordering:
            assert counts["reordered"] > 0, f"the line never reordered {direction}: {stats}"
        else:
            assert counts["reordered"] == 0, f"the line reordered {direction}: {stats}"
    print(
        f"delay {DELAY_MS:.0f}±{JITTER_MS:.0f} ms each way, "
        f"{'reordering' if is_reordering else 'in order'}: {total_bytes / MIB:.1f} MiB "
        f"in {seconds:.1f} s ({total_bytes / seconds / 1e6:.2f} MB/s); line {json.dumps(stats)}"
    )


@pytest.mark.slow
def test_thirty_second_blackout_mid_transfer_completes(
    make_lab: MakeLab, scene: SceneFactory
) -> None:
    """A quarter of the way through, the receiver's router drops every frame for
    30 s (relay, STUN and the direct path all dead, as long as QUIC's 30 s
    idle timeout), then comes back. ``receive --retry-for 60`` reconnects in
    the same run and fetches only what it lacks: exit 0, identical files, and
    ``done`` counting every byte once (received + present = total). The
    --once sender serves the reconnected receiver and exits 0."""
    lab = make_lab(NatKind.EASY, NatKind.EASY)
    lab.limit_rate(lab.b, CAPPED_MBIT)
    run = scene(lab, total_bytes=BLACKOUT_PAYLOAD_BYTES, extra_env=CAPPED_ENV)
    receive = run.receive(lab.b.host_ns, "--retry-for", str(RETRY_FOR_S))
    receive.process.wait_event(
        "progress", where=progress_at_least(0.25, BLACKOUT_PAYLOAD_BYTES), timeout=60
    )
    assert receive.process.process.poll() is None, receive.process.describe()
    lab.start_blackout(lab.b)
    try:
        time.sleep(BLACKOUT_S)
    finally:
        lab.end_blackout(lab.b)
    done, seconds = receive.finish(run.source, AFTER_BLACKOUT_TIMEOUT_S)
    assert done["bytes_received"] <= BLACKOUT_PAYLOAD_BYTES, done
    run.finish_sender()
    print(f"30 s blackout: done after {seconds:.1f} s; {json.dumps(done['paths'])}")
    print(receive.timeline())


@pytest.mark.slow
def test_relay_restarted_mid_transfer_over_the_relay_completes(
    make_lab: MakeLab, scene: SceneFactory
) -> None:
    """The receiver pins the relay path (``--relay-only``); a fifth of the way
    through, the relay is killed (SIGKILL: no goodbye) and a new one started on
    the same address after 2 s. Both nodes log in again, the transfer goes
    on (the QUIC connection outlives a 2 s gap) and completes over
    the relay alone."""
    lab = make_lab(NatKind.EASY, NatKind.EASY)
    lab.limit_rate(lab.b, CAPPED_MBIT)
    run = scene(lab, total_bytes=RELAY_PAYLOAD_BYTES, extra_env=CAPPED_ENV)
    receive = run.receive(lab.b.host_ns, "--relay-only")
    receive.process.wait_event(
        "progress", where=progress_at_least(0.2, RELAY_PAYLOAD_BYTES), timeout=60
    )
    assert receive.process.process.poll() is None, receive.process.describe()
    lab.restart_relay(p2pcp_command(), run.relay_env, down_s=RELAY_DOWN_S)
    done, seconds = receive.finish(run.source, RELAY_TIMEOUT_S)
    kinds = [
        e.get("path") or e.get("kind")
        for e in receive.process.events
        if e.get("event") in ("connected", "path")
    ]
    assert set(kinds) == {"relay"}, f"--relay-only left the relay: {kinds}"
    assert done["main_path"] == "relay", done
    assert done["paths"]["relay"] >= RELAY_PAYLOAD_BYTES, done
    assert done["bytes_received"] == RELAY_PAYLOAD_BYTES, done
    run.finish_sender()
    print(f"relay restarted: {RELAY_PAYLOAD_BYTES / MIB:.0f} MiB in {seconds:.1f} s")
    print(receive.timeline())


@pytest.mark.slow
def test_twenty_receivers_at_once_all_complete(make_lab: MakeLab, scene: SceneFactory) -> None:
    """One sender on the lab internet (a public address, no relay) serves one
    folder; 20 receivers start at once, 10 behind each NAT. Every one exits 0
    with identical files and a full ``done``; the sender reports 20 finished
    receivers, still runs, serves a 21st receiver afterwards, and stops with
    exit 0 on Ctrl-C."""
    lab = make_lab(NatKind.EASY, NatKind.EASY)
    run = scene(
        lab,
        total_bytes=CROWD_PAYLOAD_BYTES,
        sender_ns=lab.relay_ns,
        send_args=(),
        with_relay=False,
    )
    hosts = [lab.a.host_ns, lab.b.host_ns]
    crowd = [run.receive(hosts[index % 2]) for index in range(RECEIVER_COUNT)]
    deadline = time.monotonic() + CROWD_TIMEOUT_S
    failures = []
    slowest = 0.0
    for index, receive in enumerate(crowd):
        try:
            _, seconds = receive.finish(run.source, max(1.0, deadline - time.monotonic()))
            slowest = max(slowest, seconds)
        except AssertionError as error:
            failures.append(f"receiver {index}: {error}")
    assert not failures, "\n\n".join([*failures, run.sender.describe()])
    assert run.sender.process.poll() is None, f"the sender stopped\n{run.sender.describe()}"
    finished = [e for e in run.sender.events if e.get("event") == "done"]
    assert len(finished) == RECEIVER_COUNT, run.sender.describe()
    assert all(e["bytes_sent"] >= CROWD_PAYLOAD_BYTES for e in finished), finished
    for receive in crowd:
        connected = receive.process.wait_event("connected", timeout=1)
        assert connected["path"] == "direct", connected
        assert connected["address"].startswith(f"{RELAY_IP}:"), connected
    late = run.receive(lab.a.host_ns)
    late.finish(run.source, 60)
    run.sender.stop(signal.SIGINT)
    # Stopping a sender that is not in the middle of a --once transfer is
    # not an error (issue 16): exit 0.
    assert run.sender.process.returncode == 0, run.sender.describe()
    print(
        f"{RECEIVER_COUNT} receivers x {CROWD_PAYLOAD_BYTES / MIB:.0f} MiB: "
        f"slowest done after {slowest:.1f} s"
    )
