"""A batch writer's signal from its producers, and its wait for a batch to gather.

Outcomes (clears and notes) and the Store's audit rows are written in batches: the writer
waits for something queued (`arrival`), and in a burst waits a little longer for company
(`until`). While it gathers, a producer wakes it only when the batch is complete
(`arrived(complete=True)`): a storm's writer does not wake, count its queue and wait again
a thousand times a second.
"""

from __future__ import annotations

import asyncio
import contextlib


class Gathering:
    def __init__(self) -> None:
        self._wake = asyncio.Event()
        self._gathering = False

    def arrived(self, complete: bool = False) -> None:
        """Something was queued (`complete`: the batch being gathered is full)."""
        if not self._gathering or complete:
            self._wake.set()

    async def arrival(self) -> None:
        """Until something was queued since the last arrival() or until() returned."""
        await self._wake.wait()
        self._wake.clear()

    async def until(self, deadline: float) -> None:
        """Until loop time `deadline`, or until the batch is complete."""
        self._gathering = True
        self._wake.clear()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(deadline - asyncio.get_running_loop().time()):
                    await self._wake.wait()
        finally:
            self._gathering = False
