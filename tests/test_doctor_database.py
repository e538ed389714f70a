"""`callbot check`'s database line for PostgreSQL and for a database kept in memory."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from bot.ops.check import Status
from bot.ops.check_database import without_password
from bot.standins.evovoice import EvoVoiceStandIn
from bot.standins.slack import SlackStandIn
from bot.storage.database import MIGRATIONS, Database
from tests.checkups import by_subject, check
from tests.databases import POSTGRESQL, fresh_database, role_owning_nothing

@pytest.mark.usefixtures("no_ambient_settings")
async def test_an_unreachable_postgresql_fails_without_showing_its_password(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    url = "postgresql://callbot:Hunter2-Secret@127.0.0.1:1/callbot"  # nothing listens on port 1
    database = by_subject(await check(slack, evo, policy_path, DATABASE_URL=url))["Database"]
    assert database.status is Status.FAIL
    assert database.detail.startswith("postgresql://callbot:•••@127.0.0.1:1/callbot can't be "
                                      "reached (ConnectionRefusedError")
    assert "check DATABASE_URL" in (database.fix or "")
    assert "Hunter2" not in database.detail + (database.fix or "")


@pytest.mark.usefixtures("no_ambient_settings")
async def test_a_password_given_as_a_query_parameter_is_not_shown_either(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    # libpq and asyncpg read the password from `?password=` too; the check line repeats the URL.
    url = "postgresql://callbot@127.0.0.1:1/callbot?password=Hunter2-Secret"
    database = by_subject(await check(slack, evo, policy_path, DATABASE_URL=url))["Database"]
    assert database.status is Status.FAIL
    assert database.detail.startswith("postgresql://callbot@127.0.0.1:1/callbot?password=••• "
                                      "can't be reached (ConnectionRefusedError")
    assert "Hunter2" not in database.detail + (database.fix or "")


@pytest.mark.parametrize(("text", "shown"), [
    ("postgresql://callbot:Hunter2@db/callbot", "postgresql://callbot:•••@db/callbot"),
    ("postgresql://callbot:Hunter2@Secret@db:5432/callbot refused",
     "postgresql://callbot:•••@db:5432/callbot refused"),
    ("(postgresql://callbot:Hunter2/Secret@db/callbot)", "(postgresql://callbot:•••@db/callbot)"),
    ("postgres://:Hunter2@db", "postgres://:•••@db"),
    ("postgresql://callbot:Hunter2@a,b/callbot?user=me@corp",
     "postgresql://callbot:•••@a,b/callbot?user=me@corp"),
    ("postgresql://callbot@db/callbot", "postgresql://callbot@db/callbot"),
    # libpq's and asyncpg's other place for it: a query parameter.
    ("postgresql://callbot@db/callbot?password=Hunter2&sslmode=require",
     "postgresql://callbot@db/callbot?password=•••&sslmode=require"),
    ("postgresql:///callbot?host=db&user=callbot&password=Hunter2%26Secret (refused)",
     "postgresql:///callbot?host=db&user=callbot&password=••• (refused)"),
    ("postgresql://callbot@db/callbot?sslpassword=Hunter2",
     "postgresql://callbot@db/callbot?sslpassword=•••"),
])
def test_the_password_of_a_postgresql_url_is_hidden_whole_and_the_host_shown(
    text: str, shown: str
) -> None:
    assert without_password(text) == shown


# Not `no_ambient_settings`: it would take CALLBOT_TEST_POSTGRES_URL away; `check` passes every
# setting itself.
async def test_an_empty_postgresql_database_passes_and_is_not_migrated_by_the_check(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    """A first deployment on PostgreSQL (README: an empty database, then start the bots): the bot
    migrates it at start-up, as it creates a SQLite file, so a gate on the check lets it start."""
    async with fresh_database(POSTGRESQL, policy_path.parent) as url:
        database = by_subject(await check(slack, evo, policy_path, DATABASE_URL=url))["Database"]
        assert database.status is Status.PASS, database
        latest = max(m.version for m in MIGRATIONS)
        assert (f"at schema version 0; the bot migrates it to {latest} at start-up (take a "
                "backup first: pg_dump)") in database.detail
        db = Database(url)
        await db.open_read_only()
        try:
            assert await db.schema_version() == 0, "the doctor must not migrate"
        finally:
            await db.close()


async def test_a_role_that_may_not_migrate_an_older_schema_is_told_before_start_up(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    """README (Databases): bots run as a role that owns nothing, the owner migrating after each
    upgrade. Checked as that role before the owner did, the bot would fail at start-up: that is
    the ✗, not the schema being behind."""
    async with fresh_database(POSTGRESQL, policy_path.parent) as url:
        owner = Database(url)
        await owner.open(migrations=MIGRATIONS[:-1])
        await owner.close()
        async with role_owning_nothing(url) as limited:
            database = by_subject(
                await check(slack, evo, policy_path, DATABASE_URL=limited))["Database"]
            role = urlsplit(limited).username
        assert database.status is Status.FAIL, database
        latest = max(m.version for m in MIGRATIONS)
        assert database.detail.endswith(
            f"is at schema version {latest - 1}; this callbot needs {latest}, and {role} may "
            "not migrate it (it owns none of its tables)"), database.detail
        assert database.fix == (
            "start this callbot once as the role that owns the tables (it migrates them at "
            "start-up; take a backup first: pg_dump), then the bots as this one "
            "(README: Databases)")
        # As the owner: passes.
        database = by_subject(await check(slack, evo, policy_path, DATABASE_URL=url))["Database"]
        assert database.status is Status.PASS, database


async def test_a_table_the_bots_role_was_never_granted_is_told_before_the_first_call(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    """README's GRANTs ON ALL TABLES cover the tables there were when they ran: a table an
    upgrade's migration added later (as slack_posts once was) is not the bots' role's, and the
    first call's status message, kept there before it is sent, would fail. The check says so."""
    async with fresh_database(POSTGRESQL, policy_path.parent) as url:
        owner = Database(url)
        await owner.open()
        await owner.close()
        async with role_owning_nothing(url) as limited:
            role = urlsplit(limited).username
            database = by_subject(
                await check(slack, evo, policy_path, DATABASE_URL=limited))["Database"]
            assert database.status is Status.PASS, database  # README's GRANTs, all of them
            admin = await asyncpg.connect(url)
            try:
                # As if slack_posts had come with an upgrade after the GRANTs.
                await admin.execute(f"REVOKE ALL ON slack_posts FROM {role}")
                database = by_subject(
                    await check(slack, evo, policy_path, DATABASE_URL=limited))["Database"]
            finally:
                await admin.close()
        assert database.status is Status.FAIL, database
        assert database.detail.endswith(
            f"is migrated, but {role} may not SELECT, INSERT, UPDATE, DELETE slack_posts"), database
        assert database.fix == (
            "as the tables' owner, run README's GRANT statements (Databases) again: a migration's "
            "new tables are not covered by the GRANTs run before it")


@pytest.mark.usefixtures("no_ambient_settings")
async def test_a_database_in_memory_passes_and_says_nothing_is_kept(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    findings = await check(slack, evo, policy_path, DATABASE_URL="sqlite:///:memory:")
    database = by_subject(findings)["Database"]
    assert database.status is Status.PASS
    assert "in memory: nothing is kept across restarts" in database.detail
