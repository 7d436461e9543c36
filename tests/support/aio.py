"""Running a coroutine test body with a bound on its time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


def run_bounded(body: Callable[[], Awaitable[None]], timeout_s: float) -> None:
    """Run ``body()`` in a fresh event loop; fail it after ``timeout_s``."""

    async def bounded() -> None:
        await asyncio.wait_for(body(), timeout_s)

    asyncio.run(bounded())
