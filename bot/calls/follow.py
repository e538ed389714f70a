"""Following a call after it was placed: poll Evo Voice, edit one status message, mark the parent.

Evo Voice has no webhook for call progress, so every followed call is a task that polls
`GET /sessions/{id}`: at once, then after `first_interval`, then less and less often up to
`max_interval`, starting again from `first_interval` whenever something changed. Hundreds of calls
are followed at once without blocking anything: each task spends its time waiting.

A call whose creation was unconfirmed ("outcome unknown"), or accepted without a session id, has no
session yet: its task looks for it (`GET /sessions?to=…`, created since the attempt, not already
tied to another call) until `find_for` has passed, then reports it as not found. No call is followed
for longer than `follow_for`.

The calls being followed are rows in the database (`CallStore`), so `resume()` picks them up again
after a restart. Every edit of a status message goes through `refresh()`, which draws the message
from the row and edits it only when the drawing changed (one call at a time): Ringing → Connected →
Ended is three versions of one message, however often the call was polled, and however often the bot
restarted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from enum import Enum

from bot.audit.trail import AuditLog, EventKind
from bot.calls import messages as call_messages
from bot.calls import status_views as call_views
from bot.calls.models import AMBIGUOUS_LOOKUP_SLACK, CallResult, CheckedCall, Outcome
from bot.calls.store import CallState, CallStore, Placement, TrackedCall
from bot.errors import describe
from bot.evovoice.client import EvoVoiceClient, EvoVoiceError, NotFound, RateLimited, Session
from bot.evovoice.dates import parse_timestamp
from bot.runner import RowRunner, Work
from bot.slack.blocks import Message
from bot.slack.notify import Notifier, Relay, Thread
from bot.storage.leases import Leases
from bot.storage.faults import DATABASE_FAULTS

logger = logging.getLogger(__name__)

MAX_OUTCOME_CHARS = 200
# The final edit of a status message is tried again, each pause twice the last (from the first poll
# interval, at most FINAL_EDIT_MAX_PAUSE), for this long: a Slack storm of a minute must not leave
# a call at "Ringing" for good.
FINAL_EDIT_FOR_SECONDS = 600.0
FINAL_EDIT_MAX_PAUSE = 60.0
NUMBER_PURGE_EVERY_SECONDS = 3600.0
LEASE_KIND = "call"  # a followed call's lease (bot/storage/leases.py)
RESTARTED_WHILE_DIALLING = (
    "⚠️ callbot restarted while placing this call, so it may or may not have been placed."
)


class _Step(Enum):
    SAME = "same"  # nothing changed
    CHANGED = "changed"
    DONE = "done"  # the call is no longer followed


@dataclass(frozen=True)
class FollowTiming:
    first_interval: float = 2.0  # seconds between the first polls
    max_interval: float = 15.0  # the back-off stops growing here
    growth: float = 1.5
    find_for: float = 120.0  # how long to look for the session of an unconfirmed call
    follow_for: float = 4 * 3600.0  # no call is followed for longer
    number_retention: float = 24 * 3600.0  # the full number is erased this long after the call


_LIVE = frozenset({CallState.RINGING, CallState.CONNECTED})


def classify(session: Session, previous: str | None = None) -> CallState:
    """The bot's reading of a session (docs/evovoice-api.md; README, "What the bot relies on").

    `ended` and `callState` decide; `dateCompleted` only confirms an end `callState` already says:

        ended true                                        ENDED, whatever else the session says
        callState Connected or Hold                       CONNECTED (the only sign of an answer)
        callState Ringing                                 RINGING
        callState Disconnected, and the call was seen ringing or connected before, or
            dateCompleted is a real time                  ENDED
        anything else (no callState, Passive, Disconnected before anything happened)   CALLING

    `dateCompleted` alone never ends a call (it may be a placeholder); `answeredByName` never
    answers one (it may be filled while the phone still rings): see `answered_by`.
    """
    if session.ended:
        return CallState.ENDED
    state = (session.call_state or "").casefold()
    if state in ("connected", "hold"):
        return CallState.CONNECTED
    if state == "ringing":
        return CallState.RINGING
    if state == "disconnected" and (
        previous in _LIVE or parse_timestamp(session.date_completed) is not None
    ):
        return CallState.ENDED
    return CallState.CALLING


def answered_by_name(session: Session, answered: bool) -> str | None:
    """`answeredByName`, once the call is known to be answered; a hint, never the evidence."""
    return _clip(session.answered_by_name) if answered else None


def duration_of(session: Session) -> float | None:
    """From creation to completion, by Evo Voice's own clock (ringing included)."""
    created = parse_timestamp(session.date_created)
    completed = parse_timestamp(session.date_completed)
    if created is None or completed is None or completed < created:
        return None
    return (completed - created).total_seconds()


