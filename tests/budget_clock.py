"""A clock and a sleep for the Evo Voice request budget that only the test moves."""

from __future__ import annotations

import asyncio
import time


class BudgetClock:
    """``clock()`` and ``await clock.sleep(s)`` for `RequestBudget` (and the stand-in's
    `RateLimit`): time stands still until ``advance``; sleepers whose time has come wake then."""

    def __init__(self) -> None:
        self.now = time.monotonic()
        self._sleepers: list[tuple[float, asyncio.Event]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        entry = (self.now + seconds, asyncio.Event())
        self._sleepers.append(entry)
        try:
            await entry[1].wait()
        finally:
            if entry in self._sleepers:
                self._sleepers.remove(entry)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for until, woken in list(self._sleepers):
            if until <= self.now:
                woken.set()
