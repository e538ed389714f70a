"""Audit records that met a failing database outlive a restart: kept in the spool (beside the SQLite
file, or AUDIT_SPOOL's file for PostgreSQL: bot/audit/spool.py) and written, once, when the
database answers again."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager, asynccontextmanager
from pathlib import Path

import pytest

from bot.config import load_settings
from bot.storage.claims import CLAIM_LIFETIME_SECONDS
from bot.storage.database import SQLITE, Database, dialect_of, sqlite_path
from tests.conftest import BotFactory, until
from tests.databases import POSTGRESQL, on_both_databases
from tests.follow_helpers import FULL, MASKED, OTHER, audit_records, history, lines, services
from tests.database_locks import (
    recorded,
    recorded_once_after_restarts,
    tables_locked,
    with_short_busy_timeout,
    with_short_lock_timeout,
    write_lock,
)

pytestmark = pytest.mark.usefixtures("database_retried_quickly")  # the tests end the faults


async def test_a_refusal_recorded_while_the_database_is_locked_outlives_a_restart(
    bot_factory: BotFactory, database_url: str
) -> None:
    first = await bot_factory("http", DATABASE_URL=with_short_busy_timeout(database_url))
    spool = Path(sqlite_path(services(first).db.url) + ".audit-spool")
    with write_lock(first):
        _, url = await first.command(f"{FULL} escalation")
        [answer] = await first.slack.wait_for_response(url, timeout=20)
        assert "could not write to its database, so nothing was dialled" in str(answer)
        assert spool.read_text().count("\n") == 1  # on disk before the requester was told
        await first.runtime.stop(grace=0)  # restarted while the database is still locked

    await recorded_once_after_restarts(bot_factory, spool)
    assert first.evo.outgoing_posts == []


async def test_a_refusal_spooled_while_the_database_is_locked_is_written_once_it_answers(
    bot_factory: BotFactory, database_url: str
) -> None:
    bot = await bot_factory("http", DATABASE_URL=with_short_busy_timeout(database_url))
    spool = Path(sqlite_path(services(bot).db.url) + ".audit-spool")
    with write_lock(bot):
        _, url = await bot.command(f"{FULL} escalation")
        [answer] = await bot.slack.wait_for_response(url, timeout=20)
        assert "could not write to its database, so nothing was dialled" in str(answer)
        assert spool.read_text().count("\n") == 1
    # The same bot, no restart: it writes the record as soon as the database answers.
    await recorded(bot)
    [record] = await audit_records(bot)
    assert record.decision == "refused" and record.reason == "DatabaseUnavailable"
    assert spool.read_text() == ""


async def test_the_spool_only_its_owner_may_read_whatever_the_umask(
    bot_factory: BotFactory, database_url: str
) -> None:
    # The spool holds what the audit trail holds (who called, the number's hash), as secret as
    # the database file beside it, which is made for its owner alone.
    bot = await bot_factory("http", DATABASE_URL=with_short_busy_timeout(database_url))
    spool = Path(sqlite_path(services(bot).db.url) + ".audit-spool")
    previous = os.umask(0o022)
    try:
        with write_lock(bot):
            _, url = await bot.command(f"{FULL} escalation")
            await bot.slack.wait_for_response(url, timeout=20)
    finally:
        os.umask(previous)
    assert spool.read_text().count("\n") == 1
    assert stat.S_IMODE(spool.stat().st_mode) == 0o600


# What a /call writes before it is dialled.
WRITTEN_BY_A_CALL = "claims, rate_events, audit_attempts, audit_events, calls, leases"


@pytest.mark.parametrize("database_url", [POSTGRESQL], indirect=True)
async def test_on_postgresql_a_refusal_recorded_while_the_database_fails_outlives_a_restart(
    bot_factory: BotFactory, database_url: str, tmp_path: Path
) -> None:
    spool = tmp_path / "spool" / "audit"
    spool.parent.mkdir()
    # Writes give up after 100 ms waiting for the lock, as they would on a lock_timeout in
    # production: LockNotAvailableError, the database failing (as SQLite's short busy timeout).
    first = await bot_factory(
        "http", AUDIT_SPOOL=str(spool), DATABASE_URL=with_short_lock_timeout(database_url)
    )
    async with tables_locked(database_url, WRITTEN_BY_A_CALL):
        _, url = await first.command(f"{FULL} escalation")
        [answer] = await first.slack.wait_for_response(url, timeout=20)
        assert "could not write to its database, so nothing was dialled" in str(answer)
        assert spool.read_text().count("\n") == 1  # on disk before the requester was told
        await first.runtime.stop(grace=0)  # restarted while the database still fails

    await recorded_once_after_restarts(bot_factory, spool, AUDIT_SPOOL=str(spool))
    assert first.evo.outgoing_posts == []


@pytest.mark.parametrize("database_url", [POSTGRESQL], indirect=True)
async def test_a_spool_that_cannot_be_written_leaves_the_records_in_memory_and_says_so_once(
    bot_factory: BotFactory, database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "no such directory" / "audit"
    bot = await bot_factory(
        "http", AUDIT_SPOOL=str(spool), DATABASE_URL=with_short_lock_timeout(database_url)
    )
    async with tables_locked(database_url, WRITTEN_BY_A_CALL):
        for _ in range(2):
            _, url = await bot.command(f"{FULL} escalation")
            [answer] = await bot.slack.wait_for_response(url, timeout=20)
            assert "could not write to its database, so nothing was dialled" in str(answer)
    await recorded(bot, 2)  # from memory, once the database answers
    assert not spool.parent.exists()
    said = [r for r in caplog.records if "could not keep audit records" in r.getMessage()]
    assert len(said) == 1 and "set AUDIT_SPOOL to a writable file" in said[0].getMessage()


async def a_refusal_spooled(bot_factory: BotFactory, database_url: str, spool: Path) -> None:
    """A bot asked for a call while its database fails, on either backend, stopped with the
    refusal waiting in `spool`."""
    if dialect_of(database_url) == SQLITE:
        bot = await bot_factory("http", AUDIT_SPOOL=str(spool),
                                DATABASE_URL=with_short_busy_timeout(database_url))
        failing: AbstractAsyncContextManager[object] = _sync(write_lock(bot))
    else:
        bot = await bot_factory("http", AUDIT_SPOOL=str(spool),
                                DATABASE_URL=with_short_lock_timeout(database_url))
        failing = tables_locked(database_url, WRITTEN_BY_A_CALL)
    async with failing:
        _, url = await bot.command(f"{FULL} escalation")
        [answer] = await bot.slack.wait_for_response(url, timeout=20)
        assert "could not write to its database, so nothing was dialled" in str(answer)
        await bot.runtime.stop(grace=0)
    assert spool.read_text().count("\n") == 1


@asynccontextmanager
async def _sync(held: AbstractContextManager[None]) -> AsyncIterator[None]:
    with held:
        yield


@on_both_databases
async def test_a_spooled_record_drained_again_days_later_is_still_written_once(
    bot_factory: BotFactory, database_url: str, tmp_path: Path
) -> None:
    spool = tmp_path / "audit-spool"
    await a_refusal_spooled(bot_factory, database_url, spool)
    left_by_a_crash = spool.read_text()
    second = await bot_factory("http", AUDIT_SPOOL=str(spool))
    await recorded(second)
    await second.runtime.stop()
    # The bot died after writing the record and before taking it out of the file; it is started
    # again after a weekend, when any claim made as it was written has long expired.
    spool.write_text(left_by_a_crash)
    db = Database(database_url)
    await db.open()
    try:
        await db.execute("UPDATE claims SET claimed_at = claimed_at - ?",
                         (CLAIM_LIFETIME_SECONDS + 3600,))
    finally:
        await db.close()
    third = await bot_factory("http", AUDIT_SPOOL=str(spool))
    await until(lambda: spool.read_text() == "", timeout=20)
    await third.settle()
    [record] = await audit_records(third)
    assert record.decision == "refused" and record.reason == "DatabaseUnavailable"


@on_both_databases
async def test_a_refusal_written_from_the_spool_after_newer_calls_shows_in_time_order(
    bot_factory: BotFactory, database_url: str, tmp_path: Path
) -> None:
    spool = tmp_path / "audit-spool"
    await a_refusal_spooled(bot_factory, database_url, spool)
    # Another replica (its own spool) places a call meanwhile; then the first is back and drains.
    other = await bot_factory("http", AUDIT_SPOOL=str(tmp_path / "other-spool"))
    await other.command(f"{OTHER} escalation")
    await other.settle()
    await other.runtime.stop()
    first = await bot_factory("http", AUDIT_SPOOL=str(spool))
    await recorded(first, 2)
    shown = lines(await history(first))
    assert len(shown) == 2
    assert "+1 814 ••• 1234" in shown[0] and "placed" in shown[0]  # the newest first
    assert MASKED in shown[1] and "refused (DatabaseUnavailable)" in shown[1]


REQUIRED = {"slack_bot_token": "xoxb-1", "slack_signing_secret": "s", "evovoice_mode": "simulate"}


@pytest.mark.parametrize(
    ("database_url", "audit_spool", "expected"),
    [
        ("sqlite:///./callbot.db", None, Path("./callbot.db.audit-spool")),
        ("sqlite:////data/x.db", "", Path("/data/x.db.audit-spool")),
        ("sqlite:///:memory:", None, None),
        ("postgresql://u@db:5432/callbot", None, Path("callbot.audit-spool")),
        ("postgresql://u@db:5432/callbot", "/data/spool", Path("/data/spool")),
        ("sqlite:////data/x.db", "/data/spool", Path("/data/spool")),
        ("postgresql://u@db:5432/callbot", "OFF", None),
    ],
)
def test_the_spool_is_beside_a_sqlite_file_in_the_working_directory_for_postgresql_or_as_set(
    database_url: str, audit_spool: str | None, expected: Path | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AUDIT_SPOOL", raising=False)
    chosen = {} if audit_spool is None else {"audit_spool": audit_spool}
    settings = load_settings(_env_file=None, database_url=database_url, **REQUIRED, **chosen)
    assert settings.audit_spool_path == expected
