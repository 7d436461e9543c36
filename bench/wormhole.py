"""magic-wormhole as a baseline for p2pcp: its goodput between two network namespaces.

``Wormhole`` drives magic-wormhole's own command-line tools through
subprocesses (this module itself uses the standard library only):

- ``ensure_installed()`` builds, once, a virtual environment under the cache
  directory (``CACHE/wormhole-venv``) with the versions pinned in
  ``REQUIREMENTS``: magic-wormhole 0.24.0, magic-wormhole-mailbox-server 0.8.0
  and magic-wormhole-transit-relay 0.5.0, from PyPI (pip also brings their
  dependencies, unpinned, e.g. Twisted 26.10.0 when this was written;
  ``versions()`` lists what was installed). Later
  calls only read a marker file.
- ``start_servers(netns, addr)`` runs the mailbox server
  (``twist wormhole-mailbox``, ws://ADDR:4000/v1) and the transit relay
  (``twist transitrelay``, tcp:ADDR:4001) under ``ip netns exec NETNS`` and
  waits until both accept TCP connections. Their database and logs go to a
  temporary directory under the cache directory, removed by
  ``stop_servers()``.
- ``transfer(...)`` runs ``wormhole send`` in one namespace and
  ``wormhole receive --accept-file`` in the other, both always given
  ``--relay-url`` and ``--transit-helper`` (so the public servers that are
  magic-wormhole's defaults are never used; Tor is never enabled), hands the
  code that the sender prints to the receiver, and checks the size of the file
  written into ``dest_dir``.

How the time is measured: ``transfer()`` returns the duration of the
receiver's own "rx file" timing event (``wormhole --dump-timing``): it starts
once the transit connection is up and ends when the last byte has been written
to the output file (page cache, no fsync), so the start-up, the PAKE exchange
over the mailbox, the connection race, the final rename and the
acknowledgement are not in it. The wall time of the whole receive command
(from its launch, once the sender has printed the code, to its exit; it adds
about 0.5 s of start-up and handshakes) is kept in ``last_wall_seconds``.
magic-wormhole tries direct hints first and the relay 2 s later, so by default
the data goes direct whenever a direct hint works. The connection that carried the data, as the
receiver describes it, in ``last_connection`` (``->tcp:HOST:PORT`` or
``<-HOST:PORT`` is direct, ``->relay:tcp:HOST:PORT`` went through the transit
relay) and ``last_relayed``.

Limitations: root only (``ip netns exec``); IPv4 addresses only; one pair of
servers per ``Wormhole`` at a time, on fixed ports 4000 and 4001; files only,
no directories (magic-wormhole zips those); a file of the same name already in
``dest_dir`` is deleted first; the content is checked by magic-wormhole itself
(the sender compares the receiver's SHA-256), this module checks the size.
Setting ``relay_only`` makes both clients run with ``--no-listen`` so that no
direct hints exist and the data goes through the transit relay. magic-wormhole
finds its direct hints by parsing ``ip addr``; it drops 127.0.0.1 when another
address exists, so a namespace with only ``lo`` would get loopback hints and
nothing else.

Self-test (root): ``python bench/wormhole.py --selftest [--size 256M]`` builds
namespaces ``p2w-a`` (sender, 10.78.0.1) and ``p2w-b`` (receiver, 10.78.0.2),
each joined by a veth to a bridge in ``p2w-s`` (servers, 10.78.0.3), no
shaping, moves a random file directly and then through the relay, prints MB/s
(10**6 bytes per second) and removes the namespaces.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REQUIREMENTS = (
    "magic-wormhole==0.24.0",
    "magic-wormhole-mailbox-server==0.8.0",
    "magic-wormhole-transit-relay==0.5.0",
)
MAILBOX_PORT = 4000
RELAY_PORT = 4001
MARKER = "p2pcp-bench.json"

# Runs inside the servers' namespace. "wait": exits 0 once every port accepts a
# connection. "free": exits 1 at once if any port already accepts one.
_PROBE = """
import socket, sys, time
mode, host, ports = sys.argv[1], sys.argv[2], [int(p) for p in sys.argv[3:]]
while ports:
    try:
        socket.create_connection((host, ports[0]), timeout=0.5).close()
        if mode == "free":
            sys.exit(1)
        ports.pop(0)
    except OSError:
        if mode == "free":
            ports.pop(0)
        else:
            time.sleep(0.05)
