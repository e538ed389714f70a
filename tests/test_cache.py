"""TTLCache: one load per key at a time, stale values served while one refresh runs."""

from __future__ import annotations

import asyncio

import pytest

from bot.cache import TTLCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_concurrent_callers_share_one_load() -> None:
    loads = 0
    gate = asyncio.Event()

    async def load() -> int:
        nonlocal loads
        loads += 1
        await gate.wait()
        return 42

    cache: TTLCache[str, int] = TTLCache(60)
    waiters = [asyncio.create_task(cache.get("k", load)) for _ in range(100)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiters) == [42] * 100
    assert loads == 1


async def test_a_caller_that_stops_waiting_leaves_the_load_to_the_others() -> None:
    # The first caller gives up on its own deadline (/call help's second): the others sharing
    # its load are not cancelled with it, and get the value once it comes.
    gate = asyncio.Event()

    async def load() -> int:
        await gate.wait()
        return 42

    cache: TTLCache[str, int] = TTLCache(60)
    impatient = asyncio.create_task(cache.get("k", load))
    await asyncio.sleep(0)
    patient = asyncio.create_task(cache.get("k", load))
    await asyncio.sleep(0)
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    gate.set()
    assert await patient == 42
    assert await cache.get("k", load) == 42


async def test_a_failed_load_is_not_cached_and_reaches_every_waiter() -> None:
    attempts = 0

    async def load() -> int:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0)
        if attempts == 1:
            raise RuntimeError("upstream down")
        return 7

    cache: TTLCache[str, int] = TTLCache(60)
    results = await asyncio.gather(cache.get("k", load), cache.get("k", load),
                                   return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert await cache.get("k", load) == 7


async def test_stale_value_is_served_at_once_while_one_refresh_runs() -> None:
    clock = Clock()
    cache: TTLCache[str, str] = TTLCache(60, max_stale=3600, clock=clock)
    refreshed = asyncio.Event()
    release = asyncio.Event()
    calls = 0

    async def load() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            return "old"
        refreshed.set()
        await release.wait()
        return "new"

    assert await cache.get("k", load) == "old"
    clock.now = 120  # stale but usable
    assert await cache.get("k", load) == "old"
    assert await cache.get("k", load) == "old"
    await refreshed.wait()
    release.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert await cache.get("k", load) == "new"
    assert calls == 2


async def test_a_failed_refresh_keeps_the_stale_value_and_the_next_get_tries_again() -> None:
    clock = Clock()
    cache: TTLCache[str, str] = TTLCache(60, max_stale=3600, clock=clock)
    calls = 0

    async def load() -> str:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("upstream down")
        return "old" if calls == 1 else "new"

    assert await cache.get("k", load) == "old"
    clock.now = 120
    assert await cache.get("k", load) == "old"  # the refresh starts, and fails
    for _ in range(5):
        await asyncio.sleep(0)
    assert calls == 2
    assert await cache.get("k", load) == "old"  # still served; another refresh starts
    for _ in range(5):
        await asyncio.sleep(0)
    assert await cache.get("k", load) == "new"
    assert calls == 3


async def test_too_old_values_are_not_served() -> None:
    clock = Clock()
    cache: TTLCache[str, str] = TTLCache(60, max_stale=600, clock=clock)
    values = iter(["old", "new"])

    async def load() -> str:
        return next(values)

    assert await cache.get("k", load) == "old"
    clock.now = 601
    assert await cache.get("k", load) == "new"


async def test_a_too_old_value_is_served_when_its_load_fails_as_stale_if_error_allows() -> None:
    clock = Clock()
    cache: TTLCache[str, str] = TTLCache(
        60, max_stale=600, clock=clock, stale_if_error=lambda e: isinstance(e, TimeoutError))
    answers: list[str | Exception] = ["old", TimeoutError(), ValueError("bad"), "new"]

    async def load() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert await cache.get("k", load) == "old"
    clock.now = 601
    assert await cache.get("k", load) == "old"  # the upstream can't answer now
    with pytest.raises(ValueError):  # an error stale_if_error doesn't pass
        await cache.get("k", load)
    assert await cache.get("k", load) == "new"  # tried again each time


@pytest.mark.parametrize("key", [None, "k"])
async def test_invalidate_forces_a_reload(key: str | None) -> None:
    values = iter([1, 2])

    async def load() -> int:
        return next(values)

    cache: TTLCache[str, int] = TTLCache(60)
    assert await cache.get("k", load) == 1
    cache.invalidate(key)
    assert await cache.get("k", load) == 2


@pytest.mark.parametrize("step", ["invalidate", "too old"])
async def test_a_load_that_just_finished_is_not_reused_for_a_value_it_no_longer_gives(
    step: str,
) -> None:
    # A load's task is done one turn of the loop before it leaves the table of loads in progress.
    # A get in that turn, after an invalidate (a group just changed) or past max_stale, reused it
    # and got the value it was told not to trust (test_role_lookup_waits failed this way in CI).
    clock = Clock()
    cache: TTLCache[str, str] = TTLCache(60, max_stale=600, clock=clock)
    values = iter(["old", "new"])
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def load() -> str:
        await gate
        return next(values)

    first = asyncio.create_task(cache.get("k", load))
    await asyncio.sleep(0)
    gate.set_result(None)  # the load finishes in the next turn, just before this test resumes
    await asyncio.sleep(0)
    if step == "invalidate":
        cache.invalidate("k")
    else:
        clock.now = 601
    assert await cache.get("k", load) == "new"
    assert await first == "old"


async def test_keep_fresh_loads_again_only_what_is_due_and_leaves_the_rest_to_the_first_get(
) -> None:
    clock = Clock()
    cache: TTLCache[str, int] = TTLCache(300, max_stale=900, clock=clock)
    loads: list[str] = []

    async def load(key: str) -> int:
        loads.append(key)
        return len(loads)

    cache.keep_fresh("never read", lambda: load("never read"), due_after=180)
    assert await cache.get("k", lambda: load("k")) == 1
    clock.now = 179
    cache.keep_fresh("k", lambda: load("k"), due_after=180)
    for _ in range(3):
        await asyncio.sleep(0)
    assert loads == ["k"] and cache.age("k") == 179
    clock.now = 180
    cache.keep_fresh("k", lambda: load("k"), due_after=180)
    for _ in range(3):
        await asyncio.sleep(0)
    assert loads == ["k", "k"] and cache.age("k") == 0
    assert cache.age("never read") is None
