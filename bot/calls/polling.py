"""Following one placed call: poll Evo Voice, store what changed, show it.

Evo Voice has no webhook for call progress, so every followed call is a task that polls its
session: at once, then after `first_interval`, then less and less often up to `max_interval`,
starting again from `first_interval` whenever something changed; a call not yet answered is
polled every `first_interval` for its first `ring_for` seconds. Hundreds of calls are followed at
once without blocking anything: each task spends its time waiting. Their polls share requests
(`EvoVoiceClient.poll_session`: a batch of sessions a request) and the client's request budget,
which also holds them all back when Evo Voice answers 429 (bot/evovoice/budget.py).

A call whose creation was unconfirmed ("outcome unknown"), or accepted without a session id, has no
session yet: its task looks for it (`GET /sessions?to=…`, created since the attempt, not already
tied to another call: bot/calls/session_lookup.py) until `find_for` has passed (and, while the
look fails, for `find_for` after its first failure in this run), then reports it as not found; an
escalation step looks once itself at its deadline (`find_session`). A known session whose reads
keep failing (a login refused after a password change, a 403, 5xx, answers that can't be read) for
`find_for` is shown so, with why, and still polled: the next read that works shows the call as it
goes. No call is followed for longer than `follow_for`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from enum import Enum

from bot.audit.trail import AuditLog, EventKind
from bot.calls.progress import answered_by_name, classify, clip, duration_of, shows_answer
from bot.calls.session_lookup import claim_closest, sessions_to
from bot.calls.status_message import StatusMessages
from bot.calls.status_views import AckTest, no_ack_outcomes
from bot.calls.store import CallState, CallStore, TrackedCall
from bot.errors import INCOMPLETE_LOOKUP, describe_reading, log_unexpected
from bot.evovoice.client import (EvoVoiceClient, EvoVoiceError, NotFound, Priority, RateLimited,
                                 Session)
from bot.storage.faults import DATABASE_FAULTS

logger = logging.getLogger("bot.calls.follow")


class _Step(Enum):
    SAME = "same"  # nothing changed
    CHANGED = "changed"
    DONE = "done"  # the call is no longer followed


@dataclass(frozen=True)
class FollowTiming:
    first_interval: float = 2.0  # seconds between the first polls
    max_interval: float = 15.0  # the back-off stops growing here
    growth: float = 1.5
    # Not yet answered, a call is polled every `first_interval` for this long: answered and over
    # between two polls further apart (a picked-up page that plays its message), it would read
    # "not answered". Phones stop ringing well within it.
    ring_for: float = 180.0
    find_for: float = 120.0  # how long to look for the session of an unconfirmed call
    follow_for: float = 4 * 3600.0  # no call is followed for longer
    number_retention: float = 24 * 3600.0  # the full number is erased this long after the call


class CallPoller:
    """The follow task of one call at a time (`follow`); `CallFollower` decides which calls."""

    def __init__(
        self,
        *,
        evo: EvoVoiceClient,
        store: CallStore,
        audit: AuditLog | None,
        account_ids: list[str],
        timing: FollowTiming,
        clock: Callable[[], float],
        pause: Callable[[asyncio.Event, float], Awaitable[None]],
        messages: StatusMessages,
        wake: Callable[[int], asyncio.Event],
        acknowledges: AckTest = no_ack_outcomes,
    ) -> None:
        # `acknowledges`: an outcome it accepts, once read, is the call's (`_outcome`).
        self._acknowledges = acknowledges
        self._evo = evo
        self._store = store
        self._audit = audit
        self._account_ids = account_ids
        self._timing = timing
        self._clock = clock
        self._wait = pause
        self._messages = messages
        self._wake = wake
        # Since when each call's session has been answered 404; forgotten once it is read.
        self._unknown_since: dict[int, float] = {}
        # Since when each call's session has failed to be read otherwise (or, not known yet, to
        # be looked for); forgotten once it is.
        self._failing_since: dict[int, float] = {}
        # The words (with its log line's reference) of a bug met following each call, and since
        # when; forgotten once a poll meets none.
        self._bugs: dict[int, tuple[str, float]] = {}
        # Each call whose end was read without an acknowledging outcome, with that read: read
        # once more before the end is told (`_apply`); forgotten once it is.
        self._ending: dict[int, Session] = {}

    async def follow(self, call_id: int, first_poll_later: bool = False) -> None:
        timing = self._timing
        interval = timing.first_interval
        if not first_poll_later:
            # An edit lost to a restart is made now. (A call begun just now was drawn as it is:
            # reading its row back would cost every call of a burst a trip to the database.)
            await self._messages.refresh(call_id)
        else:
            # A call placed a moment ago is ringing at best. Polling it at once would only compete,
            # during a burst of pages, with the calls still waiting to be dialled.
            await self._pause(call_id, interval)
            interval = min(timing.max_interval, interval * timing.growth)
        while True:
            call = await self._store.get(call_id)
            if call is None or not call.following:
                self._forget(call_id)
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
                    step = await self._check_session(call)
            except EvoVoiceError as exc:
                # A 429 included: the client's budget holds every request back together for as
                # long as Evo Voice asked, so the next poll simply waits its turn there.
                logger.warning("following call %s: %s", call_id, type(exc).__name__,
                               extra={"call_id": call_id})
                step = _Step.SAME
            except DATABASE_FAULTS:
                raise  # waited out by the runner (bot/runner.py)
            except Exception as exc:
                # A bug (an answer of a shape nobody foresaw, say): ending the following here
                # would leave the status as last read (Ringing) until a restart. Shown as a read
                # that fails, with the log line's reference; the call is still followed.
                await self._bug(call, exc)
                step = _Step.SAME
            else:
                self._bugs.pop(call_id, None)
            if step == _Step.DONE:
                return
            if step == _Step.SAME and self._messages.untold(call):
                await self._messages.refresh(call_id)  # nobody told yet: each poll tries again
            if step == _Step.CHANGED or _may_be_answered_unseen(call, age, timing):
                interval = pause = timing.first_interval
            await self._pause(call_id, pause)
            interval = min(timing.max_interval, interval * timing.growth)

    async def _pause(self, call_id: int, seconds: float) -> None:
        wake = self._wake(call_id)
        await self._wait(wake, seconds)
        wake.clear()

    async def _look_for_session(self, call: TrackedCall, age: float) -> _Step:
        if call.e164 is None:
            await self._stop_following(call, CallState.LOST, EventKind.UNFOLLOWED, "no number")
            return _Step.DONE
        asked_at = self._clock()
        try:
            sessions = await sessions_to(self._evo, self._account_ids, call, Priority.ROUTINE)
        except EvoVoiceError as exc:
            # A lookup that keeps failing (400, 403, 5xx) ends like one that finds nothing, once
            # it has failed for `find_for` here too (since the first failing look was sent): the
            # first look after a restart long after the attempt is no reason to give up.
            failing_for = self._clock() - self._failing_since.setdefault(call.id, asked_at)
            if age > self._timing.find_for and failing_for > self._timing.find_for:
                logger.warning("call %s: lookup still failing (%s)", call.id, type(exc).__name__,
                               extra={"call_id": call.id})
                # Never looked at, the call may have rung: its status says why, not "no call to
                # this number showed up" (read as "not placed", above a Call again button).
                await self._store.update(call.id, unreadable=describe_reading(exc))
                await self._stop_following(call, CallState.NOT_FOUND, EventKind.NOT_FOUND,
                                           "lookup failing")
                return _Step.DONE
            raise
        self._failing_since.pop(call.id, None)
        session = await claim_closest(self._evo, self._store, call, sessions)
        if session is not None:
            await self._found(call, session)
            step = await self._apply(replace(call, session_id=session.id), session)
            return _Step.DONE if step == _Step.DONE else _Step.CHANGED
        if sessions and (await self._store.get(call.id) or call).session_id is not None:
            return _Step.CHANGED  # claimed meanwhile by its escalation step (`find_session`)
        if age > self._timing.find_for:
            if not sessions.complete:
                # Not every session to the number was read: the call may be among those left, so
                # its status says so, not "no call to this number showed up" (as above).
                await self._store.update(call.id, unreadable=INCOMPLETE_LOOKUP)
            await self._stop_following(call, CallState.NOT_FOUND, EventKind.NOT_FOUND,
                                       None if sessions.complete else "lookup incomplete")
            return _Step.DONE
        return _Step.SAME

    async def find_session(self, call: TrackedCall) -> TrackedCall:
        """One look now for the session of `call`, unfound and not given up on: an escalation
        step's at its deadline, which must hang the call up before the next person is dialled,
        while the follower's own look may not have found it yet (or not be over). The call's row
        then: with the session this look claimed, or the one the follower claimed meanwhile.
        Raises EvoVoiceError if the look fails."""
        if call.session_id is not None or call.is_final or call.e164 is None:
            return call
        sessions = await sessions_to(self._evo, self._account_ids, call, Priority.FIRST)
        session = await claim_closest(self._evo, self._store, call, sessions)
        if session is not None:
            await self._found(call, session)
        return await self._store.get(call.id) or call

    async def _found(self, call: TrackedCall, session: Session) -> None:
        logger.info("call %s: found its session %s", call.id, session.id,
                    extra={"call_id": call.id, "session_id": session.id})
        await self._record(call, EventKind.SESSION_FOUND, session_id=session.id)

    async def _check_session(self, call: TrackedCall) -> _Step:
        assert call.session_id is not None
        try:
            session = await self._evo.poll_session(call.session_id, self._account_ids)
        except RateLimited:
            raise  # Evo Voice asked every request to wait (the budget does): no fault of this call
        except EvoVoiceError as exc:
            if call.id in self._ending:
                # The read that would bring an outcome written after the end failed: that says
                # nothing of it. Read again until reads have failed for `find_for`, or Evo Voice
                # no longer knows the session; then the end, as read before.
                since = self._failing_since.setdefault(call.id, now := self._clock())
                if isinstance(exc, NotFound) or now - since > self._timing.find_for:
                    return await self._apply(call, self._ending[call.id])
                raise
            if not isinstance(exc, NotFound):
                await self._cannot_read(call, exc)
                raise
            # Given up once it has been unknown for `find_for`: a new session may not be found at
            # once, and one 404 later on (a proxy's, say) must not end a call still going on.
            now = self._clock()
            if now - self._unknown_since.setdefault(call.id, now) > self._timing.find_for:
                await self._stop_following(
                    call, CallState.LOST, EventKind.UNFOLLOWED, "session not found"
                )
                return _Step.DONE
            return _Step.SAME
        self._unknown_since.pop(call.id, None)
        self._failing_since.pop(call.id, None)
        return await self._apply(call, session)

    async def _bug(self, call: TrackedCall, exc: Exception) -> None:
        """Logged once per call, with its traceback and a reference; shown as a read failing
        (`_show_unreadable`) once polls have met it for `find_for`."""
        now = self._clock()
        if call.id not in self._bugs:
            words = log_unexpected(exc, f"following call {call.id} failed; still following it",
                                   extra={"call_id": call.id, "session_id": call.session_id})
            self._bugs[call.id] = (words, now)
        words, since = self._bugs[call.id]
        if now - since > self._timing.find_for:
            await self._show_unreadable(call, words, "a bug")

    async def _cannot_read(self, call: TrackedCall, exc: EvoVoiceError) -> None:
        """Reads failing for `find_for` are shown, with why: else the status message would show
        the call as last read (ringing, say) until `follow_for`, hours on."""
        now = self._clock()
        if now - self._failing_since.setdefault(call.id, now) <= self._timing.find_for:
            return
        await self._show_unreadable(call, describe_reading(exc), type(exc).__name__)

    async def _show_unreadable(self, call: TrackedCall, why: str, cause: str) -> None:
        if call.unreadable == why:
            return
        logger.warning("call %s: its session can't be read (%s)", call.id, cause,
                       extra={"call_id": call.id, "session_id": call.session_id})
        await self._store.update(call.id, unreadable=why)
        await self._messages.refresh(call.id)

    async def _apply(self, call: TrackedCall, session: Session) -> _Step:
        """Store what the session shows, and show it if anything changed."""
        # After a hang-up by PatchSession, its own `callState` may be all that changed.
        patched = call.hung_up_by is not None and self._evo.hang_up_method == "PATCH"
        state = classify(session, call.state, patched=patched)
        # The row shows it connected when the call was found so (`CallFollower.track`): that
        # was an answer, even if the call is over by this poll.
        answered = (call.answered or CallState.CONNECTED in (state, call.state)
                    or shows_answer(session))
        answered_by = call.answered_by or answered_by_name(session, answered)
        newly_answered = answered and not call.answered
        if newly_answered:
            await self._record(call, EventKind.ANSWERED, answered_by=answered_by)
        if state != CallState.ENDED:
            self._ending.pop(call.id, None)
        if state == CallState.ENDED:
            # Whether Evo Voice keeps `outcome` once the call ends is unknown: an ended session
            # without one keeps the one read while the call was on (a "press 1"). When a flow
            # writes it is unknown too: maybe a moment after the session reads over, with none yet
            # or (answered: the flow ran) an earlier one. Read once more (`first_interval` on), or
            # a "press 1" would be told as a voicemail, and an escalation ring the next person.
            outcome = self._outcome(call, session)
            late = outcome is None or (answered and not self._acknowledges(outcome))
            if late and call.id not in self._ending:
                self._ending[call.id] = session
                if newly_answered or answered_by != call.answered_by:
                    await self._store.update_followed(call.id, answered=answered,
                                                      answered_by=answered_by)
                return _Step.CHANGED
            self._ending.pop(call.id, None)
            duration = duration_of(session)
            # The audit event first: were the bot stopped in between, the event is tried again
            # on resuming (its key keeps it one), never lost.
            await self._record(
                call,
                EventKind.ENDED,
                outcome=outcome,
                answered_by=answered_by,
                duration_seconds=duration,
            )
            if not await self._store.update_followed(
                call.id, state=str(state), following=False, answered=answered,
                answered_by=answered_by, outcome=outcome, duration_seconds=duration,
                unreadable=None,
            ):
                return _Step.DONE  # ended by another replica while this one stalled: its to show
            verdict = "answered" if answered else "not answered"
            logger.info("call %s ended (%s)", call.id, verdict, extra={
                "call_id": call.id, "session_id": call.session_id, "outcome": verdict})
            await self._messages.refresh_until_shown(call.id)
            return _Step.DONE
        # A flow may set its outcome before the call ends (an on-call acknowledgement after
        # "press 1"): kept at once, for whoever waits on it (bot.oncall.escalation).
        outcome = self._outcome(call, session)
        if (state == call.state and not newly_answered and answered_by == call.answered_by
                and outcome == call.outcome and call.unreadable is None):
            return _Step.SAME
        if not await self._store.update_followed(
            call.id, state=str(state), answered=answered, answered_by=answered_by, outcome=outcome,
            unreadable=None,
        ):
            return _Step.DONE  # over meanwhile (another replica's): this read came too late
        logger.info("call %s: %s", call.id, state,
                    extra={"call_id": call.id, "session_id": call.session_id})
        await self._messages.refresh(call.id)
        return _Step.CHANGED

    def _outcome(self, call: TrackedCall, session: Session) -> str | None:
        """The session's outcome, else the one read before; but an acknowledging one read before
        stays: a person pressed 1, whatever the flow (or Evo Voice) writes there afterwards."""
        if self._acknowledges(call.outcome):
            return call.outcome
        return clip(session.outcome) or call.outcome

    def _forget(self, call_id: int) -> None:
        """What this poller kept of a call it no longer follows."""
        for kept in (self._unknown_since, self._failing_since, self._bugs, self._ending):
            kept.pop(call_id, None)

    async def _stop_following(
        self, call: TrackedCall, state: CallState, kind: EventKind, reason: str | None
    ) -> None:
        self._forget(call.id)
        logger.info("call %s: %s", call.id, state, extra={
            "call_id": call.id, "session_id": call.session_id, "outcome": str(state)})
        # What was seen before (who answered, an acknowledging outcome) outlives the follow.
        await self._record(call, kind, reason=reason, outcome=call.outcome,
                           answered_by=call.answered_by)
        if await self._store.update_followed(call.id, state=str(state), following=False):
            await self._messages.refresh_until_shown(call.id)  # unless another replica's end

    async def _record(
        self, call: TrackedCall, kind: EventKind, *, session_id: str | None = None,
        reason: str | None = None, outcome: str | None = None, answered_by: str | None = None,
        duration_seconds: float | None = None,
    ) -> None:
        if self._audit is None or call.attempt_id is None:
            return
        try:
            await self._audit.event(
                call.attempt_id, kind,
                session_id=session_id or call.session_id,
                reason=reason,
                outcome=outcome,
                answered_by=answered_by,
                duration_seconds=duration_seconds,
                key=f"call:{call.attempt_id}:{kind}",  # once a call, however often it is tried
            )
        except DATABASE_FAULTS:
            raise  # the follow task tries again once the database answers: the event is not lost
        except Exception:
            logger.exception("recording %s of call %s failed", kind, call.id,
                             extra={"call_id": call.id})


def _may_be_answered_unseen(call: TrackedCall, age: float, timing: FollowTiming) -> bool:
    """Could the call be answered and over before a poll after a longer pause sees it?"""
    return (
        call.session_id is not None
        and not call.answered
        and call.state in (CallState.CALLING, CallState.RINGING)
        and age < timing.ring_for
    )
