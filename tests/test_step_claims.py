"""Who dials an escalation's step (bot/oncall/step_claims.py), on the database alone: a claim whose
holder recorded no call is taken over, the holder it was taken from is fenced, and a takeover and
a record racing for one escalation are decided one after the other on PostgreSQL too."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from bot.oncall.escalation_store import Escalation, EscalationStore, Target
from bot.oncall.step_claims import StepClaims
from bot.storage.claims import Claims
from bot.storage.database import Database
from tests.databases import POSTGRESQL


async def _begun(db: Database) -> tuple[EscalationStore, Escalation]:
    store = EscalationStore(db)
    escalation = await store.create(
        people=[Target("U0ALICE", "rotation"), Target("U0BOB", "rotation")],
        request_key="T0:V1", created_at=1.0, team_id="T0", requester_id="U0ADMIN",
        channel_id="C0OPS", origin="message_shortcut", flow_id="flow-esc",
        flow_name="Escalation", reason=None, answer_timeout=90.0,
    )
    assert escalation is not None
    assert await store.begin_step(escalation.id, 0, 10.0, 100.0)
    begun = await store.get(escalation.id)
    assert begun is not None
    for _ in range(2):  # calls 1 and 2, for the steps' records to name
        await db.execute(
            "INSERT INTO calls (created_at, team_id, requester_id, channel_id, number_masked,"
            " flow_id, flow_name, placement, state, following)"
            " VALUES (1, 'T0', 'U0ADMIN', 'C0OPS', '+1 814 ••• 3093', 'f', 'Escalation',"
            " 'dialling', 'finding', ?)", (False,),
        )
    return store, begun


def _runs(store: EscalationStore, db: Database) -> tuple[StepClaims, StepClaims]:
    """Two runs of the chain, in two replicas: each its own Claims, one database."""
    return StepClaims(store, Claims(db)), StepClaims(store, Claims(db))


async def test_a_claim_whose_holder_recorded_no_call_is_taken_over_and_the_holder_fenced(
    db: Database,
) -> None:
    store, escalation = await _begun(db)
    a, b = _runs(store, db)
    first = await a.claim(escalation)
    assert first is not None
    second = await b.claim(escalation)  # A went before recording its call: nothing was dialled
    assert second is not None and second != first
    assert not await a.record_call(escalation.id, 0, first, 1, 190.0)  # A comes back: fenced
    assert await b.record_call(escalation.id, 0, second, 2, 190.0)
    recorded = await store.get(escalation.id)
    assert recorded is not None and recorded.step_call_id == 2
    assert await a.claim(recorded) is None  # a call recorded: followed, never taken over
    assert await b.record_call(escalation.id, 0, second, 2, 195.0)  # its own, again


async def test_a_step_whose_call_was_recorded_is_not_taken_over(db: Database) -> None:
    store, escalation = await _begun(db)
    a, b = _runs(store, db)
    holder = await a.claim(escalation)
    assert holder is not None
    assert await a.record_call(escalation.id, 0, holder, 1, 190.0)
    assert await b.claim(escalation) is None  # read before the record: still refused
    assert await store.advance(escalation.id, 0)
    assert await b.claim(escalation) is None  # the chain moved on


@pytest.mark.parametrize("db", [POSTGRESQL], indirect=True)
@pytest.mark.parametrize("first", ["record", "takeover"])
async def test_on_postgresql_a_record_and_a_takeover_racing_are_decided_one_after_the_other(
    db: Database, first: str,
) -> None:
    """A's record of its call and B's takeover start one after the other while another session
    holds the escalation's row. Each waits for the row before it reads what decides it, so the
    first wins: a record first makes the takeover find the call recorded; a takeover first makes
    the record find the claim taken over (B dials the step, A nothing). Never both."""
    store, escalation = await _begun(db)
    a, b = _runs(store, db)
    holder = await a.claim(escalation)
    assert holder is not None
    other = await asyncpg.connect(db.url)
    try:
        async with other.transaction():
            await other.execute("SELECT 1 FROM escalations WHERE id = $1 FOR UPDATE",
                                escalation.id)
            starts = {"record": lambda: a.record_call(escalation.id, 0, holder, 1, 190.0),
                      "takeover": lambda: b.claim(escalation)}
            second = "takeover" if first == "record" else "record"
            tasks = {first: asyncio.create_task(starts[first]())}
            await _waiting_for_locks(other, 1)
            tasks[second] = asyncio.create_task(starts[second]())
            await _waiting_for_locks(other, 2, unless=tasks[second])
    finally:
        await other.close()
    recorded, taken = await tasks["record"], await tasks["takeover"]
    assert recorded == (first == "record")
    assert (taken is not None) == (first == "takeover")


# The sessions waiting behind `conn`'s locks, directly or behind another such session: those of
# this test alone (the other test processes' sessions on the server wait for locks of their own).
# From pg_locks, which is read afresh each time (pg_stat_activity is a snapshot per transaction).
_WAITING_BEHIND = """
WITH RECURSIVE behind(pid) AS (
    SELECT pid FROM pg_locks WHERE NOT granted AND pg_backend_pid() = ANY(pg_blocking_pids(pid))
    UNION
    SELECT l.pid FROM pg_locks l JOIN behind b ON b.pid = ANY(pg_blocking_pids(l.pid))
     WHERE NOT l.granted
)
SELECT count(*) FROM behind
"""


async def _waiting_for_locks(
    conn: asyncpg.Connection, n: int, *, unless: asyncio.Task[object] | None = None
) -> None:
    """Until `n` sessions wait for `conn`'s locks (or `unless` finished without waiting)."""
    async with asyncio.timeout(10):
        while await conn.fetchval(_WAITING_BEHIND) < n:
            if unless is not None and unless.done():
                return
            await asyncio.sleep(0.01)
