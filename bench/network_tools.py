"""The tools bench/network.py measures, one transfer at a time, in the lab.

- ``run_p2pcp``: ``p2pcp send --once --no-relay -v`` in the sender
  namespace, ``p2pcp receive --no-relay`` in the receiver's, separate
  P2PCP_HOMEs, a ``Variant``'s environment and arguments; the time is the
  receiver's ``done`` event "seconds". At the cap: the last progress
  event's bytes over its time. The note carries the datagram sizes from the
  sender's log (``datagram_note``).
- ``run_tcp``: probe.py ``tcp-serve`` / ``tcp-fetch`` (one kernel TCP
  connection, connect to EOF).
- ``run_wormhole``: bench/wormhole.py's ``Wormhole.transfer`` (loaded lazily
  by ``load_wormhole``; any failure becomes a note, never an exception).

Every result carries the delay line's CPU share and the machine's busy
share over the run (``Meter``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from transfer import p2pcp_command

from tests.support.netlab import link as netlab
from tests.support.netlab.link import ADDR_A, NS_A, NS_B, LinkLab
from tests.support.netlab.plumbing import COMMAND_TIMEOUT_S, LabProcess, start_process

BENCH = Path(__file__).resolve().parent
TCP_PORT = 5201
# Seconds a sender may take to hash its file and print the ticket.
TICKET_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Variant:
    """One way to run p2pcp: a label, extra environment, extra arguments."""

    label: str
    env: tuple[tuple[str, str], ...] = ()
    send_args: tuple[str, ...] = ()
    receive_args: tuple[str, ...] = ()

    @property
    def needs_congestion_flag(self) -> bool:
        return "--congestion" in self.send_args + self.receive_args


DEFAULT_VARIANT = "p2pcp"
FLOOR_VARIANT = "aioquic reno @1452"
TCP_TOOL = "tcp"
WORMHOLE_TOOL = "magic-wormhole"


def _congestion(name: str) -> tuple[str, ...]:
    return ("--congestion", name)


BUILTIN_VARIANTS = {
    "default": Variant(DEFAULT_VARIANT),
    "bbr": Variant("p2pcp bbr", send_args=_congestion("bbr"), receive_args=_congestion("bbr")),
    "cubic": Variant(
        "p2pcp cubic", send_args=_congestion("cubic"), receive_args=_congestion("cubic")
    ),
    "reno1452": Variant(
        FLOOR_VARIANT,
        env=(("P2PCP_MAX_DATAGRAM_SIZE", "1452"),),
        send_args=_congestion("reno"),
        receive_args=_congestion("reno"),
    ),
}


def parse_variant(spec: str) -> Variant:
    """A built-in name (default, bbr, cubic, reno1452, or its label) or a spec.

    Spec: ``LABEL|ENV=V ENV2=V2|SEND ARGS|RECEIVE ARGS`` (later parts optional).
    """
    if "|" not in spec:
        key = spec.strip().lower()
        for name, variant in BUILTIN_VARIANTS.items():
            if key in (name, variant.label.lower()):
                return variant
        known = ", ".join(BUILTIN_VARIANTS)
        raise argparse.ArgumentTypeError(f"unknown p2pcp variant {spec!r} (built-in: {known})")
    label, *rest = spec.split("|")
    parts = [*rest, "", "", ""][:3]
    env = []
    for item in shlex.split(parts[0]):
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"not ENV=VALUE: {item!r} in {spec!r}")
        env.append((key, value))
    return Variant(
        label.strip() or "custom",
        env=tuple(env),
        send_args=tuple(shlex.split(parts[1])),
        receive_args=tuple(shlex.split(parts[2])),
    )


@dataclass
class RunResult:
    """One transfer by one tool."""

    tool: str
    finished: bool
    bytes_moved: int
    seconds: float | None  # the tool's own transfer time (or until the cap)
    wall_s: float
    note: str = ""
    line_cpu_percent: float = 0.0  # the delay line, percent of one core
    machine_busy_percent: float = 0.0  # all cores, everything on the machine
    # p2pcp only: each end's process, percent of one core over the run
    sender_cpu_percent: float | None = None
    receiver_cpu_percent: float | None = None
    # CPU seconds over the run: the delay line, and p2pcp's two ends together
    line_cpu_s: float = 0.0
    ends_cpu_s: float | None = None

    @property
    def mb_per_s(self) -> float | None:
        if not self.seconds or self.bytes_moved <= 0:
            return None
        return self.bytes_moved / self.seconds / 1e6

    @property
    def wall_mb_per_s(self) -> float | None:
        if self.wall_s <= 0 or self.bytes_moved <= 0:
            return None
        return self.bytes_moved / self.wall_s / 1e6


@dataclass
class ToolSummary:
    tool: str
    runs: list[RunResult] = field(default_factory=list)
    skipped: str = ""  # why the tool did not run at all

    @property
    def median_mb_per_s(self) -> float | None:
        speeds = [s for s in (r.mb_per_s for r in self.runs) if s is not None]
        return statistics.median(speeds) if speeds else None

    @property
    def finished_count(self) -> int:
        return sum(r.finished for r in self.runs)


class Meter:
    """CPU over one run: the delay line, the machine, and (p2pcp) both ends."""

    def __init__(self, lab: LinkLab, sender_pid: int | None = None) -> None:
        self.lab = lab
        self.line_cpu = lab.delay_line_cpu_s()
        self.busy, self.total = netlab.system_cpu()
        self.sender_pid = sender_pid
        self.sender_cpu = _process_cpu_s(sender_pid)
        self.started = time.monotonic()

    def fill(self, result: RunResult, receiver_pid: int | None = None) -> RunResult:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        result.line_cpu_s = self.lab.delay_line_cpu_s() - self.line_cpu
        result.line_cpu_percent = 100 * result.line_cpu_s / elapsed
        busy, total = netlab.system_cpu()
        result.machine_busy_percent = 100 * (busy - self.busy) / max(total - self.total, 1e-6)
        sender_cpu = _process_cpu_s(self.sender_pid)
        if sender_cpu is not None and self.sender_cpu is not None:
            result.sender_cpu_percent = 100 * (sender_cpu - self.sender_cpu) / elapsed
        receiver_cpu = _process_cpu_s(receiver_pid)
        if receiver_cpu is not None:
            result.receiver_cpu_percent = 100 * receiver_cpu / elapsed
        if sender_cpu is not None and self.sender_cpu is not None and receiver_cpu is not None:
            result.ends_cpu_s = sender_cpu - self.sender_cpu + receiver_cpu
        return result


def _process_cpu_s(pid: int | None) -> float | None:
    """CPU seconds of a process not yet reaped, or None."""
    if pid is None:
        return None
    try:
        return netlab.process_cpu_seconds(pid)
    except (OSError, ValueError, IndexError):
        return None


# -- the tools -------------------------------------------------------------


def run_p2pcp(lab: LinkLab, variant: Variant, path: Path, work: Path, cap_s: float) -> RunResult:
    run_dir = Path(tempfile.mkdtemp(prefix="p2pcp-", dir=work))
    out = run_dir / "out"
    # -v: the sender logs its datagram sizes (see datagram_note); a wide
    # COLUMNS keeps rich from wrapping those lines.
    env = {**os.environ, "COLUMNS": "400", **dict(variant.env)}
    size = path.stat().st_size
    command = p2pcp_command()
    sender: LabProcess | None = None
    receiver: LabProcess | None = None
    send_argv = [*command, "send", "--once", "--json", "--no-relay", "-v", *variant.send_args]
    try:
        sender = start_process(
            NS_A,
            [*send_argv, str(path)],
            name="send",
            stderr_path=run_dir / "send.stderr",
            env={**env, "P2PCP_HOME": str(run_dir / "send-home")},
        )
        ticket = None
        deadline = time.monotonic() + TICKET_TIMEOUT_S
        while ticket is None:
            item = sender.next_json(max(0.0, deadline - time.monotonic()))
            if item is None:
                why = _tail(run_dir / "send.stderr")
                return RunResult(variant.label, False, 0, None, 0.0, f"no ticket: {why}")
            if item[1].get("event") == "ticket":
                ticket = str(item[1]["ticket"])
        meter = Meter(lab, sender.pid)
        started = time.monotonic()
        receive_argv = [*command, "receive", ticket, "--out", str(out), "--json", "--no-relay"]
        receiver = start_process(
            NS_B,
            [*receive_argv, *variant.receive_args],
            name="receive",
            stderr_path=run_dir / "receive.stderr",
            env={**env, "P2PCP_HOME": str(run_dir / "recv-home")},
        )
        done: dict[str, Any] | None = None
        progress_at, progress_bytes = started, 0
        error = ""
        end = started + cap_s
        while done is None:
            item = receiver.next_json(max(0.0, end - time.monotonic()))
            if item is None:
                break
            arrival, event = item
            kind = event.get("event")
            if kind == "progress":
                progress_at, progress_bytes = arrival, int(event.get("bytes_done", 0))
            elif kind == "done":
                done = event
            elif kind == "error":
                error = str(event.get("message", ""))
        wall = time.monotonic() - started
        if done is None:
            if receiver.process.poll() is None:
                note = f"not finished within {cap_s:g} s"
            else:
                why = error or _tail(run_dir / "receive.stderr")
                note = f"receive exited {receiver.process.returncode}: {why}"
            seconds = progress_at - started if progress_bytes else None
            note = "; ".join(filter(None, [note, datagram_note(run_dir / "send.stderr")]))
            return meter.fill(
                RunResult(variant.label, False, progress_bytes, seconds, wall, note),
                receiver.pid,
            )
        note = "; ".join(filter(None, [_path_note(done), datagram_note(run_dir / "send.stderr")]))
        result = meter.fill(
            RunResult(variant.label, True, size, float(done["seconds"]), wall, note),
            receiver.pid,
        )
        with contextlib.suppress(subprocess.TimeoutExpired):
            receiver.process.wait(timeout=30)
            sender.process.wait(timeout=30)
        received = out / path.name
        if not received.exists() or received.stat().st_size != size:
            result.finished = False
            result.note = "received file missing or of the wrong size"
        return result
    finally:
        for process in (receiver, sender):
            if process is not None:
                process.stop(signal.SIGKILL)
        shutil.rmtree(run_dir, ignore_errors=True)


def datagram_note(send_log: Path) -> str:
    """The sender's datagram sizes in order, from its -v log, and why it fell back.

    E.g. "datagrams 1352>1452>16000>1452 (fragmented datagrams lost 8.00%
    against 3.85% whole)". Empty if the log has no such lines (a p2pcp that
    words them differently): a figure to read, not to rely on.
    """
    try:
        text = re.sub(r"\s+", " ", send_log.read_text(errors="replace"))
    except OSError:
        return ""
    sizes = re.findall(r"datagram size now (\d+)", text)
    if not sizes:
        return ""
    note = "datagrams " + ">".join(sizes)
    reasons = re.findall(r"(fragmented datagrams lost [^:]*):", text)
    if reasons:
        note += f" ({reasons[-1]})"
    return note


def _path_note(done: dict[str, Any]) -> str:
    main_path = done.get("main_path")
    return f"path {main_path}" if main_path else ""


def run_tcp(lab: LinkLab, path: Path, work: Path, cap_s: float) -> RunResult:
    size = path.stat().st_size
    out = work / "tcp-received.bin"
    probe = [sys.executable, str(netlab.PROBES)]
    server = start_process(
        NS_A,
        [*probe, "tcp-serve", ADDR_A, str(TCP_PORT), str(path)],
        name="tcp-serve",
        stderr_path=work / "tcp-serve.stderr",
    )
    try:
        ready = server.next_json(COMMAND_TIMEOUT_S)
        if ready is None:
            return RunResult(TCP_TOOL, False, 0, None, 0.0, "the TCP server did not start")
        meter = Meter(lab)
        started = time.monotonic()
        fetch = subprocess.run(
            netlab.in_ns(
                NS_B,
                [*probe, "tcp-fetch", ADDR_A, str(TCP_PORT), str(out), "--timeout-s", str(cap_s)],
            ),
            capture_output=True,
            text=True,
            timeout=cap_s + 60,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        wall = time.monotonic() - started
        lines = fetch.stdout.strip().splitlines()
        if fetch.returncode != 0 or not lines:
            note = f"tcp-fetch failed: {fetch.stderr.strip()[-200:]}"
            return meter.fill(RunResult(TCP_TOOL, False, 0, None, wall, note))
        report = json.loads(lines[-1])
        finished = bool(report["finished"]) and int(report["bytes"]) == size
        note = f"cc {ready[1].get('congestion', '?')}"
        if not finished:
            note += f"; not finished within {cap_s:g} s"
        return meter.fill(
            RunResult(TCP_TOOL, finished, int(report["bytes"]), report["seconds"], wall, note)
        )
    finally:
        server.stop(signal.SIGKILL)
        out.unlink(missing_ok=True)


def load_wormhole(cache: Path) -> tuple[Any, str]:
    """bench/wormhole.py's Wormhole, installed; or None and why not."""
    source = BENCH / "wormhole.py"
    if not source.exists():
        return None, "bench/wormhole.py is missing"
    try:
        # Not "wormhole": that is also magic-wormhole's own package name.
        spec = importlib.util.spec_from_file_location("p2pcp_bench_wormhole", source)
        if spec is None or spec.loader is None:
            return None, "bench/wormhole.py cannot be loaded"
        module: ModuleType = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        wormhole = module.Wormhole(cache)
        wormhole.ensure_installed()
    except Exception as exc:
        return None, f"unavailable: {one_line(exc)}"
    return wormhole, ""


