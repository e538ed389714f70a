"""A small time-bounded cache whose loads are shared by concurrent callers.

During an incident many people page at once; without sharing, a burst of 1,000 `/call`s would fetch
the flow list 1,000 times. `TTLCache.get` runs at most one load per key at a time, and every caller
waiting on that key gets its result (or its exception: a failed load is not cached). The load runs
in a task of its own: a caller that stops waiting (its own deadline: `/call help` gives up on the
roles after a second) leaves it to the others, who would otherwise be cancelled with it.

Past `ttl` a value is stale: it is still served at once while one refresh runs in the background,
so a request (and its 3-second ack) never waits on a slow upstream for data we already have. Past
`max_stale` it is too old to trust and callers wait for a fresh load; should that load fail in a
way `stale_if_error` calls passing (an upstream that can't answer now, which says nothing of the
data having changed), the old value is served all the same, and the next get tries again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

logger = logging.getLogger(__name__)


class TTLCache(Generic[K, V]):
    def __init__(
        self,
        ttl: float,
        *,
        max_stale: float | None = None,
        stale_if_error: Callable[[Exception], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._max_stale = max_stale if max_stale is not None else ttl
        self._stale_if_error = stale_if_error
        self._clock = clock
        self._values: dict[K, tuple[float, V]] = {}
        self._loading: dict[K, asyncio.Future[V]] = {}
        self._refreshes: set[asyncio.Task[Any]] = set()
        self._refreshing: set[K] = set()

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        hit = self._values.get(key)
        if hit is not None:
            age = self._clock() - hit[0]
            if age < self._ttl:
                return hit[1]
            if age < self._max_stale:
                self._refresh_in_background(key, load)
                return hit[1]
        pending = self._in_progress(key) or self._start(key, load)
        try:
            # Shielded: a caller cancelled while it waits stops waiting, not the load the others
            # share.
            return await asyncio.shield(pending)
        except Exception as exc:
            if hit is None or self._stale_if_error is None or not self._stale_if_error(exc):
                raise
            logger.warning("load failed (%s): serving what was loaded %.0f s ago",
                           type(exc).__name__, self._clock() - hit[0])
            return hit[1]

    def keep_fresh(self, key: K, load: Callable[[], Awaitable[V]], *, due_after: float) -> None:
        """Load `key` again in the background, without waiting, if its value is `due_after` old
        (less than `ttl`: a get then finds it fresh), unless a load of it is on. A key with no
        value is left to the first get."""
        age = self.age(key)
        if age is not None and age >= due_after:
            self._refresh_in_background(key, load)

    def age(self, key: K) -> float | None:
        """Seconds since `key`'s value was loaded; None if it has none."""
        hit = self._values.get(key)
        return None if hit is None else self._clock() - hit[0]

    def _refresh_in_background(self, key: K, load: Callable[[], Awaitable[V]]) -> None:
        if self._in_progress(key) is None and key not in self._refreshing:
            self._refreshing.add(key)
            task = asyncio.create_task(self._refresh(key, load))
            self._refreshes.add(task)
            task.add_done_callback(self._refreshes.discard)

    async def _refresh(self, key: K, load: Callable[[], Awaitable[V]]) -> None:
        try:
            await asyncio.shield(self._start(key, load))
        except Exception as exc:  # the stale value keeps serving; the next get tries again
            logger.warning("background refresh failed: %s", type(exc).__name__)
        finally:
            self._refreshing.discard(key)

    def _in_progress(self, key: K) -> asyncio.Future[V] | None:
        """The load of `key` still running. One that is done leaves `_loading` a turn of the loop
        later: its value may be one an invalidate or max_stale has since ruled out."""
        pending = self._loading.get(key)
        return pending if pending is not None and not pending.done() else None

    def _start(self, key: K, load: Callable[[], Awaitable[V]]) -> asyncio.Future[V]:
        task = asyncio.ensure_future(self._load(key, load))
        self._loading[key] = task

        def done(finished: asyncio.Future[V]) -> None:
            if self._loading.get(key) is finished:
                del self._loading[key]
            # A load every caller stopped waiting for must not log "exception never retrieved".
            if not finished.cancelled():
                finished.exception()

        task.add_done_callback(done)
        return task

    async def _load(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        value = await load()
        self._values[key] = (self._clock(), value)
        return value

    def invalidate(self, key: K | None = None) -> None:
        if key is None:
            self._values.clear()
        else:
            self._values.pop(key, None)

