"""Pending confirmations in the database: used once, by their requester only, before they expire."""

from __future__ import annotations


import pytest

from bot.calls.confirmations import Confirmations, Reason, TakeStatus, valid_id
from bot.storage.database import Database

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
    assert await store.cancel(cid, "U2") is False
    assert await store.cancel(cid, "U1") is True
    assert (await store.take(cid, "U1")).status is TakeStatus.GONE


async def test_it_expires_and_expired_ones_are_deleted(db: Database) -> None:
    clock = Clock()
    store = Confirmations(db, clock=clock, lifetime=600)
    old = await store.create("U1", frozenset({Reason.REGION}), REQUEST)
    other = await store.create("U1", frozenset({Reason.REGION}), REQUEST)
    clock.now += 601
    assert (await store.take(old, "U1")).status is TakeStatus.EXPIRED
    assert await db.fetchall("SELECT id FROM pending_confirmations") == []  # `other` went too
    assert (await store.take(other, "U1")).status is TakeStatus.GONE


@pytest.mark.parametrize("value", ["", "short", "a" * 65, "abc def ghi jkl mno", "é" * 20, None, 7])
async def test_malformed_ids_are_refused_before_the_database(db: Database, value: object) -> None:
    store = Confirmations(db)
    assert (await store.take(value, "U1")).status is TakeStatus.GONE  # type: ignore[arg-type]
    assert await store.cancel(value, "U1") is False  # type: ignore[arg-type]
