"""Work that runs after an ack, tracked so that shutdown can wait for it and nothing fails
silently.

Acks go first: while Slack requests are being answered (`AcksFirst`: the Socket Mode handler and the
HTTP route count them in and out), new work waits to start, at most `ACKS_FIRST_MAX_WAIT` seconds.
A burst of 1,000 `/call`s is acked before the calls' own work (about 1 ms of the event loop each)
takes the loop: otherwise the later envelopes' acks queue behind the earlier calls' work (their p99
rose to 4-5 x a bare Bolt app's when the burst took 0.5 s to arrive). A lone request starts its work
as soon as its own ack is out; the cap keeps a steady stream of requests from holding work back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

logger = logging.getLogger(__name__)

ACKS_FIRST_MAX_WAIT = 0.25  # seconds


async def wait_or_wake(wake: asyncio.Event, seconds: float) -> None:
    """Wait `seconds`, or less if `wake` is set (a poke). Not `asyncio.wait_for`: cancelled as
    the poke came (Python 3.11), it returned as if poked, and the cancellation was lost (a lease
    keeper woken and stopped at once ran on, and its `stop` waited for it for ever)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await wake.wait()


class InFlight:
    """How many of something are under way; `idle()` returns once none is (or once `max_wait`
    seconds have passed: what waits for them is held back, never stopped)."""

    def __init__(self, max_wait: float) -> None:
        self.max_wait = max_wait
        self._count = 0
        self._none = asyncio.Event()
        self._none.set()

    @property
    def count(self) -> int:
        return self._count

    def entered(self) -> None:
        self._count += 1
        self._none.clear()

    def left(self) -> None:
        self._count = max(0, self._count - 1)
        if self._count == 0:
            self._none.set()

    async def wait_none(self, timeout: float) -> bool:
        """Wait (at most `timeout` s) until none is under way; whether that came."""
        if self._none.is_set():
            return True
        # A deadline on this task rather than wait_for: that would run the wait in a task of its
        # own, one more task for each piece of work held back (a thousand in a burst).
        try:
            async with asyncio.timeout(timeout):
                await self._none.wait()
        except TimeoutError:
            return False
        return True

    async def idle(self) -> None:
        # Not there within max_wait: they keep coming, or one is stuck, and what waits for them
        # goes on beside them.
        await self.wait_none(self.max_wait)


class AcksFirst(InFlight):
    """The Slack requests being answered now."""

    def __init__(self, max_wait: float = ACKS_FIRST_MAX_WAIT) -> None:
        super().__init__(max_wait)


class BackgroundTasks:
    def __init__(self, acks: AcksFirst | None = None) -> None:
        self.acks = acks or AcksFirst()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def spawn(
        self, work: Coroutine[Any, Any, Any], *, name: str, after_acks: bool = True
    ) -> asyncio.Task[Any]:
        """`after_acks=False`: work the spawning request's own ack waits on (a form's Submit
        answered by the work's first word) starts at once. Held back until the acks being sent
        are out, it would wait for that very ack: `max_wait` every time, or for good with a
        `max_wait` longer than the ack may wait."""
        if self._closed:
            work.close()
            raise RuntimeError("shutting down: no new work is accepted")
        task = asyncio.create_task(self._after_acks(work) if after_acks else work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    async def _after_acks(self, work: Coroutine[Any, Any, Any]) -> Any:
        try:
            await self.acks.idle()
        except BaseException:
            work.close()  # cancelled before it started: never "was never awaited"
            raise
        return await work

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Call work reports its own failures to the requester; reaching here is a bug.
            logger.error("background task %s failed", task.get_name(), exc_info=task.exception())

    @property
    def pending(self) -> int:
        return len(self._tasks)

    @property
    def closed(self) -> bool:
        return self._closed

    async def drain(self, timeout: float | None = None) -> None:
        """Refuse new work, then wait (up to `timeout` s) for what is running; cancel the rest."""
        self._closed = True
        if not self._tasks:
            return
        _, still_running = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in still_running:
            logger.warning("cancelling %s at shutdown", task.get_name())
            task.cancel()
        if still_running:
            await asyncio.wait(still_running)

    async def wait_idle(self) -> None:
        """For tests and the benchmark: return once no work is running."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))
