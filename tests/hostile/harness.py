"""The hostile tests' view of the command line and the disk: ``p2pcp`` run
as a subprocess beside a misbehaving peer in the same loop (``run_cli``),
its one error line, and what a run left under a folder. The misbehaving
peers themselves are in tests/support/peers.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from tests.support.peers import STEP_TIMEOUT_S
from tests.support.processes import node_env, p2pcp_command

# -- the command line -------------------------------------------------------------


@dataclass(frozen=True)
class Finished:
    returncode: int
    stdout: str
    stderr: str


async def run_cli(
    *args: str, home: Path, timeout_s: float = STEP_TIMEOUT_S, env: dict[str, str] | None = None
) -> Finished:
    """Run ``p2pcp ARGS`` as a subprocess without blocking this loop (a hostile
    sender in the same loop keeps serving it); killed if over ``timeout_s``."""
    process = await asyncio.create_subprocess_exec(
        *p2pcp_command(),
        *args,
        env=env or node_env(home),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"p2pcp {' '.join(args[:1])} did not end in {timeout_s} s") from None
    assert process.returncode is not None
    return Finished(process.returncode, stdout.decode(), stderr.decode())


def error_line(stderr: str) -> str:
    """The one error line the CLI printed (and nothing that looks like a traceback)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "expected an error message on stderr"
    assert "Traceback" not in stderr, stderr
    assert lines[-1].startswith("p2pcp: error: "), stderr
    return lines[-1]


# -- what is on disk ------------------------------------------------------------------


def files_under(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` (links are reported, never followed)."""
    found: dict[str, bytes] = {}
    if not root.exists():
        return found
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            found[rel] = b"<symlink>"
        elif path.is_file():
            found[rel] = path.read_bytes()
    return found


def final_files(out: Path) -> dict[str, bytes]:
    """Files under their final names (the hidden partial folder excluded)."""
    return {
        rel: data for rel, data in files_under(out).items() if not rel.startswith(".p2pcp-partial-")
    }


def snapshot(root: Path) -> dict[str, bytes]:
    """Everything under ``root`` (to prove nothing appeared outside the output)."""
    return files_under(root)
