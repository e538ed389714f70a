"""Pending confirmations in the database: used once, by their requester only, before they expire."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from bot.calls.confirmations import Confirmations, Reason, TakeStatus, valid_id
from bot.storage.database import Database
from tests.databases import POSTGRESQL, fresh_database

HANG_GUARD = 10.0  # seconds; only a hang would reach it

REQUEST = {"user_id": "U1", "channel_id": "C1", "number_text": "+14165550123", "flow_text": "esc"}


class Clock:
    now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_a_pending_call_is_taken_once_with_its_reasons(db: Database) -> None:
    store = Confirmations(db, clock=Clock())
    cid = await store.create("U1", frozenset({Reason.REGION, Reason.REPEAT}), REQUEST)
    assert valid_id(cid) and "4165550123" not in cid
    taken = await store.take(cid, "U1")
    assert taken.status is TakeStatus.TAKEN and taken.pending is not None
    assert taken.pending.reasons == {Reason.REGION, Reason.REPEAT}
    assert taken.pending.request == REQUEST
    assert (await store.take(cid, "U1")).status is TakeStatus.GONE


async def test_only_the_requester_may_take_or_cancel_it(db: Database) -> None:
    store = Confirmations(db, clock=Clock())
    cid = await store.create("U1", frozenset({Reason.REGION}), REQUEST)
    assert (await store.take(cid, "U2")).status is TakeStatus.NOT_YOURS
    assert await store.cancel(cid, "U2") is TakeStatus.GONE
    assert await store.cancel(cid, "U1") is TakeStatus.TAKEN
    assert (await store.take(cid, "U1")).status is TakeStatus.GONE


async def test_it_expires_and_expired_ones_are_deleted(db: Database) -> None:
    clock = Clock()
    store = Confirmations(db, clock=clock, lifetime=600)
    old = await store.create("U1", frozenset({Reason.REGION}), REQUEST)
    other = await store.create("U1", frozenset({Reason.REGION}), REQUEST)
    clock.now += 601
    assert (await store.take(old, "U1")).status is TakeStatus.EXPIRED
    assert await db.fetchall("SELECT id FROM pending_confirmations") == []  # `other` went too
    # Erased, yet still told as expired (not as answered or cancelled): its id says when it was
    # asked.
    assert (await store.take(other, "U1")).status is TakeStatus.EXPIRED
    assert store.why_gone(other) is TakeStatus.EXPIRED
    clock.now -= 2
    assert store.why_gone(other) is TakeStatus.GONE  # within its lifetime: answered or cancelled


@pytest.mark.parametrize("value", ["", "short", "a" * 65, "abc def ghi jkl mno", "é" * 20, None, 7])
async def test_malformed_ids_are_refused_before_the_database(db: Database, value: object) -> None:
    store = Confirmations(db)
    assert (await store.take(value, "U1")).status is TakeStatus.GONE  # type: ignore[arg-type]
    assert await store.cancel(value, "U1") is TakeStatus.GONE  # type: ignore[arg-type]


async def test_a_cancel_that_wins_the_race_on_postgresql_leaves_nothing_to_take(
    tmp_path: Path,
) -> None:
    """On PostgreSQL transactions run side by side (READ COMMITTED): a take that read the question
    just before a Cancel deleted it must not go on to dial. Made to happen: the Cancel's delete is
    held uncommitted while the take reads the row and waits on it; then it commits."""
    async with fresh_database(POSTGRESQL, tmp_path) as url:
        db = Database(url)
        await db.open()
        canceller = await asyncpg.connect(url)
        try:
            store = Confirmations(db, clock=Clock())
            cid = await store.create("U1", frozenset({Reason.REGION}), REQUEST)
            cancel = canceller.transaction()
            await cancel.start()
            assert await canceller.execute(
                "DELETE FROM pending_confirmations WHERE id = $1", cid
            ) == "DELETE 1"
            take = asyncio.create_task(store.take(cid, "U1"))
            await waiting_to_delete_a_confirmation(canceller, url)
            await cancel.commit()
            taken = await asyncio.wait_for(take, HANG_GUARD)
            assert taken.status is TakeStatus.GONE and taken.pending is None
        finally:
            await canceller.close()
            await db.close()


async def waiting_to_delete_a_confirmation(session: asyncpg.Connection, url: str) -> None:
    """Until another session's DELETE of a pending confirmation waits for a row lock."""
    watcher = await asyncpg.connect(url)
    try:
        while not await watcher.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE 'DELETE FROM pending_confirmations%' AND pid <> $1",
            session.get_server_pid(),
        ):
            await asyncio.sleep(0.01)
    finally:
        await watcher.close()
