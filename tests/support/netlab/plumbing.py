"""Commands in network namespaces, the lab's one way to build and drive them.

Every topology (natlab.py, link.py) is built from these calls and from no
other ``ip``/``nft`` code, so a namespace is made, wired and deleted the same
way for the tests and the benches. Rules:

- Every command is bounded (``COMMAND_TIMEOUT_S``): configuring a namespace
  takes milliseconds, so a hung command is a lab bug, reported as
  ``LabError`` with the command's stderr.
- A namespace is deleted only after every process still in it is killed
  (by pid, from ``ip netns pids``): only the lab starts processes there, and
  a live process would keep its devices alive.
- Random loss is one nftables rule on a netdev ingress hook (the kernels the
  lab runs on have no ``tc netem``), counting IPv4 frames and dropping a
  share of them; ARP is spared, so loss never stalls address resolution,
  which a real lossy path would hide behind its link layer's retries.
- Background processes (``LabProcess``) have their stdout read by a thread,
  line by line with arrival times, so JSON events can be awaited with a
  timeout and a failure message can show what the process said.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Every command that configures the lab is quick; a hung one is a lab bug.
COMMAND_TIMEOUT_S = 20.0
# How long to wait by default for a background process's line or event.
EVENT_TIMEOUT_S = 60.0
# The netdev ingress priority of the lab's drop rules: before anything else.
INGRESS_PRIORITY = -500
# Random loss thresholds are drawn out of this many (0.001% steps).
LOSS_SCALE = 100000


class LabError(RuntimeError):
    """The lab cannot be built or driven here."""


def run(
    argv: list[str],
    *,
    timeout: float = COMMAND_TIMEOUT_S,
    check: bool = True,
    input_text: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command (in the root namespace unless argv is in_ns's); if check,
    raise LabError with its stderr when it fails."""
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        input=input_text,
        stdin=None if input_text is not None else subprocess.DEVNULL,
        check=False,
    )
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()}")
    return result


def in_ns(ns: str, argv: list[str]) -> list[str]:
    """argv run inside namespace ns."""
    return ["ip", "netns", "exec", ns, *argv]


# -- namespaces and links ----------------------------------------------------


