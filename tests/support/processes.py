"""The p2pcp command as the tests (and benches) run it, and a relay process."""

from __future__ import annotations

import compileall
import contextlib
import functools
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# How long a relay process may take to print its start line.
RELAY_START_TIMEOUT_S = 20.0


@functools.cache
def _compile_p2pcp() -> None:
    """Compile p2pcp's bytecode, as installing it does. An editable install
    is compiled on first import, unless PYTHONDONTWRITEBYTECODE is set (as
    on some CI machines): then every p2pcp a test or bench starts compiles
    some ninety modules again, 0.19 s of its start-up (and of the suite's
    ~2,000 starts). Up to date files are only stat'ed."""
    import p2pcp

    with contextlib.suppress(OSError):  # a read-only tree: compiled each time, as before
        compileall.compile_dir(os.path.dirname(p2pcp.__file__), quiet=2)


def p2pcp_command() -> list[str]:
    """The p2pcp of this environment (the working tree in a dev venv)."""
    _compile_p2pcp()
    script = Path(sys.executable).parent / "p2pcp"
    if script.exists():
        return [str(script)]
    found = shutil.which("p2pcp")
    return [found] if found else [sys.executable, "-m", "p2pcp"]


def node_env(home: Path) -> dict[str, str]:
    """The environment of a p2pcp node whose state lives in ``home``."""
    env = dict(os.environ)
    env["P2PCP_HOME"] = str(home)
    env.pop("P2PCP_DEBUG", None)
    # No multicast DNS on the machine's real network (a sender with no relay
    # announces its code on the LAN); a LAN test sets 127.0.0.1 instead.
    env["P2PCP_LAN"] = "off"
    env["COLUMNS"] = "120"
    return env


def end(process: subprocess.Popen[Any]) -> None:
    """End a process if it still runs: SIGTERM, then SIGKILL after 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def stop(process: subprocess.Popen[Any]) -> None:
    """End a process (if still running) and close its pipes."""
    end(process)
    for pipe in (process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()


@dataclass
class RelayProcess:
    """A running ``p2pcp relay``; what it wrote to stderr after its start
    line is collected by a thread (so a chatty relay never blocks on a pipe)."""

    process: subprocess.Popen[str]
    url: str
    _lines: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None

    def stderr_after_start(self) -> str:
        """Everything after the start line; call once the process ended."""
        if self._reader is not None:
            self._reader.join(timeout=10)
        return "".join(self._lines)


@contextlib.contextmanager
def relay_process(*extra: str, home: Path | None = None) -> Iterator[RelayProcess]:
    """``p2pcp relay --host 127.0.0.1 --port 0 EXTRA``, its URL read from its
    start line (no port race). The caller may signal or kill it."""
    env = {**os.environ, "COLUMNS": "300"}
    if home is not None:
        env["P2PCP_HOME"] = str(home)
    process = subprocess.Popen(
        [*p2pcp_command(), "relay", "--host", "127.0.0.1", "--port", "0", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    reader: threading.Thread | None = None
    try:
        assert process.stderr is not None
        timer = threading.Timer(RELAY_START_TIMEOUT_S, process.kill)
        timer.start()
        try:
            line = process.stderr.readline()
        finally:
            timer.cancel()
        match = re.search(r"listening: (http://127\.0\.0\.1:\d+) ", line)
        assert match, f"the relay did not start: {line!r}"
        stderr = process.stderr
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(stderr), daemon=True)
        reader.start()
        yield RelayProcess(process, match.group(1), lines, reader)
    finally:
        end(process)
        if reader is not None:
            reader.join(timeout=10)
        stop(process)


def unprivileged_prefix() -> list[str]:
    """A command prefix under which a mode-000 file cannot be opened: none
    for a normal user; for root, setpriv dropping the two capabilities that
    let root read any file (root stays uid 0, so the interpreter under a
    private home stays reachable)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot make a file unreadable")
    caps = "-dac_override,-dac_read_search"
    prefix = [setpriv, "--bounding-set", caps, "--inh-caps", caps]
    probe = subprocess.run([*prefix, "true"], capture_output=True, check=False, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"setpriv cannot drop capabilities here: {probe.stderr.decode().strip()}")
    return prefix
