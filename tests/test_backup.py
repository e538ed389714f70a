"""`callbot backup PATH`: a consistent copy of the SQLite database while the bot writes to it."""

from __future__ import annotations

from pathlib import Path

from bot.storage.database import MIGRATIONS, Database
from tests.conftest import BotFactory
from tests.follow_helpers import FULL, services
from tests.processes import run_cli


async def test_a_backup_taken_while_the_bot_runs_is_a_consistent_database(
    bot_factory: BotFactory, tmp_path: Path
) -> None:
    bot = await bot_factory("http")
    await bot.command(f"{FULL} escalation")
    await bot.settle()
    url = services(bot).db.url
    copy = tmp_path / "backup" / "copy.db"
    copy.parent.mkdir()
    # The bot keeps the file open in WAL mode: the attempt above may be only in the -wal file.
    code, out, err = await run_cli(["backup", str(copy)], {"DATABASE_URL": url}, tmp_path)
    assert code == 0, err
    assert "a consistent copy" in out
    backup = Database(f"sqlite:///{copy}")
    await backup.open_read_only()
    try:
        assert await backup.schema_version() == max(m.version for m in MIGRATIONS)
        rows = await backup.fetchall("SELECT decision FROM audit_attempts")
        assert [row[0] for row in rows] == ["allowed"]
    finally:
        await backup.close()

    code, _, err = await run_cli(["backup", str(copy)], {"DATABASE_URL": url}, tmp_path)
    assert code == 2 and "exists already" in err, "never overwrites"


async def test_postgresql_is_backed_up_with_pg_dump(tmp_path: Path) -> None:
    env = {"DATABASE_URL": "postgresql://bot@db/callbot"}
    code, _, err = await run_cli(["backup", str(tmp_path / "x.db")], env, tmp_path)
    assert code == 2 and "pg_dump" in err
    assert not (tmp_path / "x.db").exists()
