"""PostgreSQL schemas migrated once and handed from test to test within one test process.

Creating a schema, migrating it and dropping it costs the server about 0.15 CPU-s and a test
0.45 s, and a run gives more than a hundred tests one. A schema a test is done with is emptied
(every table but schema_migrations, identities restarted) and handed to the next test, if its shape
(relations, columns, indexes, constraints, triggers, functions, the migrations applied) is still
the one migrating made; otherwise it is dropped. The bots of tests start on these, as on copies of
a migrated SQLite file (tests/databases.py); what a bot does with an empty database is tested where
that is the subject, on `fresh_database`.

The schemas are made, checked, emptied and dropped through one connection per test process, kept
in a thread with an event loop of its own (each test's loop ends with the test): a connection per
test cost the server a process and its catalog caches, 10 ms of CPU, and the test 2 ms.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from tests.databases import TEST_SESSION, postgres_url, schema_of, with_schema

# What migrating makes in a schema, as text (names, types, flags). Found through pg_depend's index
# on what a schema holds, then by oid: scanning pg_class and pg_attribute whole costs 25 times as
# much, and more as the catalogs grow (the test server runs without autovacuum).
SHAPE = """
WITH relations AS (
  SELECT c.oid, c.relname, c.relkind FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
   WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_namespace'::regclass
     AND d.refobjid = $1::regnamespace
)
SELECT coalesce(string_agg(item, E'\\n' ORDER BY item), '') FROM (
  SELECT 'relation ' || relname || ' ' || relkind::text AS item FROM relations
  UNION ALL
  SELECT 'column ' || r.relname || '.' || a.attname || ' ' || a.atttypid::text || ' '
         || a.atttypmod::text || ' ' || a.attnotnull::text || ' ' || a.attidentity::text
         || ' ' || a.atthasdef::text
    FROM relations r JOIN pg_attribute a ON a.attrelid = r.oid
   WHERE a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
  SELECT 'index ' || i.relname || ' ' || x.indkey::text || ' ' || x.indisunique::text
    FROM relations r JOIN pg_index x ON x.indrelid = r.oid JOIN pg_class i ON i.oid = x.indexrelid
  UNION ALL
  SELECT 'constraint ' || c.conname || ' ' || c.contype::text || ' ' || c.conkey::text
    FROM relations r JOIN pg_constraint c ON c.conrelid = r.oid
  UNION ALL
  SELECT 'trigger ' || t.tgname || ' ' || t.tgenabled::text || ' ' || t.tgtype::text
    FROM relations r JOIN pg_trigger t ON t.tgrelid = r.oid WHERE NOT t.tgisinternal
  UNION ALL
  SELECT 'function ' || p.proname || ' ' || md5(p.prosrc)
    FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
   WHERE d.classid = 'pg_proc'::regclass AND d.refclassid = 'pg_namespace'::regclass
     AND d.refobjid = $1::regnamespace
) shape
"""


class MigratedSchemas:
    """This process's migrated schemas: `take()` one, `give_back()` it, `drop_all()` at the end."""

    def __init__(self) -> None:
        self._clean: list[str] = []
        self._made: list[str] = []
        self._shape: str | None = None
        self._admin = AdminConnection()

    async def take(self) -> str:
        """The URL of a migrated schema holding no rows but the migrations'."""
        server = postgres_url()
        if self._clean:
            return with_schema(server, self._clean.pop())
        from bot.storage.database import Database

        schema = f"test_{uuid.uuid4().hex[:16]}"
        await self._admin.run(server, _execute, f"CREATE SCHEMA {schema}")
        self._made.append(schema)
        database = Database(with_schema(server, schema))
        await database.open()
        await database.close()
        if self._shape is None:
            self._shape = await self._admin.run(server, _shape_of, schema)
        return with_schema(server, schema)

    @asynccontextmanager
    async def lent(self) -> AsyncIterator[str]:
        """`take()`, then `give_back()` once the test is done with it."""
        url = await self.take()
        try:
            yield url
        finally:
            await self.give_back(url)

    async def give_back(self, url: str) -> None:
        schema = schema_of(url)
        if await self._admin.run(postgres_url(), self._reusable, schema):
            self._clean.append(schema)
        else:
            self._made.remove(schema)

    async def _reusable(self, admin: Any, schema: str) -> bool:
        """Emptied if its shape is still the migrated one (True), else dropped."""
        if await _shape_of(admin, schema) == self._shape and await _emptied(admin, schema):
            return True
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        return False

    def drop_all(self) -> None:
        """Drop every schema made (from outside any event loop)."""
        made, self._made = self._made, []
        self._clean.clear()
        if made:
            drop = "; ".join(f"DROP SCHEMA IF EXISTS {schema} CASCADE" for schema in made)
            self._admin.call(postgres_url(), _execute, drop)
        self._admin.close()


