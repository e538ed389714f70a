"""PostgreSQL: an upgrade's migration that has to wait (behind a `pg_dump` of a large database, or
the replica migrating first) waits, rather than failing start-up after the driver's 30 s.

The driver's timeout is a real-time one, set where the backend connects: the test shortens it
(COMMAND_TIMEOUT_SECONDS, read as the backend opens) to half a second for the upgrade's opening
alone, and waits past that.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from bot.storage import postgres
from bot.storage.database import MIGRATIONS, Database
from tests.databases import POSTGRESQL, fresh_database


async def waiting_for_a_lock(admin: asyncpg.Connection, table: str) -> None:
    """Until a session waits for a lock on `table` (the migration's ALTER TABLE, queued)."""
    while not await admin.fetchval(
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = $1::regclass", table
    ):
        await asyncio.sleep(0.01)


async def test_a_migration_waiting_behind_a_backup_longer_than_a_statement_may_still_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A nightly `pg_dump` holds every table it reads (ACCESS SHARE) until it is done, an hour on
    a database years old. The new version's migration altering one of them waits for it: failed
    after 30 s, start-up said "cannot open the PostgreSQL database (TimeoutError)" every time it
    was tried while the dump ran, and a migration that takes longer than that (an index over
    years of audit trail) could never be applied at all."""
    async with fresh_database(POSTGRESQL, tmp_path) as url:
        before = Database(url)
        await before.open(MIGRATIONS[:-1])  # the version before the upgrade
        await before.close()
        monkeypatch.setattr(postgres, "COMMAND_TIMEOUT_SECONDS", 0.5)  # the driver's: 30 s
        table = "pending_confirmations"  # the last migration alters it
        assert table in MIGRATIONS[-1].text_for(POSTGRESQL)
        dump = await asyncpg.connect(url)
        admin = await asyncpg.connect(url)
        upgraded = Database(url)
        try:
            reading = dump.transaction(isolation="repeatable_read", readonly=True)
            await reading.start()
            await dump.execute(f"LOCK TABLE {table} IN ACCESS SHARE MODE")
            opening = asyncio.create_task(upgraded.open())
            await asyncio.wait_for(waiting_for_a_lock(admin, table), 10)
            await asyncio.sleep(postgres.COMMAND_TIMEOUT_SECONDS + 0.5)  # past the driver's
            assert not opening.done(), opening.exception()
            await reading.commit()  # the dump is over
            await asyncio.wait_for(opening, 10)
            assert await upgraded.schema_version() == MIGRATIONS[-1].version
        finally:
            await upgraded.close()
            await admin.close()
            await dump.close()
