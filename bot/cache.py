"""A small time-bounded cache whose loads are shared by concurrent callers.

During an incident many people page at once; without sharing, a burst of 1,000 `/call`s would fetch
the flow list 1,000 times. `TTLCache.get` runs at most one load per key at a time, and every caller
waiting on that key gets its result (or its exception: a failed load is not cached).

Past `ttl` a value is stale: it is still served at once while one refresh runs in the background,
so a request (and its 3-second ack) never waits on a slow upstream for data we already have. Past
`max_stale` it is too old to trust and callers wait for a fresh load.
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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._max_stale = max_stale if max_stale is not None else ttl
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
                if key not in self._loading and key not in self._refreshing:
                    self._refreshing.add(key)
                    task = asyncio.create_task(self._refresh(key, load))
                    self._refreshes.add(task)
                    task.add_done_callback(self._refreshes.discard)
                return hit[1]
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        return await self._load(key, load)

    async def _refresh(self, key: K, load: Callable[[], Awaitable[V]]) -> None:
        try:
            await self._load(key, load)
        except Exception as exc:  # the stale value keeps serving; the next get tries again
            logger.warning("background refresh failed: %s", type(exc).__name__)
        finally:
            self._refreshing.discard(key)

    async def _load(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            value = await load()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            # Retrieve it so a load nobody else waited on doesn't log "exception never retrieved".
            future.exception()
            raise
        else:
            self._values[key] = (self._clock(), value)
            future.set_result(value)
            return value
        finally:
            del self._loading[key]

    def invalidate(self, key: K | None = None) -> None:
        if key is None:
            self._values.clear()
        else:
            self._values.pop(key, None)