"""


def _tail(path: Path, limit: int = 300) -> str:
    """The last non-empty line of a log file, shortened: for one-line errors."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no output)"
    for raw in reversed(lines):
        line = raw.strip()
        if line and not line.startswith("Timing data written"):
            return line[-limit:]
    return "(no output)"


def _stop(proc: subprocess.Popen[bytes] | None, grace: float = 3.0) -> None:
    """Ends a process started in its own session, with whatever it started."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _client_env() -> dict[str, str]:
    """The environment without WORMHOLE_* settings: every server comes from a flag."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORMHOLE_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Wormhole:
    """magic-wormhole's CLI, mailbox server and transit relay, run in network namespaces."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = Path(cache_dir).resolve()
        self.venv = self.cache_dir / "wormhole-venv"
        self.bin = self.venv / "bin"
        self.relay_only = False  # True: both clients --no-listen, data via the transit relay
        self.last_connection = ""  # the receiver's description of the winning connection
        self.last_relayed: bool | None = None
        self.last_wall_seconds: float | None = None  # the whole `wormhole receive` command
        self._servers: list[subprocess.Popen[bytes]] = []
        self._state_dir: Path | None = None
        self._relay_url: str | None = None
        self._transit_helper: str | None = None

    # -- installation -------------------------------------------------------

    def ensure_installed(self) -> None:
        if self._installed():
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with open(self.cache_dir / "wormhole-venv.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be installing
            if self._installed():
                return
            print(f"installing {', '.join(REQUIREMENTS)} into {self.venv}", file=sys.stderr)
            (self.venv / MARKER).unlink(missing_ok=True)
            if not (self.bin / "python").exists():
                subprocess.run([sys.executable, "-m", "venv", str(self.venv)], check=True)
            pip = [str(self.bin / "python"), "-m", "pip", "--disable-pip-version-check"]
            result = subprocess.run(
                [*pip, "install", "--no-input", "-q", *REQUIREMENTS],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                last = (result.stderr.strip() or result.stdout.strip() or "?").splitlines()[-1]
                raise RuntimeError(f"pip install into {self.venv} failed: {last}")
            listing = subprocess.run(
                [*pip, "list", "--format=json"], check=True, capture_output=True, text=True
            ).stdout
            versions = {p["name"]: p["version"] for p in json.loads(listing)}
            for tool in ("wormhole", "twist"):
                if not (self.bin / tool).exists():
                    raise RuntimeError(f"{tool} is missing from {self.bin} after pip install")
            marker = {"requirements": list(REQUIREMENTS), "versions": versions}
            (self.venv / MARKER).write_text(json.dumps(marker, indent=1) + "\n")

    def _installed(self) -> bool:
        try:
            marker = json.loads((self.venv / MARKER).read_text())
        except (OSError, ValueError):
            return False
        return bool(
            marker.get("requirements") == list(REQUIREMENTS)
            and (self.bin / "wormhole").exists()
            and (self.bin / "twist").exists()
        )

    def versions(self) -> dict[str, str]:
        """Every package in the venv and its version (from the install marker)."""
        marker = json.loads((self.venv / MARKER).read_text())
        return dict(marker["versions"])

    # -- servers ------------------------------------------------------------

    def start_servers(self, netns: str, addr: str) -> None:
        if self._servers:
            raise RuntimeError("the wormhole servers are already running")
        if not self._installed():
            raise RuntimeError("magic-wormhole is not installed: call ensure_installed() first")
        free = self._probe("free", netns, addr, stderr=subprocess.PIPE)
        try:
            _, err = free.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            _stop(free)
            raise RuntimeError(f"probing {addr} in {netns} took over 15 s") from None
        if free.returncode == 1:
            raise RuntimeError(
                f"something already listens on {addr} port {MAILBOX_PORT} or {RELAY_PORT} "
                f"in {netns}"
            )
        if free.returncode != 0:
            why = err.decode(errors="replace").strip().splitlines()
            raise RuntimeError(
                f"cannot run in {netns} (exit {free.returncode}): {why[-1] if why else '?'}"
            )
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        state = Path(tempfile.mkdtemp(prefix="servers-", dir=self.cache_dir))
        self._state_dir = state
        twist = [str(self.bin / "twist")]
        commands = {
            "mailbox": [
                *twist,
                "wormhole-mailbox",
                f"--port=tcp:{MAILBOX_PORT}:interface={addr}",
                f"--channel-db={state / 'mailbox.sqlite'}",
            ],
            "transit-relay": [
                *twist,
                "transitrelay",
                f"--port=tcp:{RELAY_PORT}:interface={addr}",
            ],
        }
        try:
            logs: dict[subprocess.Popen[bytes], Path] = {}
            for name, command in commands.items():
                log = state / f"{name}.log"
                with open(log, "wb") as out:
                    proc = subprocess.Popen(
                        ["ip", "netns", "exec", netns, *command],
                        cwd=state,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                self._servers.append(proc)
                logs[proc] = log
            self._wait_listening(netns, addr, logs)
        except BaseException:
            self.stop_servers()
            raise
        self._relay_url = f"ws://{addr}:{MAILBOX_PORT}/v1"
        self._transit_helper = f"tcp:{addr}:{RELAY_PORT}"

    def _probe(
        self, mode: str, netns: str, addr: str, stderr: int | None = None
    ) -> subprocess.Popen[bytes]:
        command = [str(self.bin / "python"), "-c", _PROBE, mode, addr]
        return subprocess.Popen(
            ["ip", "netns", "exec", netns, *command, str(MAILBOX_PORT), str(RELAY_PORT)],
            stdin=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )

    def _wait_listening(
        self, netns: str, addr: str, logs: dict[subprocess.Popen[bytes], Path]
    ) -> None:
        probe = self._probe("wait", netns, addr)
        deadline = time.monotonic() + 30.0
        try:
            while probe.poll() is None:
                for proc, log in logs.items():
                    if proc.poll() is not None:
                        raise RuntimeError(
                            f"{log.stem} exited with {proc.returncode}: {_tail(log)}"
                        )
                    # twist logs a failed bind and keeps running without a listener.
                    failed = re.search(
                        r"Couldn't listen on [^\n\"\\]+", log.read_text(errors="replace")
                    )
                    if failed:
                        raise RuntimeError(f"{log.stem}: {failed.group(0)}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"wormhole servers not listening on {addr} after 30 s")
                time.sleep(0.05)
            if probe.returncode != 0:
                raise RuntimeError(f"probing the servers in {netns} failed ({probe.returncode})")
        finally:
            _stop(probe, grace=1.0)

    def stop_servers(self) -> None:
        for proc in self._servers:
            _stop(proc)
        self._servers = []
        self._relay_url = self._transit_helper = None
        if self._state_dir is not None:
            shutil.rmtree(self._state_dir, ignore_errors=True)
            self._state_dir = None

    # -- one transfer -------------------------------------------------------

    def _client(self, netns: str, timing: Path) -> list[str]:
        assert self._relay_url is not None and self._transit_helper is not None
        return [
            "ip",
            "netns",
            "exec",
            netns,
            str(self.bin / "wormhole"),
            "--relay-url",
            self._relay_url,
            "--transit-helper",
            self._transit_helper,
            "--dump-timing",
            str(timing),
        ]

    def transfer(
        self, send_netns: str, recv_netns: str, path: Path, dest_dir: Path, timeout: float
    ) -> float:
        if self._relay_url is None or not self._servers:
            raise RuntimeError("the wormhole servers are not running: call start_servers() first")
        path = Path(path).resolve()
        if not path.is_file():
            raise RuntimeError(f"not a file: {path}")
        size = path.stat().st_size
        dest_dir = Path(dest_dir).resolve()
        dest_dir.mkdir(parents=True, exist_ok=True)
        target = dest_dir / path.name
        if target == path:
            raise RuntimeError(f"dest_dir {dest_dir} holds the source file itself")
        partial = dest_dir / (path.name + ".tmp")  # where wormhole writes before renaming
        target.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
        self.last_connection = ""
        self.last_relayed = None
        self.last_wall_seconds = None
        listen = ["--no-listen"] if self.relay_only else []
        deadline = time.monotonic() + timeout
        sender: subprocess.Popen[bytes] | None = None
        receiver: subprocess.Popen[bytes] | None = None
        with tempfile.TemporaryDirectory(prefix="p2w-xfer-") as tmp_name:
            tmp = Path(tmp_name)
            send_log, recv_log = tmp / "send.log", tmp / "receive.log"
            try:
                with open(send_log, "wb") as out:
                    sender = subprocess.Popen(
                        [
                            *self._client(send_netns, tmp / "send-timing.json"),
                            "send",
                            "--hide-progress",
                            "--no-qr",
                            *listen,
                            str(path),
                        ],
                        cwd=path.parent,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env=_client_env(),
                        start_new_session=True,
                    )
                code = None
                while code is None:
                    found = re.search(
                        r"Wormhole code is: (\S+)", send_log.read_text(errors="replace")
                    )
                    if found:
                        code = found.group(1)
                    elif sender.poll() is not None:
                        raise RuntimeError(
                            f"wormhole send exited with {sender.returncode} before printing "
                            f"a code: {_tail(send_log)}"
                        )
                    elif time.monotonic() > deadline:
                        raise RuntimeError(f"wormhole send printed no code within {timeout:g} s")
                    else:
                        time.sleep(0.02)
                started = time.monotonic()
                with open(recv_log, "wb") as out:
                    receiver = subprocess.Popen(
                        [
                            *self._client(recv_netns, tmp / "receive-timing.json"),
                            "receive",
                            "--accept-file",
                            "--hide-progress",
                            *listen,
                            "--output-file",
                            str(target),
                            code,
                        ],
                        cwd=dest_dir,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env=_client_env(),
                        start_new_session=True,
                    )
                while True:
                    if receiver.poll() is not None and self.last_wall_seconds is None:
                        self.last_wall_seconds = time.monotonic() - started
                    if receiver.returncode not in (None, 0):
                        raise RuntimeError(
                            f"wormhole receive exited with {receiver.returncode}: {_tail(recv_log)}"
                        )
                    if sender.poll() not in (None, 0):
                        raise RuntimeError(
                            f"wormhole send exited with {sender.returncode}: {_tail(send_log)}"
                        )
                    if receiver.returncode == 0 and sender.returncode == 0:
                        break
                    if time.monotonic() > deadline:
                        have = partial.stat().st_size if partial.exists() else 0
                        have = target.stat().st_size if target.exists() else have
                        raise RuntimeError(
                            f"wormhole transfer timed out after {timeout:g} s "
                            f"({have} of {size} bytes received)"
                        )
                    time.sleep(0.02)
                found = re.search(r"Receiving \((.*)\)\.\.", recv_log.read_text(errors="replace"))
                if found:
                    self.last_connection = found.group(1)
                    self.last_relayed = "relay:" in self.last_connection
                seconds = self._rx_seconds(tmp / "receive-timing.json")
                received = target.stat().st_size if target.exists() else -1
                if received != size:
                    raise RuntimeError(
                        f"received {received} bytes in {target}, the source has {size}"
                    )
                if self.relay_only and self.last_relayed is not True:
                    raise RuntimeError(
                        f"relay_only, but the data went {self.last_connection or '(unknown)'}"
                    )
                return seconds
            finally:
                _stop(receiver, grace=1.0)
                _stop(sender, grace=1.0)
                partial.unlink(missing_ok=True)

    @staticmethod
    def _rx_seconds(timing: Path) -> float:
        try:
            events = json.loads(timing.read_text())
        except (OSError, ValueError) as e:
            raise RuntimeError(f"no timing data from wormhole receive: {e}") from None
        for event in events:
            if event.get("name") == "rx file" and event.get("stop") is not None:
                return float(event["stop"]) - float(event["start"])
        raise RuntimeError("wormhole receive's timing data has no 'rx file' event")


# -- self-test ----------------------------------------------------------------

PREFIX = "p2w-"
SEND_NS, RECV_NS, SERVER_NS = "p2w-a", "p2w-b", "p2w-s"
SEND_ADDR, RECV_ADDR, SERVER_ADDR = "10.78.0.1", "10.78.0.2", "10.78.0.3"


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def _remove_namespaces() -> None:
    listing = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=False
    ).stdout
    for line in listing.splitlines():
        name = line.split(" ", 1)[0]
        if name.startswith(PREFIX):
            subprocess.run(["ip", "netns", "delete", name], check=False)


def _build_namespaces() -> None:
    """p2w-a and p2w-b, each with a veth to a bridge in p2w-s; 1500-byte MTU, no shaping."""
    for ns in (SEND_NS, RECV_NS, SERVER_NS):
        _ip("netns", "add", ns)
        _ip("-n", ns, "link", "set", "lo", "up")
    _ip("-n", SERVER_NS, "link", "add", "br0", "type", "bridge")
    _ip("-n", SERVER_NS, "addr", "add", f"{SERVER_ADDR}/24", "dev", "br0")
    _ip("-n", SERVER_NS, "link", "set", "br0", "up")
    for ns, addr, port in ((SEND_NS, SEND_ADDR, "va"), (RECV_NS, RECV_ADDR, "vb")):
        _ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", port)
        _ip("-n", ns, "link", "set", port, "netns", SERVER_NS)
        _ip("-n", SERVER_NS, "link", "set", port, "master", "br0")
        _ip("-n", SERVER_NS, "link", "set", port, "up")
        _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")


def _parse_size(text: str) -> int:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    found = re.fullmatch(r"(\d+)([KMG]?)(?:i?B)?", text.strip(), re.IGNORECASE)
    if not found:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    return int(found.group(1)) * units[found.group(2).upper()]


def _selftest(cache_dir: Path, size: int, timeout: float) -> int:
    if os.geteuid() != 0:
        print("the self-test needs root (ip netns)", file=sys.stderr)
        return 2
    wormhole = Wormhole(cache_dir)
    wormhole.ensure_installed()
    versions = wormhole.versions()
    shown = ("magic-wormhole", "magic-wormhole-mailbox-server", "magic-wormhole-transit-relay")
    print(", ".join(f"{name} {versions.get(name, '?')}" for name in (*shown, "Twisted")))
    print(f"venv: {wormhole.venv}")
    _remove_namespaces()
    failures = 0
    try:
        _build_namespaces()
        print(
            f"namespaces: sender {SEND_NS} {SEND_ADDR}, receiver {RECV_NS} {RECV_ADDR}, "
            f"servers {SERVER_NS} {SERVER_ADDR} (bridge), veth MTU 1500, no shaping"
        )
        wormhole.start_servers(SERVER_NS, SERVER_ADDR)
        with tempfile.TemporaryDirectory(prefix="p2w-selftest-") as tmp_name:
            tmp = Path(tmp_name)
            source = tmp / "random.bin"
            with open(source, "wb") as f:
                left = size
                while left:
                    chunk = min(left, 1 << 20)
                    f.write(os.urandom(chunk))
                    left -= chunk
            print(f"moving {size / 2**20:g} MiB of random data, MB = 10**6 bytes")
            for relay_only in (False, True):
                label = "relay only" if relay_only else "default"
                wormhole.relay_only = relay_only
                try:
                    seconds = wormhole.transfer(SEND_NS, RECV_NS, source, tmp / "received", timeout)
                except RuntimeError as e:
                    failures += 1
                    print(f"  {label:<11} FAILED: {e}")
                    continue
                wall = wormhole.last_wall_seconds or float("nan")
                how = "relayed" if wormhole.last_relayed else "direct"
                print(
                    f"  {label:<11} {size / seconds / 1e6:8.1f} MB/s  {how} "
                    f"({wormhole.last_connection}); rx file {seconds:.2f} s, "
                    f"receive command {wall:.2f} s wall = {size / wall / 1e6:.1f} MB/s"
                )
    finally:
        wormhole.stop_servers()
        _remove_namespaces()
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--selftest", action="store_true", help="run the self-test (root)")
    parser.add_argument("--size", type=_parse_size, default=256 << 20, help="default 256M")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per transfer")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "p2pcp-bench-cache",
        help="where the venv goes (default: %(default)s)",
    )
    args = parser.parse_args()
    if not args.selftest:
        parser.print_help()
        return 2
    return _selftest(args.cache_dir, args.size, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
