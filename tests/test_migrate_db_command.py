"""`callbot migrate-db POSTGRES_URL` as an operator runs it: what it says, what it refuses."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from bot.ops.migrate_db import MigrationRefused, migrate_db
from bot.storage.database import MIGRATIONS, Database, Migration, sqlite_path
from tests.conftest import BotFactory
from tests.database_locks import with_short_busy_timeout, write_lock
from tests.databases import POSTGRESQL, fresh_database
from tests.follow_helpers import FULL, MASKED
from tests.processes import run_cli


async def sqlite_installation(folder: Path) -> str:
    """A stopped installation's database holding one claim."""
    url = f"sqlite:///{folder / 'callbot.db'}"
    db = Database(url)
    await db.open()
    try:
        await db.execute("INSERT INTO claims (key, claimed_at) VALUES ('k', 1)")
    finally:
        await db.close()
    return url


async def age_heartbeats(url: str, seconds: float = 3600) -> None:
    db = Database(url)
    await db.open()
    try:
        await db.execute("UPDATE replicas SET seen_at = seen_at - ?", (seconds,))
    finally:
        await db.close()


async def test_python_m_bot_migrate_db_says_what_it_copied_and_refuses_a_second_copy(
    tmp_path: Path,
) -> None:
    (tmp_path / "data").mkdir()  # not ./callbot.db, the default: DATABASE_URL names it
    sqlite_url = await sqlite_installation(tmp_path / "data")
    async with fresh_database(POSTGRESQL, tmp_path) as postgres_url:
        env = {"DATABASE_URL": sqlite_url}
        code, out, err = await run_cli(["migrate-db", postgres_url], env, tmp_path)
        assert code == 0, err
        assert out.startswith("callbot migrate-db: copied ") and "claims 1" in out
        assert out.endswith("; now set DATABASE_URL to the PostgreSQL URL\n")

        code, out, err = await run_cli(["migrate-db", postgres_url], env, tmp_path)
        assert code == 2 and out == ""
        assert err.startswith("callbot migrate-db: the PostgreSQL database already holds callbot "
                              "data (")


async def test_postgresql_holding_callbot_data_in_any_table_is_refused(tmp_path: Path) -> None:
    sqlite_url = await sqlite_installation(tmp_path)
    async with fresh_database(POSTGRESQL, tmp_path) as postgres_url:
        target = Database(postgres_url)
        await target.open()
        try:
            # Only the last table copied holds a row: a Slack post some bot still has to send.
            await target.execute(
                "INSERT INTO slack_posts (created_at, owner, purpose, channel, thread_ts, message)"
                " VALUES (1, 'o', 'p', 'C', '1.2', '{}')")
            refused = r"already holds callbot data \(slack_posts\)"
            with pytest.raises(MigrationRefused, match=refused):
                await migrate_db(sqlite_url, postgres_url)
            assert await target.fetchone("SELECT 1 FROM claims") is None, "nothing was copied"
        finally:
            await target.close()


async def test_a_bot_seen_within_its_lease_seconds_is_still_running(tmp_path: Path) -> None:
    """How recently a running bot was seen is read from LEASE_SECONDS, as the bots read it: one
    renewing every 10 s (LEASE_SECONDS=60) was seen 20 s ago and still runs."""
    sqlite_url = await sqlite_installation(tmp_path)
    db = Database(sqlite_url)
    await db.open()
    try:
        await db.execute("INSERT INTO replicas (id, host, started_at, seen_at)"
                         " VALUES ('h:1:ab', 'h', 1, ?)", (time.time() - 20,))
    finally:
        await db.close()
    async with fresh_database(POSTGRESQL, tmp_path) as postgres_url:
        env = {"DATABASE_URL": sqlite_url, "LEASE_SECONDS": "60"}
        code, out, err = await run_cli(["migrate-db", postgres_url], env, tmp_path)
        assert code == 2 and out == "", err
        assert re.fullmatch(  # seen 20 s before the command started, and then some
            r"callbot migrate-db: a bot is running on the SQLite database: h \(seen 2\d s ago\); "
            r"stop every bot using it, then run migrate-db again \(a bot killed rather than "
            r"stopped is forgotten 60 s after it was last seen\)\n", err), err
        # With the default 15 s, the same bot was killed: forgotten, and the copy goes ahead.
        code, out, err = await run_cli(["migrate-db", postgres_url], {**env, "LEASE_SECONDS": ""},
                                       tmp_path)
        assert code == 0 and "claims 1" in out, err