def run_wormhole(lab: LinkLab, wormhole: Any, path: Path, work: Path, cap_s: float) -> RunResult:
    dest = work / "wormhole-out"
    size = path.stat().st_size
    meter = Meter(lab)
    started = time.monotonic()
    try:
        seconds = float(wormhole.transfer(NS_A, NS_B, path, dest, cap_s))
    except Exception as exc:
        wall = time.monotonic() - started
        message = one_line(exc)
        moved = re.search(r"\((\d+) of \d+ bytes received\)", message)
        if moved and int(moved.group(1)) > 0:  # timed out: bytes over the whole cap
            return meter.fill(
                RunResult(WORMHOLE_TOOL, False, int(moved.group(1)), cap_s, wall, message)
            )
        return meter.fill(RunResult(WORMHOLE_TOOL, False, 0, None, wall, message))
    finally:
        shutil.rmtree(dest, ignore_errors=True)
    wall = wormhole.last_wall_seconds or (time.monotonic() - started)
    how = "relayed" if wormhole.last_relayed else "direct"
    return meter.fill(RunResult(WORMHOLE_TOOL, True, size, seconds, wall, how))


def _tail(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    except OSError:
        return "(no output)"
    lines = [line for line in lines if line]
    return lines[-1][-200:] if lines else "(no output)"


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def has_congestion_flag() -> bool:
    for command in ("send", "receive"):
        result = subprocess.run(
            [*p2pcp_command(), command, "--help"],
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
            check=False,
        )
        if "--congestion" not in result.stdout:
            return False
    return True
