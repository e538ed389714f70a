"""A small time-bounded cache whose loads are shared by concurrent callers.

During an incident many people page at once; without sharing, a burst of 1,000 `/call`s would fetch
the flow list 1,000 times. `TTLCache.get` runs at most one load per key at a time, and every caller
waiting on that key gets its result (or its exception: a failed load is not cached).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    def __init__(self, ttl: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._values: dict[K, tuple[float, V]] = {}
        self._loading: dict[K, asyncio.Future[V]] = {}

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        hit = self._values.get(key)
        if hit is not None and self._clock() - hit[0] < self._ttl:
            return hit[1]
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
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
