"""PostgreSQL: the ways a server fails for a while are database faults (bot/storage/faults.py), so
a request meeting one is refused with a reference and nothing dialled, and work being followed
waits for the database instead of dying.

A standby promoted late or a server put read-only, a statement cancelled by the server's timeout,
and a server restarting under a running statement are what an operator meets; each must come out
of the backend as one of DATABASE_FAULTS, not as an unexpected error.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from bot.storage import postgres
from bot.storage.claims import Claims
from bot.storage.database import MIGRATIONS, Database
from bot.storage.faults import DATABASE_FAULTS
from tests.database_locks import tables_locked
from tests.databases import POSTGRESQL, fresh_database, postgres_url

HANG_GUARD = 30.0  # seconds; only a hang would reach it


@pytest.fixture
async def url(tmp_path: Path) -> AsyncIterator[str]:
    """A migrated schema: the sessions of a failing server open on a schema already made."""
    async with fresh_database(POSTGRESQL, tmp_path) as url:
        db = Database(url)
        await db.open(MIGRATIONS)
        await db.close()
        yield url


@asynccontextmanager
async def opened(url: str) -> AsyncIterator[Database]:
    """The migrated schema opened without writing (a read-only session could not migrate)."""
    db = Database(url)
    await db.open_read_only()
    try:
        yield db
    finally:
        await db.close()


async def until_waiting_for_a_lock(admin: asyncpg.Connection, pid: int) -> None:
    while not await admin.fetchval(
        "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid
    ):
        await asyncio.sleep(0.02)


async def claim_while_read_only(url: str) -> None:
    # asyncpg passes unknown query parameters on as the session's settings.
    async with opened(f"{url}&default_transaction_read_only=on") as db:
        await Claims(db).claim("read-only")


async def claim_past_the_statement_timeout(url: str) -> None:
    async with opened(f"{url}&statement_timeout=100") as db, tables_locked(url, "claims"):
        await Claims(db).claim("timed out")


async def claim_cut_by_a_restart(url: str) -> None:
    async with opened(url) as db, tables_locked(url, "claims") as admin:
        row = await db.fetchone("SELECT pg_backend_pid()")  # the pool's one connection so far
        assert row is not None
        claim = asyncio.create_task(Claims(db).claim("cut"))
        await until_waiting_for_a_lock(admin, int(row[0]))
        await admin.execute("SELECT pg_terminate_backend($1)", int(row[0]))  # as a restart does
        await claim


@pytest.mark.parametrize(
    "failing",
    [claim_while_read_only, claim_past_the_statement_timeout, claim_cut_by_a_restart],
    ids=["read-only server", "statement timeout", "server restarting"],
)
async def test_a_server_failing_for_a_while_is_a_database_fault(
    url: str, failing: Callable[[str], Awaitable[None]]
) -> None:
    with pytest.raises(DATABASE_FAULTS):
        await asyncio.wait_for(failing(url), HANG_GUARD)


async def test_a_statement_past_the_drivers_own_timeout_is_a_database_fault(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no statement_timeout on the server, the driver gives up on a statement stuck behind
    a lock after COMMAND_TIMEOUT_SECONDS with TimeoutError: a database fault like the server's
    own refusals, not an unexpected error (a chain's write then ended its run instead of being
    tried again once the database answers)."""
    monkeypatch.setattr(postgres, "COMMAND_TIMEOUT_SECONDS", 0.2)
    async with opened(url) as db, tables_locked(url, "claims"):
        with pytest.raises(DATABASE_FAULTS):
            await asyncio.wait_for(Claims(db).claim("stuck"), HANG_GUARD)
        await db.fetchone("SELECT 1")  # the pool goes on, on a fresh connection


async def test_a_server_that_never_answers_a_connection_is_a_database_fault(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A host that takes the connection and says nothing (packets dropped past it, a server
    hung): the driver gives up after CONNECT_TIMEOUT_SECONDS with TimeoutError, a fault."""
    monkeypatch.setattr(postgres, "CONNECT_TIMEOUT_SECONDS", 0.2)
    silent = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        with pytest.raises(DATABASE_FAULTS):
            await asyncio.wait_for(
                Database(f"postgresql://postgres@127.0.0.1:{port}/test").open(MIGRATIONS),
                HANG_GUARD)
    finally:
        silent.close()


async def test_a_login_the_server_stops_taking_while_the_bot_runs_is_a_database_fault(
    url: str,
) -> None:
    """A password rotated (or a role disabled) while the bot runs: the pool's next connection is
    refused with an authorization error. That is the database failing, waited out and told as
    such, not a bug; once the login works again, so does the bot."""
    role = f"callbot_{uuid.uuid4().hex[:12]}"
    parts = urlsplit(url)
    as_role = urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port}"))
    admin = await asyncpg.connect(postgres_url())
    await admin.execute(f"CREATE ROLE {role} LOGIN SUPERUSER")
    try:
        async with opened(as_role) as db:
            row = await db.fetchone("SELECT pg_backend_pid()")
            assert row is not None
            await admin.execute(f"ALTER ROLE {role} NOLOGIN")
            await admin.execute("SELECT pg_terminate_backend($1)", int(row[0]))
            errors: list[Exception] = []
            for _ in range(3):  # the first statement may meet the closed connection first
                try:
                    await asyncio.wait_for(db.fetchone("SELECT 1"), HANG_GUARD)
                except Exception as exc:
                    errors.append(exc)
            assert len(errors) == 3, errors
            assert all(isinstance(e, DATABASE_FAULTS) for e in errors), errors
            await admin.execute(f"ALTER ROLE {role} LOGIN")
            assert await db.fetchone("SELECT 1") is not None
    finally:
        await admin.execute(f"ALTER ROLE {role} LOGIN")
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()
