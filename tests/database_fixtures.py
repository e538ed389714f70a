"""The database fixtures (a plugin of tests/conftest.py): an empty database for a test to hand to
the bot, and migrated ones, on each backend (tests/databases.py, tests/postgres_schemas.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.databases import (
    BACKENDS,
    POSTGRESQL,
    SQLITE,
    fresh_database,
    migrated_database,
    migrated_sqlite_template,
)
from tests.postgres_schemas import MigratedSchemas

if TYPE_CHECKING:
    from bot.storage.database import Database


@pytest.fixture
async def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, migrated_schemas: MigratedSchemas
) -> AsyncIterator[str]:
    """An empty database: SQLite unless the test is marked `on_both_databases` (tests/databases.py).

    The SQLite file is the one `bot_environment` names, so a test can open the bot's database.
    For the bots of `bot_factory`, a migrated one (tests/postgres_schemas.py; SQLite: see
    `copy_migrated`)."""
    backend = getattr(request, "param", SQLITE)
    if backend == POSTGRESQL and "bot_factory" in request.fixturenames:
        async with migrated_schemas.lent() as url:
            yield url
    else:
        async with fresh_database(backend, tmp_path) as url:
            yield url


@pytest.fixture(scope="session")
def migrated_schemas() -> Iterator[MigratedSchemas]:
    schemas = MigratedSchemas()
    yield schemas
    schemas.drop_all()


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bots of tests start on copies of a database migrated once per test process
    (tests/databases.py says why)."""
    return migrated_sqlite_template(tmp_path_factory.mktemp("migrated"))


@pytest.fixture(params=BACKENDS)
async def db(
    request: pytest.FixtureRequest, tmp_path: Path, migrated_sqlite: Path,
    migrated_schemas: MigratedSchemas,
) -> AsyncIterator[Database]:
    """An open, migrated database, once on each backend."""
    from bot.storage.database import Database

    async with migrated_database(request.param, tmp_path, migrated_sqlite, migrated_schemas) as url:
        database = Database(url)
        await database.open()
        try:
            yield database
        finally:
            await database.close()


@pytest.fixture
def database_retried_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Work waiting for a failing database tries again 0.01 s after its first failure (then twice
    as long each time), not the bot's 0.5 s: for tests that end the fault themselves
    (`pytestmark = pytest.mark.usefixtures("database_retried_quickly")`)."""
    from bot.storage import faults

    monkeypatch.setattr(faults, "FIRST_PAUSE_SECONDS", 0.01)
