"""A lease keeper's round (every few seconds, in every replica) asks for the calls still "dialling"
(bot/calls/follow.py: reconcile_dialling). Those are a handful at most, the calls whose POST is in
flight, while the calls table grows by every call ever made: the round reads them off an index of
their own (migration 14), never the whole table. On both databases."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.calls.store import CallStore, Placement
from bot.storage.database import MIGRATIONS, POSTGRESQL, Connection, Database
from tests.databases import BACKENDS, Noting, fresh_database

FINISHED = 2_000


async def calls_made(db: Database, finished: int, dialling: int) -> None:
    """`finished` calls over (placed, failed or unknown) and `dialling` ones still in flight."""
    placements = ["placed", "failed", "unknown"]
    rows = [
        (1_800_000_000.0 + n, f"U{n % 7}", placements[n % 3] if n < finished else "dialling")
        for n in range(finished + dialling)
    ]

    async def insert(conn: Connection) -> None:
        for start in range(0, len(rows), 500):
            chunk = rows[start:start + 500]
            await conn.execute(
                "INSERT INTO calls (created_at, team_id, requester_id, channel_id, number_masked,"
                " flow_id, flow_name, placement, state, following) VALUES "
                + ",".join("(?, 'T0', ?, 'C0', '+1 814 ••• 1234', 'f', 'Escalation', ?, 'ended', 0)"
                           for _ in chunk),
                [value for row in chunk for value in row],
            )

    await db.atomic(insert)
    await db.execute("ANALYZE calls" if db.dialect == POSTGRESQL else "ANALYZE")


async def dialling_plan(db: Database) -> str:
    """The plan of the query `CallStore.dialling` sends, as a prepared statement runs it."""
    noting = Noting(db)
    await CallStore(noting).dialling()  # type: ignore[arg-type]
    [(sql, params)] = noting.read

    async def plan(conn: Connection) -> str:
        if db.dialect == POSTGRESQL:
            # asyncpg prepares each statement once, and after a few runs PostgreSQL plans it for
            # any value of its parameters (a generic plan): the plan of every round from then on.
            await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            await conn.execute(f"PREPARE dialling_query AS {sql}")
            values = ", ".join("'" + str(value).replace("'", "''") + "'" for value in params)
            rows = await conn.fetchall(
                f"EXPLAIN EXECUTE dialling_query{f'({values})' if values else ''}")
            await conn.execute("DEALLOCATE dialling_query")
        else:
            rows = await conn.fetchall(f"EXPLAIN QUERY PLAN {sql}", params)
        return " | ".join(str(row[-1]) for row in rows)

    return await db.atomic(plan)


async def test_the_calls_still_dialling_are_read_off_their_own_index(db: Database) -> None:
    await calls_made(db, FINISHED, dialling=2)
    dialling = await CallStore(db).dialling()
    assert [call.placement for call in dialling] == [Placement.DIALLING] * 2
    assert [call.id for call in dialling] == sorted(call.id for call in dialling)

    plan = await dialling_plan(db)
    assert "calls_dialling" in plan, plan  # not a scan of every call ever made
    assert "Sort" not in plan and "TEMP B-TREE" not in plan, plan  # in id order off the index


@pytest.mark.parametrize("kind", BACKENDS)
async def test_migration_14_keeps_the_calls_and_finds_those_still_dialling(
    kind: str, tmp_path: Path
) -> None:
    async with fresh_database(kind, tmp_path) as url:
        db = Database(url)
        await db.open([m for m in MIGRATIONS if m.version < 14])
        try:
            # Calls of the previous version, one of them dialling when it stopped.
            await calls_made(db, 30, dialling=1)
            before = [tuple(row) for row in await db.fetchall("SELECT * FROM calls ORDER BY id")]

            assert await db.migrate([m for m in MIGRATIONS if m.version <= 14]) == [14]
            after = [tuple(row) for row in await db.fetchall("SELECT * FROM calls ORDER BY id")]
            assert after == before
            # Today's code reads its own columns: the later migrations too (calls.unreadable).
            await db.migrate(MIGRATIONS)
            store = CallStore(db)
            [left] = await store.dialling()
            assert left.id == before[-1][0]

            # A row leaves the index once its POST answered; a new one dialling enters it.
            await store.update(left.id, placement=str(Placement.PLACED))
            assert await store.dialling() == []
            await calls_made(db, 0, dialling=1)
            assert [call.id for call in await store.dialling()] == [left.id + 1]
        finally:
            await db.close()
