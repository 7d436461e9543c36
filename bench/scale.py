"""Real data at real scale: p2pcp against magic-wormhole, scp and rsync, on loopback.

One run, one table. Cases (``--cases``, default all):

- ``1g``: one 1 GiB file (p2pcp, magic-wormhole, scp, rsync)
- ``5k``: 5,000 files x 8 KiB in 50 folders (p2pcp, magic-wormhole, scp, rsync)
- ``100k``: 100,000 files x 1 KiB in 100 folders (p2pcp and rsync)
- ``10g``: one 10 GiB file (p2pcp only: speed and peak RSS)

``--quick`` shrinks every case (64 MiB, 500 x 8 KiB, 2,000 x 1 KiB, 256 MiB)
for a smoke run; the goals are then printed against the small sizes and
say so.

Rules, and why:

- Every peer is the real tool, run as a user runs it, on this machine:
  ``p2pcp send --json --once`` and ``p2pcp receive TICKET --out DIR --json``
  (``--no-relay``: no traffic leaves the machine), each with its own fresh
  P2PCP_HOME; magic-wormhole 0.24 with its own mailbox server and transit
  relay (bench/wormhole.py); ``scp -c aes128-gcm@openssh.com`` (OpenSSH 9
  speaks SFTP underneath by default) and ``rsync -a -e ssh`` (ssh's default
  cipher) against a private sshd. Each side's figures cover what the user
  waits for, e.g. magic-wormhole sends a folder as a zip it streams and
  the receiver unpacks, and p2pcp fsyncs what it writes while the others
  leave it to the page cache.
- The private sshd listens on 127.0.0.1 on a free port, with its own host
  key, authorized key, config and log in the work dir; every ssh client gets
  ``-F /dev/null`` and its options explicitly (a known-hosts file holding the
  private host key, strict checking, batch mode), so neither the system's
  sshd nor ~/.ssh is read or touched. openssh-server, openssh-client and
  rsync are installed with apt-get when missing (root).
- magic-wormhole drops 127.0.0.1 from its direct hints when the host has
  another interface, so it runs, with its servers, in a network namespace
  that has only ``lo`` (created and removed by the bench; root): its only
  hints are then loopback ones and its data path is a direct loopback TCP
  connection. The receiver's own account of the connection is shown; a run
  whose data went through the transit relay counts as failed.
- Timing: the receiver's wall time, from launching the receiving command to
  its exit. The p2pcp and magic-wormhole senders are started first and are
  serving (ticket or code printed) when the clock starts, so p2pcp's
  hashing (import) is not in the receiver's time; the time each sender took
  to get there is reported separately ("ready"). scp and rsync pull from the
  sshd, so the receiver is the command the user types in every case.
  MB/s = payload bytes / wall time / 10**6.
- CPU seconds (user + sys) of each side's whole process tree: the receiver's
  and the magic-wormhole and p2pcp senders' from ``os.wait4`` (it includes
  every child they reaped), minus, for a sender, what it had used by the
  time it was ready; the sshd side's from the sshd listener's own and reaped
  children's times in /proc (it reaps each connection's processes).
- Peak RSS of each side: the largest peak RSS (VmHWM, sampled every
  20-100 ms) of any single process of the side's tree. MB = 10**6 bytes. The peak is the
  largest over the runs; wall time and CPU are medians with min-max.
- Runs alternate tools within a case (A B C A B C ...) so drift hits all
  alike; ``sync()`` is called after every run, so one run's writeback does
  not land in the next. Received data is deleted after each run, except in
  the cases of many files (``DEFER_DELETE_FILES``): there it is deleted
  when the case ends, and the next case waits until RECENT_DELETE_S have
  passed. On ext4 the inode allocator skips every inode freed in the last
  ~30 s and reads its table block to learn so; right after a 100,000-file
  tree was deleted each new file paid for that scan (one core in kernel
  time, the same receive took 17-57 s), whichever tool came next.
- Data: generated once under the work dir (default: a new directory in
  /var/tmp, the same disk as a user's files; removed at the end unless
  ``--keep``), random content (AES-CTR keystream: not compressible), hot in
  the page cache for every tool alike. Free disk space is checked first:
  a case that does not fit (source and one received copy) is skipped with
  the reason.
- Every received result is verified: the same relative paths with the same
  sizes as the source for every tool, and for p2pcp also the same content
  (each file's digest). A run that fails verification counts as failed,
  never as fast.
- Ratios are p2pcp's against each peer: peer median wall time / p2pcp's,
  so > 1 means p2pcp was faster. The issue's goals are printed with their
  figures, met or NOT MET. Benchmarks never fail: exit 0 whatever the
  figures (2 only for a usage error).

    sudo python bench/scale.py [--cases 1g,5k,100k,10g] [--runs 3] [--quick]
        [--tools p2pcp,wormhole,scp,rsync] [--json] [--keep] [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))  # the checkout: tests.support
sys.path.insert(0, str(BENCH))

from wormhole import MAILBOX_PORT, RELAY_PORT, Wormhole  # noqa: E402

from tests.support.ports import free_port  # noqa: E402
from tests.support.processes import p2pcp_command  # noqa: E402

MB = 1e6
NETNS = "p2pcp-scale-lo"  # magic-wormhole's namespace: only `lo`
TOOLS = ("p2pcp", "wormhole", "scp", "rsync")
TOOL_LABEL = {
    "p2pcp": "p2pcp",
    "wormhole": "magic-wormhole direct",
    "scp": "scp aes128-gcm",
    "rsync": "rsync over ssh",
}
SCP_CIPHER = "aes128-gcm@openssh.com"
RSS_GOAL = 150 * MB
# Cases of at least this many files keep their received copies until the
# case ends, and a case waits RECENT_DELETE_S after many files were deleted
# (module doc: ext4's allocator and recently freed inodes).
DEFER_DELETE_FILES = 1_000
RECENT_DELETE_S = 35.0
CLK_TCK = os.sysconf("SC_CLK_TCK")

# The bench's p2pcp nodes announce no short code on this host's real
# network (multicast DNS): traffic stays on loopback.
os.environ["P2PCP_LAN"] = "off"


class RunError(Exception):
    """One transfer failed (or its result did not verify): reported, never fatal."""


# -- cases and data ------------------------------------------------------------


@dataclass
class Case:
    key: str
    name: str  # the file or folder that is sent
    files: int
    file_size: int
    folders: int  # 0: a single file
    tools: tuple[str, ...]
    full_size: bool = True  # False under --quick: the goals' sizes were not used

    @property
    def total_bytes(self) -> int:
        return self.files * self.file_size

    @property
    def label(self) -> str:
        if not self.folders:
            return f"{_size_text(self.file_size)} file"
        return (
            f"{self.files:,} x {_size_text(self.file_size)} in {self.folders} folder"
            f"{'s' if self.folders > 1 else ''}"
        )


def _size_text(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size:,} B"


def make_cases(quick: bool) -> dict[str, Case]:
    four = ("p2pcp", "wormhole", "scp", "rsync")
    if quick:
        return {
            "1g": Case("1g", "file-1g.bin", 1, 64 << 20, 0, four, False),
            "5k": Case("5k", "files-5k", 500, 8 << 10, 10, four, False),
            "100k": Case("100k", "files-100k", 2000, 1 << 10, 20, ("p2pcp", "rsync"), False),
            "10g": Case("10g", "file-10g.bin", 1, 256 << 20, 0, ("p2pcp",), False),
        }
    return {
        "1g": Case("1g", "file-1g.bin", 1, 1 << 30, 0, four),
        "5k": Case("5k", "files-5k", 5000, 8 << 10, 50, four),
        "100k": Case("100k", "files-100k", 100_000, 1 << 10, 100, ("p2pcp", "rsync")),
        "10g": Case("10g", "file-10g.bin", 1, 10 << 30, 0, ("p2pcp",)),
    }


class Keystream:
    """Random, incompressible bytes fast: AES-128-CTR over zeros (os.urandom without it)."""

    def __init__(self) -> None:
        self._update: Callable[[bytes], bytes] | None = None
        try:
            from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        except ImportError:
            return
        cipher = Cipher(algorithms.AES(os.urandom(16)), modes.CTR(os.urandom(16)))
        self._update = cipher.encryptor().update

    def take(self, n: int) -> bytes:
        return self._update(bytes(n)) if self._update is not None else os.urandom(n)


def _hasher() -> Any:
    try:
        import blake3

        return blake3.blake3()
    except ImportError:
        return hashlib.sha256()


def file_digest(path: Path, buf: bytearray) -> str:
    h = _hasher()
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return str(h.hexdigest())


Manifest = dict[str, tuple[int, str]]  # relative path -> (size, digest)


def generate(case: Case, data: Path) -> tuple[Path, Manifest]:
    """Writes the case's source under ``data`` and returns it with its manifest."""
    stream = Keystream()
    root = data / case.name
    manifest: Manifest = {}
    if not case.folders:
        h = _hasher()
        with open(root, "wb") as f:
            left = case.file_size
            while left:
                chunk = stream.take(min(left, 16 << 20))
                h.update(chunk)
                f.write(chunk)
                left -= len(chunk)
        manifest[case.name] = (case.file_size, str(h.hexdigest()))
        return root, manifest
    per_folder, extra = divmod(case.files, case.folders)
    for d in range(case.folders):
        folder = root / f"d{d:03d}"
        folder.mkdir(parents=True)
        count = per_folder + (1 if d < extra else 0)
        block = stream.take(count * case.file_size)
        for i in range(count):
            content = block[i * case.file_size : (i + 1) * case.file_size]
            (folder / f"f{i:05d}.bin").write_bytes(content)
            h = _hasher()
            h.update(content)
            manifest[f"{case.name}/d{d:03d}/f{i:05d}.bin"] = (len(content), str(h.hexdigest()))
    return root, manifest


