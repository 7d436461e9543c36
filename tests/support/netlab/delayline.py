"""The lab's one delay line: delayline.c, compiled on first use, and its driver.

The line is a process that creates two TAP devices and moves every frame
read from one to the other after a bottleneck of a given rate and a delay
with jitter (delayline.c says exactly how). Each topology places the two
devices: the bench's link makes them the hosts' own ``eth0`` (link.py), the
NAT lab bridges them into a router's WAN link (natlab.py).

Why C and why one line: the bench's gigabit profiles need one process to
forward about 82,000 frames a second each way with each frame's delay exact
to about 25 us, which an interpreter cannot do; the tests run the same
binary, so what they prove about the line (its jitter, its reordering, its
counters) holds for the figures the bench prints.

Rules:

- The binary is built with ``gcc -O2`` (or ``cc``) into a cache folder,
  again whenever the source is newer; a build goes to a temporary name
  first, so parallel sessions never run a half-written binary.
- The line runs at real-time priority (SCHED_FIFO) where allowed, else at
  nice -10: a real link never waits for a CPU, and at a normal priority the
  line woke milliseconds late while both transfer ends were busy, then sent
  the frames that had piled up as one burst and overflowed its queue
  (losses no real link has). It sleeps between frames and the kernel keeps
  a share of every second for other work (sched_rt_runtime_us), so it
  cannot lock a machine up.
- It is driven through stdin (``shape``, ``stats``) and answers JSON lines;
  stopping it (SIGTERM) prints its final counters, and its devices vanish
  with it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from .plumbing import COMMAND_TIMEOUT_S, LabError, LabProcess, start_process

SOURCE = Path(__file__).with_name("delayline.c")
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "p2pcp-netlab-cache"
# The line's real-time priority (SCHED_FIFO, 1-99): above every normal
# process, below the kernel's own threads (50).
RT_PRIORITY = 10
# The two per-direction counter sets in the line's stats.
DIRECTIONS = ("left_to_right", "right_to_left")


def build(cache: Path = DEFAULT_CACHE) -> Path:
    """Compile delayline.c into cache (again when the source is newer)."""
    binary = cache / "delayline"
    if binary.exists() and binary.stat().st_mtime >= SOURCE.stat().st_mtime:
        return binary
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise LabError("no C compiler (gcc): it builds the delay line (apt-get install gcc)")
    cache.mkdir(parents=True, exist_ok=True)
    partial = cache / f"delayline.{os.getpid()}.tmp"
    result = subprocess.run(
        [compiler, "-O2", "-Wall", "-o", str(partial), str(SOURCE)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise LabError(f"compiling the delay line failed: {result.stderr.strip()}")
    partial.replace(binary)
    return binary


class DelayLine:
    """One running delay line between TAP devices ``left`` and ``right``."""

    def __init__(self, process: LabProcess, left: str, right: str) -> None:
        self.process = process
        self.left = left
        self.right = right

    @classmethod
    def start(
        cls,
        ns: str,
        left: str,
        right: str,
        *,
        log_dir: Path,
        name: str = "delayline",
        binary: Path | None = None,
        options: tuple[str, ...] = (),
        seed: int | None = None,
    ) -> DelayLine:
        """Start the line in ns (its devices appear there, down) and wait until ready.

        options are delayline.c's own (``--queue-frames N`` ...).
        """
        argv = [str(binary or build()), left, right, *options]
        if seed is not None:
            argv += ["--seed", str(seed)]
        process = start_process(
            ns, argv, name=name, stderr_path=log_dir / f"{name}.stderr", stdin_pipe=True
        )
        ready = process.next_json(COMMAND_TIMEOUT_S)
        if ready is None or not ready[1].get("ready"):
            process.stop(signal.SIGKILL)
            raise LabError(f"the delay line did not start: {process.stderr()[-300:]}")
        try:
            os.sched_setscheduler(process.pid, os.SCHED_FIFO, os.sched_param(RT_PRIORITY))
        except (OSError, AttributeError):
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, process.pid, -10)
        return cls(process, left, right)

    def _ask(self, command: str, answer_key: str) -> dict[str, Any]:
        """Send one command to the line and return its answer (a JSON object)."""
        popen = self.process.process
        if popen.stdin is None or popen.poll() is not None:
            raise LabError(f"the delay line is not running\n{self.process.describe()}")
        popen.stdin.write(command + "\n")
        popen.stdin.flush()
        while True:
            item = self.process.next_json(COMMAND_TIMEOUT_S)
            if item is None:
                raise LabError(f"the delay line did not answer {command!r}")
            if answer_key in item[1]:
                return item[1]

    def shape(
        self,
        *,
        delay_ms: float,
        jitter_ms: float = 0.0,
        rate_mbit: float = 0.0,
        queue_bytes: int = 0,
        is_reordering: bool = False,
    ) -> None:
        """Each direction: a bottleneck of rate_mbit (0: none) with a tail-drop
        queue of queue_bytes, then delay_ms ± jitter_ms, in order unless
        is_reordering. The counters start again from zero."""
        command = (
            f"shape {round(delay_ms * 1000)} {round(jitter_ms * 1000)} "
            f"{round(rate_mbit * 1000)} {queue_bytes} {int(is_reordering)}"
        )
        self._ask(command, "shaped")

    def stats(self) -> dict[str, Any]:
        """The counters since the last ``shape``: one dict per direction and more."""
        stats: dict[str, Any] = self._ask("stats", "stats")["stats"]
        return stats

    def cpu_seconds(self) -> float:
        """User + system CPU the line has used (0 once it is gone)."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            return process_cpu_seconds(self.process.pid)
        return 0.0

    def stop(self) -> dict[str, dict[str, Any]]:
        """End the line; return its final counters per direction ({} if it left none)."""
        self.process.stop(signal.SIGTERM)
        for event in reversed(self.process.events):
            if "stats" in event:
                return {key: event["stats"][key] for key in DIRECTIONS}
        return {}


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
