"""PostgreSQL: unrelated writes run side by side, and what must not interleave still doesn't.

Two `Database` objects on one schema stand for two replicas. Transactions take no lock of their own
(bot/storage/postgres.py): a claim is decided by its unique key, and the rate limits count and take
a slot in one statement under a lock only they take (bot/storage/rate_slot.py). Each race below is
made to happen, not hoped for: a third session holds what the racers need, so they all wait, then
lets go, so they all run at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from bot.calls.limits import CallLimits, LimitReached
from bot.calls.rates import parse_rate
from bot.storage.claims import Claims
from bot.storage.database import Database
from bot.storage.number_hash import NumberHasher
from tests.databases import POSTGRESQL, fresh_database

HANG_GUARD = 10.0  # seconds; only a hang would reach it
RACERS = 16  # 8 on each replica, within its pool


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[tuple[Database, Database]]:
    async with fresh_database(POSTGRESQL, tmp_path) as url:
        first, second = Database(url), Database(url)
        await first.open()
        await second.open()
        try:
            yield first, second
        finally:
            await first.close()
            await second.close()


async def waiting_on_a_lock(url: str, at_least: int) -> None:
    """Until `at_least` sessions wait for a lock (of any kind) in this database; asked on a
    connection of its own, as the racers hold the pools' connections."""
    watcher = await asyncpg.connect(url)
    try:
        while await watcher.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND datname = current_database()"
        ) < at_least:
            await asyncio.sleep(0.01)
    finally:
        await watcher.close()


async def test_a_transaction_left_open_holds_up_no_unrelated_write(
    replicas: tuple[Database, Database],
) -> None:
    first, second = replicas
    async with first.transaction() as tx:
        await tx.execute("INSERT INTO claims (key, claimed_at) VALUES ('one', ?)", (time.time(),))
        # Another replica's claim, call row and audit record go through meanwhile (until
        # migration 10 they waited for this transaction's end, whatever they wrote).
        assert await asyncio.wait_for(Claims(second).claim("two"), HANG_GUARD)
        await asyncio.wait_for(second.execute(
            "INSERT INTO replicas (id, host, started_at, seen_at) VALUES ('r', 'h', 0, 0)"
        ), HANG_GUARD)
        async with second.transaction() as other:
            await asyncio.wait_for(other.execute(
                "INSERT INTO leases (kind, row_id, owner, expires_at) VALUES ('call', 1, 'r', 0)"
            ), HANG_GUARD)
    assert not await Claims(second).claim("one")


async def test_racing_claims_of_one_key_on_two_replicas_let_one_through(
    replicas: tuple[Database, Database],
) -> None:
    first, second = replicas
    holder = await asyncpg.connect(first.url)
    try:
        blocker = holder.transaction()
        await blocker.start()
        # The key is taken, not yet committed: every racer waits on it...
        await holder.execute("INSERT INTO claims (key, claimed_at) VALUES ('k', $1)", time.time())
        racing = [asyncio.ensure_future(Claims((first, second)[i % 2]).claim("k"))
                  for i in range(RACERS)]
        await asyncio.wait_for(waiting_on_a_lock(first.url, RACERS), HANG_GUARD)
        await blocker.rollback()  # ...and all go at once
        results = await asyncio.wait_for(asyncio.gather(*racing), HANG_GUARD)
    finally:
        await holder.close()
    assert results.count(True) == 1


def limits_of(db: Database, now: float, **rates: str | int) -> CallLimits:
    return CallLimits(
        db, per_user=parse_rate(str(rates.get("per_user", "5/10m"))),
        per_number=parse_rate(str(rates.get("per_number", "5/10m"))),
        per_day=int(rates.get("per_day", 10_000)), clock=lambda: now,
        hasher=NumberHasher(b"k" * 32),
    )


async def race_for_slots(
    replicas: tuple[Database, Database], limits: list[CallLimits], people: list[str]
) -> list[object]:
    """Attempts of `people[i]` to number i, on the two replicas in turn, counting at once."""
    first = replicas[0]
    holder = await asyncpg.connect(first.url)
    try:
        blocker = holder.transaction()
        await blocker.start()
        # Writes to the table wait (each attempt clears old ones before it counts), then all go.
        await holder.execute("LOCK TABLE rate_events IN SHARE MODE")
        racing = [asyncio.ensure_future(limits[i % 2].acquire(who, f"+181440430{i:02}", "f"))
                  for i, who in enumerate(people)]
        await asyncio.wait_for(waiting_on_a_lock(first.url, len(people)), HANG_GUARD)
        await blocker.rollback()
        return await asyncio.wait_for(
            asyncio.gather(*racing, return_exceptions=True), HANG_GUARD
        )
    finally:
        await holder.close()


def one_took_the_slot(results: list[object]) -> bool:
    refused = [r for r in results if isinstance(r, BaseException)]
    return len(refused) == len(results) - 1 and all(isinstance(r, LimitReached) for r in refused)


async def test_racing_attempts_by_one_person_on_two_replicas_take_the_last_slot_once(
    replicas: tuple[Database, Database],
) -> None:
    now = time.time()
    limits = [limits_of(db, now, per_user="1/10m") for db in replicas]
    results = await race_for_slots(replicas, limits, ["U1"] * RACERS)
    assert one_took_the_slot(results)
    row = await replicas[0].fetchone("SELECT count(*) FROM rate_events")
    assert row is not None and int(row[0]) == 1


async def test_racing_attempts_by_everyone_take_the_days_last_slot_once(
    replicas: tuple[Database, Database],
) -> None:
    now = time.time()
    limits = [limits_of(db, now, per_day=1) for db in replicas]
    results = await race_for_slots(replicas, limits, [f"U{i}" for i in range(RACERS)])
    assert one_took_the_slot(results)


async def test_an_attempt_waits_for_no_other_persons_until_its_transaction_ends(
    replicas: tuple[Database, Database],
) -> None:
    first, second = replicas
    now = time.time()
    take = await limits_of(first, now).slot_taker("U1", "+18144043001", "f")
    async with first.transaction() as tx:
        # A slot taken inside a longer transaction (the dialling one) keeps its locks to its end.
        await take(tx)
        # Another person, another number: not held up.
        await asyncio.wait_for(limits_of(second, now).acquire("U2", "+18144043002", "f"), 5)
        # The same person: waits for it, then sees it.
        same = asyncio.ensure_future(
            limits_of(second, now, per_user="1/10m").acquire("U1", "+18144043003", "f")
        )
        await asyncio.wait_for(waiting_on_a_lock(first.url, 1), HANG_GUARD)
        assert not same.done()
    with pytest.raises(LimitReached):
        await asyncio.wait_for(same, HANG_GUARD)


async def test_an_exclusive_transaction_waits_for_another_replicas_exclusive_one(
    replicas: tuple[Database, Database],
) -> None:
    first, second = replicas
    async with first.transaction(exclusive=True):
        other = asyncio.ensure_future(second.atomic(
            lambda tx: tx.execute("INSERT INTO claims (key, claimed_at) VALUES ('x', 0)"),
            exclusive=True,
        ))
        await asyncio.wait_for(waiting_on_a_lock(first.url, 1), HANG_GUARD)
        assert not other.done()
    assert await asyncio.wait_for(other, HANG_GUARD) == 1