def _walk(base: Path, name: str) -> Iterator[tuple[str, Path]]:
    top = base / name
    if top.is_file():
        yield name, top
        return
    for dirpath, _dirs, files in os.walk(top):
        for f in files:
            path = Path(dirpath) / f
            yield path.relative_to(base).as_posix(), path


def verify(out: Path, case: Case, manifest: Manifest, content: bool) -> None:
    """Raises RunError unless ``out`` holds the case's tree: paths, sizes (and digests)."""
    buf = bytearray(1 << 20)
    seen = 0
    total = 0
    for rel, path in _walk(out, case.name):
        expected = manifest.get(rel)
        if expected is None:
            raise RunError(f"unexpected file received: {rel}")
        size = path.stat().st_size
        if size != expected[0]:
            raise RunError(f"{rel}: {size} bytes received, {expected[0]} sent")
        if content and file_digest(path, buf) != expected[1]:
            raise RunError(f"{rel}: content differs from the source")
        seen += 1
        total += size
    if seen != len(manifest) or total != case.total_bytes:
        raise RunError(
            f"received {seen:,} files, {total:,} bytes; sent {len(manifest):,}, "
            f"{case.total_bytes:,}"
        )


# -- processes ------------------------------------------------------------------


def _proc_times(pid: int) -> float:
    """CPU seconds of a live process: its own and its reaped children's (user + sys)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / CLK_TCK


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found.extend(int(x) for x in (task / "children").read_text().split())
    except OSError:
        pass
    return found


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = _children(pid)
    while todo:
        child = todo.pop()
        out.append(child)
        todo.extend(_children(child))
    return out


def _hwm(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


class Proc:
    """A process in its own session, reaped by os.wait4 in a thread (exact end, rusage)."""

    def __init__(
        self,
        argv: list[str],
        log: Path,
        *,
        err: Path | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.argv = argv
        self.log = log
        self.err = err or log
        self.ended: float | None = None
        self.returncode: int | None = None
        self.cpu = 0.0
        self.maxrss = 0
        self._done = threading.Event()
        with open(log, "ab") as out, open(self.err, "ab") as errf:
            self.started = time.perf_counter()
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=errf if err is not None else subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        self.pid = self.popen.pid
        self._sampler = PeakSampler(self.pid, include_root=True)
        threading.Thread(target=self._reap, daemon=True).start()

    def _reap(self) -> None:
        _, status, usage = os.wait4(self.pid, 0)
        self.ended = time.perf_counter()
        self.cpu = usage.ru_utime + usage.ru_stime
        self.maxrss = self._sampler.stop()
        self.returncode = os.waitstatus_to_exitcode(status)
        self.popen.returncode = self.returncode  # reaped here: Popen must not wait again
        self._done.set()

    def wait(self, timeout: float) -> bool:
        return self._done.wait(max(0.0, timeout))

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def wall(self) -> float:
        assert self.ended is not None
        return self.ended - self.started

    def cpu_now(self) -> float:
        return _proc_times(self.pid)

    def tail(self, limit: int = 300) -> str:
        try:
            lines = self.err.read_text(errors="replace").splitlines()
        except OSError:
            return "(no output)"
        for line in reversed(lines):
            if line.strip():
                return line.strip()[-limit:]
        return "(no output)"

    def stop(self, grace: float = 3.0) -> None:
        if self.done:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)
            if self.wait(wait):
                return


class PeakSampler:
    """Largest VmHWM among a process tree's processes, sampled every 20-100 ms.

    VmHWM is each process's own high-water mark since its exec, so a sample
    misses only growth in a process's last moments; the interval starts at
    20 ms and grows to 100 ms over the first 4 s, so that sampling a long
    transfer costs the measured tools little CPU. (``ru_maxrss`` from wait4
    cannot serve: it carries the launching process's peak across fork and
    exec, here this bench's own.) Sampling starts when Popen has returned,
    i.e. after the root's exec, so the root's mark is its program's own.
    """

    def __init__(self, root: int, include_root: bool) -> None:
        self.root = root
        self.include_root = include_root
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        started = time.monotonic()
        while True:
            pids = _descendants(self.root)
            if self.include_root:
                pids.append(self.root)
            for pid in pids:
                self.peak = max(self.peak, _hwm(pid))
            if self._stop.wait(min(0.1, 0.02 + (time.monotonic() - started) / 50)):
                return

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _wait_for(proc: Proc, pattern: str, deadline: float, what: str) -> re.Match[str]:
    """Polls a process's log for a regex until it appears, the process exits, or time is up."""
    while True:
        found = re.search(pattern, proc.log.read_text(errors="replace"))
        if found:
            return found
        if proc.done:
            raise RunError(f"{what} exited with {proc.returncode} first: {proc.tail()}")
        if time.monotonic() > deadline:
            raise RunError(f"no {what} output after the time limit")
        time.sleep(0.01)


def _finish(proc: Proc, deadline: float, what: str) -> None:
    if not proc.wait(deadline - time.monotonic()):
        raise RunError(f"{what} did not finish within the time limit")
    if proc.returncode != 0:
        raise RunError(f"{what} exited with {proc.returncode}: {proc.tail()}")


def _run_command(argv: list[str], what: str, timeout: float = 600.0) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RunError(f"{what}: {e}") from None
    if result.returncode != 0:
        lines = (result.stderr.strip() or result.stdout.strip() or "?").splitlines()
        raise RunError(f"{what} failed ({result.returncode}): {lines[-1]}")
    return result.stdout + result.stderr


# -- one run --------------------------------------------------------------------


@dataclass
class Run:
    wall: float = 0.0
    recv_cpu: float = 0.0
    send_cpu: float = 0.0
    recv_rss: int = 0
    send_rss: int = 0
    ready: float | None = None  # sender: launch -> ticket or code printed
    path: str = ""
    error: str = ""


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.sshd: Proc | None = None
        self.ssh_opts: list[str] = []  # options common to ssh and scp (-F, key, known hosts)
        self.ssh_port = 0
        self.user = ""
        self.wormhole: Wormhole | None = None
        self.netns_made = False
        self.skipped: dict[str, str] = {}  # tool -> why it does not run
        self.counter = 0
        self.deferred: list[Path] = []  # received copies to delete when the case ends
        self.deleted_at = 0.0  # when many files were last deleted (monotonic)

    # -- set-up of the peers ---------------------------------------------------

    def setup_ssh(self) -> None:
        needed = {
            "/usr/sbin/sshd": "openssh-server",
            "ssh": "openssh-client",
            "scp": "openssh-client",
            "ssh-keygen": "openssh-client",
            "rsync": "rsync",
        }
        missing = sorted({pkg for exe, pkg in needed.items() if shutil.which(exe) is None})
        if missing:
            if os.geteuid() != 0:
                raise RunError(f"{', '.join(missing)} not installed (root installs them)")
            _log(f"installing {', '.join(missing)} with apt-get")
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            for argv in (
                ["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
            ):
                result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
                if result.returncode != 0:
                    last = (result.stderr.strip() or result.stdout.strip() or "?").splitlines()
                    raise RunError(f"{' '.join(argv[:2])} failed: {last[-1]}")
        ssh_dir = self.work / "ssh"
        ssh_dir.mkdir(mode=0o700)
        host_key, client_key = ssh_dir / "host_ed25519", ssh_dir / "client_ed25519"
        for key in (host_key, client_key):
            _run_command(
                [
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    "p2pcp-scale",
                    "-f",
                    str(key),
                ],
                "ssh-keygen",
            )
        authorized = ssh_dir / "authorized_keys"
        shutil.copyfile(client_key.with_suffix(".pub"), authorized)
        authorized.chmod(0o600)
        self.user = _user_name()
        self.ssh_port = free_port()
        config = ssh_dir / "sshd_config"
        sftp = next(
            (
                p
                for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/sftp-server")
                if Path(p).exists()
            ),
            "internal-sftp",
        )
        # Only what this bench needs: key login for this user on 127.0.0.1. StrictModes
        # off because the work dir may sit under a world-writable /var/tmp; no PAM, so
        # nothing from the system's login set-up is involved.
        config.write_text(
            "\n".join(
                [
                    f"ListenAddress 127.0.0.1:{self.ssh_port}",
                    f"HostKey {host_key}",
                    f"PidFile {ssh_dir / 'sshd.pid'}",
                    f"AuthorizedKeysFile {authorized}",
                    f"AllowUsers {self.user}",
                    "PermitRootLogin prohibit-password",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "PrintMotd no",
                    "UseDNS no",
                    "LogLevel ERROR",
                    f"Subsystem sftp {sftp}",
                    "",
                ]
            )
        )
        sshd = "/usr/sbin/sshd"
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
        _run_command([sshd, "-t", "-f", str(config)], "sshd -t")
        self.sshd = Proc([sshd, "-D", "-f", str(config)], ssh_dir / "sshd.log")
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.ssh_port), timeout=0.5).close()
                break
            except OSError:
                if self.sshd.done:
                    raise RunError(
                        f"sshd exited with {self.sshd.returncode}: {self.sshd.tail()}"
                    ) from None
                if time.monotonic() > deadline:
                    raise RunError("sshd not listening after 15 s") from None
                time.sleep(0.05)
        known = ssh_dir / "known_hosts"
        host_pub = host_key.with_suffix(".pub").read_text().split()
        known.write_text(f"[127.0.0.1]:{self.ssh_port} {host_pub[0]} {host_pub[1]}\n")
        self.ssh_opts = [
            "-F",
            "/dev/null",
            "-i",
            str(client_key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            f"UserKnownHostsFile={known}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
        ]
        _run_command(
            ["ssh", *self.ssh_opts, "-p", str(self.ssh_port), f"{self.user}@127.0.0.1", "true"],
            "ssh login to the private sshd",
            timeout=30,
        )

    def setup_wormhole(self) -> None:
        if os.geteuid() != 0:
            raise RunError("needs root (a network namespace with only lo)")
        wormhole = Wormhole(self.args.cache_dir)
        wormhole.ensure_installed()
        _remove_netns()
        _run_command(["ip", "netns", "add", NETNS], "ip netns add")
        self.netns_made = True
        _run_command(["ip", "-n", NETNS, "link", "set", "lo", "up"], "ip link set lo up")
        wormhole.start_servers(NETNS, "127.0.0.1")
        self.wormhole = wormhole

    def teardown(self) -> None:
        if self.sshd is not None:
            self.sshd.stop()
            self.sshd = None
        if self.wormhole is not None:
            self.wormhole.stop_servers()
            self.wormhole = None
        if self.netns_made:
            _remove_netns()
            self.netns_made = False

    # -- runs --------------------------------------------------------------------

    def timeout(self, case: Case) -> float:
        if self.args.timeout:
            return float(self.args.timeout)
        return 120.0 + case.total_bytes / (10 * MB) + case.files * 0.02

    def run(self, tool: str, case: Case, source: Path, manifest: Manifest) -> Run:
        self.counter += 1
        run_dir = self.work / "runs" / f"{self.counter:03d}-{case.key}-{tool}"
        out = run_dir / "out"
        out.mkdir(parents=True)
        deadline = time.monotonic() + self.timeout(case)
        try:
            if tool == "p2pcp":
                result = self._p2pcp(source, run_dir, out, deadline)
            elif tool == "wormhole":
                result = self._wormhole(source, run_dir, out, deadline)
            else:
                result = self._ssh_tool(tool, case, source, run_dir, out, deadline)
            verify(out, case, manifest, content=tool == "p2pcp")
        except (RunError, RuntimeError, OSError, ValueError, KeyError) as e:
            result = Run(error=str(e) or type(e).__name__)
        finally:
            if case.files >= DEFER_DELETE_FILES:
                self.deferred.append(run_dir)  # module doc: deleted when the case ends
            elif not self.args.keep:
                shutil.rmtree(run_dir, ignore_errors=True)
            os.sync()  # this run's writeback is not the next run's cost
        return result

    def delete_deferred(self) -> None:
        """Delete the received copies kept until the end of a case."""
        if self.deferred and not self.args.keep:
            for run_dir in self.deferred:
                shutil.rmtree(run_dir, ignore_errors=True)
            self.deleted_at = time.monotonic()
        self.deferred = []

    def wait_after_delete(self) -> None:
        """Let the inodes of a big deletion age out of ext4's allocator's
        "recently deleted" check before the next timed run (module doc)."""
        wait = self.deleted_at + RECENT_DELETE_S - time.monotonic()
        if self.deleted_at and wait > 0:
            _log(f"waiting {wait:.0f} s for the files deleted last to age (module doc)")
            time.sleep(wait)

    def _p2pcp(self, source: Path, run_dir: Path, out: Path, deadline: float) -> Run:
        cmd = p2pcp_command()
        sender = Proc(
            [*cmd, "send", "--json", "--once", "--no-relay", str(source)],
            run_dir / "send.jsonl",
            err=run_dir / "send.err",
            env={**os.environ, "P2PCP_HOME": str(run_dir / "send-home")},
        )
        receiver: Proc | None = None
        try:
            found = _wait_for(sender, r'\{"event":\s*"ticket".*\}', deadline, "p2pcp send")
            ready = time.perf_counter() - sender.started
            send_cpu0 = sender.cpu_now()
            ticket = json.loads(found.group(0))["ticket"]
            receiver = Proc(
                [*cmd, "receive", ticket, "--out", str(out), "--json", "--no-relay"],
                run_dir / "receive.jsonl",
                err=run_dir / "receive.err",
                env={**os.environ, "P2PCP_HOME": str(run_dir / "recv-home")},
            )
            _finish(receiver, deadline, "p2pcp receive")
            _finish(sender, deadline, "p2pcp send")
        finally:
            for proc in (receiver, sender):
                if proc is not None:
                    proc.stop()
        path = ""
        for line in receiver.log.read_text(errors="replace").splitlines():
            if '"connected"' in line:
                with contextlib.suppress(ValueError):
                    path = str(json.loads(line).get("description", ""))
        return Run(
            wall=receiver.wall,
            recv_cpu=receiver.cpu,
            send_cpu=sender.cpu - send_cpu0,
            recv_rss=receiver.maxrss,
            send_rss=sender.maxrss,
            ready=ready,
            path=path,
        )

    def _wormhole(self, source: Path, run_dir: Path, out: Path, deadline: float) -> Run:
        assert self.wormhole is not None
        base = [
            "ip",
            "netns",
            "exec",
            NETNS,
            str(self.wormhole.bin / "wormhole"),
            "--relay-url",
            f"ws://127.0.0.1:{MAILBOX_PORT}/v1",
            "--transit-helper",
            f"tcp:127.0.0.1:{RELAY_PORT}",
        ]
        # Every server comes from the flags above, none from WORMHOLE_* settings.
        env = {k: v for k, v in os.environ.items() if not k.startswith("WORMHOLE_")}
        env["PYTHONUNBUFFERED"] = "1"
        sender = Proc(
            [*base, "send", "--hide-progress", "--no-qr", str(source)],
            run_dir / "send.log",
            env=env,
            cwd=source.parent,
        )
        receiver: Proc | None = None
        try:
            found = _wait_for(sender, r"Wormhole code is: (\S+)", deadline, "wormhole send")
            ready = time.perf_counter() - sender.started
            send_cpu0 = sender.cpu_now()  # `ip netns exec` has exec'd: this is wormhole
            receiver = Proc(
                [
                    *base,
                    "receive",
                    "--accept-file",
                    "--hide-progress",
                    "--output-file",
                    str(out / source.name),
                    found.group(1),
                ],
                run_dir / "receive.log",
                env=env,
                cwd=out,
            )
            _finish(receiver, deadline, "wormhole receive")
            _finish(sender, deadline, "wormhole send")
        finally:
            for proc in (receiver, sender):
                if proc is not None:
                    proc.stop()
        described = re.search(r"Receiving \((.*)\)\.\.", receiver.log.read_text(errors="replace"))
        connection = described.group(1) if described else "(not reported)"
        if not described or "relay:" in connection:
            raise RunError(f"the data did not go direct: {connection}")
        return Run(
            wall=receiver.wall,
            recv_cpu=receiver.cpu,
            send_cpu=sender.cpu - send_cpu0,
            recv_rss=receiver.maxrss,
            send_rss=sender.maxrss,
            ready=ready,
            path=f"direct {connection}",
        )

    def _ssh_tool(
        self, tool: str, case: Case, source: Path, run_dir: Path, out: Path, deadline: float
    ) -> Run:
        assert self.sshd is not None
        remote = f"{self.user}@127.0.0.1:{source}"
        if tool == "scp":
            argv = ["scp", "-q", "-c", SCP_CIPHER, "-P", str(self.ssh_port), *self.ssh_opts]
            argv += ["-r"] if case.folders else []
            argv += [remote, f"{out}/"]
            path = f"TCP 127.0.0.1:{self.ssh_port}, SFTP protocol"
        else:
            ssh = shlex.join(["ssh", "-p", str(self.ssh_port), *self.ssh_opts])
            argv = ["rsync", "-a", "-e", ssh, remote, f"{out}/"]
            path = f"TCP 127.0.0.1:{self.ssh_port}"
        # The sending side is the sshd's connection processes: the listener reaps them,
        # so its cumulative children's times grow by exactly their CPU.
        sshd = self.sshd
        send_cpu0 = sshd.cpu_now()
        sampler = PeakSampler(sshd.pid, include_root=False)
        receiver: Proc | None = None
        try:
            receiver = Proc(argv, run_dir / f"{tool}.log")
            _finish(receiver, deadline, tool)
            while _children(sshd.pid) and time.monotonic() < deadline:
                time.sleep(0.01)
            if _children(sshd.pid):
                raise RunError("the sshd's connection processes did not end")
        finally:
            send_rss = sampler.stop()
            if receiver is not None:
                receiver.stop()
        return Run(
            wall=receiver.wall,
            recv_cpu=receiver.cpu,
            send_cpu=sshd.cpu_now() - send_cpu0,
            recv_rss=receiver.maxrss,
            send_rss=send_rss,
            path=path,
        )


def _user_name() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def _remove_netns() -> None:
    listing = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=False
    ).stdout
    if any(line.split(" ", 1)[0] == NETNS for line in listing.splitlines()):
        subprocess.run(["ip", "netns", "delete", NETNS], check=False)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- versions -------------------------------------------------------------------


