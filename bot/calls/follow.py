"""Which calls are followed after they were placed: their rows, their leases, restarts.

The calls being followed are rows in the database (`CallStore`), so `resume()` picks them up again
after a restart; each runs as one task (`RowRunner`), leased so it runs in one replica. What one
task does (poll Evo Voice, store, show) is bot/calls/polling.py; the status message it keeps in
step with the row is bot/calls/status_message.py; what a session says is bot/calls/progress.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from enum import Enum
from functools import partial
from collections.abc import Awaitable, Callable
from typing import Any

from bot.audit.trail import AuditLog
from bot.calls.announce import Announcer
from bot.calls.models import ESCALATION_ORIGIN, CallResult, CheckedCall, Outcome
from bot.calls.polling import CallPoller, FollowTiming
from bot.calls.progress import classify, duration_of
from bot.calls.retention import NumberRetention
from bot.calls.status_message import StatusMessages, digest
from bot.calls.status_views import AckTest, no_ack_outcomes
from bot.calls.store import CallState, CallStore, Placement, TrackedCall
from bot.errors import describe
from bot.evovoice.client import EvoVoiceClient
from bot.runner import RowRunner, Work
from bot.slack.blocks import Message
from bot.slack.notify import Notifier
from bot.slack.threads import Thread
from bot.storage.database import Connection
from bot.storage.faults import DATABASE_FAULTS, until_database_answers
from bot.storage.leases import Leases
from bot.storage.together import NewRow, SlotFirst
from bot.tasks import wait_or_wake

# Also where escalations and tests have always found them.
__all__ = ["CallFollower", "FollowTiming", "classify", "digest", "duration_of", "wait_or_wake"]

logger = logging.getLogger(__name__)

DEFAULT_TIMING = FollowTiming()

LEASE_KIND = "call"  # a followed call's lease (bot/storage/leases.py)
CALLS_TABLE = "calls"  # the rows LEASE_KIND leases
# A call that ended while Slack refused its final edit until the bot stopped is shown by the next
# start (or, if its replica died or stopped, by another replica's lease keeper), if it was placed
# within this long.
UNSHOWN_ENDS_WITHIN_SECONDS = 24 * 3600.0
RESTARTED_WHILE_DIALLING = (
    "⚠️ callbot restarted while placing this call, so it may or may not have been placed."
)


class TakenOver(Enum):
    TAKEN_OVER = "taken over"  # `CallFollower.track`: the call is another replica's now


TAKEN_OVER = TakenOver.TAKEN_OVER


class CallFollower:
    def __init__(
        self,
        *,
        evo: EvoVoiceClient,
        notifier: Notifier,
        store: CallStore,
        audit: AuditLog | None,
        account_ids: list[str],
        timing: FollowTiming = DEFAULT_TIMING,
        clock: Callable[[], float] = time.time,
        pause: Callable[[asyncio.Event, float], Awaitable[None]] = wait_or_wake,
        leases: Leases | None = None,
        acknowledges: AckTest = no_ack_outcomes,
        retention: NumberRetention | None = None,
    ) -> None:
        self._notifier = notifier
        self._store = store
        self._audit = audit
        self._timing = timing
        self._clock = clock
        # Public, like EscalationService.clock: what a poll measures (how long a call has gone
        # unfound or unreadable, its age) is timed on it, and a test moves it rather than wait.
        self.poll_clock = clock
        self._runner = RowRunner(LEASE_KIND, leases, on_error=self._failed)
        # `acknowledges`: which session outcomes say a person heard the call ([oncall]
        # ack_outcomes); any other connected call was picked up by a person or a voicemail.
        self._messages = StatusMessages(
            notifier, store, first_pause=timing.first_interval, pause=pause,
            acknowledges=acknowledges,
        )
        self._poller = CallPoller(
            evo=evo, store=store, audit=audit, account_ids=account_ids, timing=timing,
            clock=lambda: self.poll_clock(), pause=pause, messages=self._messages,
            wake=self._runner.wake, acknowledges=acknowledges,
        )
        self.find_session = self._poller.find_session  # an escalation step's, at its deadline
        self._announcer = Announcer(notifier, store, audit, self._messages)
        # The runtime's, which has erased while start-up waited: one hourly rhythm, not two.
        self._retention = retention or NumberRetention(store, timing.number_retention, clock)

    @property
    def store(self) -> CallStore:
        return self._store

    @property
    def following(self) -> int:
        """How many calls this process is following now."""
        return self._runner.running

    # ------------------------------------------------------------------ called by CallService

    async def note_dialling(
        self, call: CheckedCall, started: float, *, attempt: NewRow | None = None,
        slot: SlotFirst[Any] | None = None,
    ) -> TrackedCall:
        """The row of a call about to be dialled: should the bot stop before the POST's answer is
        recorded, the next start finds it (`reconcile_dialling`) instead of forgetting a call
        that may ring. Raises when the database fails: then nothing must be dialled.

        Written together with `attempt`, the attempt's audit record (the row keeps its id as
        `attempt_id`), and the row's lease, after `slot` (a rate-limit slot) is taken, the
        request's note cleared (bot/calls/untold.py): all or nothing, in one round trip
        (bot/storage/together.py). What taking the slot raises, or AlreadyTold, comes out."""
        request = call.request
        values: dict[str, Any] = dict(
            created_at=started, team_id=request.team_id, requester_id=request.user_id,
            channel_id=request.channel_id, parent_ts=request.thread_ts,
            e164=call.number.e164, number_masked=call.number.masked,
            flow_id=call.flow_id, flow_name=call.flow_name, caller_id=call.caller_id,
            placement=str(Placement.DIALLING), state=str(CallState.FINDING), following=False,
        )
        # Leased in the row's own transaction and held while it is dialled: no replica (this one
        # included) ever sees it without its lease and takes it for a call left behind.
        row = await self._store.insert_together(
            values, attempt=attempt, lease=self._runner.new_lease(CALLS_TABLE), slot=slot,
            untold=request.untold)
        self._runner.reserved(row.id)
        return row

    async def note_parent(self, call_id: int, thread: Thread) -> None:
        """The call's parent, posted while its POST is in flight, kept in its row: a call found
        left being dialled (`reconcile_dialling`) is told under it, not under a second parent."""
        if thread.ts is None:
            return  # through response_url: no thread to tell it in
        try:
            await self._store.note_parent(call_id, thread.channel, thread.ts,
                                          thread.parent_ts or thread.ts)
        except Exception:  # the dial goes on; found left dialling, it gets a parent of its own
            logger.warning("call %s: where its parent was posted could not be kept", call_id,
                           exc_info=True, extra={"call_id": call_id})

    async def track(
        self,
        call: CheckedCall,
        result: CallResult,
        thread: Thread | None,
        dialling: TrackedCall,
    ) -> TrackedCall | TakenOver | None:
        """Fill in the `dialling` row (written before the POST) with the POST's answer; the row,
        or None if it needs no status message (nobody to tell), or TAKEN_OVER if another replica
        took the call for one left behind meanwhile (this one stalled past its lease): that one
        tells and follows it, and this one nothing more, as if it had died at the stall.

        A database that fails is waited for: the call may be ringing, and a row left "dialling"
        is followed by nobody (its lease, renewed by this replica, keeps every other from
        reconciling it) until the next start, so its status would never move on and an
        escalation would never see its answer. Never raises: a bug in the bookkeeping must not
        keep the requester from hearing the result (the row then stays "dialling", and the next
        start reconciles it).
        """
        try:
            return await until_database_answers(
                lambda: self._fill_in(call, result, thread, dialling.id),
                f"keeping track of call {dialling.id}", extra={"call_id": dialling.id})
        except Exception:
            logger.exception("could not keep track of a call by %s", call.request.user_id,
                             extra={"user_id": call.request.user_id})
            return None

    async def _fill_in(
        self, call: CheckedCall, result: CallResult, thread: Thread | None, row_id: int
    ) -> TrackedCall | TakenOver | None:
        note = describe(result.error) if result.error is not None else None
        if result.outcome == Outcome.PLACED:
            placement = Placement.PLACED
        elif result.outcome == Outcome.UNKNOWN:
            placement = Placement.UNKNOWN
        else:
            placement = Placement.FAILED
        session_id = result.session_id
        if session_id and await self._store.sessions_taken([session_id]):
            session_id = None  # another call has it: look for ours instead
        if placement == Placement.FAILED:
            state, following = CallState.FAILED, False
        elif session_id is None:
            state, following = CallState.FINDING, True
        else:
            state = CallState.CALLING
            if result.session is not None and result.session.id == session_id:
                state = classify(result.session)
            if state == CallState.ENDED:
                # Over before the bot learned of it (declined while the POST's answer was lost):
                # the first poll ends it as any call, with its outcome and its audit event.
                state = CallState.CALLING
            following = True
        if thread is None:
            # Nobody to tell: no status message, and nothing to reconcile after a restart.
            following = False
            state = CallState.LOST if placement != Placement.FAILED else CallState.FAILED
        values = dict(
            channel_id=thread.channel if thread is not None else call.request.channel_id,
            # The call's own parent message: a reply when the call went into an existing thread.
            parent_ts=(thread.parent_ts or thread.ts) if thread is not None else None,
            placement=str(placement),
            note=note,
            session_id=session_id,
            state=str(state),
            following=following,
        )
        if not await self._store.atomic(lambda conn: self._fill_in_leased(conn, row_id, values)):
            await self._runner.release(row_id)  # the lease is the other replica's: not touched
            logger.warning("call %s was taken over by another replica before its POST's answer "
                           "came; left to it", row_id, extra={"call_id": row_id})
            return TAKEN_OVER
        if thread is None:
            await self._runner.release(row_id)  # reserved while it was being dialled
        # Otherwise held until begin() has told the requester: should this replica die first,
        # the lease lapses and another replica tells them (take_over).
        return await self._store.get(row_id) if thread is not None else None

    async def _fill_in_leased(self, conn: Connection, row_id: int, values: dict[str, Any]) -> bool:
        """Fill the row in under its lease, taken again in the same transaction: another replica
        holding it (this one stalled past it) is reconciling the call, and fills it in."""
        return (await self._runner.reserve(row_id, on=conn)
                and await self._store.fill_in(row_id, on=conn, **values))

    def status_message(self, call: TrackedCall, *, buttons: bool = True) -> Message:
        return self._messages.draw(call, buttons=buttons)

    async def refresh(self, call_id: int) -> bool:
        """Make the status message and the parent's mark match the row; False if Slack refused."""
        return await self._messages.refresh(call_id)

    async def begin(self, call: TrackedCall, status_ts: str | None,
                    thread: Thread | None = None, *, delivered: bool = True) -> None:
        """The status message is posted (`status_ts`; None where there is no thread, and the
        `thread`'s relay keeps the requester told instead; `delivered` False if that relay
        reached nobody): follow it."""
        if thread is not None:
            self._messages.keep(call.id, thread)
        keep_status_ts = partial(self._messages.keep_shown, call, status_ts, delivered=delivered)
        try:
            if call.following:
                async def keep_then_follow() -> None:
                    await keep_status_ts()
                    await self._poller.follow(call.id, True)

                try:
                    await keep_status_ts()
                    await self._runner.start(call.id, lambda: self._poller.follow(call.id, True))
                except DATABASE_FAULTS:
                    # Kept by the follow task once the database answers: a message left at
                    # "Ringing" for good is not the price of a database failing now.
                    await self._runner.start(call.id, keep_then_follow)
            else:
                await keep_status_ts()
                # Marks the parent of a call not placed; refused by Slack, tried again meanwhile,
                # as a followed call's final edit is (never a parent left without its outcome).
                if await self.refresh(call.id):
                    await self._runner.release(call.id)  # held since it was dialled: all told
                else:
                    await self._runner.start(call.id, lambda: self._messages.refresh_until_shown(
                        call.id, refused=True))
        except Exception:
            logger.exception("could not start following call %s", call.id,
                             extra={"call_id": call.id})

    # ----------------------------------------------------------------------------- lifecycle

    async def resume(self) -> int:
        """Follow again every call that was being followed when the bot last stopped, and the
        calls it stopped in the middle of dialling (`reconcile_dialling`)."""
        await self.erase_numbers()  # unless start-up just did
        await self.reconcile_dialling()
        count = len(await self._runner.adopt(await self._followed(), self._work))
        if count:
            logger.info("following %d call(s) again after a restart", count)
        # Over, but its end never shown (Slack refused it until the bot stopped): shown now.
        unshown = [call.id for call in await self._store.over_since(
            self._clock() - UNSHOWN_ENDS_WITHIN_SECONDS) if self._messages.unshown(call)]
        shown = await self._runner.adopt(unshown, self._show)
        if shown:
            logger.info("showing the end of %d call(s) Slack refused before a restart", len(shown))
        return count

    async def take_over(self) -> None:
        """A lease keeper's round: follow the calls whose replica stopped or died (those it was
        dialling too), and show the ends such a replica was still trying to show."""
        await self.reconcile_dialling()
        await self._runner.take_over(self._followed, self._work)
        # Over, their lease lapsed: their replica died (or stopped) while Slack refused the final
        # edit, or before it was made. Left alone, the status would say "Ringing…" until some
        # replica starts again. One whose end is shown costs a read (`refresh` edits nothing) and
        # gives its lease back.
        lapsed = await self._store.over_with_lapsed_lease(
            LEASE_KIND, self._clock(), self._clock() - UNSHOWN_ENDS_WITHIN_SECONDS)
        shown = await self._runner.adopt([call.id for call in lapsed], self._show)
        if shown:
            logger.info("showing the end of %d call(s) another replica left", len(shown))

    async def _followed(self) -> list[int]:
        return [call.id for call in await self._store.being_followed()]

    def _work(self, call_id: int) -> Work:
        async def work() -> None:
            await self._announcer.tell_if_untold(call_id)
            await self._poller.follow(call_id)

        return work

    def _show(self, call_id: int) -> Work:
        async def show() -> None:
            await self._announcer.tell_if_untold(call_id)
            await self._messages.refresh_until_shown(call_id)

        return show

    async def reconcile_dialling(self) -> int:
        """Calls the bot stopped in the middle of dialling: their POST may have reached Evo Voice,
        and nobody was told. Each becomes an unconfirmed call: looked for in Evo Voice (by number,
        since the attempt), followed if found, reported "not found" if not; its requester gets a
        status message saying so, edited like any other."""
        # Only rows no live replica holds (a dialling row is written with its lease): the lease
        # is taken first, so that of several replicas one reconciles it, and the row read again
        # under it, as its replica may have finished with it since.
        reconciled = 0
        for call_id in await self._runner.unowned([c.id for c in await self._store.dialling()]):
            if not await self._runner.reserve(call_id):
                continue  # another replica is reconciling it
            try:
                call = await self._store.get(call_id)
                if call is None or call.placement != Placement.DIALLING:
                    continue
                logger.warning("call %s was being dialled when callbot stopped: looking for it",
                               call_id, extra={"call_id": call_id})
                if not await self._store.fill_in(
                    call_id, placement=str(Placement.UNKNOWN), state=str(CallState.FINDING),
                    following=True, note=RESTARTED_WHILE_DIALLING,
                ):
                    continue  # its POST's answer came first: its own replica tells it
                reconciled += 1
                call = await self._store.get(call_id)
                if call is not None and await self._announcer.origin(call) == ESCALATION_ORIGIN:
                    await self.begin(call, None)  # a step's card tells it: it posts nothing
                elif call is not None:
                    await self._announce(call)
            finally:
                if call_id not in self._runner:
                    # Not followed here (no thread, or a failure): the next round adopts it.
                    await self._runner.release(call_id)
        return reconciled

    async def _announce(self, call: TrackedCall) -> None:
        """A status message for a call whose requester was never told of it."""
        thread, posted = await self._announcer.announce(call)
        await self.begin(call, posted.ts, thread, delivered=posted.delivered)

    async def let_go(self, call_id: int) -> None:
        """A call whose placing was cut short here before it was followed (cancelled: its chain
        was let go): left to any replica's next round, which reconciles or follows it."""
        await self._runner.let_go(call_id)

    async def stop(self) -> None:
        """Stop following and let go of the calls: another replica, or the next start, goes on."""
        await self._runner.stop()

    def tasks(self) -> list[asyncio.Task[None]]:
        return self._runner.tasks()

    def poke(self, call_id: int) -> None:
        """Poll this call now rather than at its next turn (after a hang-up, say)."""
        self._runner.poke(call_id)

    async def _failed(self, call_id: int, exc: Exception) -> None:
        # A bug, not a call problem: the row stays followed, so the next start tries again.
        logger.error("following call %s failed", call_id, exc_info=exc,
                     extra={"call_id": call_id})

    async def erase_numbers(self, *, force: bool = False) -> None:
        """Erase the full numbers of calls over for longer than the retention: at start, then at
        most hourly, run by the lease keeper's rounds (bot/runtime.py), so a quiet spell keeps
        none past it (bot/calls/retention.py)."""
        await self._retention.erase_due(force=force)
