"""Work that runs after an ack, tracked so that shutdown can wait for it and nothing fails
silently."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

logger = logging.getLogger(__name__)


class BackgroundTasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def spawn(self, work: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        if self._closed:
            work.close()
            raise RuntimeError("shutting down: no new work is accepted")
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

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