def p2pcp_state() -> str:
    """p2pcp's version, where the CLI imports it from, and that tree's git revision."""
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            "import p2pcp, importlib.metadata as m; "
            "print(m.version('p2pcp')); print(p2pcp.__file__)",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split("\n")
    if len(found) < 2 or not found[1]:
        return "p2pcp (not importable)"
    where = Path(found[1]).parent
    text = f"p2pcp {found[0]} from {where}"

    def git(*argv: str) -> str:
        return subprocess.run(
            ["git", "-C", str(where), *argv], capture_output=True, text=True, check=False
        ).stdout.strip()

    rev = git("rev-parse", "--short", "HEAD")
    if rev:
        dirty = git("status", "--porcelain", "--", ".")
        text += f", git {rev}" + (" with uncommitted changes in p2pcp/" if dirty else "")
    return text


def peer_versions(bench: Bench) -> dict[str, str]:
    found: dict[str, str] = {}
    if bench.wormhole is not None:
        v = bench.wormhole.versions()
        found["magic-wormhole"] = (
            f"magic-wormhole {v.get('magic-wormhole', '?')}, mailbox server "
            f"{v.get('magic-wormhole-mailbox-server', '?')}, transit relay "
            f"{v.get('magic-wormhole-transit-relay', '?')}, Twisted {v.get('Twisted', '?')}"
        )
    if bench.sshd is not None:
        ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False)
        found["ssh"] = (ssh.stderr or ssh.stdout).strip() + " (ssh, scp and sshd)"
        rsync = subprocess.run(["rsync", "--version"], capture_output=True, text=True, check=False)
        found["rsync"] = rsync.stdout.splitlines()[0].strip() if rsync.stdout else "?"
    return found


