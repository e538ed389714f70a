"""A clock and a sleep for the Evo Voice request budget that only the test moves."""

from __future__ import annotations

import asyncio
import math
import time


class BudgetClock:
    """``clock()`` and ``await clock.sleep(s)`` for `RequestBudget` (and the stand-in's
    `RateLimit`): time stands still until ``advance``; sleepers whose time has come wake then."""

    def __init__(self) -> None:
        # Whole seconds from a round start: advancing by 1 earns exactly one token. From
        # time.monotonic(), (t + 1) - t can come out a hair under 1, and a test then waits forever.
        # Not below time.monotonic() either: a budget that took over from that clock in a running
        # bot (tests/test_polling_budget.py) refills only once its new clock passes the old one's
        # last reading (a fixed 1,000 s failed there on a machine up for longer).
        self.now = float(math.ceil(time.monotonic()))
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

    @property
    def sleepers(self) -> int:
        """How many are asleep on this clock."""
        return len(self._sleepers)

    def next_wake(self) -> float | None:
        """When the earliest sleeper wakes; None if nobody sleeps."""
        return min((until for until, _ in self._sleepers), default=None)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for until, woken in list(self._sleepers):
            if until <= self.now:
                woken.set()


class LeapingClock(BudgetClock):
    """A clock that leaps to whenever a sleeper wakes: waiting (a Retry-After, a token of the
    request budget) takes no real time, while whatever reads the clock (the stand-in's posting
    bucket, the budget's refill) sees that time go by."""

    async def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.now += seconds
        await asyncio.sleep(0)


class Pauses(list[float]):
    """A sleep that returns at once and keeps every pause it was asked for (e.g. the bot's Slack
    client waiting out a 429's Retry-After): a test asserts what was waited, never waits."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)
