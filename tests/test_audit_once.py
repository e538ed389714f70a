"""Each fact of a call in the audit trail once: the database failing between writing a fact and
what the bot writes after it (the follow task tries the step again) writes it no second time."""

from __future__ import annotations

import logging

import pytest

from bot.storage.database import SQLITE, dialect_of
from tests.conftest import BotFactory
from tests.database_locks import (
    tables_locked,
    until_logged,
    with_short_busy_timeout,
    with_short_lock_timeout,
)
from tests.databases import POSTGRESQL
from tests.follow_helpers import (
    FAST,
    FULL,
    audit_records,
    end_session,
    status_message,
    status_ts_recorded,
)
from tests.follow_helpers import wait_for_edit as wait_for_status

pytestmark = pytest.mark.usefixtures("database_retried_quickly")  # the tests end the faults


@pytest.fixture
def database_url(database_url: str) -> str:
    if dialect_of(database_url) != SQLITE:
        return database_url
    return with_short_busy_timeout(database_url)


@pytest.mark.parametrize("database_url", [POSTGRESQL], indirect=True)
async def test_on_postgresql_a_calls_end_met_by_a_locked_calls_table_is_recorded_once(
    bot_factory: BotFactory, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The call ends; its audit event is written, then the call's row can't be (its table held
    # past lock_timeout): the follow task tries the step again until the row is written, and
    # each try wrote the ending again.
    caplog.set_level(logging.WARNING, logger="bot.storage.faults")
    bot = await bot_factory("http", DATABASE_URL=with_short_lock_timeout(database_url), **FAST)
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    await status_ts_recorded(bot, 1)
    async with tables_locked(database_url, "calls"):
        bot.evo.set_session_state(session_id, callState="Connected", answeredByName="Alice")
        await failed_twice(caplog)
    await wait_for_status(bot, status, "Connected", timeout=30)
    async with tables_locked(database_url, "calls"):
        end_session(bot, session_id, after_seconds=30, outcome="Completed")
        await failed_twice(caplog)
    await wait_for_status(bot, status, "Ended", timeout=30)
    [record] = await audit_records(bot)
    assert [e.kind for e in record.events] == ["placed", "answered", "ended"]


async def failed_twice(caplog: pytest.LogCaptureFixture) -> None:
    """Until a write met the lock, and was tried again and met it again."""
    caplog.clear()
    await until_logged(caplog, "the database failed")
    caplog.clear()
    await until_logged(caplog, "the database failed")
