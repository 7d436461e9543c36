"""Scripted backups: a p2pcp share pulled with receive --update --delete, against rsync over ssh.

One run on loopback (issue 20, "Speed"):

- Data: a folder of ``--files`` files (default 2,000) holding ``--size-gib``
  GiB (default 2): one file of half the size, the other files sharing the
  other half (seeded sizes, from a few bytes to a few MiB, so one-leaf and
  many-leaf files both occur), random content (AES-CTR keystream), in
  folders of 100.
- p2pcp: ``p2pcp share SRC --port P --no-relay --json --ticket-file F`` runs
  for the whole bench with its own P2PCP_HOME (its hash cache lives there);
  each pull is ``p2pcp receive TICKET --out DST --update --delete --json
  --no-relay`` with another P2PCP_HOME. P2PCP_LAN=off for both.
- rsync: ``rsync -a --delete --stats -e 'ssh -c aes128-gcm@openssh.com ...'
  USER@127.0.0.1:SRC/ DST2/tree/`` against the private sshd of
  bench/scale.py (its own host key, client key, config and log in the work
  dir; the system's sshd and ~/.ssh are never read or touched).
- Phase 1: the first full copy, each tool. Phase 2: the change (20 files
  rewritten with new random content of the same size, 1 MiB overwritten in
  the middle of the big file, not aligned to a leaf, 10 files added, 10
  deleted), then the update, each tool. p2pcp runs first in each phase;
  ``sync()`` before every timed run; the page cache is warm for both.

Figures, per tool and phase:

- wall: the receiving command's wall time, from launch to exit (for p2pcp
  it includes the share's rescan, which happens on the receiver's request;
  rsync's sender scans then too). A share hashes files as their changes
  settle, as it does between two nightly pulls: the update starts
  ``SETTLE_S`` after the change (for both tools), and the share's rescan
  then finds the changed files hashed (its ``prehashed`` event says how
  long that took, off the pull's clock).
- wire: bytes of IP packets to and from the tool's port (UDP P for p2pcp,
  TCP of the sshd for rsync), both directions, counted by an nftables table
  of this bench (``inet p2pcp_backup_bench``, output hook: every loopback
  packet passes it once), so other traffic on ``lo`` is not counted. The
  tool's own figure beside it: p2pcp's ``bytes_received`` (JSON ``done``),
  rsync's total bytes sent + received (``--stats``).
- CPU (user + sys, s) of each side: the receiver's from ``os.wait4``; the
  share's from its /proc/PID/stat before and after (it is long-lived); the
  rsync server's from the sshd listener's reaped children (it reaps each
  connection's sshd, which reaps the rsync server), as bench/scale.py does.
- peak RSS (MB, 10**6) of each side: the receiver's largest process
  (sampled VmHWM); the share's VmHWM, reset through /proc/PID/clear_refs
  before each phase; the rsync server's largest sshd/rsync process (sampled).
- The changed leaves' bytes, computed exactly: every 256 KiB leaf whose hash
  differs between the old and the new version of a changed file (the last
  leaf counts its real length), plus every added file's bytes.

Goals (PASS/MISS): the p2pcp update's wire bytes <= 1.1 x the changed
leaves' bytes; its wall time <= rsync's; the share's rescan hashed only the
changed and added files (``files_hashed`` and ``bytes_hashed`` summed over
its ``prehashed`` events since the change and the ``snapshot`` event of the
update's rescan).

Both destinations are compared with the source after each phase (the same
files and folders, the same sizes and BLAKE3 digests); a difference, or a
tool that fails, ends the bench with exit 1 and says so. Figures alone never
fail it. Everything (processes, the nftables table, the work dir) is removed
at the end, on Ctrl-C and SIGTERM too (``--keep`` keeps the work dir).

    sudo python bench/backup.py [--size-gib 2] [--files 2000] [--workdir PATH]
        [--keep] [--json] [--timeout S]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

# scale.py owns the private sshd, the process accounting and the data generator.
from scale import (  # noqa: E402
    SCP_CIPHER,
    Bench,
    Keystream,
    PeakSampler,
    Proc,
    RunError,
    _children,
    _hasher,
    _log,
    _proc_times,
    p2pcp_state,
)

from p2pcp.blobs.tree import LEAF_SIZE, hash_leaf  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.processes import p2pcp_command  # noqa: E402

MB = 1e6
TOP = "tree"  # the shared folder's name: DST/tree and DST2/tree
BIG = "big.bin"
PER_FOLDER = 100
NFT_TABLE = "p2pcp_backup_bench"
BYTES_GOAL = 1.1
# The share's hash cache leaves out a file changed in the last moments (its
# entry could be racy); the bench lets the generated files age this long
# before the share first hashes them, as a backup's files have.
SETTLE_S = 3.5

os.environ["P2PCP_LAN"] = "off"  # no multicast DNS on the host's network


class BenchError(Exception):
    """A tool failed or a destination differs from the source: exit 1."""


# -- data -------------------------------------------------------------------------


def small_sizes(count: int, total: int, rng: random.Random) -> list[int]:
    """``count`` sizes (each >= 1) summing to ``total``: log-normal, a few MiB at most."""
    weights = [rng.lognormvariate(0.0, 1.0) for _ in range(count)]
    scale = (total - count) / sum(weights)
    sizes = [1 + int(w * scale) for w in weights]
    sizes[-1] += total - sum(sizes)
    return sizes


def small_path(index: int) -> str:
    return f"d{index // PER_FOLDER:02d}/f{index:05d}.bin"


def write_random(path: Path, size: int, stream: Keystream) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = stream.take(min(left, 16 << 20))
            f.write(chunk)
            left -= len(chunk)


def generate(top: Path, total: int, files: int, stream: Keystream) -> list[str]:
    """Writes the source folder; returns the small files' relative paths."""
    big = total // 2
    write_random(top / BIG, big, stream)
    names = []
    for i, size in enumerate(small_sizes(files - 1, total - big, random.Random(20))):
        names.append(small_path(i))
        write_random(top / names[-1], size, stream)
    return names


