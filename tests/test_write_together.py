"""The writes before a call's POST (the rate-limit slot, the attempt's audit record, the call's row,
its lease) are one round trip and all or nothing, on both databases (bot/storage/together.py):
PostgreSQL makes one statement of them (migration 11), SQLite one atomic unit."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bot.audit.trail import AuditLog
from bot.calls.follow import CallFollower
from bot.calls.limits import CallLimits, LimitReached, RecentlyCalled
from bot.calls.rates import parse_rate
from bot.calls.models import CallRequest, CheckedCall
from bot.calls.store import CallState, CallStore, Placement, TrackedCall
from bot.phone.policy import DialableNumber
from bot.storage.database import (
    MIGRATIONS,
    POSTGRESQL,
    Connection,
    Database,
    IntegrityError,
)
from bot.storage.claims import Claims, Untold
from bot.storage.leases import Leases
from bot.storage.together import insert_rows
from tests.databases import BACKENDS, fresh_database
from tests.round_trips import Counting

T = TypeVar("T")
T0 = 1_800_000_000.0
E164 = "+18144043093"


def checked(user_id: str = "U0", e164: str = E164, repeat_of: int | None = None) -> CheckedCall:
    return CheckedCall(
        request=CallRequest(team_id="T0", user_id=user_id, channel_id="C0", number_text=e164,
                            flow_text="Escalation", repeat_of=repeat_of),
        number=DialableNumber(e164=e164, region="US", type="MOBILE"),
        flow_id="flow-esc", flow_name="Escalation", caller_id=None,
    )


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def follower(db: Any, clock: Clock, owner: str = "a") -> CallFollower:
    return CallFollower(
        evo=None, notifier=None, store=CallStore(db), audit=None,  # type: ignore[arg-type]
        account_ids=["acct-1"], clock=clock, leases=Leases(db, owner=owner, clock=clock),
    )


def limits_of(db: Database, clock: Clock, *, per_user: str = "5/10m") -> CallLimits:
    return CallLimits(db, per_user=parse_rate(per_user), per_number=parse_rate("5/10m"),
                      per_day=100, clock=clock)


async def counts(db: Database) -> dict[str, int]:
    found = {}
    for table in ("rate_events", "audit_attempts", "calls", "leases"):
        row = await db.fetchone(f"SELECT count(*) FROM {table}")
        assert row is not None
        found[table] = int(row[0])
    return found


async def test_the_slot_the_attempt_the_row_and_its_lease_are_one_round_trip(
    db: Database,
) -> None:
    clock = Clock()
    audit = await AuditLog.open(db)
    slot = await limits_of(db, clock).slot_request("U0", E164, "flow-esc")
    counting = Counting(db)
    row = await follower(counting, clock).note_dialling(
        checked(), T0, attempt=audit.allowed_row(checked()), slot=slot
    )
    assert len(counting.trips) == 1, counting.trips
    if db.dialect == POSTGRESQL:
        # One statement, its own transaction: no BEGIN, no COMMIT, no unit held across trips.
        assert counting.trips[0][0].startswith("SELECT") and "callbot_write_together(" in (
            counting.trips[0][0]
        )
    assert slot.taken is not None
    assert await counts(db) == {"rate_events": 1, "audit_attempts": 1, "calls": 1, "leases": 1}
    # The row as the database holds it, alike on both.
    assert row == await CallStore(db).get(row.id)
    assert isinstance(row.created_at, float)
    assert (row.placement, row.state, row.following, row.created_at) == (
        Placement.DIALLING, CallState.FINDING, False, T0
    )
    assert row.attempt_id is not None and (await audit.record(row.attempt_id)) is not None
    assert await Leases(db, owner="b", clock=clock).unowned("call", [row.id]) == []
    event = await db.fetchone("SELECT id FROM rate_events")
    assert event is not None and int(event[0]) == slot.taken.event_id


async def test_a_refused_slot_writes_nothing_and_says_why_as_before(db: Database) -> None:
    clock = Clock()
    audit = await AuditLog.open(db)
    limits = limits_of(db, clock, per_user="1/10m")
    calls = follower(db, clock)
    await calls.note_dialling(checked(), T0, attempt=audit.allowed_row(checked()),
                              slot=await limits.slot_request("U0", E164, "flow-esc"))
    written = await counts(db)

    clock.now += 30
    again = await limits.slot_request("U0", E164, "flow-esc")
    with pytest.raises(RecentlyCalled) as recent:
        await calls.note_dialling(checked(), clock.now, attempt=audit.allowed_row(checked()),
                                  slot=again)
    assert recent.value.seconds_ago == 30.0 and again.taken is None

    clock.now += 70
    other = "+18144043094"
    over = await limits.slot_request("U0", other, "flow-esc")
    with pytest.raises(LimitReached) as refused:
        await calls.note_dialling(checked(e164=other), clock.now,
                                  attempt=audit.allowed_row(checked(e164=other)), slot=over)
    assert (refused.value.scope, refused.value.rate.text, refused.value.retry_after) == (
        "per_user", "1/10m", 500.0
    )
    assert "nothing was dialled" in str(refused.value) and over.taken is None
    assert await counts(db) == written


async def test_a_row_refused_after_the_slot_takes_the_slot_away(db: Database) -> None:
    clock = Clock()
    audit = await AuditLog.open(db)
    slot = await limits_of(db, clock).slot_request("U0", E164, "flow-esc")
    # The attempt's record names an attempt that doesn't exist: refused after the slot was taken.
    bad = checked(repeat_of=999_999)
    with pytest.raises(IntegrityError):
        await follower(db, clock).note_dialling(bad, T0, attempt=audit.allowed_row(bad), slot=slot)
    assert await counts(db) == {"rate_events": 0, "audit_attempts": 0, "calls": 0, "leases": 0}


async def test_racing_attempts_by_one_person_write_one_call(db: Database) -> None:
    clock = Clock()
    audit = await AuditLog.open(db)
    limits = limits_of(db, clock, per_user="1/10m")

    async def attempt(n: int) -> object:
        call = checked(e164=f"+1814404{3000 + n}")
        slot = await limits.slot_request("U0", call.number.e164, "flow-esc")
        try:
            return await follower(db, clock, owner=f"r{n}").note_dialling(
                call, T0, attempt=audit.allowed_row(call), slot=slot
            )
        except LimitReached as refused:
            return refused

    results = await asyncio.gather(*(attempt(n) for n in range(8)))
    assert sum(not isinstance(r, LimitReached) for r in results) == 1
    assert await counts(db) == {"rate_events": 1, "audit_attempts": 1, "calls": 1, "leases": 1}


@pytest.mark.parametrize("kind", BACKENDS)
async def test_migration_11_applies_with_calls_in_flight(kind: str, tmp_path: Path) -> None:
    async with fresh_database(kind, tmp_path) as url:
        db = Database(url)
        await db.open([m for m in MIGRATIONS if m.version < 11])
        try:
            clock = Clock()
            audit = await AuditLog.open(db)
            old = Leases(db, owner="old", clock=clock)
            # A call being dialled by a replica of the previous version: its slot, its attempt,
            # its row and its lease, written as that version did, in one transaction.
            slot = await limits_of(db, clock).slot_taker("U0", E164, "flow-esc")

            # Its attempt's row has the columns of the day (spool_key came with migration 12).
            row_now, then = audit.allowed_row(checked()), await columns_of(db, "audit_attempts")
            row_then = dataclasses.replace(
                row_now, values={k: v for k, v in row_now.values.items() if k in then}
            )

            async def dialling(conn: Connection) -> int:
                await slot(conn)
                [attempt] = (await insert_rows(conn, [row_then])).values()
                attempt_id = int(attempt["id"])
                # Its call's row, as that version wrote it (columns added since it are not read
                # back: migration 16's `unreadable`, say).
                values = {"attempt_id": attempt_id, "created_at": T0, "team_id": "T0",
                          "requester_id": "U0", "channel_id": "C0", "e164": E164,
                          "number_masked": "+1 814-***-**93", "flow_id": "flow-esc",
                          "flow_name": "Escalation", "placement": "dialling", "state": "finding",
                          "following": False}
                row = await conn.fetchone(
                    f"INSERT INTO calls ({', '.join(values)})"
                    f" VALUES ({', '.join('?' * len(values))}) RETURNING id",
                    list(values.values()),
                )
                assert row is not None
                call_id = int(row["id"])
                assert await old.take("call", call_id, on=conn)
                return call_id

            in_flight = await db.atomic(dialling)
            assert await db.migrate(MIGRATIONS) == [m.version for m in MIGRATIONS[10:]]

            new = follower(db, clock, owner="new")
            row = await new.note_dialling(
                checked("U1"), T0, attempt=audit.allowed_row(checked("U1")),
                slot=await limits_of(db, clock).slot_request("U1", E164, "flow-esc"),
            )
            assert row.id != in_flight
            # The call in flight is still its replica's: the new one leaves it alone.
            assert await new.reconcile_dialling() == 0
            assert await Leases(db, owner="x", clock=clock).unowned("call", [in_flight]) == []
            assert await counts(db) == {
                "rate_events": 2, "audit_attempts": 2, "calls": 2, "leases": 2
            }
            await new.stop()
        finally:
            await db.close()


async def columns_of(db: Database, table: str) -> set[str]:
    if db.dialect == POSTGRESQL:
        rows = await db.fetchall(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = ?", (table,)
        )
    else:
        rows = await db.fetchall("SELECT name FROM pragma_table_info(?)", (table,))
    return {str(row[0]) for row in rows}


async def test_the_rows_written_together_name_every_column_of_their_tables(db: Database) -> None:
    # On PostgreSQL callbot_write_together leaves a column the bot doesn't give NULL, not its
    # default, where SQLite's INSERT would take the default: a column added to one of these tables
    # must be given by the code that builds its row, or the two databases drift apart.
    clock = Clock()
    audit = await AuditLog.open(db)
    written = {
        "audit_attempts": audit.allowed_row(checked()),
        "leases": Leases(db, owner="a", clock=clock).new_lease("call", "calls"),
    }
    for table, row in written.items():
        # Every column but a generated id (leases have none).
        assert {*row.values, *row.ids} == await columns_of(db, table) - {"id"}, table
    # The call's row is TrackedCall, whole (CallStore.insert_together).
    assert {f.name for f in dataclasses.fields(TrackedCall)} == await columns_of(db, "calls")


@pytest.mark.parametrize("kind", BACKENDS)
async def test_migration_18_applies_to_a_database_holding_claims(kind: str,
                                                                 tmp_path: Path) -> None:
    async with fresh_database(kind, tmp_path) as url:
        db = Database(url)
        await db.open([m for m in MIGRATIONS if m.version < 18])
        try:
            clock = Clock()
            # Claims as version 17 wrote them: a request's, a step's with its holder.
            for key, holder in (("cmd:T0:abc", None), ("step:1:0", "h-1")):
                await db.execute("INSERT INTO claims (key, claimed_at, holder) VALUES (?, ?, ?)",
                                 (key, T0, holder))
            assert await db.migrate(MIGRATIONS) == [m.version for m in MIGRATIONS
                                                    if m.version >= 18]
            claims = Claims(db, clock=clock)
            assert await claims.untold() == []  # none of them has a note to tell
            assert await claims.holder("step:1:0") == "h-1"
            assert not await claims.claim("cmd:T0:abc")  # still claimed: no second call
            # A note written and cleared by the call's row on the migrated database.
            untold = Untold("cmd:T0:new", '{"user": "U1"}')
            assert await claims.claim(untold.key, untold=untold.note)
            assert await claims.untold() == [(untold.key, untold.note, T0)]
            audit = await AuditLog.open(db)
            await CallStore(db).insert_together(
                {"created_at": T0, "team_id": "T0", "requester_id": "U1", "channel_id": "C0",
                 "e164": E164, "number_masked": "+1 814-***-**93", "flow_id": "flow-esc",
                 "flow_name": "Escalation", "placement": "dialling", "state": "finding",
                 "following": False},
                attempt=audit.allowed_row(checked("U1")), untold=untold)
            assert await claims.untold() == []
        finally:
            await db.close()
