"""A full number kept past its retention (README: Audit trail) is erased: from the files holding the
database, not only from what a query returns, and while start-up still waits for Slack."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.calls.polling import FollowTiming
from bot.standins.slack import SlackStandIn
from bot.storage.database import Database, sqlite_path
from tests.conftest import BotFactory, BotUnderTest, until
from tests.databases import on_both_databases
from tests.follow_helpers import FAST, FULL, ended_call, services

RETENTION = FollowTiming().number_retention
# The number as the calls table keeps it, less its "+": the bytes looked for in the raw files.
DIGITS = FULL.removeprefix("+").encode()


async def a_call_that_ended(bot_factory: BotFactory) -> tuple[BotUnderTest, Database]:
    """A bot with one call that ended a day and a minute ago: its number past its retention."""
    bot, _, _ = await ended_call(bot_factory)
    await bot.settle()
    db = services(bot).db
    await db.execute("UPDATE calls SET created_at = created_at - ?", (RETENTION + 60,))
    return bot, db


async def test_a_number_erased_while_the_bot_runs_leaves_no_bytes_in_its_files(
    bot_factory: BotFactory,
) -> None:
    # SQLite writes a changed page to the -wal file and leaves its earlier images there until a
    # checkpoint, which in WAL mode comes only after 1,000 pages: erased from the row, the number
    # was still in the file beside it, for anyone reading the disk or a copy of the folder.
    bot, db = await a_call_that_ended(bot_factory)
    path = Path(sqlite_path(db.url))
    files = [path, path.with_name(path.name + "-wal")]
    assert any(DIGITS in f.read_bytes() for f in files if f.exists())  # kept while of use
    await services(bot).follower.erase_numbers(force=True)
    row = await db.fetchone("SELECT e164 FROM calls")
    assert row is not None and row[0] is None
    for file in files:
        if file.exists():
            assert DIGITS not in file.read_bytes(), f"the erased number is still in {file.name}"


@on_both_databases
async def test_numbers_due_are_erased_while_start_up_waits_for_slack(
    bot_factory: BotFactory, slack: SlackStandIn, database_url: str,
) -> None:
    # Erasing was the lease keeper's, which starts once Slack and Evo Voice have answered: a bot
    # kept waiting for Slack (down for days, a token revoked and not yet replaced) kept every
    # number past its retention for as long.
    first, _ = await a_call_that_ended(bot_factory)
    await first.runtime.stop(grace=5)
    gate = slack.hold("auth.test")
    starting = asyncio.create_task(bot_factory("http", **FAST))
    try:
        await gate.wait_until_held()
        db = Database(database_url)
        await db.open()
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while (await db.fetchone("SELECT e164 FROM calls"))[0] is not None:  # type: ignore[index]
                assert loop.time() < deadline, "the number was not erased while Slack was awaited"
                await asyncio.sleep(0.05)
        finally:
            await db.close()
    finally:
        gate.open()
    second = await starting
    await until(lambda: second.runtime.ready, timeout=20)
