"""An audit record whose write committed but whose answer was lost (the connection dropped after
COMMIT, a timeout) is tried again, and must not be written twice: the retry, from memory
(AUDIT_SPOOL=off) or from the spool, carries the key the first write kept with the row."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from bot.storage.backend import Row
from tests.conftest import BotFactory, until
from tests.databases import on_both_databases
from tests.follow_helpers import FULL, audit_records, services


class AnswerLost:
    """The database's `fetchone`, except that the first audit record written through it commits
    and then loses its answer (raising as a dropped connection does); counts the later writes."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.lost = 0
        self.written_after = 0

    async def __call__(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        row = await self._real(sql, params)
        if sql.startswith("INSERT INTO audit_attempts"):
            if not self.lost:
                self.lost += 1
                raise ConnectionError("connection lost after COMMIT")
            self.written_after += 1
        return row


@on_both_databases
@pytest.mark.parametrize("kept", ["in memory", "in the spool"])
async def test_a_refusal_whose_commit_lost_its_answer_is_recorded_once(
    bot_factory: BotFactory, database_url: str, tmp_path: Path, kept: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spool = tmp_path / "audit-spool"
    bot = await bot_factory("http", AUDIT_SPOOL="off" if kept == "in memory" else str(spool))
    db = services(bot).db
    fault = AnswerLost(db.fetchone)
    monkeypatch.setattr(db, "fetchone", fault)

    _, url = await bot.command(f"{FULL} escalation", user_id="U0INTRUDER")
    await bot.slack.wait_for_response(url)  # refused: no role
    assert fault.lost == 1
    if kept == "in memory":
        # The retry waits half a second for the database, then writes (or finds it written).
        await until(lambda: fault.written_after == 1, timeout=10)
    else:
        await until(lambda: spool.exists() and spool.read_text() == "", timeout=10)
    await bot.settle()
    records = await audit_records(bot)
    assert [(r.user_id, r.decision) for r in records] == [("U0INTRUDER", "denied")]