# -- report ---------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(case: Case, tool: str, runs: list[Run]) -> dict[str, Any]:
    good = [r for r in runs if not r.error]
    row: dict[str, Any] = {
        "tool": tool,
        "runs": len(runs),
        "ok": len(good),
        "errors": [r.error for r in runs if r.error],
        "per_run": [r.__dict__ for r in runs],
    }
    if good:
        walls = [r.wall for r in good]
        readies = [r.ready for r in good if r.ready is not None]
        row.update(
            wall=_median(walls),
            wall_min=min(walls),
            wall_max=max(walls),
            mb_per_s=case.total_bytes / _median(walls) / MB,
            recv_cpu=_median([r.recv_cpu for r in good]),
            send_cpu=_median([r.send_cpu for r in good]),
            recv_rss=max(r.recv_rss for r in good),
            send_rss=max(r.send_rss for r in good),
            ready=_median(readies) if readies else None,
            path=good[-1].path,
        )
    return row


def ratios(rows: dict[str, dict[str, Any]]) -> dict[str, float]:
    base = rows.get("p2pcp", {}).get("wall")
    out: dict[str, float] = {}
    if not base:
        return out
    for tool, row in rows.items():
        if tool != "p2pcp" and row.get("wall"):
            out[tool] = row["wall"] / base
    return out