def _clip(text: str | None) -> str | None:
    if not text:
        return None
    text = text.strip()
    return text if len(text) <= MAX_OUTCOME_CHARS else text[: MAX_OUTCOME_CHARS - 1] + "…"


async def wait_or_wake(wake: asyncio.Event, seconds: float) -> None:
    """Wait `seconds`, or less if `wake` is set (a poke)."""
    try:
        await asyncio.wait_for(wake.wait(), seconds)
    except TimeoutError:
        pass


def digest(message: Message) -> str:
    raw = json.dumps({"text": message.text, "blocks": message.blocks}, sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()


class CallFollower:
    def __init__(
        self,
        *,
        evo: EvoVoiceClient,
        notifier: Notifier,
        store: CallStore,
        audit: AuditLog | None,
        account_ids: list[str],
        timing: FollowTiming = FollowTiming(),
        clock: Callable[[], float] = time.time,
        pause: Callable[[asyncio.Event, float], Awaitable[None]] = wait_or_wake,
        leases: Leases | None = None,
    ) -> None:
        self._evo = evo
        self._notifier = notifier
        self._store = store
        self._audit = audit
        self._account_ids = account_ids
        self._timing = timing
        self._clock = clock
        self._wait = pause
        self._runner = RowRunner(LEASE_KIND, leases, on_error=self._failed)
        self._locks: dict[int, asyncio.Lock] = {}
        # Kept in memory only: the parent as posted (with its reason), and the response_url relay of
        # a call without a thread. After a restart (or a takeover by another replica) the parent
        # is drawn again from the row.
        self._parents: dict[int, Message] = {}
        self._relays: dict[int, Relay] = {}
        self._last_purge = 0.0

    @property
    def store(self) -> CallStore:
        return self._store

    @property
    def following(self) -> int:
        """How many calls this process is following now."""
        return self._runner.running

    # ------------------------------------------------------------------ called by CallService

    async def note_dialling(
        self, call: CheckedCall, attempt_id: int | None, started: float
    ) -> TrackedCall:
        """The row of a call about to be dialled: should the bot stop before the POST's answer is
        recorded, the next start finds it (`reconcile_dialling`) instead of forgetting a call
        that may ring. Raises when the database fails: then nothing must be dialled."""
        request = call.request
        row = await self._store.insert(
            attempt_id=attempt_id,
            created_at=started,
            team_id=request.team_id,
            requester_id=request.user_id,
            channel_id=request.channel_id,
            parent_ts=request.thread_ts,
            e164=call.number.e164,
            number_masked=call.number.masked,
            flow_id=call.flow_id,
            flow_name=call.flow_name,
            caller_id=call.caller_id,
            placement=str(Placement.DIALLING),
            state=str(CallState.FINDING),
            following=False,
        )
        # Held while it is dialled, so no other replica takes it for a call left behind.
        await self._runner.reserve(row.id)
        return row

    async def track(
        self,
        call: CheckedCall,
        result: CallResult,
        thread: Thread | None,
        dialling: TrackedCall,
    ) -> TrackedCall | None:
        """Fill in the `dialling` row (written before the POST) with the POST's answer; the row,
        or None if it needs no status message (nobody to tell).

        Never raises: a bookkeeping failure must not keep the requester from hearing the result
        (the row then stays "dialling", and the next start reconciles it).
        """
        try:
            return await self._track(call, result, thread, dialling)
        except Exception:
            logger.exception("could not keep track of a call by %s", call.request.user_id)
            return None

    async def _track(
        self,
        call: CheckedCall,
        result: CallResult,
        thread: Thread | None,
        dialling: TrackedCall,
    ) -> TrackedCall | None:
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
            following = state != CallState.ENDED
        if thread is None:
            # Nobody to tell: no status message, and nothing to reconcile after a restart.
            following = False
            state = CallState.LOST if placement != Placement.FAILED else CallState.FAILED
        await self._store.update(
            dialling.id,
            channel_id=thread.channel if thread is not None else call.request.channel_id,
            # The call's own parent message: a reply when the call went into an existing thread.
            parent_ts=(thread.parent_ts or thread.ts) if thread is not None else None,
            placement=str(placement),
            note=note,
            session_id=session_id,
            state=str(state),
            following=following,
        )
        if not following:
            await self._runner.release(dialling.id)  # reserved while it was being dialled
        return await self._store.get(dialling.id) if thread is not None else None

    def status_message(self, call: TrackedCall, *, buttons: bool = True) -> Message:
        return call_views.call_status(call, buttons=buttons)

    async def begin(
        self, call: TrackedCall, status_ts: str | None, thread: Thread | None = None
    ) -> None:
        """The status message is posted (`status_ts`; None where there is no thread, and the
        `thread`'s relay keeps the requester told instead): follow it."""
        if thread is not None:
            self._parents[call.id] = thread.parent
            if thread.relay is not None:
                self._relays[call.id] = thread.relay
        relayed = status_ts is None and call.id in self._relays

        async def keep_status_ts() -> None:
            shown = None
            if status_ts or relayed:
                shown = digest(self.status_message(call, buttons=not relayed))
            await self._store.update(call.id, status_ts=status_ts, shown_digest=shown)

        try:
            if call.following:
                async def keep_then_follow() -> None:
                    await keep_status_ts()
                    await self._follow(call.id, True)

                try:
                    await keep_status_ts()
                    await self._runner.start(call.id, lambda: self._follow(call.id, True))
                except DATABASE_FAULTS:
                    # Kept by the follow task once the database answers: a message left at
                    # "Ringing" for good is not the price of a database failing now.
                    await self._runner.start(call.id, keep_then_follow)
            else:
                await keep_status_ts()
                await self.refresh(call.id)  # marks the parent of a failed call
            await self._purge_numbers()
        except Exception:
            logger.exception("could not start following call %s", call.id)

    # ----------------------------------------------------------------------------- lifecycle

    async def resume(self) -> int:
        """Follow again every call that was being followed when the bot last stopped, and the
        calls it stopped in the middle of dialling (`reconcile_dialling`)."""
        await self._purge_numbers(force=True)
        await self.reconcile_dialling()
        count = len(await self._runner.adopt(await self._followed(), self._work))
        if count:
            logger.info("following %d call(s) again after a restart", count)
        return count

    async def take_over(self) -> None:
        """A lease keeper's round: follow the calls whose replica stopped or died (those it was
        dialling too)."""
        await self.reconcile_dialling()
        await self._runner.take_over(self._followed, self._work)

    async def _followed(self) -> list[int]:
        return [call.id for call in await self._store.being_followed()]

    def _work(self, call_id: int) -> Work:
        return lambda: self._follow(call_id)

    async def reconcile_dialling(self) -> int:
        """Calls the bot stopped in the middle of dialling: their POST may have reached Evo Voice,
        and nobody was told. Each becomes an unconfirmed call: looked for in Evo Voice (by number,
        since the attempt), followed if found, reported "not found" if not; its requester gets a
        status message saying so, edited like any other."""
        # Only rows no live replica holds: another one may be dialling this very moment.
        orphans = set(await self._runner.unowned([c.id for c in await self._store.dialling()]))
        calls = [c for c in await self._store.dialling() if c.id in orphans]
        for call in calls:
            logger.warning("call %s was being dialled when callbot stopped: looking for it",
                           call.id)
            await self._store.update(
                call.id, placement=str(Placement.UNKNOWN), state=str(CallState.FINDING),
                following=True, note=RESTARTED_WHILE_DIALLING,
            )
            reconciled = await self._store.get(call.id)
            if reconciled is not None:
                await self._announce(reconciled)
        return len(calls)

    async def _announce(self, call: TrackedCall) -> None:
        """A status message for a call whose requester was never told of it."""
        parent = call_messages.call_parent(call.requester_id, call.number_masked, call.flow_name)
        thread = await self._notifier.open_thread(
            call.channel_id, parent, user_id=call.requester_id, response_url=None,
            thread_ts=call.parent_ts,
        )
        if thread is None:
            return  # followed all the same: the audit trail gets its outcome
        posted = await self._notifier.post_reply(thread, self.status_message(call))
        await self._store.update(call.id, parent_ts=thread.parent_ts or thread.ts)
        await self.begin(call, posted.ts, thread)

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
        logger.error("following call %s failed", call_id, exc_info=exc)

    async def _purge_numbers(self, *, force: bool = False) -> None:
        now = self._clock()
        if not force and now - self._last_purge < NUMBER_PURGE_EVERY_SECONDS:
            return
        self._last_purge = now
        erased = await self._store.forget_numbers(now - self._timing.number_retention)
        if erased:
            logger.info("erased the numbers of %d finished call(s)", erased)

    # ----------------------------------------------------------------------------- following

    async def _follow(self, call_id: int, first_poll_later: bool = False) -> None:
        timing = self._timing
        interval = timing.first_interval
        if not first_poll_later:
            # An edit lost to a restart is made now. (A call begun just now was drawn as it is:
            # reading its row back would cost every call of a burst a trip to the database.)
            await self.refresh(call_id)
        else:
            # A call placed a moment ago is ringing at best. Polling it at once would only compete,
            # during a burst of pages, with the calls still waiting to be dialled.
            await self._pause(call_id, interval)
            interval = min(timing.max_interval, interval * timing.growth)
        while True:
            call = await self._store.get(call_id)
            if call is None or not call.following:
                return
            age = self._clock() - call.created_at
            if age > timing.follow_for:
                await self._stop_following(call, CallState.LOST, EventKind.UNFOLLOWED, "time limit")
                return
            pause = interval
            try:
                if call.session_id is None:
                    step = await self._look_for_session(call, age)
                else:
                    step = await self._check_session(call, age)
            except RateLimited as exc:
                step = _Step.SAME
                pause = max(interval, exc.retry_after or 0.0)
            except EvoVoiceError as exc:
                logger.warning("following call %s: %s", call_id, type(exc).__name__,
                               extra={"call_id": call_id})
                step = _Step.SAME
            if step == _Step.DONE:
                return
            if step == _Step.CHANGED:
                interval = pause = timing.first_interval
            await self._pause(call_id, pause)
            interval = min(timing.max_interval, interval * timing.growth)

    async def _pause(self, call_id: int, seconds: float) -> None:
        wake = self._runner.wake(call_id)
        await self._wait(wake, seconds)
        wake.clear()

    async def _look_for_session(self, call: TrackedCall, age: float) -> _Step:
        if call.e164 is None:
            await self._stop_following(call, CallState.LOST, EventKind.UNFOLLOWED, "no number")
            return _Step.DONE
        since = dt.datetime.fromtimestamp(call.created_at, dt.UTC) - AMBIGUOUS_LOOKUP_SLACK
        try:
            sessions = await self._evo.find_sessions(self._account_ids, to=call.e164, since=since)
        except EvoVoiceError as exc:
            # A lookup that keeps failing (400, 403, 5xx) ends like one that finds nothing.
            if age > self._timing.find_for:
                logger.warning("call %s: lookup still failing (%s)", call.id, type(exc).__name__)
                await self._stop_following(call, CallState.NOT_FOUND, EventKind.NOT_FOUND, None)
                return _Step.DONE
            raise
        # Closest in time to the attempt first: of two calls to one number a few seconds apart,
        # each gets its own session, and an older call to the number loses to a newer one.
        started = dt.datetime.fromtimestamp(call.created_at, dt.UTC)
        fresh = sorted(
            sessions,
            key=lambda s: abs(
                ((parse_timestamp(s.date_created) or since) - started).total_seconds()
            ),
        )
        taken = await self._store.sessions_taken([s.id for s in fresh])
        for session in fresh:
            if session.id in taken or not await self._store.claim_session(call.id, session.id):
                continue
            logger.info("call %s: found its session %s", call.id, session.id,
                        extra={"call_id": call.id, "session_id": session.id})
            await self._record(call, EventKind.SESSION_FOUND, session_id=session.id)
            step = await self._apply(replace(call, session_id=session.id), session)
            return _Step.DONE if step == _Step.DONE else _Step.CHANGED
        if age > self._timing.find_for:
            await self._stop_following(call, CallState.NOT_FOUND, EventKind.NOT_FOUND, None)
            return _Step.DONE
        return _Step.SAME

    async def _check_session(self, call: TrackedCall, age: float) -> _Step:
        assert call.session_id is not None
        try:
            session = await self._evo.get_session(call.session_id)
        except NotFound:
            if age > self._timing.find_for:
                await self._stop_following(
                    call, CallState.LOST, EventKind.UNFOLLOWED, "session not found"
                )
                return _Step.DONE
            return _Step.SAME
        return await self._apply(call, session)

    async def _apply(self, call: TrackedCall, session: Session) -> _Step:
        """Store what the session shows, and show it if anything changed."""
        state = classify(session, call.state)
        answered = call.answered or state == CallState.CONNECTED
        answered_by = call.answered_by or answered_by_name(session, answered)
        newly_answered = answered and not call.answered
        if newly_answered:
            await self._record(call, EventKind.ANSWERED, answered_by=answered_by)
        if state == CallState.ENDED:
            outcome, duration = _clip(session.outcome), duration_of(session)
            # The audit event first: were the bot stopped in between, the event may be written
            # twice on resuming, but never lost.
            await self._record(
                call,
                EventKind.ENDED,
                outcome=outcome,
                answered_by=answered_by,
                duration_seconds=duration,
            )
            await self._store.update(
                call.id,
                state=str(state),
                following=False,
                answered=answered,
                answered_by=answered_by,
                outcome=outcome,
                duration_seconds=duration,
            )
            verdict = "answered" if answered else "not answered"
            logger.info("call %s ended (%s)", call.id, verdict, extra={
                "call_id": call.id, "session_id": call.session_id, "outcome": verdict})
            await self._refresh_until_shown(call.id)
            return _Step.DONE
        # A flow may set its outcome before the call ends (an on-call acknowledgement after
        # "press 1"): kept at once, for whoever waits on it (bot.oncall.escalation).
        outcome = _clip(session.outcome) or call.outcome
        if (state == call.state and not newly_answered and answered_by == call.answered_by
                and outcome == call.outcome):
            return _Step.SAME
        await self._store.update(
            call.id, state=str(state), answered=answered, answered_by=answered_by, outcome=outcome
        )
        logger.info("call %s: %s", call.id, state,
                    extra={"call_id": call.id, "session_id": call.session_id})
        await self.refresh(call.id)
        return _Step.CHANGED

    async def _stop_following(
        self, call: TrackedCall, state: CallState, kind: EventKind, reason: str | None
    ) -> None:
        logger.info("call %s: %s", call.id, state, extra={
            "call_id": call.id, "session_id": call.session_id, "outcome": str(state)})
        await self._record(call, kind, reason=reason)
        await self._store.update(call.id, state=str(state), following=False)
        await self._refresh_until_shown(call.id)

    async def _record(
        self,
        call: TrackedCall,
        kind: EventKind,
        *,
        session_id: str | None = None,
        reason: str | None = None,
        outcome: str | None = None,
        answered_by: str | None = None,
        duration_seconds: float | None = None,
    ) -> None:
        if self._audit is None or call.attempt_id is None:
            return
        try:
            await self._audit.event(
                call.attempt_id,
                kind,
                session_id=session_id or call.session_id,
                reason=reason,
                outcome=outcome,
                answered_by=answered_by,
                duration_seconds=duration_seconds,
            )
        except DATABASE_FAULTS:
            raise  # the follow task tries again once the database answers: the event is not lost
        except Exception:
            logger.exception("recording %s of call %s failed", kind, call.id)

    # ------------------------------------------------------------------------- the message

    async def refresh(self, call_id: int) -> bool:
        """Make the status message and the parent's mark match the row; False if Slack refused."""
        lock = self._locks.setdefault(call_id, asyncio.Lock())
        async with lock:
            call = await self._store.get(call_id)
            if call is None:
                return True
            shown = True
            relay = self._relays.get(call_id)
            if call.status_ts is not None:
                message = self.status_message(call)
                drawn = digest(message)
                if drawn != call.shown_digest:
                    if await self._notifier.update(call.channel_id, call.status_ts, message):
                        await self._store.update(call.id, shown_digest=drawn)
                    else:
                        shown = False
            elif relay is not None:
                message = self.status_message(call, buttons=False)
                drawn = digest(message)
                if drawn != call.shown_digest:
                    if await self._notifier.relay_status(relay, message, final=call.is_final):
                        await self._store.update(call.id, shown_digest=drawn)
                    else:
                        shown = False
            mark = call_views.parent_mark(call)
            if mark and not call.marked and call.parent_ts is not None:
                # The channel sees the outcome on the parent itself, not only as a reaction.
                parent = self._parents.get(call_id) or call_views.parent_of(call)
                edited = await self._notifier.update(
                    call.channel_id, call.parent_ts, call_views.parent_with_outcome(parent, call)
                )
                if edited and await self._notifier.react(call.channel_id, call.parent_ts, mark):
                    await self._store.update(call.id, marked=True)
                else:
                    shown = False
        if call.is_final and not call.following and not lock.locked():
            self._locks.pop(call_id, None)
            if shown:
                self._parents.pop(call_id, None)
                self._relays.pop(call_id, None)
        return shown

    async def _refresh_until_shown(self, call_id: int) -> None:
        pause, waited = self._timing.first_interval, 0.0
        while not await self.refresh(call_id):
            if waited >= FINAL_EDIT_FOR_SECONDS:
                logger.warning("call %s: the final status could not be shown", call_id)
                return
            await self._wait(asyncio.Event(), pause)
            waited += pause
            pause = min(pause * 2, FINAL_EDIT_MAX_PAUSE)
