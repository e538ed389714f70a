"""Leases and the one runner: each row's work runs in one replica, and moves when that one dies."""

from __future__ import annotations

import asyncio

from bot.runner import RowRunner, Work
from bot.storage.database import Database
from bot.storage.leases import Leases


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def two_replicas(db: Database, clock: Clock) -> tuple[Leases, Leases]:
    return (Leases(db, lease_seconds=15, owner="a", clock=clock),
            Leases(db, lease_seconds=15, owner="b", clock=clock))


async def test_a_lease_has_one_owner_until_it_expires_or_is_released(db: Database) -> None:
    clock = Clock()
    a, b = two_replicas(db, clock)
    assert await a.take("call", 1)
    assert await a.take("call", 1), "taking one's own lease again is fine"
    assert not await b.take("call", 1)
    assert await b.take("escalation", 1), "kinds are separate"
    clock.now += a.valid_for - 1
    await a.renew()
    clock.now += a.valid_for - 1
    assert not await b.take("call", 1), "renewed"
    clock.now += 2
    assert await b.take("call", 1), "expired: a stopped renewing"
    assert await a.held("call") == set() and await b.held("call") == {1}
    await b.release("call", 1)
    assert await a.take("call", 1)


async def test_racing_replicas_take_a_lease_once(db: Database) -> None:
    clock = Clock()
    replicas = [Leases(db, owner=f"r{i}", clock=clock) for i in range(6)]
    taken = await asyncio.gather(*(r.take("call", 7) for r in replicas))
    assert sum(taken) == 1


async def test_unowned_rows_are_those_never_taken_expired_or_released(db: Database) -> None:
    clock = Clock()
    a, b = two_replicas(db, clock)
    await a.take("call", 1)
    await a.take("call", 2)
    await a.release("call", 2)
    assert await b.unowned("call", [1, 2, 3]) == [2, 3]
    clock.now += a.valid_for + 1
    assert await b.unowned("call", [1, 2, 3]) == [1, 2, 3]


async def test_a_replica_stopping_lets_go_of_its_own_leases_only(db: Database) -> None:
    # At SIGTERM a replica releases every lease of a kind: another's must stay its own, or a
    # third replica would start following that replica's calls too.
    clock = Clock()
    a, b = two_replicas(db, clock)
    await a.take("call", 1)
    await b.take("call", 2)
    await a.release("call")
    assert await b.held("call") == {2}
    assert await a.unowned("call", [1, 2]) == [1]


async def test_replicas_alive_are_those_renewing(db: Database) -> None:
    clock = Clock()
    a, b = two_replicas(db, clock)
    await a.renew()
    await b.renew()
    assert [r.id for r in await a.alive()] == ["a", "b"]
    clock.now += 20
    await b.renew()
    assert [r.id for r in await a.alive()] == ["b"]
    b.keep([])
    await b.stop()
    assert await a.alive() == []


async def test_the_runner_runs_a_row_once_and_a_dead_replicas_rows_move(db: Database) -> None:
    clock = Clock()
    leases_a, leases_b = two_replicas(db, clock)
    ran: list[tuple[str, int]] = []
    gate = asyncio.Event()

    async def nothing(row_id: int, exc: Exception) -> None:
        raise AssertionError(exc)

    def work(who: str, row_id: int) -> Work:
        async def run() -> None:
            ran.append((who, row_id))
            await gate.wait()
        return run

    a = RowRunner("call", leases_a, on_error=nothing)
    b = RowRunner("call", leases_b, on_error=nothing)
    assert await a.start(1, work("a", 1))
    assert not await a.start(1, work("a", 1))
    assert await b.adopt([1, 2], lambda i: work("b", i)) == [2]
    await asyncio.sleep(0)
    assert sorted(ran) == [("a", 1), ("b", 2)]

    # a dies: it stops renewing; once its lease has expired, b takes row 1 over.
    a.closed = True
    for task in a.tasks():
        task.cancel()
    await leases_b.renew()
    clock.now += leases_a.valid_for + 1
    assert await b.adopt([1, 2], lambda i: work("b", i)) == [1]
    await asyncio.sleep(0)
    assert ("b", 1) in ran

    # b stops (SIGTERM): its leases go at once, a new replica takes both without waiting.
    await b.stop()
    c = RowRunner("call", Leases(db, owner="c", clock=clock), on_error=nothing)
    assert await c.adopt([1, 2], lambda i: work("c", i)) == [1, 2]
    gate.set()
    await asyncio.gather(*c.tasks())
    assert await Leases(db, owner="c", clock=clock).held("call") == set(), "done: released"


async def test_a_runner_does_not_start_a_row_whose_lease_another_replica_holds(
    db: Database,
) -> None:
    clock = Clock()
    leases_a, leases_b = two_replicas(db, clock)
    ran: list[str] = []
    gate = asyncio.Event()

    async def nothing(row_id: int, exc: Exception) -> None:
        raise AssertionError(exc)

    def work(who: str) -> Work:
        async def run() -> None:
            ran.append(who)
            await gate.wait()
        return run

    a = RowRunner("call", leases_a, on_error=nothing)
    b = RowRunner("call", leases_b, on_error=nothing)
    assert await a.start(1, work("a"))
    # b was asked to start it (a round that saw it unowned a moment before): a's lease says no.
    assert not await b.start(1, work("b"))
    await asyncio.sleep(0)
    assert ran == ["a"] and b.running == 0
    assert await leases_b.held("call") == set()
    gate.set()
    await asyncio.gather(*a.tasks())


async def test_a_runner_lets_go_of_a_row_another_replica_took_over(db: Database) -> None:
    clock = Clock()
    leases_a, leases_b = two_replicas(db, clock)
    stopped = asyncio.Event()

    async def run() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    async def nothing(row_id: int, exc: Exception) -> None:
        raise AssertionError(exc)

    a = RowRunner("escalation", leases_a, on_error=nothing)
    await a.start(5, run)
    await asyncio.sleep(0)
    clock.now += leases_a.valid_for + 1  # a stalled past its lease
    assert await leases_b.take("escalation", 5)
    await a.take_over(_no_rows, lambda _: run)
    await asyncio.wait_for(stopped.wait(), 5)
    assert a.running == 0


async def _no_rows() -> list[int]:
    return []