def leaf_hashes(path: Path, start: int = 0, end: int | None = None) -> dict[int, bytes]:
    """Leaf index -> hash for the leaves of ``path`` that overlap [start, end)."""
    size = path.stat().st_size
    end = size if end is None else min(end, size)
    out: dict[int, bytes] = {}
    with open(path, "rb") as f:
        index = start // LEAF_SIZE
        f.seek(index * LEAF_SIZE)
        while index * LEAF_SIZE < end or (size == 0 and index == 0):
            out[index] = hash_leaf(f.read(LEAF_SIZE))
            index += 1
            if size == 0:
                break
    return out


def leaf_length(index: int, size: int) -> int:
    return max(0, min(LEAF_SIZE, size - index * LEAF_SIZE))


@dataclass
class Change:
    rewritten: list[str] = field(default_factory=list)
    rewritten_bytes: int = 0
    big_offset: int = 0
    big_leaves: int = 0  # leaves of the big file that differ
    added: list[str] = field(default_factory=list)
    added_bytes: int = 0
    deleted: list[str] = field(default_factory=list)
    changed_leaves: int = 0
    changed_leaf_bytes: int = 0  # the changed leaves' bytes + the added files' bytes
    changed_files: int = 0  # rewritten + big + added: what the share must re-hash
    changed_files_bytes: int = 0


