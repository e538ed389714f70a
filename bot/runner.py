"""One task per database row this replica runs: a followed call, an escalation chain.

`CallFollower` and `EscalationService` both keep long-running work keyed by a row id; this is the
one place that starts it at most once per process, holds its lease (bot/storage/leases.py) so it
runs in one replica only, wakes it early, and stops it. Without leases (unit tests building a
service alone) the rules are the same within the process.

- `start(row_id, work)`: take the lease, then run `work()` as a task, unless it runs already or
  another replica holds the lease.
- `start_or_after(row_id, work)`: the same, but if the row's task runs here already, `work()`
  runs in that task after its own work (woken meanwhile), under the same lease: work handed to
  a task that is just finishing is never dropped. If another replica holds the lease (its task
  may be ending without having seen what `work` is for), it is tried again after growing pauses
  (for about ten minutes, until this runner stops), so `work()` runs once that replica lets go.
- `adopt(ids, work_for)`: start each row not running anywhere (its lease expired: its replica died).
- `take_over(row_ids, work_for)`: a lease keeper's round: `drop_lost`, then `adopt`.
- `leave_lapsed(row_id)`: while stopping, work for a row left to whoever takes its lapsed lease.
- `drop_lost(held, running)`: stop the tasks whose lease this replica no longer holds (it stalled
  so long that another replica took them over).
- `stop(grace)`: wake every task, give them `grace` seconds to reach a safe point (work that
  checks `closed`), cancel the rest, and leave the leases lapsed so other replicas continue at
  once (bot/storage/leases.py).

A task that ends normally gives its lease back (deleted), unless the runner is stopping. A task
that fails (a bug) keeps it, so no replica retries the same failure in a loop; it is tried again
when this replica stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from functools import partial

from bot.calls.status_message import FINAL_EDIT_FOR_SECONDS, until_shown
from bot.storage.database import Connection
from bot.storage.faults import DATABASE_FAULTS, until_database_answers
from bot.storage.leases import Leases
from bot.storage.together import NewRow

logger = logging.getLogger(__name__)

Work = Callable[[], Awaitable[None]]
Pause = Callable[[asyncio.Event, float], Awaitable[None]]


async def _sleep(_: asyncio.Event, seconds: float) -> None:
    await asyncio.sleep(seconds)


class RowRunner:
    def __init__(
        self,
        kind: str,
        leases: Leases | None,
        *,
        on_error: Callable[[int, Exception], Awaitable[None]],
        first_pause: float = 0.5,
        pause: Pause = _sleep,
    ) -> None:
        """`first_pause`, `pause`: how work whose lease another replica holds waits to try again
        (`start_or_after`)."""
        self.kind = kind
        self._first_pause = first_pause
        self._pause = pause
        self._waiting: dict[int, asyncio.Task[None]] = {}  # start_or_after, lease held elsewhere
        self._waiting_work: dict[int, Work] = {}
        self._leases = leases
        self._on_error = on_error
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._wake: dict[int, asyncio.Event] = {}
        self._failed: set[int] = set()
        self._after: dict[int, Work] = {}  # run by the row's task once its own work is done
        self._reserved: set[int] = set()
        # Leases whose give-back failed (the database out for a moment), given back at the next
        # round (True: left lapsed, `let_go`): kept, they would be renewed with this replica's
        # others for as long as it runs, and the rows' work done by nobody.
        self._not_given_back: dict[int, bool] = {}
        # Rows whose task, its work done, gives its lease back (and may take it again for work
        # handed over meanwhile): not held, yet not lost to another replica either.
        self._giving_back: set[int] = set()
        self.closed = False

    @property
    def running(self) -> int:
        return len(self._tasks)

    def __contains__(self, row_id: int) -> bool:
        return row_id in self._tasks

    def tasks(self) -> list[asyncio.Task[None]]:
        return list(self._tasks.values())

    def wake(self, row_id: int) -> asyncio.Event:
        """The event that cuts this row's current pause short."""
        return self._wake.setdefault(row_id, asyncio.Event())

    def poke(self, row_id: int) -> None:
        self.wake(row_id).set()

    async def reserve(self, row_id: int, *, on: Connection | None = None) -> bool:
        """Take the lease of a row just created here, before its work starts (so no other
        replica adopts it meanwhile): best `on` the transaction that creates the row, else the
        row is seen for a moment without its lease, as if its replica had stopped. False once
        stopped: a keeper's round still under way would keep the lease `stop` let go of."""
        if self.closed:
            return False
        if self._leases is not None and not await self._leases.take(self.kind, row_id, on=on):
            return False
        self._reserved.add(row_id)
        return True

    async def reserve_new(self, conn: Connection, row_id: int) -> None:
        """`reserve` in the transaction `conn` that creates the row (a store's `then`): no replica,
        this one included, ever sees the row without its lease and takes it for one left behind.
        On SQLite it runs on the database thread (an atomic unit): it touches no loop state but
        the `_reserved` set, whose single operations are atomic."""
        if not await self.reserve(row_id, on=conn):
            raise RuntimeError(f"{self.kind} {row_id}: a new row's lease is held already, or "
                               "its runner stopped")

    def new_lease(self, table: str) -> NewRow | None:
        """The lease of a row about to be inserted into `table`, to write in the same transaction
        (None without leases); once written, `reserved(row_id)`."""
        return self._leases.new_lease(self.kind, table) if self._leases is not None else None

    def reserved(self, row_id: int) -> None:
        """The row's lease was written with it (`new_lease`): its work may start without a trip."""
        self._reserved.add(row_id)

    async def release(self, row_id: int) -> None:
        """Give back a reserved row's lease: its work will not start here. Raises what the
        database raised (the lease is then given back at the next round)."""
        self._reserved.discard(row_id)
        await self._give_back(row_id)

    async def _give_back(self, row_id: int, *, lapse: bool = False) -> None:
        """The row's lease deleted (`lapse`: left lapsed); tried again at the next round
        (`take_over`) if the database fails now."""
        if self._leases is None:
            return
        self._not_given_back[row_id] = lapse
        if lapse:
            await self._leases.lapse(self.kind, row_id)
        else:
            await self._leases.release(self.kind, row_id)
        if self._not_given_back.get(row_id) is lapse:
            del self._not_given_back[row_id]

    async def _give_back_again(self) -> None:
        """The leases whose give-back failed, given back now, unless their row is at work here
        again (its lease taken anew)."""
        for row_id, lapse in list(self._not_given_back.items()):
            if row_id in self._tasks or row_id in self._reserved:
                self._not_given_back.pop(row_id, None)
            elif self._not_given_back.get(row_id) is lapse:
                await self._give_back(row_id, lapse=lapse)

    async def let_go(self, row_id: int) -> None:
        """Leave a reserved row's lease lapsed (not given back: the row's work was cut short, not
        done), for any replica's next round to take over, this one's included. Kept, it would be
        renewed by this replica for as long as it runs, with nothing here working on the row."""
        if row_id in self._tasks:
            return
        self._reserved.discard(row_id)
        await self._give_back(row_id, lapse=True)

    async def leave_lapsed(self, row_id: int) -> None:
        """Work for a row that this runner, stopping, will not do: the row's lease is taken, if
        nobody holds it, and left lapsed, as `stop` leaves its tasks', so that the next start or
        another replica's round finds the row and does what it asks (a row's own task here has
        its lease left so by `stop`; one held elsewhere is that replica's)."""
        if self._leases is None or row_id in self._tasks:
            return
        if await self._leases.take(self.kind, row_id):
            await self._leases.lapse(self.kind, row_id)

    async def unowned(self, row_ids: Iterable[int]) -> list[int]:
        """Those of `row_ids` that no replica runs or holds (this one included)."""
        ids = [i for i in row_ids if i not in self._tasks and i not in self._reserved]
        return await self._leases.unowned(self.kind, ids) if self._leases is not None else ids

    async def start(self, row_id: int, work: Work) -> bool:
        if self.closed or row_id in self._tasks:
            return False
        self._not_given_back.pop(row_id, None)  # its lease is this work's now
        if row_id in self._reserved:
            self._reserved.discard(row_id)  # its lease was taken a moment ago: no second trip
        elif self._leases is not None and not await self._leases.take(self.kind, row_id):
            return False
        if self.closed or row_id in self._tasks:  # while the lease was being taken
            return False
        task = asyncio.create_task(self._run(row_id, work), name=f"{self.kind} {row_id}")
        self._tasks[row_id] = task

        def done(finished: asyncio.Task[None]) -> None:
            if self._tasks.get(row_id) is finished:
                self._tasks.pop(row_id, None)
            if row_id not in self._tasks:
                self._wake.pop(row_id, None)
                self._after.pop(row_id, None)

        task.add_done_callback(done)
        return True

    async def start_or_after(self, row_id: int, work: Work) -> bool:
        """`start`, or, if the row's task runs here, `work()` in it after its own work (the
        task, woken, ends its pause; if it was about to end, it runs `work()` first). False if
        neither: stopping, or another replica holds the lease; then tried again in the background
        (the latest `work` handed over) until that replica lets go: its task may be ending
        without having seen what `work` is for."""
        if await self._start_or_after(row_id, work):
            return True
        if not self.closed:
            self._waiting_work[row_id] = work
            if row_id not in self._waiting:
                waiting = asyncio.create_task(self._until_started(row_id),
                                              name=f"{self.kind} {row_id} waiting for its lease")
                self._waiting[row_id] = waiting
                waiting.add_done_callback(partial(self._not_waiting, row_id))
        return False

    async def _start_or_after(self, row_id: int, work: Work) -> bool:
        if await self.start(row_id, work):
            return True
        if self.closed or row_id not in self._tasks:
            return False
        self._after[row_id] = work
        self.poke(row_id)
        return True

    async def _until_started(self, row_id: int) -> None:
        async def started() -> bool:
            try:
                return await self._start_or_after(row_id, self._waiting_work[row_id])
            except DATABASE_FAULTS as exc:
                logger.warning("%s %s: the database failed (%s) taking its lease; trying "
                               "again", self.kind, row_id, exc, extra=self._fields(row_id))
                return False

        try:
            # Paced as an end Slack refuses is shown: the other replica may be showing it.
            if not await until_shown(started, first_pause=self._first_pause, pause=self._pause,
                                     refused=True, closing=lambda: self.closed):
                if not self.closed:
                    logger.warning("%s %s: another replica held its lease for %.0f s; work "
                                   "handed to this one was not done", self.kind, row_id,
                                   FINAL_EDIT_FOR_SECONDS, extra=self._fields(row_id))
        finally:  # no await from here: work handed over later starts waiting of its own
            self._not_waiting(row_id, asyncio.current_task())

    def _not_waiting(self, row_id: int, waiting: asyncio.Future[None] | None) -> None:
        if waiting is not None and self._waiting.get(row_id) is waiting:
            del self._waiting[row_id]
            self._waiting_work.pop(row_id, None)
        if waiting is not None and waiting.done() and not waiting.cancelled() and (
                failed := waiting.exception()) is not None:
            # A bug while waiting (a failing database is waited out): logged, never unretrieved.
            logger.error("%s %s: waiting for its lease failed", self.kind, row_id,
                         exc_info=failed, extra=self._fields(row_id))

    def _fields(self, row_id: int) -> dict[str, int]:
        """The structured log field naming the row (call_id, escalation_id: bot/ops/logs.py)."""
        return {f"{self.kind}_id": row_id}

    async def adopt(self, row_ids: Iterable[int], work_for: Callable[[int], Work]) -> list[int]:
        """Start the rows among `row_ids` that no replica runs; the ids started."""
        candidates = [i for i in row_ids if i not in self._failed and i not in self._tasks]
        if self._leases is not None:
            candidates = await self._leases.unowned(self.kind, candidates)
        started = []
        for row_id in candidates:
            if row_id in self._failed or row_id in self._tasks:
                continue
            if await self.start(row_id, work_for(row_id)):
                started.append(row_id)
        return started

    async def lost(self, row_id: int) -> bool:
        """Whether the row's work has been taken over by another replica while this one stalled
        (a paused VM, a database that hung): its task here must then do nothing more, now rather
        than at the lease keeper's next round (`drop_lost`), which may come after it acted."""
        if self._leases is None or await self._leases.holds(self.kind, row_id):
            return False
        logger.warning("%s %s: its lease was taken over by another replica; leaving it to them",
                       self.kind, row_id, extra=self._fields(row_id))
        return True

    def drop_lost(self, held: set[int], running: dict[int, asyncio.Task[None]]) -> None:
        """Cancel those of the `running` tasks (read before `held`) whose lease is not held."""
        for row_id, task in running.items():
            if row_id not in held and row_id not in self._giving_back \
                    and self._tasks.get(row_id) is task:
                logger.warning("%s %s: its lease was taken over by another replica; "
                               "leaving it to them", self.kind, row_id,
                               extra=self._fields(row_id))
                task.cancel()

    async def take_over(
        self, row_ids: Callable[[], Awaitable[list[int]]], work_for: Callable[[int], Work]
    ) -> list[int]:
        """One round of the lease keeper: let go of the rows another replica has taken, and start
        those whose replica stopped or died."""
        if self._leases is not None:
            await self._give_back_again()
            # Only the tasks that ran before the leases were read: one started meanwhile (a call
            # just placed, its lease written with its row) may be missing from what was read.
            running = dict(self._tasks)
            self.drop_lost(await self._leases.held(self.kind), running)
        started = await self.adopt(await row_ids(), work_for)
        if started:
            logger.info("taking over %s %d (another replica stopped or died)", self.kind,
                        len(started))
        return started

    async def _run(self, row_id: int, work: Work) -> None:
        next_work: Work | None = work
        while next_work is not None:
            if not await self._work(row_id, next_work):
                return
            next_work = self._after.pop(row_id, None)
            if next_work is not None and not self.closed:
                continue
            next_work = None
            if self._leases is not None and not self.closed:
                # Not while stopping: work that gave up for that (an end Slack refused, still to
                # be shown) is left with its lease lapsed by `stop`, for whoever takes over.
                self._giving_back.add(row_id)
                try:
                    next_work = await self._give_back_then_after(row_id)
                finally:
                    self._giving_back.discard(row_id)
        # Gone from the tasks at once (no await since the last look for work handed over): work
        # handed over from now on starts a task of its own.
        if self._tasks.get(row_id) is asyncio.current_task():
            del self._tasks[row_id]

    async def _give_back_then_after(self, row_id: int) -> Work | None:
        """The lease of a row whose work is done given back; the work handed over meanwhile, if
        any, with the lease taken again."""
        assert self._leases is not None
        try:
            await self._give_back(row_id)
        except Exception:
            logger.warning("%s %s: giving its lease back failed; given back at the next round",
                           self.kind, row_id, exc_info=True, extra=self._fields(row_id))
        # Work handed over while the lease was given back: taken again, and done.
        after = self._after.pop(row_id, None)
        if after is not None and not self.closed and await until_database_answers(
                partial(self._leases.take, self.kind, row_id), f"{self.kind} {row_id}"):
            return after
        return None

    async def _work(self, row_id: int, work: Work) -> bool:
        """Run `work()`; False if it failed (a bug: reported, its lease kept)."""
        try:
            # A database that fails for a while (locked, full, read-only, a PostgreSQL failover)
            # is waited for: the call goes on ringing, the chain must go on after it.
            # Its warnings carry the row's id as a field: call_id, escalation_id.
            await until_database_answers(work, f"{self.kind} {row_id}",
                                         extra={f"{self.kind}_id": row_id})
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failed.add(row_id)
            await self._on_error(row_id, exc)
            return False
        return True

    async def stop(self, grace: float = 0.0) -> None:
        if self.closed:
            return
        self.closed = True
        waiting = list(self._waiting.values())
        for task in waiting:  # no lease held: nothing to wind down
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        tasks = list(self._tasks.values())
        if tasks:
            pending: Iterable[asyncio.Task[None]] = tasks
            if grace > 0:
                # Woken, the work sees `closed` and ends at its next safe point. Not without a
                # grace: a task woken and cancelled at once may see only the wake-up.
                for wake in self._wake.values():
                    wake.set()
                _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._leases is not None:
            try:
                await self._leases.release(self.kind)
            except Exception:
                logger.warning("giving the %s leases back failed; they expire on their own",
                               self.kind, exc_info=True)
