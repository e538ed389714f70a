"""The two database backends for tests: SQLite in the test's own directory, PostgreSQL in a schema
of the database at CALLBOT_TEST_POSTGRES_URL: an empty database is a fresh schema, dropped
afterwards; a migrated one is lent, emptied and reused (tests/postgres_schemas.py).

Without CALLBOT_TEST_POSTGRES_URL the PostgreSQL cases are skipped and the summary says how many;
with CALLBOT_TEST_REQUIRE_POSTGRES=1 (CI sets it) that skip is a failure instead.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest

if TYPE_CHECKING:
    from bot.storage.database import Database, Row
    from tests.postgres_schemas import MigratedSchemas

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
BACKENDS = [SQLITE, POSTGRESQL]
POSTGRES_URL_VARIABLE = "CALLBOT_TEST_POSTGRES_URL"

# Marks a test (or, as `pytestmark`, a module) to run once per backend; the test then asks for the
# `database_url` fixture, directly or through `bot_factory`.
on_both_databases = pytest.mark.parametrize("database_url", BACKENDS, indirect=True)

# The reason of each skip: the summary counts the skipped reports that carry it (tests/conftest.py),
# which also works under pytest-xdist, where the skips happen in the workers' processes.
SKIPPED_WITHOUT_POSTGRES = f"PostgreSQL: {POSTGRES_URL_VARIABLE} is not set"


def postgres_url() -> str:
    url = os.environ.get(POSTGRES_URL_VARIABLE, "")
    if url:
        return url
    if os.environ.get("CALLBOT_TEST_REQUIRE_POSTGRES"):
        pytest.fail(
            f"{SKIPPED_WITHOUT_POSTGRES}, and CALLBOT_TEST_REQUIRE_POSTGRES asks for these tests"
        )
    pytest.skip(SKIPPED_WITHOUT_POSTGRES)


# The settings of every session the tests open on the test server (their bots' too, through
# `with_schema`): a commit does not wait for its WAL to reach the disk. Nothing a test checks
# outlives a crash of the server, which no test causes (a server that stops cleanly writes it all);
# a commit is seen by the other sessions at once either way. Per session, not ALTER ROLE or
# DATABASE: the server's own default stays, and nothing is left behind in it.
TEST_SESSION = {"synchronous_commit": "off"}


def with_schema(url: str, schema: str) -> str:
    """The URL with `search_path` and `TEST_SESSION` set (asyncpg passes unknown query parameters
    to the server)."""
    parts = urlsplit(url)
    settings = urlencode({"search_path": schema, **TEST_SESSION})
    query = "&".join(q for q in (parts.query, settings) if q)
    return urlunsplit(parts._replace(query=query))


def schema_of(url: str) -> str:
    """The schema a URL of `with_schema` names."""
    return parse_qs(urlsplit(url).query)["search_path"][-1]


@asynccontextmanager
async def fresh_database(
    backend: str, directory: Path, name: str = "callbot"
) -> AsyncIterator[str]:
    """The URL of an empty database of `backend`, to be opened by the code under test."""
    if backend == SQLITE:
        yield f"sqlite:///{directory / (name + '.db')}"
        return
    import asyncpg

    server = postgres_url()
    schema = f"test_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(server, server_settings=TEST_SESSION)
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        yield with_schema(server, schema)
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


@asynccontextmanager
async def role_owning_nothing(url: str) -> AsyncIterator[str]:
    """`url` (a `fresh_database`'s) for a role of its own that may read and change the rows of its
    schema's tables, and only read and add to the audit trail's, but owns none and may create
    none: the bots' role of README's "Databases" (its GRANTs), the schema migrated by its
    owner."""
    import asyncpg

    schema = schema_of(url)
    role = f"callbot_limited_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f"""
            CREATE ROLE {role} LOGIN;
            GRANT USAGE ON SCHEMA {schema} TO {role};
            GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role};
            GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {role};
        """)
        for table in ("audit_attempts", "audit_events"):
            if await admin.fetchval("SELECT to_regclass($1)", f"{schema}.{table}"):
                await admin.execute(f"REVOKE UPDATE, DELETE ON {schema}.{table} FROM {role}")
        parts = urlsplit(url)
        yield urlunsplit(parts._replace(netloc=f"{role}@{parts.netloc.rpartition('@')[2]}"))
    finally:
        await admin.execute(f"DROP OWNED BY {role}")
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()


@asynccontextmanager
async def migrated_database(
    backend: str, directory: Path, sqlite_template: Path, schemas: MigratedSchemas
) -> AsyncIterator[str]:
    """The URL of a migrated database of `backend`: a copy of `sqlite_template` in `directory`,
    or a schema lent by `schemas`."""
    if backend == POSTGRESQL:
        async with schemas.lent() as url:
            yield url
        return
    url = f"sqlite:///{directory / 'callbot.db'}"
    copy_migrated(sqlite_template, url)
    yield url


def migrated_sqlite_template(directory: Path) -> Path:
    """A SQLite database migrated by this callbot, for the bots of tests to start on copies of.

    Migrating costs a database about 15 ms of CPU and 30 ms of waiting for the disk, and a run of
    the tests makes some 600 of them. What a bot does with a database it finds empty is tested
    where that is the subject: test_store.py, test_migrations.py, and every `python -m bot` that
    tests/processes.py starts.
    """
    from bot.storage.database import Database

    path = directory / "callbot.db"

    async def migrate() -> None:
        database = Database(f"sqlite:///{path}")
        await database.open()
        await database.close()

    # In a thread of its own: asyncio.run here would unset the event loop pytest-asyncio set.
    with ThreadPoolExecutor(max_workers=1) as thread:
        thread.submit(asyncio.run, migrate()).result()
    # Everything into the main file, so that copying that one file copies the whole database.
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return path


def copy_migrated(template: Path, url: str) -> None:
    """Put a copy of `template` where the SQLite `url` points, unless a database is there already
    (a test that prepared its own, or a bot started again)."""
    from bot.storage.database import DatabaseUrlError, sqlite_path

    try:
        path = Path(sqlite_path(url))
    except DatabaseUrlError:
        return  # PostgreSQL, or a URL the test means the bot to refuse
    if str(path) != ":memory:" and path.parent.is_dir() and not path.exists():
        shutil.copyfile(template, path)


class Noting:
    """The database, noting the queries read through it with their parameters."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.read: list[tuple[str, tuple[Any, ...]]] = []

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        self.read.append((sql, tuple(params)))
        return await self._db.fetchall(sql, params)