async def an_older_bot_running_on(url: str) -> None:
    """`url`'s database as an older callbot left it (the last migration not applied), that bot
    still running: its heartbeat a second old."""
    db = Database(url)
    await db.open(MIGRATIONS[:-1])
    try:
        await db.execute("INSERT INTO replicas (id, host, started_at, seen_at)"
                         " VALUES ('old:1:ab', 'old', 1, ?)", (time.time() - 1,))
    finally:
        await db.close()


async def schema_version(url: str) -> int:
    db = Database(url)
    await db.open_read_only()
    try:
        return await db.schema_version()
    finally:
        await db.close()


@pytest.mark.parametrize("running_on", ["SQLite", "PostgreSQL"])
async def test_a_bot_still_running_is_refused_before_its_database_is_migrated(
    tmp_path: Path, running_on: str
) -> None:
    """An older bot still running (the operator ran the newer image's migrate-db first) is
    refused without migrating its database under it: migrated, the older bot would run on a
    schema it doesn't know, and refuse to start again once stopped (newer than it knows)."""
    older = MIGRATIONS[-2].version
    async with fresh_database(POSTGRESQL, tmp_path) as postgres_url:
        if running_on == "SQLite":
            sqlite_url = f"sqlite:///{tmp_path / 'callbot.db'}"
            await an_older_bot_running_on(sqlite_url)
        else:
            sqlite_url = await sqlite_installation(tmp_path)
            await an_older_bot_running_on(postgres_url)
        running = postgres_url if running_on == "PostgreSQL" else sqlite_url
        code, out, err = await run_cli(["migrate-db", postgres_url],
                                       {"DATABASE_URL": sqlite_url}, tmp_path)
        assert code == 2 and out == "", err
        assert err.startswith(f"callbot migrate-db: a bot is running on the {running_on} "
                              "database: old (seen "), err
        assert await schema_version(running) == older


async def test_a_database_a_newer_callbot_migrated_is_refused_naming_it(tmp_path: Path) -> None:
    sqlite_url = await sqlite_installation(tmp_path)
    newer = MIGRATIONS[-1].version + 1
    db = Database(sqlite_url)
    await db.open([*MIGRATIONS, Migration(newer, "from a newer callbot", "SELECT 1")])
    await db.close()
    async with fresh_database(POSTGRESQL, tmp_path) as postgres_url:
        code, out, err = await run_cli(["migrate-db", postgres_url],
                                       {"DATABASE_URL": sqlite_url}, tmp_path)
        assert code == 2 and out == "", err
        assert err == (f"callbot migrate-db: the SQLite database is at schema version {newer}, "
                       f"newer than this callbot knows ({newer - 1}): run migrate-db of the "
                       "callbot version that migrated it, or a newer one\n")
        assert await schema_version(postgres_url) == 0, "the target was left as it was"


async def test_a_database_url_naming_no_file_copies_nothing_and_creates_nothing(
    tmp_path: Path,
) -> None:
    # Opened, the missing file would be created empty, and "copied no rows" read as done.
    async with fresh_database(POSTGRESQL, tmp_path) as postgres_url:
        code, out, err = await run_cli(["migrate-db", postgres_url],
                                       {"DATABASE_URL": "sqlite:///./gone.db"}, tmp_path)
    assert code == 2 and out == ""
    assert err == ("callbot migrate-db: ./gone.db does not exist: check DATABASE_URL (the SQLite "
                   "database to copy)\n")
    assert not (tmp_path / "gone.db").exists()