async def _emptied(admin: Any, schema: str) -> bool:
    """Delete every row but the migrations' and restart the identities; False if that failed.
    (Not TRUNCATE: it gives each table a new file, which costs the server ten times as much.)
    One script: a statement at a time cost the server 5 ms, against 1 ms."""
    import asyncpg

    tables = [row[0] for row in await admin.fetch(
        "SELECT tablename FROM pg_tables"
        " WHERE schemaname = $1 AND tablename <> 'schema_migrations'", schema)]
    sequences = await admin.fetch(
        "SELECT quote_literal(schemaname || '.' || sequencename), start_value FROM pg_sequences"
        " WHERE schemaname = $1", schema)
    # The append-only tables' triggers refuse DELETE: not for this session.
    script = ["SET LOCAL session_replication_role = replica", "SET LOCAL lock_timeout = '10s'"]
    script += [f"DELETE FROM {schema}.{table}" for table in tables]
    script += [f"SELECT setval({name}, {start}, false)" for name, start in sequences]
    try:
        async with admin.transaction():
            # No parameters: the simple protocol runs the whole script at once.
            await admin.execute(";\n".join(script))
    except asyncpg.PostgresError:
        return False
    return True


async def _shape_of(admin: Any, schema: str) -> str:
    shape = str(await admin.fetchval(SHAPE, schema))
    versions = await admin.fetchval(
        f"SELECT string_agg(version::text, ',' ORDER BY version) FROM {schema}.schema_migrations"
    )
    return f"{shape}\nmigrations {versions}"


async def _execute(admin: Any, statement: str) -> None:
    await admin.execute(statement)


class AdminConnection:
    """One connection to the test server, in a thread of its own (with its loop), for a test
    process's whole run: `run(server, work, *args)` awaits `work(connection, *args)` there."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connection: Any = None
        self._lock: asyncio.Lock | None = None

    async def run(self, server: str, work: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        running = asyncio.run_coroutine_threadsafe(self._work(server, work, args), self._started())
        return await asyncio.wrap_future(running)

    def call(self, server: str, work: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """`run` from outside any event loop."""
        return asyncio.run_coroutine_threadsafe(
            self._work(server, work, args), self._started()).result()

    def close(self) -> None:
        if self._loop is None:
            return
        loop, self._loop = self._loop, None
        if self._connection is not None:
            asyncio.run_coroutine_threadsafe(self._connection.close(), loop).result()
            self._connection = None
        loop.call_soon_threadsafe(loop.stop)

    def _started(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            threading.Thread(target=self._loop.run_forever, name="test schemas",
                             daemon=True).start()
        return self._loop

    async def _work(self, server: str, work: Callable[..., Awaitable[Any]], args: Any) -> Any:
        import asyncpg

        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            for attempt in (1, 2):
                if self._connection is None or self._connection.is_closed():
                    self._connection = await asyncpg.connect(
                        server, server_settings=TEST_SESSION)
                try:
                    return await work(self._connection, *args)
                # A test cut this connection (a server restart, pg_terminate_backend of every
                # session): once more on a new one; what the work does can be done twice.
                except (asyncpg.ConnectionDoesNotExistError, asyncpg.InterfaceError,
                        ConnectionError):
                    self._connection.terminate()
                    self._connection = None
                    if attempt == 2:
                        raise
