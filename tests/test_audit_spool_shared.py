"""Two deployments sharing one spool file (PostgreSQL's default, `./callbot.audit-spool`, in one
working directory; or AUDIT_SPOOL set alike) never write each other's audit records: each record
names the database it was meant for (bot/audit/spool.py)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from bot.audit.spool import Spool, Spooled, database_id
from bot.audit.trail import ATTEMPT_COLUMNS, EVENT_COLUMNS, AuditLog
from bot.storage.database import Database
from bot.storage.number_hash import NumberHasher
from tests.conftest import BotFactory, until
from tests.database_locks import (
    recorded_once_after_restarts,
    with_short_busy_timeout,
    write_lock,
)
from tests.follow_helpers import FULL, audit_records


async def test_a_record_spooled_for_one_database_waits_for_it_and_not_for_another(
    bot_factory: BotFactory, database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "shared.audit-spool"
    ours = {"AUDIT_SPOOL": str(spool)}
    first = await bot_factory("http", DATABASE_URL=with_short_busy_timeout(database_url), **ours)
    with write_lock(first):
        _, url = await first.command(f"{FULL} escalation")
        [answer] = await first.slack.wait_for_response(url, timeout=20)
        assert "could not write to its database, so nothing was dialled" in str(answer)
        await first.runtime.stop(grace=0)
    [line] = spool.read_text().splitlines()

    # Another deployment, its own database, the same file: it starts, drains, and leaves the line.
    other = await bot_factory("http", DATABASE_URL=f"sqlite:///{tmp_path / 'other.db'}", **ours)
    await other.settle()
    assert await audit_records(other) == []
    assert spool.read_text().splitlines() == [line]
    [said] = [r for r in caplog.records if "of another database" in r.getMessage()]
    assert said.levelno == logging.WARNING and "1 audit record(s)" in said.getMessage()
    await other.runtime.stop()

    # The first deployment's next start writes it, once.
    await recorded_once_after_restarts(bot_factory, spool, **ours)


async def test_every_replica_of_a_database_agrees_on_its_id_and_another_database_has_its_own(
    db: Database, tmp_path: Path
) -> None:
    again, other = Database(db.url), Database(f"sqlite:///{tmp_path / 'other.db'}")
    await again.open()
    await other.open()
    try:
        # Replicas starting together on one database.
        first, second = await asyncio.gather(database_id(db), database_id(again))
        assert first == second == await database_id(db)
        assert await database_id(other) != first
    finally:
        await again.close()
        await other.close()


async def test_lines_from_before_records_named_their_database_are_written_by_any_drain(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spool"
    legacy = json.dumps({"key": "k1", "table": "audit_events", "values": {"x": 1}})
    foreign = json.dumps({"key": "k2", "table": "audit_events", "values": {"x": 2},
                          "database": "elsewhere"})
    path.write_text(legacy + "\n" + foreign + "\n")
    db = Database(f"sqlite:///{tmp_path / 'db'}")
    await db.open()
    written: list[Spooled] = []

    async def write(conn: object, record: Spooled) -> bool:
        written.append(record)
        return True

    try:
        spool = Spool(path, db, write, await database_id(db))
        await spool.drain()
        assert [r.key for r in written] == ["k1"]
        assert path.read_text() == foreign + "\n"
        spool.keep(Spooled("audit_events", {"x": 3}))
        kept = json.loads(path.read_text().splitlines()[-1])
        assert kept["database"] == await database_id(db) and kept["values"] == {"x": 3}
    finally:
        await spool.stop()
        await db.close()


async def test_a_line_cut_short_by_a_crash_is_dropped_with_the_records_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "spool"
    whole = json.dumps({"key": "k1", "table": "audit_events", "values": {"x": 1}})
    path.write_text(whole + "\n" + whole[:20] + "\n")  # the process died mid-append
    db = Database(f"sqlite:///{tmp_path / 'db'}")
    await db.open()
    written: list[str] = []

    async def write(conn: object, record: Spooled) -> bool:
        written.append(record.key)
        return True

    try:
        spool = Spool(path, db, write, await database_id(db))
        await spool.drain()
        assert written == ["k1"] and path.read_text() == "" and not spool.waiting
        [said] = [r for r in caplog.records if "unreadable" in r.getMessage()]
        assert said.levelno == logging.ERROR and "line 2" in said.getMessage()
    finally:
        await spool.stop()
        await db.close()


async def test_two_processes_draining_one_spool_at_once_write_each_record_once(
    db: Database, tmp_path: Path
) -> None:
    path = tmp_path / "spool"
    other = Database(db.url)  # another process on this host, the same database and file
    await other.open()
    first = await AuditLog.open(db, spool=path)
    second = await AuditLog.open(other, spool=path)
    # A line as a callbot from before migration 19 spooled it: no `confirmed_question`.
    values = dict(zip([c for c in ATTEMPT_COLUMNS if c != "confirmed_question"], (
        "2026-01-01T00:00:00+00:00", "T1", "U1", "C1", "command", None, "+1 814 ••• 3093", None,
        "escalation", None, None, "refused", "DatabaseUnavailable",
    ), strict=True))
    path.write_text(json.dumps({"key": "k1", "table": "audit_attempts", "values": values,
                                "database": await database_id(db)}) + "\n")
    try:
        assert first.spool is not None and second.spool is not None
        await asyncio.gather(first.spool.drain(), second.spool.drain())
        assert [row[0] for row in await db.fetchall("SELECT user_id FROM audit_attempts")] == ["U1"]
        assert path.read_text() == ""
    finally:
        await first.stop()
        await second.stop()
        await other.close()


async def test_a_record_the_database_refuses_holds_up_none_of_the_others(
    db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # An event whose attempt this database does not have (a line written, before records named
    # their database, for another one): the records after it are written all the same, and it
    # stays in the file, said once per drain, rather than being lost.
    path = tmp_path / "spool"
    log = AuditLog(db, NumberHasher(b"k" * 16), spool=path, database=await database_id(db))
    refused = {"key": "k1", "table": "audit_events", "values": dict.fromkeys(EVENT_COLUMNS) | {
        "attempt_id": 999, "at": "2026-01-01T00:00:00.000Z", "kind": "placed"}}
    attempt = dict.fromkeys(ATTEMPT_COLUMNS, "x") | {"repeat_of": None, "number_hash": None,
                                                      "flow_id": None, "caller_id": None,
                                                      "reason": None,
                                                      "confirmed_question": None}
    ok = {"key": "k2", "table": "audit_attempts", "values": attempt}
    path.write_text(json.dumps(refused) + "\n" + json.dumps(ok) + "\n")
    try:
        assert log.spool is not None
        await log.spool.drain()
        assert [r.user_id for r in await log.history()] == ["x"]
        assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == ["k1"]
        [said] = [r for r in caplog.records if "k1" in r.getMessage()]
        assert said.levelno == logging.ERROR
    finally:
        await log.stop()


async def test_a_record_kept_while_a_drain_runs_is_written_by_it_too(
    db: Database, tmp_path: Path
) -> None:
    # The drain read the file before the second record was in it: once done with the first it
    # goes round again, rather than leaving the second waiting for the next start.
    path = tmp_path / "spool"
    written: list[str] = []
    first_write_may_end = asyncio.Event()

    async def write(_conn: object, record: Spooled) -> bool:
        if not written:
            await first_write_may_end.wait()
        written.append(record.key)
        return True

    spool = Spool(path, db, write)
    try:
        assert spool.keep(Spooled("audit_attempts", {}, key="k1"))
        await until(lambda: path.exists())
        await asyncio.sleep(0)  # the drain has read the file, and waits in k1's write
        assert spool.keep(Spooled("audit_attempts", {}, key="k2"))
        first_write_may_end.set()
        await until(lambda: written == ["k1", "k2"] and not spool.waiting)
    finally:
        await spool.stop()
