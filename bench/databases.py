"""The bot's database during a burst: a SQLite file in the run's directory, or a schema of its own
in a PostgreSQL database (created empty for the run, dropped after it), which every replica of the
run shares.

The PostgreSQL server is `--postgres-url`, else `CALLBOT_BENCH_POSTGRES_URL`, else the local one
this project's machines run (trust authentication for the user `postgres`). Its server processes
are charged to no bot: `RunDatabase.server_cpu()` reads the CPU time of the backends serving the
bots' connections (they are told apart by the `application_name` the run gives them), so a burst's
figures can say what the database cost besides the bots.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from bench.processes import cpu_seconds

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
DATABASES = (SQLITE, POSTGRESQL)
POSTGRES_URL_VARIABLE = "CALLBOT_BENCH_POSTGRES_URL"
LOCAL_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def default_postgres_url() -> str:
    return os.environ.get(POSTGRES_URL_VARIABLE) or LOCAL_POSTGRES_URL


def with_settings(url: str, **settings: str) -> str:
    """The URL with server settings added: asyncpg passes unknown query parameters to the server,
    so every connection of the bot's pool has them (`search_path`, `application_name`)."""
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(settings)) if q)
    return urlunsplit(parts._replace(query=query))


@dataclass(frozen=True)
class RunDatabase:
    url: str  # the bots' DATABASE_URL
    admin: Any = None  # PostgreSQL: the bench's own connection (asyncpg)
    name: str = ""  # PostgreSQL: the run's schema, and its connections' application_name

    async def server_cpu(self) -> dict[int, float]:
        """CPU seconds so far of each server process serving the bots (none for SQLite)."""
        if self.admin is None:
            return {}
        pids = await self.admin.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1", self.name
        )
        cpu = {}
        for row in pids:
            try:
                cpu[int(row["pid"])] = cpu_seconds(int(row["pid"]))
            except OSError:  # a server on another host, or the backend just ended
                pass
        return cpu


def server_cpu_between(before: dict[int, float], after: dict[int, float]) -> float:
    """What the bots' server processes used between two readings (new ones: all of theirs)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


@asynccontextmanager
async def fresh_database(kind: str, workdir: Path, postgres_url: str) -> AsyncIterator[RunDatabase]:
    """An empty database of `kind` for one run; a PostgreSQL schema is dropped after it."""
    if kind == SQLITE:
        yield RunDatabase(f"sqlite:///{workdir / 'callbot.db'}")
        return
    if kind != POSTGRESQL:
        raise ValueError(f"unknown database {kind!r}")
    import asyncpg  # the bot's own PostgreSQL driver

    name = f"bench_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f"CREATE SCHEMA {name}")
        try:
            url = with_settings(postgres_url, search_path=name, application_name=name)
            yield RunDatabase(url, admin, name)
        finally:
            await admin.execute(f"DROP SCHEMA {name} CASCADE")
    finally:
        await admin.close()
