"""PostgreSQL schemas migrated once and handed from test to test within one test process.

Creating a schema, migrating it and dropping it costs the server about 0.15 CPU-s and a test
0.45 s, and a run gives more than a hundred tests one. A schema a test is done with is emptied
(every table but schema_migrations, identities restarted) and handed to the next test, if its shape
(relations, columns, indexes, constraints, triggers, functions, the migrations applied) is still
the one migrating made; otherwise it is dropped. The bots of tests start on these, as on copies of
a migrated SQLite file (tests/databases.py); what a bot does with an empty database is tested where
that is the subject, on `fresh_database`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from tests.databases import postgres_url, with_schema

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

    async def take(self) -> str:
        """The URL of a migrated schema holding no rows but the migrations'."""
        server = postgres_url()
        if self._clean:
            return with_schema(server, self._clean.pop())
        from bot.storage.database import Database

        schema = f"test_{uuid.uuid4().hex[:16]}"
        await _admin(server, f"CREATE SCHEMA {schema}")
        self._made.append(schema)
        database = Database(with_schema(server, schema))
        await database.open()
        await database.close()
        if self._shape is None:
            self._shape = await _admin(server, None, _shape_of, schema)
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
        import asyncpg

        server = postgres_url()
        schema = url.rpartition("search_path=")[2]
        admin = await asyncpg.connect(server)
        try:
            if await _shape_of(admin, schema) == self._shape:
                if await _emptied(admin, schema):
                    self._clean.append(schema)
                    return
            await admin.execute(f"DROP SCHEMA {schema} CASCADE")
            self._made.remove(schema)
        finally:
            await admin.close()

    def drop_all(self) -> None:
        """Drop every schema made (from outside any event loop)."""
        if not self._made:
            return

        async def drop() -> None:
            for schema in self._made:
                await _admin(postgres_url(), f"DROP SCHEMA IF EXISTS {schema} CASCADE")

        with ThreadPoolExecutor(max_workers=1) as thread:
            thread.submit(asyncio.run, drop()).result()
        self._made.clear()
        self._clean.clear()


async def _emptied(admin: Any, schema: str) -> bool:
    """Delete every row but the migrations' and restart the identities; False if that failed.
    (Not TRUNCATE: it gives each table a new file, which costs the server ten times as much.)"""
    import asyncpg

    tables = [row[0] for row in await admin.fetch(
        "SELECT tablename FROM pg_tables"
        " WHERE schemaname = $1 AND tablename <> 'schema_migrations'", schema)]
    sequences = await admin.fetch(
        "SELECT sequencename, start_value FROM pg_sequences WHERE schemaname = $1", schema)
    try:
        async with admin.transaction():
            # The append-only tables' triggers refuse DELETE: not for this session.
            await admin.execute("SET LOCAL session_replication_role = replica")
            await admin.execute("SET LOCAL lock_timeout = '10s'")
            for table in tables:
                await admin.execute(f"DELETE FROM {schema}.{table}")
            for name, start in sequences:
                await admin.execute("SELECT setval($1, $2, false)", f"{schema}.{name}", start)
    except asyncpg.PostgresError:
        return False
    return True


async def _shape_of(admin: Any, schema: str) -> str:
    shape = str(await admin.fetchval(SHAPE, schema))
    versions = await admin.fetchval(
        f"SELECT string_agg(version::text, ',' ORDER BY version) FROM {schema}.schema_migrations"
    )
    return f"{shape}\nmigrations {versions}"


async def _admin(server: str, statement: str | None, query: Any = None, *args: Any) -> Any:
    import asyncpg

    admin = await asyncpg.connect(server)
    try:
        if statement is not None:
            await admin.execute(statement)
        return await query(admin, *args) if query is not None else None
    finally:
        await admin.close()