def apply_change(top: Path, names: list[str], stream: Keystream) -> Change:
    """The issue's change, with the changed leaves counted from the hashes."""
    rng = random.Random(7)
    picked = rng.sample(names, 30)
    change = Change(rewritten=sorted(picked[:20]), deleted=sorted(picked[20:]))
    for rel in change.rewritten:
        path = top / rel
        size = path.stat().st_size
        before = leaf_hashes(path)
        write_random(path, size, stream)
        after = leaf_hashes(path)
        for index, digest in after.items():
            if before.get(index) != digest:
                change.changed_leaves += 1
                change.changed_leaf_bytes += leaf_length(index, size)
        change.rewritten_bytes += size
    big = top / BIG
    size = big.stat().st_size
    span = 1 << 20
    # The middle, off any leaf boundary (a real edit is not aligned): 5 leaves.
    change.big_offset = size // 2 - span // 2 + 4096 * 3 + 17
    before = leaf_hashes(big, change.big_offset, change.big_offset + span)
    with open(big, "r+b") as f:
        f.seek(change.big_offset)
        f.write(stream.take(span))
    after = leaf_hashes(big, change.big_offset, change.big_offset + span)
    for index, digest in after.items():
        if before[index] != digest:
            change.big_leaves += 1
            change.changed_leaves += 1
            change.changed_leaf_bytes += leaf_length(index, size)
    for rel in change.deleted:
        (top / rel).unlink()
    sizes = [(top / rel).stat().st_size for rel in rng.sample(change.rewritten, 10)]
    for i, added_size in enumerate(sizes):
        rel = f"d{i * 2:02d}/new{i:02d}.bin"
        write_random(top / rel, added_size, stream)
        change.added.append(rel)
        change.added_bytes += added_size
    change.changed_leaf_bytes += change.added_bytes
    change.changed_leaves += sum(max(1, -(-s // LEAF_SIZE)) for s in sizes)
    change.changed_files = len(change.rewritten) + 1 + len(change.added)
    change.changed_files_bytes = change.rewritten_bytes + size + change.added_bytes
    return change


Listing = dict[str, tuple[int, str]]  # relative path -> (size, digest); folders: (-1, "")


def listing(top: Path) -> Listing:
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    out: Listing = {}
    for dirpath, dirs, files in os.walk(top):
        base = Path(dirpath)
        for d in dirs:
            out[(base / d).relative_to(top).as_posix()] = (-1, "")
        for name in files:
            path = base / name
            h = _hasher()
            with open(path, "rb", buffering=0) as f:
                while n := f.readinto(buf):
                    h.update(view[:n])
            out[path.relative_to(top).as_posix()] = (path.stat().st_size, str(h.hexdigest()))
    return out


def compare(source: Listing, top: Path, what: str) -> None:
    """Raises BenchError unless ``top`` holds exactly ``source``."""
    got = listing(top) if top.is_dir() else {}
    missing = sorted(set(source) - set(got))
    extra = sorted(set(got) - set(source))
    differ = sorted(p for p in set(source) & set(got) if source[p] != got[p])
    if missing or extra or differ:
        parts = []
        for label, items in (("missing", missing), ("extra", extra), ("different", differ)):
            if items:
                parts.append(f"{len(items)} {label} (e.g. {', '.join(items[:3])})")
        raise BenchError(f"{what} differs from the source: {'; '.join(parts)}")


# -- bytes on the wire ----------------------------------------------------------


class WireCounter:
    """IP bytes to and from one UDP port (p2pcp) and one TCP port (ssh), both ways."""

    def __init__(self, udp_port: int, tcp_port: int) -> None:
        self.made = False
        self.how = "nftables counters on the tools' ports (IP bytes, both directions)"
        self._delete()
        script = f"""
table inet {NFT_TABLE} {{
    counter p2pcp {{ }}
    counter ssh {{ }}
    chain out {{
        type filter hook output priority 0; policy accept;
        udp sport {udp_port} counter name p2pcp
        udp dport {udp_port} counter name p2pcp
        tcp sport {tcp_port} counter name ssh
        tcp dport {tcp_port} counter name ssh
    }}
}}
"""
        try:
            result = subprocess.run(
                ["nft", "-f", "-"], input=script, capture_output=True, text=True, check=False
            )
            self.made = result.returncode == 0
            why = result.stderr.strip()
        except OSError as e:
            why = str(e)
        if not self.made:
            self.how = f"/proc/net/dev lo (all loopback traffic; nftables failed: {why[:80]})"

    def read(self, name: str) -> int:
        if not self.made:
            return _lo_bytes()
        text = subprocess.run(
            ["nft", "list", "counter", "inet", NFT_TABLE, name],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        found = re.search(r"bytes (\d+)", text)
        if not found:
            raise BenchError(f"cannot read the nftables counter {name}: {text.strip()[:100]}")
        return int(found.group(1))

    def _delete(self) -> None:
        subprocess.run(
            ["nft", "delete", "table", "inet", NFT_TABLE], capture_output=True, check=False
        )

    def close(self) -> None:
        if self.made:
            self._delete()
            self.made = False


def _lo_bytes() -> int:
    for line in Path("/proc/net/dev").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name.strip() == "lo":
            return int(rest.split()[8])  # transmitted bytes (each loopback packet once)
    return 0


def _vm(pid: int, key: str) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


# -- runs -------------------------------------------------------------------------


@dataclass
class Result:
    tool: str
    phase: int
    wall: float = 0.0
    wire: int = 0
    own_bytes: int = 0  # the tool's own figure (p2pcp bytes_received; rsync sent + received)
    recv_cpu: float = 0.0
    send_cpu: float = 0.0
    recv_rss: int = 0
    send_rss: int = 0
    sync: float = 0.0  # sync() right after: the writeback the tool left to the page cache
    detail: dict[str, Any] = field(default_factory=dict)


def timed_sync() -> float:
    started = time.perf_counter()
    os.sync()
    return time.perf_counter() - started


def json_lines(path: Path, start: int = 0) -> list[dict[str, Any]]:
    out = []
    with open(path, "rb") as f:
        f.seek(start)
        for line in f.read().decode(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                item = json.loads(line)
                if isinstance(item, dict):
                    out.append(item)
    return out


class Backup:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.ssh = Bench(argparse.Namespace(), work)  # scale.py's private sshd
        self.share: Proc | None = None
        self.ticket = ""
        self.share_ready = 0.0
        self.change_log_start = 0  # the share's log size before phase 2's change
        self.wire: WireCounter | None = None
        self.port = free_port()
        self.receivers: list[Proc] = []
        self.src = work / "src" / TOP
        self.dst = work / "p2pcp"  # receives into p2pcp/tree
        self.dst2 = work / "rsync"  # rsync -a --delete SRC/ rsync/tree/
        self.missing: list[str] = []  # p2pcp features not there yet
        self.receive_flags: list[str] = []

    # -- set-up ------------------------------------------------------------------

    def probe_p2pcp(self) -> None:
        cmd = p2pcp_command()
        helps = {}
        for sub in ("share", "receive"):
            result = subprocess.run(
                [*cmd, sub, "--help"], capture_output=True, text=True, check=False
            )
            helps[sub] = result.stdout if result.returncode == 0 else ""
        if not helps["share"]:
            self.missing.append("p2pcp share (send --once per phase instead)")
        for flag in ("--update", "--delete"):
            if flag in helps["receive"]:
                self.receive_flags.append(flag)
            else:
                self.missing.append(f"receive {flag}")
        if "--update" not in self.receive_flags:
            self.receive_flags.append("--force")  # today's way to replace a changed file

    def start_share(self, deadline: float) -> None:
        home = self.work / "share-home"
        argv = [
            *p2pcp_command(),
            "share",
            str(self.src),
            "--port",
            str(self.port),
            "--no-relay",
            "--json",
            "--ticket-file",
            str(self.work / "share.ticket"),
        ]
        self.share = Proc(
            argv,
            self.work / "share.jsonl",
            err=self.work / "share.err",
            env={**os.environ, "P2PCP_HOME": str(home)},
        )
        found = wait_event(self.share, "ticket", deadline, "p2pcp share")
        self.share_ready = time.perf_counter() - self.share.started
        self.ticket = str(found["ticket"])

    # -- p2pcp ---------------------------------------------------------------------

    def run_p2pcp(self, phase: int, deadline: float) -> Result:
        assert self.wire is not None
        cmd = p2pcp_command()
        run_dir = self.work / f"p2pcp-{phase}"
        run_dir.mkdir()
        sender: Proc | None = self.share
        send_log_start = 0
        if sender is None:  # no share yet: a one-shot send of the current folder
            port_args = ["--port", str(self.port)]
            sender = Proc(
                [*cmd, "send", "--json", "--once", "--no-relay", *port_args, str(self.src)],
                run_dir / "send.jsonl",
                err=run_dir / "send.err",
                env={**os.environ, "P2PCP_HOME": str(self.work / "share-home")},
            )
            ticket = str(wait_event(sender, "ticket", deadline, "p2pcp send")["ticket"])
        else:
            ticket = self.ticket
            # From before the change: the share hashes it as it settles.
            send_log_start = self.change_log_start or sender.log.stat().st_size
        with contextlib.suppress(OSError):
            Path(f"/proc/{sender.pid}/clear_refs").write_text("5")  # reset its VmHWM
        os.sync()
        send_cpu0 = _proc_times(sender.pid)
        wire0 = self.wire.read("p2pcp")
        receiver = Proc(
            [
                *cmd,
                "receive",
                ticket,
                "--out",
                str(self.dst),
                *self.receive_flags,
                "--json",
                "--no-relay",
            ],
            run_dir / "receive.jsonl",
            err=run_dir / "receive.err",
            env={**os.environ, "P2PCP_HOME": str(self.work / "recv-home")},
        )
        self.receivers.append(receiver)
        if not receiver.wait(deadline - time.monotonic()):
            receiver.stop()
            raise BenchError(f"phase {phase}: p2pcp receive did not finish in time")
        if receiver.returncode != 0:
            raise BenchError(
                f"phase {phase}: p2pcp receive exited with {receiver.returncode}: {receiver.tail()}"
            )
        # The sender's side of the transfer ends with its own 'done' for this receiver.
        with contextlib.suppress(BenchError):
            wait_event(sender, "done", time.monotonic() + 10, "p2pcp sender", send_log_start)
        send_cpu = _proc_times(sender.pid) - send_cpu0
        send_rss = _vm(sender.pid, "VmHWM")
        wire = self.wire.read("p2pcp") - wire0
        sync = timed_sync()
        if sender is not self.share:
            sender.stop()
        events = json_lines(receiver.log)
        done: dict[str, Any] = next((e for e in reversed(events) if e.get("event") == "done"), {})
        share_events = [
            e
            for e in json_lines(sender.log, send_log_start)
            if e.get("event") in ("snapshot", "import_done", "prehashed") or "files_hashed" in e
        ]
        kinds: dict[str, int] = {}
        for e in events:
            kinds[str(e.get("event"))] = kinds.get(str(e.get("event")), 0) + 1
        return Result(
            tool="p2pcp",
            phase=phase,
            wall=receiver.wall,
            sync=sync,
            wire=wire,
            own_bytes=int(done.get("bytes_received", 0)),
            recv_cpu=receiver.cpu,
            send_cpu=send_cpu,
            recv_rss=receiver.maxrss,
            send_rss=send_rss,
            detail={
                "bytes_present": done.get("bytes_present"),
                "manifest": next((e for e in events if e.get("event") == "manifest"), {}),
                "receiver_events": kinds,
                "sender_events": share_events,
                "deleted": [e.get("path") for e in events if e.get("event") == "deleted"],
            },
        )

    # -- rsync -----------------------------------------------------------------------

    def run_rsync(self, phase: int, deadline: float) -> Result:
        assert self.wire is not None
        sshd = self.ssh.sshd
        assert sshd is not None
        run_dir = self.work / f"rsync-{phase}"
        run_dir.mkdir()
        ssh = shlex.join(
            ["ssh", "-p", str(self.ssh.ssh_port), "-c", SCP_CIPHER, *self.ssh.ssh_opts]
        )
        argv = [
            "rsync",
            "-a",
            "--delete",
            "--stats",
            "-e",
            ssh,
            f"{self.ssh.user}@127.0.0.1:{self.src}/",
            f"{self.dst2 / TOP}/",
        ]
        os.sync()
        send_cpu0 = sshd.cpu_now()
        wire0 = self.wire.read("ssh")
        sampler = PeakSampler(sshd.pid, include_root=False)
        receiver = Proc(argv, run_dir / "rsync.log")
        self.receivers.append(receiver)
        try:
            if not receiver.wait(deadline - time.monotonic()):
                receiver.stop()
                raise BenchError(f"phase {phase}: rsync did not finish in time")
            if receiver.returncode != 0:
                raise BenchError(
                    f"phase {phase}: rsync exited with {receiver.returncode}: {receiver.tail()}"
                )
            while _children(sshd.pid) and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            send_rss = sampler.stop()
        wire = self.wire.read("ssh") - wire0
        sync = timed_sync()
        stats = receiver.log.read_text(errors="replace")

        def stat(label: str) -> int:
            found = re.search(rf"^{label}: ([\d,]+)", stats, re.MULTILINE)
            return int(found.group(1).replace(",", "")) if found else 0

        sent, received = stat("Total bytes sent"), stat("Total bytes received")
        return Result(
            tool="rsync",
            phase=phase,
            wall=receiver.wall,
            sync=sync,
            wire=wire,
            own_bytes=sent + received,
            recv_cpu=receiver.cpu,
            send_cpu=sshd.cpu_now() - send_cpu0,
            recv_rss=receiver.maxrss,
            send_rss=send_rss,
            detail={
                "bytes_sent": sent,
                "bytes_received": received,
                "literal_data": stat("Literal data"),
                "matched_data": stat("Matched data"),
                "files_transferred": stat("Number of regular files transferred"),
                "deleted": stat("Number of deleted files"),
            },
        )

    def teardown(self) -> None:
        for proc in self.receivers:
            proc.stop()
        if self.share is not None:
            self.share.stop()
            self.share = None
        self.ssh.teardown()
        if self.wire is not None:
            self.wire.close()


def wait_event(proc: Proc, name: str, deadline: float, what: str, start: int = 0) -> dict[str, Any]:
    """The first JSON line of ``proc``'s log (after byte ``start``) whose event is ``name``."""
    while True:
        for item in json_lines(proc.log, start):
            if item.get("event") == name:
                return item
            if item.get("event") == "error":
                raise BenchError(f"{what}: {item.get('message')}")
        if proc.done:
            raise BenchError(f"{what} exited with {proc.returncode} first: {proc.tail()}")
        if time.monotonic() > deadline:
            raise BenchError(f"no {name} event from {what} in time")
        time.sleep(0.02)


# -- report ---------------------------------------------------------------------------


def hashed(result: Result) -> tuple[int, int | None] | None:
    """files_hashed and bytes_hashed (None: not reported) of the share since
    the change: what it hashed as the change settled (``prehashed``) and in
    the rescan the receive asked for (``snapshot``)."""
    files: int | None = None
    nbytes: int | None = None
    for event in result.detail.get("sender_events", []):
        if "files_hashed" in event:
            files = (files or 0) + int(event["files_hashed"])
        if "bytes_hashed" in event:
            nbytes = (nbytes or 0) + int(event["bytes_hashed"])
    return None if files is None else (files, nbytes)


def goals(results: dict[tuple[str, int], Result], change: Change) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    p2, rs = results.get(("p2pcp", 2)), results.get(("rsync", 2))

    def add(goal: str, figure: str, met: bool | None) -> None:
        out.append({"goal": goal, "figure": figure, "met": met})

    text = f"p2pcp update: bytes on the wire <= {BYTES_GOAL} x the changed leaves' bytes"
    if p2 is None:
        add(text, "not measured", None)
    else:
        ratio = p2.wire / change.changed_leaf_bytes
        add(
            text,
            f"{p2.wire / MB:.2f} MB / {change.changed_leaf_bytes / MB:.2f} MB = {ratio:.3f}x "
            f"(p2pcp's own bytes_received: {p2.own_bytes / change.changed_leaf_bytes:.3f}x)",
            ratio <= BYTES_GOAL,
        )
    text = "p2pcp update: wall time <= rsync's"
    if p2 is None or rs is None:
        add(text, "not measured", None)
    else:
        add(
            text,
            f"{p2.wall:.2f} s vs {rs.wall:.2f} s (rsync / p2pcp = {rs.wall / p2.wall:.2f}x); "
            f"with the sync after each: {p2.wall + p2.sync:.2f} s vs {rs.wall + rs.sync:.2f} s",
            p2.wall <= rs.wall,
        )
    text = "share's rescan hashed only the changed and added files"
    seen = hashed(p2) if p2 is not None else None
    if seen is None:
        add(text, "not reported (no snapshot/import_done event with files_hashed)", None)
    else:
        files, nbytes = seen
        said = "not reported" if nbytes is None else f"{nbytes:,}"
        add(
            text,
            f"files_hashed {files} (expected {change.changed_files}), bytes_hashed "
            f"{said} (expected {change.changed_files_bytes:,})",
            files == change.changed_files and nbytes == change.changed_files_bytes,
        )
    return out


def print_table(report: dict[str, Any]) -> None:
    print(f"p2pcp: {report['p2pcp']}")
    print(f"peer:  {report['rsync']}; {report['ssh']} (cipher {SCP_CIPHER})")
    m = report["machine"]
    print(
        f"machine: {m['cpus']} CPUs, Linux {m['kernel']}, Python {m['python']}; loopback; "
        f"load average {m['load_start']:.1f} at the start, {m['load_end']:.1f} at the end"
    )
    print(f"work dir: {report['work_dir']}")
    print(f"wire bytes: {report['wire_method']}")
    for item in report["missing"]:
        print(f"MISSING in p2pcp: {item}")
    data = report["data"]
    print(
        f"data: {data['files']:,} files, {data['bytes'] / MB:,.0f} MB "
        f"({data['big'] / MB:,.0f} MB file + {data['files'] - 1:,} files sharing the rest)"
    )
    share = report.get("share")
    if share:
        print(f"share: ticket after {share['ready']:.2f} s (hashes everything once)")
    c = report.get("change")
    if c:
        print(
            f"change: {len(c['rewritten'])} files rewritten ({c['rewritten_bytes'] / MB:.2f} MB), "
            f"1 MiB at offset {c['big_offset']:,} of the big file ({c['big_leaves']} leaves), "
            f"{len(c['added'])} added ({c['added_bytes'] / MB:.2f} MB), {len(c['deleted'])} "
            f"deleted\n        changed leaves' bytes: {c['changed_leaf_bytes']:,} "
            f"({c['changed_leaves']} leaves of 256 KiB, added files included)"
        )
    print()
    print(
        "wall = receiving command, s; sync = a sync() right after it (the writeback it left), s;\n"
        "wire = IP bytes both ways, MB (10**6); own = the tool's figure (p2pcp bytes_received,\n"
        "rsync sent+received), MB; CPU = user+sys s; RSS = peak MB; rx receiver, tx serving side"
    )
    head = (
        f"{'phase':<14} {'tool':<7} {'wall s':>8} {'sync s':>7} {'wire MB':>10} {'own MB':>10} "
        f"{'CPU rx':>7} {'CPU tx':>7} {'RSS rx':>7} {'RSS tx':>7}  vs"
    )
    print(head)
    print("-" * len(head))
    rows = {(r["tool"], r["phase"]): r for r in report["results"]}
    for phase, phase_label in ((1, "1 full copy"), (2, "2 update")):
        label = phase_label
        for tool in ("p2pcp", "rsync"):
            r = rows.get((tool, phase))
            if r is None:
                continue
            other = rows.get(("rsync" if tool == "p2pcp" else "p2pcp", phase))
            vs = ""
            if tool == "p2pcp" and other:
                vs = f"wall {other['wall'] / r['wall']:.2f}x, wire {other['wire'] / r['wire']:.2f}x"
            print(
                f"{label:<14} {tool:<7} {r['wall']:8.2f} {r['sync']:7.2f} {r['wire'] / MB:10.2f} "
                f"{r['own_bytes'] / MB:10.2f} {r['recv_cpu']:7.2f} {r['send_cpu']:7.2f} "
                f"{r['recv_rss'] / MB:7.0f} {r['send_rss'] / MB:7.0f}  {vs}"
            )
            label = ""
    print("(vs: rsync's figure / p2pcp's: > 1 means p2pcp took less)")
    for r in report["results"]:
        if r["tool"] == "p2pcp":
            for e in r["detail"].get("sender_events", []):
                print(f"phase {r['phase']} share event: {json.dumps(e)[:200]}")
            if r["detail"].get("manifest"):
                print(f"phase {r['phase']} receiver: {json.dumps(r['detail']['manifest'])[:200]}")
    print()
    print("goals")
    for goal in report["goals"]:
        met = {True: "PASS", False: "MISS", None: "-"}[goal["met"]]
        print(f"  {met:<5} {goal['goal']}\n        {goal['figure']}")
    print()
    print(f"verification: {report['verified']}")


# -- main -----------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--size-gib", type=float, default=2.0, help="total size (default 2)")
    parser.add_argument("--files", type=int, default=2000, help="number of files (default 2000)")
    parser.add_argument(
        "--workdir", type=Path, help="where data goes (default: a new folder in /var/tmp)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per transfer")
    args = parser.parse_args()
    total = int(args.size_gib * (1 << 30))
    if args.files < 50 or total < args.files * 16 or total < 4 << 20:
        parser.error("need at least 50 files, 4 MiB and 16 bytes per file")

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    parent = args.workdir or Path("/var/tmp")
    parent.mkdir(parents=True, exist_ok=True)
    # source, two copies, and a temporary copy of the big file on each side
    need = 4 * total + (2 << 30)
    free = shutil.disk_usage(parent).free
    if free < need:
        print(
            f"bench: {parent} has {free / 2**30:.1f} GiB free; needs {need / 2**30:.1f} GiB "
            "(source, two copies, the big file's temporary copies, 2 GiB margin): --workdir",
            file=sys.stderr,
        )
        return 2
    work = Path(tempfile.mkdtemp(prefix="p2pcp-backup-", dir=parent))
    bench = Backup(args, work)
    verified = "not done"
    failure = ""
    results: dict[tuple[str, int], Result] = {}
    report: dict[str, Any] = {}
    change: Change | None = None
    try:
        bench.probe_p2pcp()
        bench.ssh.setup_ssh()
        bench.wire = WireCounter(bench.port, bench.ssh.ssh_port)
        ssh_v = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False)
        rsync_v = subprocess.run(
            ["rsync", "--version"], capture_output=True, text=True, check=False
        )
        report = {
            "p2pcp": p2pcp_state(),
            "ssh": (ssh_v.stderr or ssh_v.stdout).strip(),
            "rsync": rsync_v.stdout.splitlines()[0].strip() if rsync_v.stdout else "?",
            "machine": {
                "cpus": os.cpu_count(),
                "kernel": platform.release(),
                "python": platform.python_version(),
                "load_start": os.getloadavg()[0],
            },
            "work_dir": str(work),
            "wire_method": bench.wire.how,
            "missing": bench.missing,
        }
        _log(f"generating {args.files:,} files, {total / MB:,.0f} MB in {bench.src}")
        started = time.perf_counter()
        stream = Keystream()
        names = generate(bench.src, total, args.files, stream)
        bench.dst.mkdir()
        bench.dst2.mkdir()
        os.sync()
        report["data"] = {"files": args.files, "bytes": total, "big": total // 2}
        _log(f"generated in {time.perf_counter() - started:.1f} s")
        time.sleep(SETTLE_S)
        if "p2pcp share (send --once per phase instead)" not in bench.missing:
            _log("starting p2pcp share")
            bench.start_share(time.monotonic() + args.timeout)
            report["share"] = {"ready": bench.share_ready}
            _log(f"share ready in {bench.share_ready:.2f} s")
        for phase in (1, 2):
            if phase == 2:
                if bench.share is not None:
                    bench.change_log_start = bench.share.log.stat().st_size
                change = apply_change(bench.src, names, stream)
                os.sync()
                # A night's pull comes hours after the day's changes: by then
                # a share has hashed them (it does once they settle). Both
                # tools pull after the same pause.
                time.sleep(SETTLE_S)
                report["change"] = asdict(change)
                _log(
                    f"changed: {change.changed_files} files to re-hash, changed leaves' bytes "
                    f"{change.changed_leaf_bytes:,}"
                )
            for tool, run in (("p2pcp", bench.run_p2pcp), ("rsync", bench.run_rsync)):
                _log(f"phase {phase}: {tool}")
                try:
                    result = run(phase, time.monotonic() + args.timeout)
                except BenchError as e:
                    failure = failure or str(e)
                    _log(f"FAILED: {e}")
                    continue
                results[(tool, phase)] = result
                _log(f"phase {phase}: {tool}: {result.wall:.2f} s, wire {result.wire / MB:.2f} MB")
            source = listing(bench.src)
            for tool, top in (("p2pcp", bench.dst / TOP), ("rsync", bench.dst2 / TOP)):
                if (tool, phase) not in results:
                    continue
                try:
                    compare(source, top, f"phase {phase}: {tool}'s copy")
                except BenchError as e:
                    failure = failure or str(e)
                    _log(f"FAILED: {e}")
        if not failure:
            verified = (
                "both copies equal the source (files, folders, sizes, BLAKE3) after each phase"
            )
        else:
            verified = f"FAILED: {failure}"
        report["machine"]["load_end"] = os.getloadavg()[0]
        report["results"] = [asdict(r) for r in results.values()]
        report["goals"] = goals(results, change) if change is not None else []
        report["verified"] = verified
        if args.json:
            print(json.dumps(report, indent=1))
        else:
            print_table(report)
    except KeyboardInterrupt:
        _log("interrupted")
        return 130
    except (RunError, BenchError, OSError) as e:
        _log(f"bench: {e}")
        return 1
    finally:
        bench.teardown()
        if args.keep:
            _log(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if failure:
        print(f"\nFAILED: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