def goals(report: dict[str, Any]) -> list[dict[str, Any]]:
    cases = {c["key"]: c for c in report["cases"]}
    result: list[dict[str, Any]] = []

    def add(text: str, key: str, figure: str, met: bool | None) -> None:
        case = cases.get(key)
        note = "" if case is None or case["full_size"] else " (--quick sizes, not the goal's)"
        result.append({"goal": text, "figure": figure + note, "met": met})

    for key, what in (("10g", "10 GiB file"), ("100k", "100,000-file folder")):
        text = f"peak RSS <= 150 MB on each side, {what}"
        row = cases.get(key, {}).get("rows", {}).get("p2pcp", {})
        if "recv_rss" not in row:
            add(text, key, "not measured", None)
            continue
        figure = f"sender {row['send_rss'] / MB:.0f} MB, receiver {row['recv_rss'] / MB:.0f} MB"
        add(text, key, figure, max(row["send_rss"], row["recv_rss"]) <= RSS_GOAL)

    def ratio_goal(key: str, peer: str, floor: float, text: str, need_all: bool) -> None:
        case = cases.get(key)
        if case is None or "p2pcp" not in case["rows"]:
            add(text, key, "not measured", None)
            return
        p2 = case["rows"]["p2pcp"]
        done = f"{p2['ok']}/{p2['runs']} p2pcp runs completed"
        r = case["ratios"].get(peer)
        if not p2["ok"]:
            add(text, key, done, False)
            return
        if r is None:
            add(text, key, f"no {TOOL_LABEL[peer]} figure", None)
            return
        figure = f"{r:.2f}x" + (f" ({done})" if need_all else "")
        complete = p2["ok"] == p2["runs"] if need_all else True
        add(text, key, figure, complete and r >= floor)

    ratio_goal("5k", "rsync", 1.0, "5,000 x 8 KiB: p2pcp >= 1.0x rsync over ssh", False)
    ratio_goal("100k", "rsync", 1.0, "100,000 x 1 KiB: completes, >= 1.0x rsync over ssh", True)
    ratio_goal("1g", "wormhole", 1.0, "1 GiB: >= 1.0x magic-wormhole direct", False)
    ratio_goal("1g", "scp", 0.8, "1 GiB: >= 0.8x scp aes128-gcm", False)
    return result


