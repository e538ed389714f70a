"""`callbot backup PATH`: a consistent copy of the SQLite database while the bot writes to it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bot.ops.backup import backup
from bot.storage.database import MIGRATIONS, Database, sqlite_path
from bot.oncall.escalation_store import EscalationState
from tests.conftest import BotFactory
from tests.escalations import (
    ALICE, ROSTER, click_ack, dialled, escalation_message, open_on_message, start, submit,
    wait_for_state,
)
from tests.follow_helpers import FULL, MASKED, OTHER, audit_records, services
from tests.entry import run_main
from tests.processes import run_cli


async def test_a_backup_taken_while_the_bot_runs_is_a_consistent_database(
    bot_factory: BotFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bot = await bot_factory("http")
    await bot.command(f"{FULL} escalation")
    await bot.settle()
    url = services(bot).db.url
    copy = tmp_path / "backup" / "copy.db"
    copy.parent.mkdir()
    # The bot keeps the file open in WAL mode: the attempt above may be only in the -wal file.
    # `python -m bot backup` in a process of its own, as an operator runs it next to the bot.
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

    # The entry point's refusal, in this process (tests/entry.py).
    code, _, err = run_main(["backup", str(copy)], {"DATABASE_URL": url}, tmp_path, monkeypatch,
                            capsys)
    assert code == 2 and "exists already" in err, "never overwrites"


def test_postgresql_is_backed_up_with_pg_dump(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"DATABASE_URL": "postgresql://bot@db/callbot"}
    code, _, err = run_main(["backup", str(tmp_path / "x.db")], env, tmp_path, monkeypatch, capsys)
    assert code == 2 and "pg_dump" in err
    assert not (tmp_path / "x.db").exists()


def test_a_copy_that_fails_says_why_and_leaves_nothing_to_refuse_the_next_try(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A copy cut short (a full disk; here a file that is no database) is removed: a half-written
    # file would be refused as "exists already" on the next try, once the disk has room.
    (tmp_path / "callbot.db").write_text("not a database\n")
    env = {"DATABASE_URL": "sqlite:///./callbot.db"}
    copy = tmp_path / "copy.db"
    code, _, err = run_main(["backup", str(copy)], env, tmp_path, monkeypatch, capsys)
    assert code == 2 and "the copy failed (file is not a database); nothing was kept" in err
    assert not copy.exists()
    assert not list(tmp_path.glob(".callbot-backup-*"))  # nor the folder it was made in
    code, _, err = run_main(["backup", str(tmp_path / "no" / "copy.db")], env, tmp_path,
                            monkeypatch, capsys)
    assert code == 2 and "is not a directory" in err
    code, _, err = run_main(["backup", str(copy)], {"DATABASE_URL": "sqlite:///./gone.db"},
                            tmp_path, monkeypatch, capsys)
    assert code == 2 and "gone.db does not exist: check DATABASE_URL" in err
    code, _, err = run_main(["backup", str(copy)], {"DATABASE_URL": "mysql://db/callbot"},
                            tmp_path, monkeypatch, capsys)
    assert code == 2 and "DATABASE_URL: use sqlite:///PATH" in err


@pytest.mark.usefixtures("umask_022")
async def test_a_backup_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    """A copy holds what the database does: the audit trail's hash key, recent calls' numbers."""
    url = f"sqlite:///{tmp_path / 'callbot.db'}"
    db = Database(url)
    await db.open(MIGRATIONS)
    await db.close()
    copy = tmp_path / "copy.db"
    backup(url, copy)
    assert copy.stat().st_mode & 0o777 == 0o600


def test_a_backup_is_never_written_through_a_link_nor_over_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The copy holds what the database does: a link left where the operator names it (by anyone
    # who may write in that folder) must not send it elsewhere, nor make it replace another file.
    with sqlite3.connect(tmp_path / "callbot.db") as con:
        con.execute("CREATE TABLE t (x)")
    con.close()
    env = {"DATABASE_URL": "sqlite:///./callbot.db"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    someones = elsewhere / "someones.txt"
    someones.write_text("someone's file\n")
    (tmp_path / "to-nothing.db").symlink_to(elsewhere / "new.db")
    (tmp_path / "to-a-file.db").symlink_to(someones)
    for link in ("to-nothing.db", "to-a-file.db"):
        code, _, err = run_main(["backup", link], env, tmp_path, monkeypatch, capsys)
        assert code == 2, link
        assert f"{link} is a symbolic link: name a new file, not a link" in err
        assert (tmp_path / link).is_symlink()
    assert not (elsewhere / "new.db").exists()
    assert someones.read_text() == "someone's file\n"

    (tmp_path / "there.db").write_text("an operator's file\n")
    code, _, err = run_main(["backup", "there.db"], env, tmp_path, monkeypatch, capsys)
    assert code == 2 and "there.db exists already: name a new file" in err
    assert (tmp_path / "there.db").read_text() == "an operator's file\n"


async def test_a_backup_restores_to_a_database_a_bot_starts_on_and_calls_from(
    bot_factory: BotFactory, tmp_path: Path,
) -> None:
    bot = await bot_factory("http")
    await bot.command(f"{FULL} escalation")
    await bot.settle()
    url = services(bot).db.url
    copy = tmp_path / "copy.db"
    code, _, err = await run_cli(["backup", str(copy)], {"DATABASE_URL": url}, tmp_path)
    assert code == 0, err
    await bot.command(f"{OTHER} escalation")  # after the copy: not in it
    await bot.settle()
    await bot.runtime.stop(grace=5)

    # README, Databases: stop the bot, put the copy in place of the file.
    copy.replace(sqlite_path(url))
    restored = await bot_factory("http")
    assert [r.number_masked for r in await audit_records(restored)] == [MASKED]
    ack, _ = await restored.command(f"{OTHER} escalation")
    assert ack.status == 200
    await restored.settle()
    await restored.evo.wait_for_posts(3)
    assert len(await audit_records(restored)) == 2


async def test_an_escalation_a_restored_copy_would_resume_is_listed_and_stopped_as_the_readme_says(
    bot_factory: BotFactory, tmp_path: Path,
) -> None:
    """README, Backups: a copy taken while an escalation ran drives it again when the bot starts
    on it (acknowledged since or not); the query it gives lists it in the copy, and marked stopped
    there nobody is called for it."""
    bot, clock = await start(bot_factory, policy=ROSTER)
    view, _ = await open_on_message(bot)
    assert await submit(bot, view) == {}
    card = await escalation_message(bot)
    await bot.evo.wait_for_posts(1)  # Alice's phone rings
    url = services(bot).db.url
    copy = tmp_path / "copy.db"
    backup(url, copy)
    await click_ack(bot, card, user_id="U0ADMIN")
    await wait_for_state(bot, EscalationState.ACKNOWLEDGED)
    await bot.runtime.stop(grace=5)

    conn = sqlite3.connect(copy)
    try:
        listed = conn.execute("SELECT id, created_at, state FROM escalations WHERE state IN"
                              " ('running', 'stopping', 'acknowledging')").fetchall()
        assert [(row[0], row[2]) for row in listed] == [(1, "running")]
        conn.execute("UPDATE escalations SET state = 'stopped' WHERE id = 1")
        # The restore comes later: the leases of the bot the copy was taken under have lapsed.
        conn.execute("UPDATE leases SET expires_at = 0")
        conn.commit()
    finally:
        conn.close()
    copy.replace(sqlite_path(url))
    clock.advance(200)  # Alice's step is long past its deadline
    restored, _ = await start(bot_factory, policy=ROSTER, clock=clock)
    # Started, it resumed nothing: unmarked, the chain would be driven again now, and Bob, next,
    # called at once.
    assert services(restored).escalations.running == 0
    await restored.settle()
    assert dialled(restored) == [ALICE], "nobody called for an escalation over"
