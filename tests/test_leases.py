"""Leases and the one runner: each row's work runs in one replica, and moves when that one dies."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable

from bot.runner import RowRunner, Work
from bot.storage.database import Database
from bot.storage.leases import Leases
from tests.conftest import until
from tests.log_capture import entries_of, logged, the_line


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def two_replicas(db: Database, clock: Clock) -> tuple[Leases, Leases]:
    return (Leases(db, lease_seconds=15, owner="a", clock=clock),
            Leases(db, lease_seconds=15, owner="b", clock=clock))


async def test_a_lease_has_one_owner_until_it_expires_or_is_released(db: Database) -> None:
    clock = Clock()
    a, b = two_replicas(db, clock)
    assert await a.take("call", 1)
    assert await a.take("call", 1), "taking one's own lease again is fine"
    assert not await b.take("call", 1)
    assert await b.take("escalation", 1), "kinds are separate"
    clock.now += a.valid_for - 1
    await a.renew()
    clock.now += a.valid_for - 1
    assert not await b.take("call", 1), "renewed"
    clock.now += 2
    assert await b.take("call", 1), "expired: a stopped renewing"
    assert await a.held("call") == set() and await b.held("call") == {1}
    await b.release("call", 1)
    assert await a.take("call", 1)


async def test_racing_replicas_take_a_lease_once(db: Database) -> None:
    clock = Clock()
    replicas = [Leases(db, owner=f"r{i}", clock=clock) for i in range(6)]
    taken = await asyncio.gather(*(r.take("call", 7) for r in replicas))
    assert sum(taken) == 1


async def test_unowned_rows_are_those_never_taken_expired_or_released(db: Database) -> None:
    clock = Clock()
    a, b = two_replicas(db, clock)
    await a.take("call", 1)
    await a.take("call", 2)
    await a.release("call", 2)
    assert await b.unowned("call", [1, 2, 3]) == [2, 3]
    clock.now += a.valid_for + 1
    assert await b.unowned("call", [1, 2, 3]) == [1, 2, 3]


async def test_a_replica_stopping_lets_go_of_its_own_leases_only(db: Database) -> None:
    # At SIGTERM a replica releases every lease of a kind: another's must stay its own, or a
    # third replica would start following that replica's calls too.
    clock = Clock()
    a, b = two_replicas(db, clock)
    await a.take("call", 1)
    await b.take("call", 2)
    await a.release("call")
    assert await b.held("call") == {2}
    assert await a.unowned("call", [1, 2]) == [1]


async def test_replicas_alive_are_those_renewing(db: Database) -> None:
    clock = Clock()
    a, b = two_replicas(db, clock)
    await a.renew()
    await b.renew()
    assert [r.id for r in await a.alive()] == ["a", "b"]
    clock.now += 20
    await b.renew()
    assert [r.id for r in await a.alive()] == ["b"]
    b.keep([])
    await b.stop()
    assert await a.alive() == []


async def test_the_runner_runs_a_row_once_and_a_dead_replicas_rows_move(db: Database) -> None:
    clock = Clock()
    leases_a, leases_b = two_replicas(db, clock)
    ran: list[tuple[str, int]] = []
    gate = asyncio.Event()

    async def nothing(row_id: int, exc: Exception) -> None:
        raise AssertionError(exc)

    def work(who: str, row_id: int) -> Work:
        async def run() -> None:
            ran.append((who, row_id))
            await gate.wait()
        return run

    a = RowRunner("call", leases_a, on_error=nothing)
    b = RowRunner("call", leases_b, on_error=nothing)
    assert await a.start(1, work("a", 1))
    assert not await a.start(1, work("a", 1))
    assert await b.adopt([1, 2], lambda i: work("b", i)) == [2]
    await asyncio.sleep(0)
    assert sorted(ran) == [("a", 1), ("b", 2)]

    # a dies: it stops renewing; once its lease has expired, b takes row 1 over.
    a.closed = True
    for task in a.tasks():
        task.cancel()
    await leases_b.renew()
    clock.now += leases_a.valid_for + 1
    assert await b.adopt([1, 2], lambda i: work("b", i)) == [1]
    await asyncio.sleep(0)
    assert ("b", 1) in ran

    # b stops (SIGTERM): its leases go at once, a new replica takes both without waiting.
    await b.stop()
    c = RowRunner("call", Leases(db, owner="c", clock=clock), on_error=nothing)
    assert await c.adopt([1, 2], lambda i: work("c", i)) == [1, 2]
    gate.set()
    await asyncio.gather(*c.tasks())
    assert await Leases(db, owner="c", clock=clock).held("call") == set(), "done: released"


async def test_a_runner_does_not_start_a_row_whose_lease_another_replica_holds(
    db: Database,
) -> None:
    clock = Clock()
    leases_a, leases_b = two_replicas(db, clock)
    ran: list[str] = []
    gate = asyncio.Event()

    async def nothing(row_id: int, exc: Exception) -> None:
        raise AssertionError(exc)

    def work(who: str) -> Work:
        async def run() -> None:
            ran.append(who)
            await gate.wait()
        return run

    a = RowRunner("call", leases_a, on_error=nothing)
    b = RowRunner("call", leases_b, on_error=nothing)
    assert await a.start(1, work("a"))
    # b was asked to start it (a round that saw it unowned a moment before): a's lease says no.
    assert not await b.start(1, work("b"))
    await asyncio.sleep(0)
    assert ran == ["a"] and b.running == 0
    assert await leases_b.held("call") == set()
    gate.set()
    await asyncio.gather(*a.tasks())


async def test_a_runner_lets_go_of_a_row_another_replica_took_over(db: Database) -> None:
    clock = Clock()
    leases_a, leases_b = two_replicas(db, clock)
    stopped = asyncio.Event()

    async def run() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    async def nothing(row_id: int, exc: Exception) -> None:
        raise AssertionError(exc)

    a = RowRunner("escalation", leases_a, on_error=nothing)
    await a.start(5, run)
    await asyncio.sleep(0)
    clock.now += leases_a.valid_for + 1  # a stalled past its lease
    assert await leases_b.take("escalation", 5)
    await a.take_over(_no_rows, lambda _: run)
    await asyncio.wait_for(stopped.wait(), 5)
    assert a.running == 0


async def test_a_dead_replicas_lease_moves_within_lease_seconds_and_a_stall_keeps_it(
    db: Database,
) -> None:
    # README: a dead replica's work is taken over within LEASE_SECONDS (a round of the others'
    # every LEASE_SECONDS/6 included), and a replica that misses three renewals keeps its work.
    clock = Clock()
    a, b = two_replicas(db, clock)
    taken_at = clock.now
    assert await a.take("call", 1)
    clock.now = taken_at + 3 * a.every + 0.1
    assert not await b.take("call", 1), "three renewals missed: still a's"
    clock.now = taken_at + a.lease_seconds - a.every
    assert await b.take("call", 1), "a died: b's round before LEASE_SECONDS takes it over"


class PausingLeases(Leases):
    """Leases whose `held` pauses once it has read the table, as a busy database or event loop
    may make a round of the lease keeper wait."""

    def __init__(self, db: Database, clock: Clock) -> None:
        super().__init__(db, lease_seconds=15, owner="a", clock=clock)
        self.read = asyncio.Event()
        self.go_on = asyncio.Event()

    async def held(self, kind: str) -> set[int]:
        found = await super().held(kind)
        self.read.set()
        await self.go_on.wait()
        return found


async def test_a_row_started_during_a_keepers_round_is_not_taken_for_one_lost(
    db: Database,
) -> None:
    # A call placed (or an escalation started) while a round of the lease keeper was reading the
    # leases: its lease is this replica's, so its task must go on. Cancelled, nobody would ever
    # follow it: its lease stays this replica's, renewed every round.
    leases = PausingLeases(db, Clock())

    async def nothing(row_id: int, exc: Exception) -> None:
        raise AssertionError(exc)

    async def run() -> None:
        await asyncio.Event().wait()

    a = RowRunner("call", leases, on_error=nothing)
    round_ = asyncio.create_task(a.take_over(_no_rows, lambda _: run))
    await leases.read.wait()
    assert await a.start(9, run)
    leases.go_on.set()
    await round_
    await asyncio.sleep(0)
    assert 9 in a, "a row started during the round is still running"
    await a.stop()


async def test_releasing_a_row_lets_go_of_ones_own_lease_only(db: Database) -> None:
    # a stalled past its lease and b took the row over; a's task then ends and gives its lease
    # back: b's must stay b's, or a third replica would run the row beside b.
    clock = Clock()
    a, b = two_replicas(db, clock)
    await a.take("call", 1)
    clock.now += a.valid_for + 1
    assert await b.take("call", 1)
    await a.release("call", 1)
    assert await b.held("call") == {1}
    assert await a.unowned("call", [1]) == []


async def test_a_replica_seen_within_the_lease_is_alive_whoever_renewed_last(db: Database) -> None:
    clock = Clock()
    a, b = two_replicas(db, clock)
    await a.renew()
    clock.now += 5
    await b.renew()
    assert [r.id for r in await b.alive()] == ["a", "b"]


async def test_the_keeper_renews_and_runs_its_rounds_every_sixth_of_the_lease(db: Database) -> None:
    leases = Leases(db, lease_seconds=0.3, owner="a")
    rounds = 0
    twice = asyncio.Event()

    async def round_() -> None:
        nonlocal rounds
        rounds += 1
        if rounds == 2:
            twice.set()

    leases.keep([round_])
    await asyncio.wait_for(twice.wait(), 5)
    assert [r.id for r in await leases.alive()] == ["a"]
    await leases.stop()


async def _failing(row_id: int, exc: Exception) -> None:
    raise AssertionError(exc)


async def test_a_row_asked_to_start_twice_at_once_runs_once(db: Database) -> None:
    # A keeper's round adopting a row while the same row is started from a request: one task.
    a = RowRunner("call", Leases(db, owner="a", clock=Clock()), on_error=_failing)
    ran: list[int] = []

    async def run() -> None:
        ran.append(1)
        await asyncio.Event().wait()

    assert sorted(await asyncio.gather(a.start(1, run), a.start(1, run))) == [False, True]
    await asyncio.sleep(0)
    assert ran == [1] and a.running == 1
    await a.stop()


async def test_stopping_wakes_the_work_to_end_at_its_safe_point(db: Database) -> None:
    a = RowRunner("call", Leases(db, owner="a", clock=Clock()), on_error=_failing)
    ended: list[bool] = []

    async def run() -> None:
        await a.wake(1).wait()  # a pause between polls, cut short
        ended.append(a.closed)

    assert await a.start(1, run)
    await asyncio.sleep(0)
    await asyncio.wait_for(a.stop(grace=10), 5)
    assert ended == [True], "woken, it ended on its own rather than being cancelled"


async def test_a_reserved_row_given_back_is_free_for_any_replica(db: Database) -> None:
    # A row reserved for work that will not start here (a reconciled call nobody can be told of):
    # the next round, of any replica, must find it free.
    clock = Clock()
    leases_a, leases_b = two_replicas(db, clock)
    a = RowRunner("call", leases_a, on_error=_failing)
    assert await a.reserve(3)
    await a.release(3)
    assert await leases_b.take("call", 3)


async def _no_rows() -> list[int]:
    return []


async def test_work_handed_to_a_row_s_task_runs_after_its_own_under_its_lease(
    db: Database,
) -> None:
    """`start_or_after` while the row's task runs: the task is woken, does its own work, then
    the work handed over, holding the lease throughout; a row no task runs just starts."""
    clock = Clock()
    leases, other = two_replicas(db, clock)
    ran: list[str] = []
    gate = asyncio.Event()

    async def nothing(row_id: int, exc: Exception) -> None:
        raise AssertionError(exc)

    async def own() -> None:
        ran.append("own")
        await gate.wait()

    async def handed() -> None:
        ran.append("handed")
        assert not await other.take("escalation", 3), "the lease is still this replica's"

    runner = RowRunner("escalation", leases, on_error=nothing)
    assert await runner.start(3, own)
    await asyncio.sleep(0)
    assert await runner.start_or_after(3, handed)
    assert runner.wake(3).is_set(), "woken, in case it is pausing"
    gate.set()
    await asyncio.gather(*runner.tasks())
    assert ran == ["own", "handed"] and runner.running == 0
    assert await leases.held("escalation") == set(), "done: released"
    assert await runner.start_or_after(3, handed), "no task: started"
    await asyncio.gather(*runner.tasks())
    assert ran == ["own", "handed", "handed"]


async def test_work_whose_lease_another_replica_holds_runs_once_it_lets_go(db: Database) -> None:
    """`start_or_after` while another replica's task holds the row's lease (it may be ending
    without having seen what the work is for): tried again after growing pauses, the latest work
    handed over, until that replica gives the lease back; then run here, once, under the lease.
    A runner that stops gives up waiting."""
    clock = Clock()
    a_leases, b_leases = two_replicas(db, clock)
    ran: list[str] = []
    gate, paused = asyncio.Event(), asyncio.Queue[float]()
    resume = asyncio.Queue[None]()

    async def nothing(row_id: int, exc: Exception) -> None:
        raise AssertionError(exc)

    async def pause(_: asyncio.Event, seconds: float) -> None:
        paused.put_nowait(seconds)
        await resume.get()

    async def own() -> None:
        await gate.wait()

    def handed(name: str) -> Work:
        async def work() -> None:
            ran.append(name)
            assert not await a_leases.take("escalation", 3), "the lease is b's"
        return work

    a = RowRunner("escalation", a_leases, on_error=nothing)
    b = RowRunner("escalation", b_leases, on_error=nothing, first_pause=0.5, pause=pause)
    assert await a.start(3, own)
    assert not await b.start_or_after(3, handed("first")), "a holds the lease"
    assert not await b.start_or_after(3, handed("latest")), "waiting already: work replaced"
    assert await asyncio.wait_for(paused.get(), 5) == 0.5
    resume.put_nowait(None)
    assert await asyncio.wait_for(paused.get(), 5) == 1.0, "still a's: a longer pause"
    assert ran == [] and b.running == 0
    gate.set()
    await asyncio.gather(*a.tasks())  # a's task over, its lease given back
    resume.put_nowait(None)
    await until(lambda: ran == ["latest"])
    await asyncio.gather(*b.tasks())
    assert await b_leases.held("escalation") == set(), "done: released"
    assert paused.empty(), "no more tries once it ran"

    gate.clear()
    assert await a.start(5, own)
    assert not await b.start_or_after(5, handed("never"))
    await asyncio.wait_for(paused.get(), 5)
    await b.stop()
    gate.set()
    await a.stop()
    assert ran == ["latest"]


async def test_a_replica_is_alive_until_a_whole_lease_passes_without_it_renewing(
    db: Database,
) -> None:
    clock = Clock()
    a, b = two_replicas(db, clock)
    await a.renew()
    clock.now += 14.5
    await b.renew()
    assert [r.id for r in await b.alive()] == ["a", "b"]
    clock.now += 1
    assert [r.id for r in await b.alive()] == ["b"]


async def test_the_keeper_carries_on_after_a_round_the_database_failed(db: Database) -> None:
    """A locked database (or any error) in one round: the leases last several rounds, and the
    next round renews them."""
    leases = Leases(db, lease_seconds=0.3, owner="a")
    rounds = 0
    again = asyncio.Event()

    async def round_() -> None:
        nonlocal rounds
        rounds += 1
        if rounds == 1:
            raise sqlite3.OperationalError("database is locked")
        again.set()

    leases.keep([round_])
    await asyncio.wait_for(again.wait(), 5)
    await leases.stop()


async def test_a_row_left_to_another_replica_is_logged_with_its_id_as_a_field(
    db: Database,
) -> None:
    # An operator following escalation 5 by its field (LOG_FORMAT=json) finds where it went.
    clock = Clock()
    leases_a, leases_b = two_replicas(db, clock)

    async def run() -> None:
        await asyncio.Event().wait()

    async def nothing(row_id: int, exc: Exception) -> None:
        raise AssertionError(exc)

    with logged("json") as stream:
        a = RowRunner("escalation", leases_a, on_error=nothing)
        await a.start(5, run)
        await asyncio.sleep(0)
        clock.now += leases_a.valid_for + 1  # a stalled past its lease
        assert await leases_b.take("escalation", 5)
        await a.take_over(_no_rows, lambda _: run)
        await until(lambda: a.running == 0)
    line = the_line(entries_of(stream), "taken over by another replica")
    assert line["escalation_id"] == 5


async def test_a_round_held_up_on_slack_does_not_let_the_replicas_own_leases_lapse(
    db: Database,
) -> None:
    """A round of the keeper may wait a long time on Slack (a dead replica's posts sent again and
    its never-dialled requesters told, bot/slack/outbox.py and bot/calls/untold.py; a call it
    left being dialled announced, bot/calls/follow.py): this replica is alive and its own work
    goes on, so its leases are renewed meanwhile. They lapsed: another replica took that work
    over while it still ran here (two chains driving one escalation, two followers of one call)."""
    clock = Clock()
    a = Leases(db, lease_seconds=0.3, owner="a", clock=clock)
    b = Leases(db, lease_seconds=0.3, owner="b", clock=clock)
    assert await a.take("call", 1)
    in_the_round, slack_answers = asyncio.Event(), asyncio.Event()

    async def telling_a_dead_replicas_requester() -> None:
        in_the_round.set()
        await slack_answers.wait()

    a.keep([telling_a_dead_replicas_requester])
    await asyncio.wait_for(in_the_round.wait(), 5)
    clock.now += a.valid_for + 1  # Slack has not answered for longer than a lease lasts

    async def renewed() -> None:
        while await b.unowned("call", [1]):
            await asyncio.sleep(0.01)

    await asyncio.wait_for(renewed(), 5)
    assert not await b.take("call", 1), "a's own work stays a's"
    slack_answers.set()
    await a.stop()


async def test_a_stopped_runner_takes_no_lease_a_round_still_under_way_asks_for(
    db: Database,
) -> None:
    # A lease keeper's round (reconciling a call left being dialled, say) that reaches a row after
    # its runner stopped and let every lease go: taken then, the lease would stay this stopped
    # replica's for a lease period, and the next start or another replica find the row owned and
    # leave its call unlooked-for and its requester untold until then.
    clock = Clock()
    a, b = two_replicas(db, clock)

    async def nothing(row_id: int, exc: Exception) -> None:
        raise AssertionError(exc)

    runner = RowRunner("call", a, on_error=nothing)
    await runner.stop()
    assert not await runner.reserve(1)
    assert await b.unowned("call", [1]) == [1]


async def test_a_round_waiting_on_slack_or_failing_holds_no_other_round_back(db: Database) -> None:
    """The follower's round may wait on Slack (a call a dead replica left being dialled, its
    requester told), or fail every time (a bug on one row): the escalations' round, which takes
    over a dead replica's chains and dials their next person, runs all the same, every time."""
    leases = Leases(db, lease_seconds=0.3, owner="a")
    slack_answers, escalations_taken_over = asyncio.Event(), asyncio.Event()
    follower_rounds = 0

    async def follower_waiting_on_slack() -> None:
        nonlocal follower_rounds
        follower_rounds += 1
        if follower_rounds == 1:
            await slack_answers.wait()

    async def failing_every_time() -> None:
        raise RuntimeError("a bug on one row")

    async def escalations() -> None:
        escalations_taken_over.set()

    leases.keep([follower_waiting_on_slack, failing_every_time, escalations])
    await asyncio.wait_for(escalations_taken_over.wait(), 5)
    slack_answers.set()
    await leases.stop()


def ran_at_once(ran: asyncio.Event) -> Callable[[], Awaitable[None]]:
    async def round_() -> None:
        ran.set()

    return round_


async def test_a_keeper_woken_just_as_it_is_stopped_stops(db: Database) -> None:
    """A wake-up (a new round asked for) and a stop in the same turn of the event loop: the
    keeper's pause returned as if woken and the cancellation was lost (asyncio.wait_for, Python
    3.11), so it ran on and `stop`, waiting for it, never returned: a replica that never left
    the replicas table, nor finished stopping."""
    for _ in range(5):
        leases = Leases(db)
        ran = asyncio.Event()

        leases.keep([ran_at_once(ran)])
        await ran.wait()
        for _ in range(20):  # the round over, the keeper reaches its pause
            await asyncio.sleep(0)
        leases.wake()
        await asyncio.wait_for(leases.stop(), 5)
        assert not await db.fetchall("SELECT 1 FROM replicas WHERE id = ?", (leases.owner,))
