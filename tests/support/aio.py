"""Running a coroutine test body with a bound on its time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


def run_bounded(body: Callable[[], Awaitable[None]], timeout_s: float) -> None:
    """Run ``body()`` in a fresh event loop; fail it after ``timeout_s``."""

    async def bounded() -> None:
        await asyncio.wait_for(body(), timeout_s)

    asyncio.run(bounded())


async def wait_until(condition: Callable[[], bool], interval_s: float = 0.01) -> None:
    """Poll ``condition`` until it holds (the caller's bound ends a wait that never does)."""
    while not condition():
        await asyncio.sleep(interval_s)
