"""transfer/watch.py: a share's PATHs watched with the system's real change
events (watchfiles), on real files."""

from __future__ import annotations

import asyncio
import os
import resource
import time
from pathlib import Path

from p2pcp.transfer import events
from p2pcp.transfer.hashcache import RACY_MARGIN_NS
from p2pcp.transfer.watch import watch_and_warm

# Generous: a loaded CI machine may take long to deliver events.
WAIT_S = 20.0


async def _watching(
    paths: tuple[Path, ...], warm_s: float = 0.0
) -> tuple[asyncio.Task[None], list[float], list[object]]:
    calls: list[float] = []
    emitted: list[object] = []

    async def warm() -> None:
        calls.append(time.monotonic())
        await asyncio.sleep(warm_s)

    task = asyncio.create_task(watch_and_warm(paths, warm, emitted.append))
    await asyncio.sleep(0.5)  # the watch is set up on a thread
    return task, calls, emitted


async def _until(condition: object, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_a_burst_of_changes_is_hashed_once_after_it_settles(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()

    async def main() -> None:
        task, calls, emitted = await _watching((tmp_path,))
        assert not calls  # nothing changed yet
        for number in range(5):  # rewritten, added, in a subfolder
            (tmp_path / "sub" / f"f{number}").write_bytes(os.urandom(1000))
        last_change = time.monotonic()
        await _until(lambda: calls and calls[-1] > last_change)
        # Only once every change is older than the hash cache's racy margin
        # (a file changed within it would be hashed but not remembered).
        assert calls[-1] - last_change >= RACY_MARGIN_NS / 1e9
        await asyncio.sleep(1.5)
        # One scan for the burst (two if a loaded machine paused it half-way).
        assert len(calls) <= 2
        task.cancel()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)
        assert emitted == []

    asyncio.run(main())


def test_a_change_after_a_scan_is_hashed_again(tmp_path: Path) -> None:
    async def main() -> None:
        task, calls, _emitted = await _watching((tmp_path,))
        (tmp_path / "a").write_bytes(b"one")
        await _until(lambda: calls)
        (tmp_path / "a").write_bytes(b"two")
        os.unlink(tmp_path / "a")
        await _until(lambda: len(calls) == 2)
        task.cancel()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)

    asyncio.run(main())


def test_a_watch_that_cannot_be_made_is_one_event_and_no_error(tmp_path: Path) -> None:
    """No file descriptor left for the watch (as with too many watches or
    instances): the share says so once and goes on without it."""
    import watchfiles  # noqa: F401 - imported before the limit: it opens files

    async def main() -> None:
        emitted: list[object] = []

        async def warm() -> None:
            raise AssertionError("never called")

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        open_fds = {int(name) for name in os.listdir("/proc/self/fd")}
        lowest_free = min(set(range(len(open_fds) + 1)) - open_fds)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
        try:
            await asyncio.wait_for(watch_and_warm((tmp_path,), warm, emitted.append), WAIT_S)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert len(emitted) == 1, emitted
        stopped = emitted[0]
        assert isinstance(stopped, events.ShareWatchStopped)
        assert stopped.reason and "\n" not in stopped.reason

    asyncio.run(main())


def test_stopping_ends_the_watch_promptly_while_nothing_changes(tmp_path: Path) -> None:
    async def main() -> None:
        task, _calls, _emitted = await _watching((tmp_path,))
        task.cancel()
        # The watch thread looks at its stop flag every 200 ms.
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 5)
        assert task.cancelled()

    asyncio.run(main())
