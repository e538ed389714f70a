"""A call being dialled (or an escalation being started) is never taken for one left behind by a
stopped replica.

Its row ("dialling"; a running escalation) and its lease are one write: a lease keeper's round, in
this replica or another, that runs the moment the row appears finds the lease held and leaves it
alone. Here replica A's writer is paused right after its row became visible to the others
(`PausedAfterInsert`), and replica B's round runs then. On both databases.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

import pytest

from bot.audit.trail import AuditLog
from bot.calls.follow import TAKEN_OVER, CallFollower, FollowTiming
from bot.calls.limits import CallLimits
from bot.calls.rates import parse_rate
from bot.calls.models import CallRequest, CallResult, CheckedCall, Outcome
from bot.calls.store import CallState, CallStore, Placement, TrackedCall
from bot.evovoice.client import EvoVoiceError, Session, SessionsFound
from bot.evovoice.clock import ServerClock
from bot.oncall.escalation_store import EscalationStore
from bot.phone.policy import DialableNumber
from bot.slack.blocks import Message
from bot.slack.threads import Posted, Thread
from bot.storage.database import Connection, Database, IntegrityError, Row
from bot.storage.leases import Leases
from tests.conftest import BotFactory
from tests.databases import on_both_databases
from tests.escalations import (
    ALICE,
    dialled,
    escalation_message,
    open_on_message,
    start,
    state_of,
    submit,
)
from tests.follow_helpers import services
from tests.round_trips import Recording

T = TypeVar("T")
T0 = 1_800_000_000.0
TIMING = FollowTiming(first_interval=2.0, max_interval=15.0, growth=1.5, find_for=120.0,
                      follow_for=3600.0, number_retention=86400.0)
CALL = CheckedCall(
    request=CallRequest(team_id="T0", user_id="U0", channel_id="C0",
                        number_text="+18144043093", flow_text="Escalation"),
    number=DialableNumber(e164="+18144043093", region="US", type="MOBILE"),
    flow_id="flow-esc", flow_name="Escalation", caller_id=None,
)
PARENT_TS, STATUS_TS = "1.1", "1.2"
THREAD = Thread(channel="C0", ts=PARENT_TS, response_url=None, parent=Message("parent"),
                parent_ts=PARENT_TS)


def session(state: str, **fields: Any) -> Session:
    values = {"id": "sess-1", "callState": state, "dateCreated": "2027-01-15T08:00:00.000Z"}
    values.update(fields)
    return Session.model_validate(values)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Evo:
    """Evo Voice as one replica sees it: the session rings once, then ends answered."""

    clock = ServerClock()  # its clock agrees with the bot's

    def __init__(self) -> None:
        self.polls = 0
        self.searches = 0

    async def poll_session(self, session_id: str, account_ids: list[str]) -> Session:
        self.polls += 1
        if self.polls == 1:
            return session("Ringing")
        return session("Connected", ended=True, dateCompleted="2027-01-15T08:01:00Z")

    async def find_sessions(self, *args: Any, **kwargs: Any) -> SessionsFound:
        self.searches += 1
        return SessionsFound([session("Ringing")])


class Slack:
    """What one replica posts and edits in Slack."""

    outbox = None  # nothing kept to be posted again

    def __init__(self) -> None:
        self.posts: list[str] = []
        self.edits: list[tuple[str, str]] = []  # (ts, text)

    async def open_thread(self, channel: str, parent: Message, **_: Any) -> Thread | None:
        self.posts.append(parent.text)
        return THREAD

    async def post_reply(self, thread: Thread, message: Message, **_: Any) -> Posted:
        self.posts.append(message.text)
        return Posted(delivered=True, ts="9.9")

    async def update(self, channel: str, ts: str, message: Message) -> bool:
        self.edits.append((ts, message.text))
        return True

    async def react(self, channel: str, ts: str, emoji: str) -> bool:
        return True


class PausedAfterInsert:
    """The database, except that whoever wrote a row into `table` pauses once it is visible to
    everyone else (its statement, or the atomic unit that made it, is over) until `go` is set;
    or whoever ran a statement starting with `after`, once it is over."""

    def __init__(self, db: Database, table: str = "calls", *, after: str | None = None) -> None:
        self._db = db
        self.dialect = db.dialect
        self._insert = after or f"INSERT INTO {table} "
        self.reached = asyncio.Event()
        self.go = asyncio.Event()

    async def _pause_after_an_insert(self, statements: list[str]) -> None:
        # On PostgreSQL a dialling row is written by one function call (bot/storage/together.py).
        if any(sql.lstrip().startswith(self._insert) or "callbot_write_together(" in sql
               for sql in statements):
            self.reached.set()
            await self.go.wait()

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        count = await self._db.execute(sql, params)
        await self._pause_after_an_insert([sql])
        return count

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        row = await self._db.fetchone(sql, params)
        await self._pause_after_an_insert([sql])
        return row

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        rows = await self._db.fetchall(sql, params)
        await self._pause_after_an_insert([sql])
        return rows

    async def atomic(self, unit: Callable[[Connection], Coroutine[Any, Any, T]]) -> T:
        seen: list[str] = []
        result = await self._db.atomic(lambda conn: unit(Recording(conn, seen)))
        await self._pause_after_an_insert(seen)
        return result


class Replica:
    def __init__(self, name: str, db: Any, leases_db: Database, clock: Clock) -> None:
        self.evo = Evo()
        self.slack = Slack()
        self.store = CallStore(db)

        async def pause(wake: asyncio.Event, seconds: float) -> None:
            pass  # no real sleeps: the next poll comes at once

        self.follower = CallFollower(
            evo=self.evo, notifier=self.slack, store=self.store,  # type: ignore[arg-type]
            audit=None, account_ids=["acct-1"], timing=TIMING, clock=clock, pause=pause,
            leases=Leases(leases_db, owner=name, clock=clock),
        )


async def test_a_call_being_dialled_is_left_to_its_replica(db: Database) -> None:
    clock = Clock()
    paused = PausedAfterInsert(db)
    a = Replica("a", paused, db, clock)
    b = Replica("b", db, db, clock)

    dialling = asyncio.create_task(a.follower.note_dialling(CALL, T0))
    await asyncio.wait_for(paused.reached.wait(), 10)
    # A's row is there for everyone to see: B's lease keeper runs its round now.
    await b.follower.take_over()
    assert b.slack.posts == [], "B announced a call A is dialling"
    assert b.follower.following == 0, "B took a call A is dialling"
    paused.go.set()
    row = await asyncio.wait_for(dialling, 10)
    assert row.placement == Placement.DIALLING

    # A's POST answers: placed, ringing. A follows the call; B's rounds leave it alone.
    result = CallResult(Outcome.PLACED, session_id="sess-1", session=session("Ringing"))
    tracked = await a.follower.track(CALL, result, THREAD, row)
    assert tracked is not None and tracked.following
    await b.follower.take_over()
    await a.follower.begin(tracked, STATUS_TS, THREAD)
    await b.follower.take_over()
    await asyncio.wait_for(asyncio.gather(*a.follower.tasks()), 10)

    final = await a.store.get(row.id)
    assert final is not None
    assert (final.state, final.following, final.note) == (CallState.ENDED, False, None)
    assert final.status_ts == STATUS_TS
    # One status message, A's, edited to the end; nothing posted by either replica besides.
    assert a.slack.posts == [] and b.slack.posts == []
    assert {ts for ts, _ in a.slack.edits} <= {STATUS_TS, PARENT_TS}
    assert "Ended" in [text for ts, text in a.slack.edits if ts == STATUS_TS][-1]
    assert b.slack.edits == [] and b.evo.polls == 0 and b.evo.searches == 0
    await b.follower.take_over()
    assert b.follower.following == 0 and b.slack.posts == []
    await a.follower.stop()
    await b.follower.stop()


async def test_the_attempt_its_row_and_its_lease_are_committed_together(db: Database) -> None:
    clock = Clock()
    a = Replica("a", db, db, clock)
    audit = await AuditLog.open(db)

    row = await a.follower.note_dialling(CALL, T0, attempt=audit.allowed_row(CALL))
    assert row.attempt_id is not None and row.placement == Placement.DIALLING
    record = await audit.record(row.attempt_id)
    assert record is not None and record.decision == "allowed"
    assert await Leases(db, owner="b", clock=clock).unowned("call", [row.id]) == []

    # The next row's lease is somehow held already: its row is refused, and so are its attempt
    # and its rate-limit slot, written first in the same transaction (CallService.proceed).
    limits = CallLimits(db, per_user=parse_rate("5/10m"), per_number=parse_rate("5/10m"),
                        per_day=100, clock=clock)
    slot = await limits.slot_request("U0", CALL.number.e164, CALL.flow_id)
    await Leases(db, owner="b", clock=clock).take("call", row.id + 1)
    with pytest.raises(IntegrityError):
        await a.follower.note_dialling(CALL, T0, attempt=audit.allowed_row(CALL), slot=slot)
    assert [r.id for r in await audit.history()] == [row.attempt_id]
    assert [c.id for c in await a.store.dialling()] == [row.id]
    assert await db.fetchall("SELECT id FROM rate_events") == []
    await a.follower.stop()


async def test_a_call_left_behind_is_announced_by_one_replica(db: Database) -> None:
    clock = Clock()
    dead = Replica("dead", db, db, clock)
    row = await dead.follower.note_dialling(CALL, T0)  # then its replica died
    clock.now += Leases(db).valid_for + 1  # its lease has expired
    b, c = Replica("b", db, db, clock), Replica("c", db, db, clock)
    await asyncio.gather(b.follower.take_over(), c.follower.take_over())
    announced = [r for r in (b, c) if r.slack.posts]
    assert len(announced) == 1, "one replica tells the requester, once"
    [replica] = announced
    assert "may or may not have been placed" in replica.slack.posts[-1]
    # The parent, drawn from the row alone, says who called what with which flow.
    assert replica.slack.posts[0] == "📞 <@U0> is calling +1 814 ••• 3093 with flow “Escalation”"
    await asyncio.wait_for(asyncio.gather(*b.follower.tasks(), *c.follower.tasks()), 10)
    assert b.evo.searches + c.evo.searches >= 1
    call = await b.store.get(row.id)
    assert call is not None and call.state == CallState.ENDED and not call.following
    await b.follower.take_over()
    await c.follower.take_over()
    assert len(b.slack.posts) + len(c.slack.posts) == 2  # the parent and the status, once
    await b.follower.stop()
    await c.follower.stop()


RINGING = CallResult(Outcome.PLACED, session_id="sess-1", session=session("Ringing"))


async def test_a_call_answered_as_another_replica_reconciles_it_is_told_by_that_one_alone(
    db: Database,
) -> None:
    # A stalled past its lease with its POST on its way. B's round takes the lease of the row
    # left "being dialled" and reads it to reconcile it; then A comes back, Evo Voice's answer
    # with it. The call is B's: A writes nothing over it and tells nothing; B tells it, once.
    clock = Clock()
    a = Replica("a", db, db, clock)
    row = await a.follower.note_dialling(CALL, T0)
    clock.now += Leases(db).valid_for + 1  # A's lease has lapsed
    paused = PausedAfterInsert(db, after="SELECT * FROM calls WHERE id")
    b = Replica("b", paused, db, clock)
    reconciling = asyncio.create_task(b.follower.take_over())
    await asyncio.wait_for(paused.reached.wait(), 10)  # B read the row: "being dialled"
    told = await a.follower.track(CALL, RINGING, THREAD, row)
    assert not isinstance(told, TrackedCall), "A would post a status message of its own"
    assert told is TAKEN_OVER
    paused.go.set()
    await asyncio.wait_for(reconciling, 10)
    assert "may or may not have been placed" in b.slack.posts[-1]
    await asyncio.wait_for(asyncio.gather(*b.follower.tasks()), 10)
    await b.follower.take_over()
    call = await b.store.get(row.id)
    assert call is not None and call.status_ts == "9.9" and call.state == CallState.ENDED
    assert a.follower.following == 0 and a.slack.posts == [] and a.evo.polls == 0
    assert len(b.slack.posts) == 2  # its parent and its status, once
    await a.follower.stop()
    await b.follower.stop()


async def test_a_call_answered_after_its_lease_lapsed_is_left_to_its_replica(
    db: Database,
) -> None:
    # A stalled past its lease with its POST on its way, and comes back with Evo Voice's answer
    # before any other replica looked: it fills the row in, and holds the call's lease again in
    # that write. B's round, right after, leaves the call to A, which tells it.
    clock = Clock()
    a = Replica("a", db, db, clock)
    row = await a.follower.note_dialling(CALL, T0)
    clock.now += Leases(db).valid_for + 1  # A's lease has lapsed
    tracked = await a.follower.track(CALL, RINGING, THREAD, row)
    assert isinstance(tracked, TrackedCall) and tracked.placement == Placement.PLACED
    b = Replica("b", db, db, clock)
    await b.follower.take_over()
    assert b.slack.posts == [] and b.follower.following == 0, "B took a call A tells"
    await a.follower.begin(tracked, STATUS_TS, THREAD)
    await asyncio.wait_for(asyncio.gather(*a.follower.tasks()), 10)
    await b.follower.take_over()
    assert b.slack.posts == [] and b.slack.edits == [] and b.evo.polls == 0
    await a.follower.stop()
    await b.follower.stop()


async def placed_then_died(db: Database, clock: Clock,
                           result: CallResult = RINGING) -> TrackedCall:
    """A call a replica dialled, its parent posted and its row filled in with Evo Voice's
    answer (`result`), and then the replica died: its lease has lapsed by `clock`."""
    dead = Replica("dead", db, db, clock)
    row = await dead.follower.note_dialling(CALL, T0)
    await dead.follower.note_parent(row.id, THREAD)
    tracked = await dead.follower.track(CALL, result, THREAD, row)
    assert tracked is not None
    clock.now += Leases(db).valid_for + 1
    return tracked


async def test_a_call_placed_by_a_replica_that_died_before_telling_is_told_by_one(
    db: Database,
) -> None:
    clock = Clock()
    row = await placed_then_died(db, clock)  # its status message never posted
    assert row.following
    b, c = Replica("b", db, db, clock), Replica("c", db, db, clock)
    await asyncio.gather(b.follower.take_over(), c.follower.take_over())
    await asyncio.wait_for(asyncio.gather(*b.follower.tasks(), *c.follower.tasks()), 10)
    # One replica posts the status (under the parent already posted: no second parent) and
    # edits that message to the end.
    [(replica, [status])] = [(r, r.slack.posts) for r in (b, c) if r.slack.posts]
    assert "Ringing" in status or "Calling" in status
    assert "Ended" in [text for ts, text in replica.slack.edits if ts == "9.9"][-1]
    call = await b.store.get(row.id)
    assert call is not None and call.status_ts == "9.9" and not call.following
    await b.follower.take_over()
    await c.follower.take_over()
    assert len(b.slack.posts) + len(c.slack.posts) == 1
    await b.follower.stop()
    await c.follower.stop()


async def test_a_call_not_placed_by_a_replica_that_died_before_telling_is_told_by_another(
    db: Database,
) -> None:
    # Evo Voice refused the POST (nothing rang), the row says so, and the replica died before
    # telling anyone: left so, the parent would say "calling" for good and the requester believe
    # a page went out. The replica that takes over tells why, and marks the parent.
    clock = Clock()
    refused = CallResult(Outcome.FAILED, error=EvoVoiceError("Flow not found: choose another"))
    row = await placed_then_died(db, clock, refused)
    assert not row.following
    b = Replica("b", db, db, clock)
    await b.follower.take_over()
    await asyncio.wait_for(asyncio.gather(*b.follower.tasks()), 10)
    [status] = b.slack.posts
    assert "Flow not found" in status
    assert PARENT_TS in [ts for ts, _ in b.slack.edits]  # the parent carries the outcome
    call = await b.store.get(row.id)
    assert call is not None and call.status_ts == "9.9" and call.marked
    await b.follower.take_over()
    assert b.slack.posts == [status]
    await b.follower.stop()


class DeliveredJustNow:
    """An outbox whose kept status message is delivered as it is asked about it: the post is
    forgotten and its ts written to the call's row together (bot/slack/outbox.py), just before
    the answer "nothing kept" comes back."""

    def __init__(self, store: CallStore) -> None:
        self._store = store

    async def holds(self, kept: Any) -> bool:
        await self._store.update(kept.subject, status_ts="7.7")
        return False


async def test_a_status_message_delivered_while_a_takeover_looks_is_not_posted_twice(
    db: Database,
) -> None:
    clock = Clock()
    await placed_then_died(db, clock)  # with its status message kept to be sent
    b = Replica("b", db, db, clock)
    b.slack.outbox = DeliveredJustNow(b.store)  # type: ignore[assignment]
    await b.follower.take_over()
    await asyncio.wait_for(asyncio.gather(*b.follower.tasks()), 10)
    assert b.slack.posts == []  # the message the outbox delivered is the one followed
    assert "Ended" in [text for ts, text in b.slack.edits if ts == "7.7"][-1]
    await b.follower.stop()


async def over_call(replica: Replica, clock: Clock, **values: Any) -> int:
    """A call placed by `replica` and followed to its end, its end shown; then `values` set."""
    row = await replica.follower.note_dialling(CALL, clock())
    result = CallResult(Outcome.PLACED, session_id=f"sess-{row.id}", session=session("Ringing"))
    tracked = await replica.follower.track(CALL, result, THREAD, row)
    assert tracked is not None
    await replica.follower.begin(tracked, STATUS_TS, THREAD)
    await asyncio.wait_for(asyncio.gather(*replica.follower.tasks()), 10)
    await replica.store.update(row.id, **values)
    return row.id


async def test_a_round_reads_only_the_over_calls_whose_lease_lapsed(db: Database) -> None:
    clock = Clock()
    a = Replica("a", db, db, clock)
    leases = Leases(db, owner="a", clock=clock)
    lapsed = await over_call(a, clock, shown_digest=None)  # its edit refused, then "a" died
    held = await over_call(a, clock, shown_digest=None)  # "a" still trying, alive
    released = await over_call(a, clock, shown_digest=None)  # "a" stopped: the next start's
    old = await over_call(a, clock, shown_digest=None)
    await db.execute("UPDATE calls SET created_at = ? WHERE id = ?", (T0 - 2 * 86400, old))
    for call_id in (lapsed, held, old):
        assert await leases.take("call", call_id)
    clock.now += leases.valid_for + 1
    assert await leases.take("call", held)  # renewed
    found = await a.store.over_with_lapsed_lease("call", clock(), clock() - 86400)
    assert [call.id for call in found] == [lapsed], (released, old)
    await a.follower.stop()


async def test_a_dead_replicas_call_shown_over_is_left_alone_and_its_lease_given_back(
    db: Database,
) -> None:
    clock = Clock()
    dead = Replica("dead", db, db, clock)
    call_id = await over_call(dead, clock)
    # It died between showing the end and giving the lease back.
    assert await Leases(db, owner="dead", clock=clock).take("call", call_id)
    clock.now += Leases(db).valid_for + 1
    b = Replica("b", db, db, clock)
    await b.follower.take_over()
    await asyncio.wait_for(asyncio.gather(*b.follower.tasks()), 10)
    assert b.slack.edits == [] and b.slack.posts == [], "nothing shown again"
    assert await db.fetchall("SELECT row_id FROM leases") == [], "its lease given back"
    await b.follower.stop()


@on_both_databases
async def test_an_escalation_being_started_is_left_to_its_replica(bot_factory: BotFactory) -> None:
    a, clock = await start(bot_factory)
    b, _ = await start(bot_factory, clock=clock)  # another replica, on the same database
    paused = PausedAfterInsert(services(a).db, "escalations")
    services(a).escalations.store = EscalationStore(paused)  # type: ignore[arg-type]
    view, _ = await open_on_message(a)
    submitting = asyncio.create_task(submit(a, view))
    await asyncio.wait_for(paused.reached.wait(), 10)
    # A's escalation is there, its chain not started yet: B's lease keeper runs its round now.
    await services(b).escalations.take_over()
    assert services(b).escalations.running == 0, "B took an escalation A is starting"
    paused.go.set()
    await asyncio.wait_for(submitting, 10)
    await escalation_message(a)
    await a.evo.wait_for_posts(1, timeout=10)
    await services(b).escalations.take_over()
    assert dialled(a) == [ALICE] and await state_of(a) == "running"
    assert services(a).escalations.running == 1 and services(b).escalations.running == 0
    cards = a.slack.calls_to("chat.postMessage")
    assert sum("*On-call escalation*" in str(c.params.get("text")) for c in cards) == 1