async def test_the_database_url_in_dotenv_is_the_one_copied(tmp_path: Path) -> None:
    # Settings come from the environment or .env (README: Settings), for this command too.
    (tmp_path / "data").mkdir()
    await sqlite_installation(tmp_path / "data")
    (tmp_path / ".env").write_text("DATABASE_URL=sqlite:///./data/callbot.db\n")
    async with fresh_database(POSTGRESQL, tmp_path) as postgres_url:
        code, out, err = await run_cli(["migrate-db", postgres_url], {}, tmp_path)
    assert code == 0, err
    assert "claims 1" in out
    assert not (tmp_path / "callbot.db").exists()


async def test_a_postgresql_it_cannot_reach_is_one_line_without_its_password(
    tmp_path: Path,
) -> None:
    sqlite_url = await sqlite_installation(tmp_path)
    target = "postgresql://callbot:Hunter2-Secret@127.0.0.1:1/callbot"  # nothing listens on port 1
    code, out, err = await run_cli(["migrate-db", target], {"DATABASE_URL": sqlite_url}, tmp_path)
    assert code == 1 and out == ""
    assert err.startswith("callbot migrate-db: the copy failed (ConnectionRefusedError: ")
    assert err.endswith("); nothing was copied: fix that and run it again\n")
    assert err.count("\n") == 1 and "Hunter2" not in err


async def test_a_target_url_the_driver_would_misread_copies_nothing_and_is_not_echoed(
    tmp_path: Path,
) -> None:
    sqlite_url = await sqlite_installation(tmp_path)
    target = "postgresql://callbot:Hunter2/Secret@127.0.0.1:1/callbot"
    code, out, err = await run_cli(["migrate-db", target], {"DATABASE_URL": sqlite_url}, tmp_path)
    assert code == 2 and out == ""
    assert err.startswith("callbot migrate-db: the target URL: a port is not a number")
    assert "percent-encode" in err and "Hunter2" not in err and "Secret" not in err


@pytest.mark.parametrize("audit_spool", ["", "spool/audit"])
async def test_audit_records_waiting_in_the_sqlite_spool_are_moved_too(
    bot_factory: BotFactory, database_url: str, tmp_path: Path, audit_spool: str
) -> None:
    """A refusal met a locked database and waits in the spool (`<db file>.audit-spool`, or
    AUDIT_SPOOL's) when the bot stops. The PostgreSQL bots' spool is another file unless set so
    (./callbot.audit-spool): unless migrate-db writes the record first, nobody ever would."""
    spool = Path(sqlite_path(database_url) + ".audit-spool")
    if audit_spool:
        spool = tmp_path / audit_spool
        spool.parent.mkdir()
    bot = await bot_factory("http", DATABASE_URL=with_short_busy_timeout(database_url),
                            AUDIT_SPOOL=str(spool))
    with write_lock(bot):
        _, url = await bot.command(f"{FULL} escalation")
        [answer] = await bot.slack.wait_for_response(url, timeout=20)
        assert "could not write to its database, so nothing was dialled" in str(answer)
        await bot.runtime.stop(grace=0)
    assert spool.read_text().count("\n") == 1
    # Stopped with its database locked, the bot could not leave the replicas table: it reads as
    # killed, forgotten LEASE_SECONDS after it was last seen (aged here, not waited for).
    await age_heartbeats(database_url)

    async with fresh_database(POSTGRESQL, tmp_path, name="moved") as postgres_url:
        env = {"DATABASE_URL": database_url} | ({"AUDIT_SPOOL": audit_spool} if audit_spool else {})
        code, out, err = await run_cli(["migrate-db", postgres_url], env, tmp_path)
        assert code == 0, err
        assert out.startswith("callbot migrate-db: wrote 1 audit record(s) waiting in the spool "
                              "into the SQLite database first\n")
        assert "audit_attempts 1" in out and err == ""
        assert spool.read_text() == ""
        target = Database(postgres_url)
        await target.open()
        try:
            rows = await target.fetchall("SELECT decision, reason, number_masked FROM"
                                         " audit_attempts")
        finally:
            await target.close()
    assert [tuple(row) for row in rows] == [("refused", "DatabaseUnavailable", MASKED)]
