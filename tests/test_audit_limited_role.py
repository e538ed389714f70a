"""PostgreSQL: the audit trail append-only against whoever holds the bot's credentials too.

The triggers (migration 2) refuse UPDATE, DELETE and TRUNCATE, but a table's owner may drop them
or the table. A bot run as a role that owns nothing, may change the rows of the other tables and
only add to and read the audit trail (README, "Databases"), can't: the database was migrated by
its owner beforehand."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg
import pytest

from tests.conftest import BotFactory
from tests.databases import POSTGRESQL
from tests.follow_helpers import (
    FAST,
    FULL,
    MASKED,
    audit_records,
    end_session,
    history,
    lines,
    status_message,
    wait_for_edit,
)


@pytest.fixture
async def limited_url(database_url: str) -> AsyncIterator[str]:
    """The migrated schema's URL for a role of its own: every table's rows but the audit trail's,
    which it may only read and add to; no right to create anything."""
    parts = urlsplit(database_url)
    [schema] = parse_qs(parts.query)["search_path"]
    role = f"callbot_limited_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN")
        await admin.execute(f"""
            GRANT USAGE ON SCHEMA {schema} TO {role};
            GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role};
            REVOKE UPDATE, DELETE ON {schema}.audit_attempts, {schema}.audit_events FROM {role};
            GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {role};
        """)
        user, _, host = parts.netloc.rpartition("@")
        assert user
        yield urlunsplit(parts._replace(netloc=f"{role}@{host}"))
    finally:
        await admin.execute(f"DROP OWNED BY {role}")
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()


@pytest.mark.parametrize("database_url", [POSTGRESQL], indirect=True)
async def test_on_postgresql_a_bot_that_may_only_add_to_the_audit_trail_records_every_call(
    bot_factory: BotFactory, limited_url: str
) -> None:
    # It would not start: it created the migrations' table "if not exists", which needs the right
    # to create tables, so the bot had to own its tables and could drop the trail's triggers.
    bot = await bot_factory("http", DATABASE_URL=limited_url, **FAST)
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    end_session(bot, session_id, after_seconds=5, outcome="Completed")
    await wait_for_edit(bot, status, "Ended")
    await bot.settle()
    [record] = await audit_records(bot)
    assert [e.kind for e in record.events] == ["placed", "ended"]
    [line] = lines(await history(bot))
    assert MASKED in line and "not answered, Completed, 5 s" in line

    as_the_bot = await asyncpg.connect(limited_url)
    try:
        for statement in ("UPDATE audit_attempts SET decision = 'denied'",
                          "DELETE FROM audit_events", "TRUNCATE audit_events",
                          "ALTER TABLE audit_attempts DISABLE TRIGGER USER",
                          "DROP TRIGGER audit_events_append_only ON audit_events",
                          "DROP TABLE audit_events"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await as_the_bot.execute(statement)
    finally:
        await as_the_bot.close()
    [record] = await audit_records(bot)
    assert record.decision == "allowed" and [e.kind for e in record.events] == ["placed", "ended"]