def _cell(row: dict[str, Any], key: str, fmt: str, scale: float = 1.0) -> str:
    value = row.get(key)
    return "-" if value is None else format(value / scale, fmt)


def print_table(report: dict[str, Any]) -> None:
    print(f"p2pcp: {report['p2pcp']}")
    for text in report["peers"].values():
        print(f"peer:  {text}")
    m = report["machine"]
    print(
        f"machine: {m['cpus']} CPUs, Linux {m['kernel']}, Python {m['python']}; "
        f"{report['runs']} run(s) per tool, alternating; loopback"
    )
    print(f"work dir: {report['work_dir']}")
    for tool, why in report["skipped"].items():
        print(f"skipped: {TOOL_LABEL[tool]}: {why}")
    for key, why in report["skipped_cases"].items():
        print(f"skipped case {key}: {why}")
    print()
    print(
        "wall = receiver's wall time, median (min-max); MB/s = 10**6 bytes/s of the median;"
        " CPU = user+sys s,\nmedian; RSS = peak of the largest process, MB (10**6), max over"
        " runs; ready = sender's time to\nticket/code (p2pcp: import and hashing; not in wall);"
        " vs = p2pcp's speed against this peer\n(peer wall / p2pcp wall: > 1 means p2pcp faster)"
    )
    head = (
        f"{'case':<31} {'tool':<22} {'wall s':>24} {'MB/s':>7} {'CPU rx':>7} {'CPU tx':>7} "
        f"{'RSS rx':>7} {'RSS tx':>7} {'ready':>6} {'vs':>6}  path"
    )
    print(head)
    print("-" * len(head))
    for case in report["cases"]:
        first = True
        for tool, row in case["rows"].items():
            label = case["label"] if first else ""
            first = False
            if not row["ok"]:
                print(f"{label:<31} {TOOL_LABEL[tool]:<22} FAILED: {row['errors'][-1]}")
                continue
            wall = f"{row['wall']:.2f} ({row['wall_min']:.2f}-{row['wall_max']:.2f})"
            vs = case["ratios"].get(tool)
            failed = (
                f"  [{row['runs'] - row['ok']} run(s) failed]" if row["ok"] < row["runs"] else ""
            )
            print(
                f"{label:<31} {TOOL_LABEL[tool]:<22} {wall:>24} {row['mb_per_s']:7.1f} "
                f"{row['recv_cpu']:7.2f} {row['send_cpu']:7.2f} "
                f"{_cell(row, 'recv_rss', '.0f', MB):>7} {_cell(row, 'send_rss', '.0f', MB):>7} "
                f"{_cell(row, 'ready', '.2f'):>6} {'-' if vs is None else f'{vs:.2f}x':>6}  "
                f"{row['path']}{failed}"
            )
            for error in row["errors"]:
                print(f"{'':<31} {'':<22} failed run: {error}")
    print()
    print("goals")
    for goal in report["goals"]:
        met = {True: "met", False: "NOT MET", None: "-"}[goal["met"]]
        print(f"  {met:<8} {goal['goal']:<52} {goal['figure']}")


