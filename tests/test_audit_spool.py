"""Audit records that met a failing database outlive a restart: kept in the spool beside the SQLite
file (bot/audit/spool.py) and written, once, when the database answers again."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.storage.database import sqlite_path
from tests.conftest import BotFactory, BotUnderTest
from tests.follow_helpers import FULL, audit_records, services
from tests.test_database_faults import write_lock


async def recorded(bot: BotUnderTest, n: int = 1, timeout: float = 20) -> None:
    async def until() -> None:
        while len(await audit_records(bot)) < n:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(until(), timeout)


async def test_a_refusal_recorded_while_the_database_is_locked_outlives_a_restart(
    bot_factory: BotFactory,
) -> None:
    first = await bot_factory("http")
    spool = Path(sqlite_path(services(first).db.url) + ".audit-spool")
    with write_lock(first):
        _, url = await first.command(f"{FULL} escalation")
        [answer] = await first.slack.wait_for_response(url, timeout=20)
        assert "could not write to its database, so nothing was dialled" in str(answer)
        assert spool.read_text().count("\n") == 1  # on disk before the requester was told
        await first.runtime.stop(grace=0)  # restarted while the database is still locked

    second = await bot_factory("http")
    await recorded(second)
    [record] = await audit_records(second)
    assert record.decision == "refused" and record.reason == "DatabaseUnavailable"
    assert record.user_id == "U0MANAGER" and "3093" in record.number_masked
    assert first.evo.outgoing_posts == []
    assert spool.read_text() == ""
    await second.runtime.stop()
    third = await bot_factory("http")  # written once, however often the bot starts
    await third.settle()
    assert len(await audit_records(third)) == 1
