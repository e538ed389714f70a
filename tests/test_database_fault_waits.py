"""What counts as the database failing (waited for) and what as a bug (not), and how long the
work waits between tries: bot/storage/faults.py, on a real SQLite file."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.errors import DatabaseUnavailable
from bot.storage.database import Database, IntegrityError, Migration
from bot.storage.faults import refused_when_database_fails, until_database_answers

MIGRATIONS = [Migration(1, "keys", "CREATE TABLE keys (key TEXT PRIMARY KEY)")]


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'callbot.db'}?busy_timeout=0")
    await database.open(MIGRATIONS)
    yield database
    await database.close()


class Pauses:
    """The `sleep` of until_database_answers: records each pause, and lets the other process go
    after `tries` of them."""

    def __init__(self, holder: sqlite3.Connection | None = None, tries: int = 0) -> None:
        self.seconds: list[float] = []
        self._holder, self._tries = holder, tries

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)
        assert len(self.seconds) <= 20, "still waiting, for something that will never answer"
        if self._holder is not None and len(self.seconds) == self._tries:
            self._holder.execute("ROLLBACK")


async def test_a_locked_database_is_waited_for_with_growing_pauses_up_to_the_longest(
    db: Database, tmp_path: Path
) -> None:
    holder = sqlite3.connect(tmp_path / "callbot.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process keeps the write lock for six tries
    pauses = Pauses(holder, tries=6)
    try:
        written = await until_database_answers(
            lambda: db.execute("INSERT INTO keys VALUES ('kept')"), "writing a key",
            first_pause=0.5, max_pause=4.0, sleep=pauses,
        )
    finally:
        holder.close()
    assert written == 1
    assert pauses.seconds == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert [row[0] for row in await db.fetchall("SELECT key FROM keys")] == ["kept"]


async def test_a_bug_is_not_waited_for(db: Database) -> None:
    """A constraint refusing the write, or any other error of the code: tried again it would fail
    the same way for ever, so the caller hears of it at once."""
    await db.execute("INSERT INTO keys VALUES ('taken')")
    pauses = Pauses()
    with pytest.raises(IntegrityError):
        await until_database_answers(
            lambda: db.execute("INSERT INTO keys VALUES ('taken')"), "writing a key", sleep=pauses
        )

    async def fails() -> None:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        await until_database_answers(fails, "a bug", sleep=pauses)
    assert pauses.seconds == []


async def test_a_refusal_names_a_reference_the_log_finds_with_the_databases_own_words(
    db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    holder = sqlite3.connect(tmp_path / "callbot.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process keeps the write lock
    try:
        with pytest.raises(DatabaseUnavailable) as refused:
            with refused_when_database_fails("nothing was dialled"):
                await db.execute("INSERT INTO keys VALUES ('refused')")
    finally:
        holder.close()
    reference = refused.value.reference
    assert f"reference {reference}" in str(refused.value)
    [logged] = [r.getMessage() for r in caplog.records if reference in r.getMessage()]
    assert "database is locked" in logged and "nothing was dialled" in logged