# -- main -----------------------------------------------------------------------


def disk_plan(cases: list[Case], work: Path, runs: int) -> tuple[list[Case], dict[str, str]]:
    """The cases whose source and received copies fit on the work dir's disk
    (one copy at a time, or all of a case's runs where deletion is deferred)."""
    free = shutil.disk_usage(work).free
    margin = 2 << 30  # room for logs, homes, zips, the file system's own needs
    kept: list[Case] = []
    skipped: dict[str, str] = {}
    for case in sorted(cases, key=lambda c: c.total_bytes):
        per_copy = case.total_bytes + case.files * 4096  # a block per small file, roughly
        copies = runs * len(case.tools) if case.files >= DEFER_DELETE_FILES else 1
        need = (1 + copies) * per_copy
        if need + margin <= free:
            kept.append(case)
            free -= per_copy  # the source stays; each received copy is removed after its run
        else:
            skipped[case.key] = (
                f"needs {need / 2**30:.1f} GiB + {margin >> 30} GiB margin, "
                f"{free / 2**30:.1f} GiB free in {work}"
            )
    order = [c.key for c in cases]
    kept.sort(key=lambda c: order.index(c.key))
    return kept, skipped


def _parse_list(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [x for x in items if x not in allowed]
    if unknown or not items:
        raise argparse.ArgumentTypeError(f"{what}: choose from {', '.join(allowed)}")
    return items


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--cases", default="1g,5k,100k,10g", help="comma list of 1g,5k,100k,10g")
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma list of " + ",".join(TOOLS))
    parser.add_argument("--runs", type=int, default=None, help="runs per tool (default 3; 1 quick)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--keep", action="store_true", help="keep the work dir and run logs")
    parser.add_argument("--work-dir", type=Path, help="where data goes (default: new in /var/tmp)")
    parser.add_argument("--timeout", type=float, default=0.0, help="seconds per transfer")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "p2pcp-bench-cache",
        help="where magic-wormhole's venv lives (default: %(default)s)",
    )
    args = parser.parse_args()
    try:
        case_keys = _parse_list(args.cases, ("1g", "5k", "100k", "10g"), "--cases")
        tools = _parse_list(args.tools, TOOLS, "--tools")
    except argparse.ArgumentTypeError as e:
        parser.error(str(e))
    runs = args.runs if args.runs is not None else (1 if args.quick else 3)
    if runs < 1:
        parser.error("--runs must be at least 1")
    all_cases = make_cases(args.quick)
    cases = [all_cases[k] for k in case_keys]
    for case in cases:
        case.tools = tuple(t for t in case.tools if t in tools)

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    if args.work_dir is not None:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="p2pcp-scale-", dir=args.work_dir))
    else:
        var_tmp = Path("/var/tmp")
        work = Path(
            tempfile.mkdtemp(prefix="p2pcp-scale-", dir=var_tmp if var_tmp.is_dir() else None)
        )
    bench = Bench(args, work)
    try:
        cases, skipped_cases = disk_plan(cases, work, runs)
        needed = {t for c in cases for t in c.tools}
        if needed & {"scp", "rsync"}:
            try:
                bench.setup_ssh()
            except RunError as e:
                for tool in ("scp", "rsync"):
                    bench.skipped[tool] = str(e)
        if "wormhole" in needed:
            try:
                bench.setup_wormhole()
            except (RunError, RuntimeError, OSError, subprocess.CalledProcessError) as e:
                bench.skipped["wormhole"] = str(e)
        report: dict[str, Any] = {
            "p2pcp": p2pcp_state(),
            "peers": peer_versions(bench),
            "machine": {
                "cpus": os.cpu_count(),
                "kernel": platform.release(),
                "python": platform.python_version(),
            },
            "runs": runs,
            "work_dir": str(work),
            "skipped": {t: why for t, why in bench.skipped.items() if t in needed},
            "skipped_cases": skipped_cases,
            "cases": [],
        }
        data = work / "data"
        data.mkdir()
        for case in cases:
            case_tools = [t for t in case.tools if t not in bench.skipped]
            _log(f"[{case.key}] generating {case.label} ({case.total_bytes / MB:,.0f} MB)")
            started = time.perf_counter()
            source, manifest = generate(case, data)
            os.sync()
            _log(f"[{case.key}] generated in {time.perf_counter() - started:.1f} s")
            results: dict[str, list[Run]] = {t: [] for t in case_tools}
            bench.wait_after_delete()
            for i in range(runs):
                for tool in case_tools:
                    result = bench.run(tool, case, source, manifest)
                    results[tool].append(result)
                    if result.error:
                        _log(f"[{case.key}] run {i + 1}/{runs} {tool}: FAILED: {result.error}")
                    else:
                        speed = case.total_bytes / result.wall / MB
                        _log(
                            f"[{case.key}] run {i + 1}/{runs} {tool}: {result.wall:.2f} s "
                            f"({speed:.1f} MB/s)"
                        )
            rows = {t: summarize(case, t, results[t]) for t in case_tools}
            report["cases"].append(
                {
                    "key": case.key,
                    "label": case.label,
                    "bytes": case.total_bytes,
                    "files": case.files,
                    "full_size": case.full_size,
                    "rows": rows,
                    "ratios": ratios(rows),
                }
            )
            bench.delete_deferred()
            if not args.keep:
                if source.is_dir():
                    shutil.rmtree(source)
                    bench.deleted_at = time.monotonic()
                else:
                    source.unlink()
        report["goals"] = goals(report)
        if args.json:
            print(json.dumps(report, indent=1))
        else:
            print_table(report)
    except KeyboardInterrupt:
        _log("interrupted")
        return 130
    finally:
        bench.teardown()
        if args.keep:
            _log(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
