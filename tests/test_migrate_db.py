"""`callbot migrate-db`: a SQLite installation's data moved to PostgreSQL, as it was."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.audit.spool import database_id
from bot.ops.migrate_db import TABLES, MigrationRefused, migrate_db
from bot.storage.database import Database
from bot.storage.leases import Leases
from bot.storage.number_hash import NumberHasher
from bot.standins.evovoice import EvoVoiceStandIn
from tests.conftest import QUICK_VOICE_RETRY, BotFactory
from tests.databases import POSTGRESQL, fresh_database
from tests.escalations import ALICE_ONLY, start
from tests.escalation_ends import (
    an_end_slack_refused_to_tell, told_privately,
)
from tests.follow_helpers import (
    FAST, FULL, end_session, is_thread_reply, services, status_message, wait_for_edit,
)


async def test_a_sqlite_installation_moves_to_postgresql_as_it_was(
    bot_factory: BotFactory, tmp_path: Path
) -> None:
    bot = await bot_factory("http")
    await bot.command("+1 416 555 0123 escalation")  # another region: a pending confirmation
    await bot.settle()
    # Stopped while Slack has not answered the call's status message: its row stays in
    # slack_posts for the next start to send (bot/slack/outbox.py), on PostgreSQL as well.
    gate = bot.slack.hold("chat.postMessage", when=is_thread_reply)
    await bot.command(f"{FULL} escalation")
    await gate.wait_until_held(1, timeout=20)
    sqlite_url = services(bot).db.url
    hashed = services(bot).audit.number_hash(FULL)
    await bot.runtime.stop(grace=0)  # stopped first, as the README says
    gate.open()

    async with fresh_database(POSTGRESQL, tmp_path) as postgres_url:
        copied = (await migrate_db(sqlite_url, postgres_url)).rows
        source, target = Database(sqlite_url), Database(postgres_url)
        await source.open()
        await target.open()
        try:
            for table in TABLES:
                rows = await source.fetchall(f"SELECT * FROM {table} ORDER BY 1")
                again = await target.fetchall(f"SELECT * FROM {table} ORDER BY 1")
                assert [tuple(r) for r in again] == [tuple(r) for r in rows], table
                assert copied[table] == len(rows)
            assert copied["audit_attempts"] >= 1 and copied["calls"] == 1
            assert copied["pending_confirmations"] == 1
            assert copied["slack_posts"] == 1
            # The key came along: the old records of a number are found under its hash.
            [row] = await target.fetchall(
                "SELECT COUNT(*) FROM audit_attempts WHERE number_hash = ?", (hashed,))
            assert row[0] >= 1
            # ...and a bot on PostgreSQL hashes numbers with it, so history joins old and new rows;
            # the database's id came along too (audit records spooled for it are still written).
            assert (await NumberHasher.open(target))(FULL) == hashed
            assert await database_id(target) == await database_id(source)
            # New rows get ids after the copied ones.
            last = await target.fetchone("SELECT MAX(id) FROM calls")
            new = await target.fetchone(
                "INSERT INTO calls (created_at, team_id, requester_id, channel_id, number_masked,"
                " flow_id, flow_name, placement, state, following)"
                " VALUES (1, 'T', 'U', 'C', 'm', 'f', 'F', 'placed', 'ended', 0) RETURNING id")
            assert last is not None and new is not None and new[0] > last[0]
            # ...in every table whose ids PostgreSQL generates (else the first call, rate slot
            # or kept Slack post after the move would collide with a copied row).
            generated = await target.fetchall(
                "SELECT table_name FROM information_schema.columns WHERE is_identity = 'YES'"
                " AND table_schema = current_schema() AND column_name = 'id'")
            assert {"rate_events", "slack_posts"} <= {row[0] for row in generated}
            for (table,) in generated:
                ids = await target.fetchone(
                    f"SELECT nextval(pg_get_serial_sequence('{table}', 'id')),"
                    f" COALESCE(MAX(id), 0) FROM {table}")
                assert ids is not None and ids[0] > ids[1], table
        finally:
            await source.close()
            await target.close()

        with pytest.raises(MigrationRefused, match="already holds callbot data"):
            await migrate_db(sqlite_url, postgres_url)


async def test_an_end_slack_refused_until_the_bot_stopped_is_shown_by_a_bot_on_postgresql(
    bot_factory: BotFactory, tmp_path: Path
) -> None:
    """A call ended while Slack refused its final edit, and the bot was stopped for the move: the
    lease it left lapsed says the end is still to show (bot/storage/leases.py), to whoever starts
    next. Started on PostgreSQL after the copy, that bot must show it: the requester would
    otherwise never learn the outcome, the status message left at "Ringing"."""
    bot = await bot_factory("http", **FAST)
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    bot.slack.fail("chat.update", "internal_error")
    end_session(bot, session_id, after_seconds=30, outcome="No answer")
    await bot.slack.wait_for_call(
        "chat.update", lambda c: not c.ok and "Ended" in str(c.params.get("text")), timeout=10)
    sqlite_url = services(bot).db.url
    await bot.runtime.stop(grace=0)
    bot.slack.off("chat.update")
    assert "Ringing" in (status.text or "")

    async with fresh_database(POSTGRESQL, tmp_path) as postgres_url:
        await migrate_db(sqlite_url, postgres_url)
        on_postgresql = await bot_factory("http", DATABASE_URL=postgres_url, **FAST)
        await wait_for_edit(on_postgresql, status, "❌ Ended: No answer, lasted 30 s.", timeout=15)
        await on_postgresql.runtime.stop(grace=5)


async def test_an_escalation_s_end_slack_refused_until_the_bot_stopped_is_told_on_postgresql(
    bot_factory: BotFactory, tmp_path: Path
) -> None:
    """Nobody acknowledged, and Slack refused to tell the requester until the bot was stopped for
    the move: the lease it left lapsed says the end is still to tell (bot/storage/leases.py), to
    whoever starts next, on PostgreSQL after the copy as on the same database."""
    first, clock = await an_end_slack_refused_to_tell(bot_factory)
    sqlite_url = services(first).db.url
    await first.runtime.stop(grace=5)
    first.slack.off("chat.postMessage")  # Slack takes direct messages again

    async with fresh_database(POSTGRESQL, tmp_path) as postgres_url:
        await migrate_db(sqlite_url, postgres_url)
        second, _ = await start(bot_factory, policy=ALICE_ONLY, clock=clock,
                                DATABASE_URL=postgres_url)
        await told_privately(second, "nobody acknowledged.")
        await second.runtime.stop(grace=5)


async def test_a_bot_up_but_waiting_for_evo_voice_is_a_bot_running_on_the_database(
    bot_factory: BotFactory, evo: EvoVoiceStandIn, tmp_path: Path
) -> None:
    """A bot started while Evo Voice (or Slack) is down waits for it, on its database (README:
    "Slack unreachable … at start-up"): copied from under it, what it writes once Evo Voice is
    back (every call it places) stays in SQLite. It says it runs as soon as its database is open,
    and leaves the replicas table when stopped."""
    await evo.stop(keep_port=True)
    bot = await bot_factory("http", STARTUP_RETRY_SECONDS="0.1", **QUICK_VOICE_RETRY)
    assert not bot.runtime.ready and bot.runtime.waiting_for is not None
    sqlite_url = bot.runtime.settings.database_url
    async with fresh_database(POSTGRESQL, tmp_path) as postgres_url:
        with pytest.raises(MigrationRefused, match="a bot is running on the SQLite database"):
            await migrate_db(sqlite_url, postgres_url)
        await bot.runtime.stop(grace=1)
        assert (await migrate_db(sqlite_url, postgres_url)).rows is not None


async def test_every_table_of_the_schema_is_copied_but_those_of_running_processes(
    tmp_path: Path,
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'callbot.db'}")
    await db.open()
    try:
        rows = await db.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'"
                                 " AND name NOT LIKE 'sqlite_%'")
    finally:
        await db.close()
    # The target keeps its own schema_migrations; replicas belong to running bots; leases are
    # copied apart (left lapsed).
    assert {row[0] for row in rows} - {"schema_migrations", "leases", "replicas"} == set(TABLES)


def test_the_urls_are_checked_before_anything_is_opened(tmp_path: Path) -> None:
    with pytest.raises(MigrationRefused, match="postgresql://"):
        asyncio.run(migrate_db(f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"))
    with pytest.raises(MigrationRefused, match="SQLite"):
        asyncio.run(migrate_db("postgresql://x@db/y", "postgresql://x@db/z"))
    assert not (tmp_path / "a.db").exists()


async def test_a_copy_that_fails_halfway_leaves_postgresql_empty_to_try_again(
    tmp_path: Path,
) -> None:
    sqlite_url = f"sqlite:///{tmp_path / 'callbot.db'}"
    source = Database(sqlite_url)
    await source.open()
    try:
        await source.execute("INSERT INTO claims (key, claimed_at) VALUES ('k', 1)", ())
        # SQLite keeps a text where a number belongs; PostgreSQL refuses it, late in the copy.
        await source.execute(
            "INSERT INTO slack_posts (created_at, owner, purpose, channel, thread_ts, message)"
            " VALUES ('soon', 'o', 'p', 'C', '1.2', '{}')", ())
        async with fresh_database(POSTGRESQL, tmp_path) as postgres_url:
            with pytest.raises(Exception, match="soon"):
                await migrate_db(sqlite_url, postgres_url)
            await source.execute("UPDATE slack_posts SET created_at = 2", ())
            # Not refused: nothing was left.
            copied = (await migrate_db(sqlite_url, postgres_url)).rows
            assert copied["claims"] == 1 and copied["slack_posts"] == 1
    finally:
        await source.close()


async def test_a_bot_still_running_on_either_database_is_refused_and_nothing_is_copied(
    bot_factory: BotFactory, tmp_path: Path
) -> None:
    """A copy taken under a running bot would leave behind what it writes next (a call placed,
    its audit record): refused until it is stopped, on the SQLite side and on the PostgreSQL one
    (a bot started there too early)."""
    bot = await bot_factory("http")
    await bot.command(f"{FULL} escalation")
    await bot.settle()
    sqlite_url = services(bot).db.url
    async with fresh_database(POSTGRESQL, tmp_path) as postgres_url:
        running = r"a bot is running on the SQLite database: \S+ \(seen \d+ s ago\); stop every bot"
        with pytest.raises(MigrationRefused, match=running):
            await migrate_db(sqlite_url, postgres_url)
        await bot.runtime.stop(grace=0)  # a bot stopped cleanly leaves the replicas table

        target = Database(postgres_url)
        await target.open()
        try:
            await Leases(target).renew()  # a bot on PostgreSQL, alive, its tables still empty
            with pytest.raises(MigrationRefused, match="a bot is running on the PostgreSQL"):
                await migrate_db(sqlite_url, postgres_url)
            assert await target.fetchone("SELECT 1 FROM calls") is None  # nothing copied
            await target.execute("DELETE FROM replicas")  # as a bot stopped leaves it
        finally:
            await target.close()
        assert (await migrate_db(sqlite_url, postgres_url)).rows["calls"] == 1
