"""One budget for every Evo Voice request of a process, with one back-off for all of them.

Evo Voice's request quota is not documented (docs/evovoice-api.md: nothing public says how many
requests it takes, nor whether it answers 429), so the bot keeps its own: a token bucket of
``per_minute`` requests (``EVOVOICE_REQUESTS_PER_MINUTE``), at most ``burst`` at once. Two kinds of
request draw on it:

- ``Priority.FIRST``: placing a call and what it needs (the login check, flows and numbers, the
  lookup of a call whose POST went unanswered) and hanging up. These are never held back by the
  bucket: a page during an incident must not wait behind polls. They still spend tokens (down to
  ``-burst``), so the polls that follow make room for them.
- ``Priority.ROUTINE``: polls of followed calls and escalation steps. They wait for a token, in
  order, and always after every FIRST request waiting.

When Evo Voice answers 429, everything waits together (``back_off``): its ``Retry-After``
(already capped at 60 s), or, when it gave none, 2 s doubled on every further 429 up to 60 s. A
``Retry-After`` of no time (0, or a date already past: a server's clock behind ours) says "not now"
without saying how long, so it is waited out as one not given. No request of any kind is sent
before the pause ends; FIRST requests then go first.

``clock`` and ``sleep`` are the budget's only sense of time, so tests drive it with their own.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from enum import IntEnum

from bot.evovoice.errors import MAX_RETRY_AFTER_SECONDS

logger = logging.getLogger(__name__)

DEFAULT_REQUESTS_PER_MINUTE = 120
# The bucket holds this many seconds of the rate: a quiet bot may send a short burst at once.
BURST_SECONDS = 5.0
FIRST_BACK_OFF_SECONDS = 2.0  # a 429 without Retry-After; doubled on each further one


class Priority(IntEnum):
    FIRST = 0
    ROUTINE = 1


class RequestBudget:
    def __init__(
        self,
        per_minute: float = DEFAULT_REQUESTS_PER_MINUTE,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.per_minute = per_minute
        self.burst = max(1.0, per_minute * BURST_SECONDS / 60)
        self.clock = clock
        self.sleep = sleep
        self._tokens = self.burst
        self._refilled_at: float | None = None
        self._paused_until = float("-inf")
        self._next_back_off = FIRST_BACK_OFF_SECONDS
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._timer: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """How many requests wait for their turn now."""
        return sum(1 for *_, future in self._waiters if not future.done())

    @property
    def paused(self) -> bool:
        """True while every request waits out a 429."""
        return self.clock() < self._paused_until

    async def admit(self, priority: Priority) -> None:
        """Return when a request of this priority may be sent."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._order), future))
        self._dispatch()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._tokens += 1  # admitted, then cancelled before sending: nothing was spent
            raise

    def unused(self) -> None:
        """A request admitted and then not sent (its caller no longer wanted it): its turn back."""
        self._tokens += 1

    def back_off(self, retry_after: float | None) -> None:
        """Evo Voice answered 429: nothing is sent until the pause ends."""
        if retry_after is None or retry_after <= 0:
            seconds = self._next_back_off
            self._next_back_off = min(self._next_back_off * 2, MAX_RETRY_AFTER_SECONDS)
        else:
            seconds = min(retry_after, MAX_RETRY_AFTER_SECONDS)
        until = self.clock() + seconds
        if until > self._paused_until:
            logger.warning("Evo Voice asked the bot to slow down: no request for %.0f s", seconds)
            self._paused_until = until
            self._restart_timer()

    def answered(self) -> None:
        """An answer other than 429: the next 429 without Retry-After starts from 2 s again."""
        self._next_back_off = FIRST_BACK_OFF_SECONDS

    def _refill(self, now: float) -> None:
        if self._refilled_at is not None and now > self._refilled_at:
            earned = (now - self._refilled_at) * self.per_minute / 60
            self._tokens = min(self.burst, self._tokens + earned)
        if self._refilled_at is None or now > self._refilled_at:
            self._refilled_at = now

    def _dispatch(self) -> None:
        now = self.clock()
        self._refill(now)
        while self._waiters:
            priority, _, future = self._waiters[0]
            if future.done():  # cancelled while waiting
                heapq.heappop(self._waiters)
                continue
            if now < self._paused_until or (priority == Priority.ROUTINE and self._tokens < 1):
                break
            heapq.heappop(self._waiters)
            self._tokens = max(self._tokens - 1, -self.burst)
            future.set_result(None)
        if self.waiting and self._timer is None:
            self._timer = asyncio.get_running_loop().create_task(self._wait_for_turn(now))

    def _restart_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.waiting:
            self._dispatch()

    async def _wait_for_turn(self, now: float) -> None:
        if now < self._paused_until:
            delay = self._paused_until - now
        else:
            delay = max(0.0, (1 - self._tokens) * 60 / self.per_minute)
        try:
            await self.sleep(delay)
        finally:
            if self._timer is asyncio.current_task():
                self._timer = None
        self._dispatch()

    def close(self) -> None:
        """Stop the timer (the process is stopping)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