def exec_in(
    ns: str,
    argv: list[str],
    *,
    timeout: float = COMMAND_TIMEOUT_S,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv in ns to completion; never raises on its exit code."""
    return run(in_ns(ns, argv), timeout=timeout, env=env, check=False)


def list_namespaces() -> list[str]:
    out = run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def add_namespace(ns: str, *, has_ipv6: bool = True) -> None:
    """A new namespace with its loopback up (and IPv6 off unless has_ipv6)."""
    run(["ip", "netns", "add", ns])
    if not has_ipv6:
        sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")
        sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1")
    ip(ns, "link", "set", "lo", "up")


def delete_namespace(ns: str) -> None:
    """Kill what still runs in ns (processes the lab started), then delete it."""
    for pid in run(["ip", "netns", "pids", ns], check=False).stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    run(["ip", "netns", "delete", ns], check=False)


def ip(ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run(["ip", "-n", ns, *args])


def veth(ns1: str, name1: str, ns2: str, name2: str) -> None:
    """A veth pair: name1 in ns1, name2 in ns2 (both down, no address)."""
    ip(ns1, "link", "add", name1, "type", "veth", "peer", "name", name2, "netns", ns2)


def address(ns: str, device: str, cidr: str) -> None:
    """Give device in ns the address cidr and bring it up."""
    ip(ns, "addr", "add", cidr, "dev", device)
    ip(ns, "link", "set", device, "up")


def sysctl(ns: str, name: str, value: str | None = None) -> str:
    """Read (or set) a sysctl inside ns."""
    path = "/proc/sys/" + name.replace(".", "/")
    if value is None:
        return run(in_ns(ns, ["cat", path])).stdout.strip()
    run(in_ns(ns, ["sh", "-c", f"echo {value} > {path}"]))
    return value


# -- nftables ----------------------------------------------------------------


def nft(ns: str, ruleset: str) -> None:
    """Load an nftables ruleset (``nft -f`` syntax) into ns."""
    run(in_ns(ns, ["nft", "-f", "-"]), input_text=ruleset)


def nft_delete(ns: str, family: str, table: str, *, check: bool = True) -> None:
    run(in_ns(ns, ["nft", "delete", "table", family, table]), check=check)


def ingress_table(table: str, devices: tuple[str, ...], *, policy: str, rules: str = "") -> str:
    """A netdev table with one ingress chain per device, all alike."""
    chains = "\n".join(
        f"""  chain {device} {{
    type filter hook ingress device "{device}" priority {INGRESS_PRIORITY}; policy {policy};
    {rules}
  }}"""
        for device in devices
    )
    return f"table netdev {table} {{\n{chains}\n}}\n"


def random_loss_ruleset(table: str, devices: tuple[str, ...], percent: float) -> str:
    """Drop percent % of the IPv4 frames entering each device; count both."""
    threshold = round(percent * LOSS_SCALE / 100)
    rules = (
        "meta protocol ip counter\n"
        f"    meta protocol ip numgen random mod {LOSS_SCALE} < {threshold} counter drop"
    )
    return ingress_table(table, devices, policy="accept", rules=rules)


def loss_counters(ns: str, table: str) -> dict[str, tuple[int, int]]:
    """Per device of a random_loss_ruleset table: (IPv4 frames seen, dropped)."""
    result = run(in_ns(ns, ["nft", "-j", "list", "table", "netdev", table]), check=False)
    if result.returncode != 0:
        return {}
    found: dict[str, list[int]] = {}
    for item in json.loads(result.stdout).get("nftables", []):
        rule = item.get("rule")
        if rule is None:
            continue
        for expression in rule["expr"]:
            if "counter" in expression:
                found.setdefault(rule["chain"], []).append(int(expression["counter"]["packets"]))
    return {chain: (values[0], values[1]) for chain, values in found.items() if len(values) == 2}


# -- whether the lab can run here --------------------------------------------


def unavailable_reason(probe_ns: str) -> str | None:
    """Why no lab can be built here (one line), or None.

    Needs Linux, root, ``ip``/``nft``/``tc``, TAP devices and a C compiler
    (the delay line), and checks that a namespace (named probe_ns, deleted
    again) really takes an nftables table: containers may refuse either.
    """
    if sys.platform != "linux":
        return "the network lab needs Linux (network namespaces)"
    if os.geteuid() != 0:
        return "the network lab needs root (network namespaces, nftables, TAP devices)"
    for tool in ("ip", "nft", "tc"):
        if shutil.which(tool) is None:
            return f"the network lab needs `{tool}` (apt-get install iproute2 nftables)"
    if not os.path.exists("/dev/net/tun"):
        return "the network lab needs /dev/net/tun (TAP devices for the delay line)"
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        return "the network lab needs a C compiler for its delay line (apt-get install gcc)"
    try:
        made = run(["ip", "netns", "add", probe_ns], check=False)
        if made.returncode != 0:
            return f"`ip netns add` does not work here: {made.stderr.strip()}"
        probe = run(in_ns(probe_ns, ["nft", "add", "table", "ip", "probe"]), check=False)
        if probe.returncode != 0:
            return f"nftables does not work in a namespace here: {probe.stderr.strip()}"
    finally:
        run(["ip", "netns", "delete", probe_ns], check=False)
    return None


# -- background processes ----------------------------------------------------


@dataclass
class LabProcess:
    """A background process in a namespace; stdout lines kept (JSON parsed)."""

    name: str
    process: subprocess.Popen[str]
    stderr_path: Path
    lines: list[str] = field(default_factory=list)
    # time.monotonic() when each line of ``lines`` arrived.
    arrivals: list[float] = field(default_factory=list)
    _queue: queue.Queue[tuple[float, str] | None] = field(default_factory=queue.Queue)
    _reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def start_reading(self) -> None:
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        with contextlib.suppress(ValueError, OSError):
            for raw in self.process.stdout:
                line, arrival = raw.rstrip("\n"), time.monotonic()
                self.arrivals.append(arrival)
                self.lines.append(line)
                self._queue.put((arrival, line))
        self._queue.put(None)

    def _next(self, deadline: float) -> tuple[float, str] | None:
        """The next unread line, or None at EOF; raises queue.Empty at deadline."""
        item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
        if item is None:
            self._queue.put(None)  # keep EOF visible to later calls
        return item

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every stdout line so far that is a JSON object."""
        return [event for _, event in self.timed_events()]

    def timed_events(self) -> list[tuple[float, dict[str, Any]]]:
        """(arrival time, event) for every JSON object line so far."""
        parsed = []
        for arrival, line in zip(list(self.arrivals), list(self.lines), strict=False):
            value = _json_object(line)
            if value is not None:
                parsed.append((arrival, value))
        return parsed

    def next_json(self, timeout: float) -> tuple[float, dict[str, Any]] | None:
        """The next unread line that is a JSON object (with its arrival), or
        None at EOF or timeout: for callers that report rather than fail."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self._next(deadline)
            except queue.Empty:
                return None
            if item is None:
                return None
            value = _json_object(item[1])
            if value is not None:
                return item[0], value

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def describe(self) -> str:
        """Exit status, stdout and stderr tail: for assertion messages."""
        code = self.process.poll()
        out = "\n".join(self.lines[-40:])
        err = "\n".join(self.stderr().splitlines()[-40:])
        return f"[{self.name}] exit={code}\n--- stdout ---\n{out}\n--- stderr ---\n{err}"

    def wait_line(self, matches: Callable[[str], bool], timeout: float = EVENT_TIMEOUT_S) -> str:
        """The next unread stdout line that matches; AssertionError if none comes."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self._next(deadline)
            except queue.Empty:
                raise AssertionError(
                    f"timed out after {timeout:.0f} s\n{self.describe()}"
                ) from None
            if item is None:
                raise AssertionError(f"process ended before the line came\n{self.describe()}")
            if matches(item[1]):
                return item[1]

    def wait_event(
        self,
        name: str,
        timeout: float = EVENT_TIMEOUT_S,
        where: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any]:
        """The next ``--json`` event called name (and matching where)."""

        def is_it(line: str) -> bool:
            event = _json_object(line)
            return (
                event is not None and event.get("event") == name and (where is None or where(event))
            )

        return json.loads(self.wait_line(is_it, timeout))  # type: ignore[no-any-return]

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"still running after {timeout:.0f} s\n{self.describe()}"
            ) from None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """End the process (if running) by its pid and close its pipes."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self._reader is not None:  # EOF comes once the process is gone
            self._reader.join(timeout=5)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def _json_object(line: str) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def start_process(
    ns: str,
    argv: list[str],
    *,
    name: str,
    stderr_path: Path,
    env: dict[str, str] | None = None,
    stdin_pipe: bool = False,
) -> LabProcess:
    """Start argv in the background in ns; stdout is read line by line."""
    with stderr_path.open("w") as stderr_file:
        process = subprocess.Popen(
            in_ns(ns, argv),
            stdout=subprocess.PIPE,
            stderr=stderr_file,
            stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
            text=True,
            env=env,
        )
    lab_process = LabProcess(name=name, process=process, stderr_path=stderr_path)
    lab_process.start_reading()
    return lab_process
