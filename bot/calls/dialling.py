"""Placing a call that passed its checks: `POST /sessions/outgoing` at once, the confirmation
thread alongside, the result into the thread.

Slack is never on the dialling path: the parent message is posted while the POST is on its way, so a
slow, rate-limited or failing Slack delays no call and stops none. Before the POST the attempt is in
the audit trail and the call has its row (a bot stopped mid-call finds it again); after it, the row
and the trail get the result, and the thread's reply becomes the call's status message, kept current
by the follower. `POST /sessions/outgoing` is sent at most once: an ambiguous failure is reported as
"outcome unknown" after one look for the session it may have created, never retried.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from bot.audit.trail import AuditLog
from bot.calls import messages as views
from bot.calls.dials_first import DialsFirst
from bot.calls.follow import TAKEN_OVER, CallFollower
from bot.calls.models import AMBIGUOUS_LOOKUP_SLACK, CallRequest, CallResult, CheckedCall, Outcome
from bot.calls.retry import TimeLeft, wait_to_retry
from bot.calls.session_lookup import closest_first
from bot.calls.status_posts import status_post
from bot.calls.store import TrackedCall
from bot.errors import CallbotError, CalledOff, Expected, StepTakenOver, describe
from bot.evovoice.client import (
    CallPlaced, EvoVoiceClient, EvoVoiceError, EvoVoiceUnreachable, OutcomeUnknown, RateLimited,
    Session, is_address_of)
from bot.evovoice.transport import REQUEST_SENT
from bot.slack.notify import Notifier
from bot.slack.threads import Thread, untold
from bot.storage.faults import DATABASE_FAULTS, until_database_answers, wrote_nothing
from bot.storage.together import SlotFirst

# When the writes before the POST fail, what gives back what they may have written all the same
# (their answer lost), given the refusal's error and what gives back the rate-limit slot.
GiveBack = Callable[[Expected | None, Callable[[], Awaitable[None]]], Awaitable[None]]

# The name operators filter on for a call's "placed" and "failed" lines, kept from before the split.
logger = logging.getLogger("bot.calls.service")


class Dialler:
    def __init__(
        self,
        *,
        evo: EvoVoiceClient,
        notifier: Notifier,
        audit: AuditLog,
        follower: CallFollower,
        account_ids: list[str],
        on_result: Callable[[CallResult], None],
        dials_first: DialsFirst,
    ) -> None:
        self._evo = evo
        self._dials_first = dials_first
        self._notifier = notifier
        self._audit = audit
        self._follower = follower
        self._account_ids = account_ids
        # Hears every call's outcome (metrics); never sees the number.
        self._on_result = on_result
        # The pause before a "not now" refusal is dialled again (a test holds it on a gate).
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    async def place(
        self,
        call: CheckedCall,
        *,
        retry_for: TimeLeft | None = None,
        on_dialling: Callable[[int], Awaitable[None]] | None = None,
        quiet: bool = False,
        slot: SlotFirst[Any] | None = None,
        before_post: Callable[[], Awaitable[None]] | None = None,
        unanswered: Callable[[GiveBack], None] | None = None,
    ) -> CallResult:
        """Dial at once; the confirmation thread is opened alongside and told the result.

        Slack is never on the dialling path: a slow, rate-limited or failing Slack delays no call
        and stops none. The requester always has a way to hear the outcome: the channel, else the
        request's `response_url`, else a direct message (see Notifier.open_thread).

        `retry_for`: how long a "not now" refusal may be tried again (bot.calls.retry).
        `on_dialling`: hears the call's row id before anything is dialled (an escalation step
        keeps it, so a restart finds the step's call).
        `quiet`: nothing is posted; the call is followed all the same (its row kept current) for
        a caller that tells its own story (an escalation step: its card and the person's page);
        StepTakenOver once it is dialled if another replica took the call (and its chain) over.
        `slot`: a rate-limit slot, taken first in the write of the attempt's record and the call's
        row; what taking it raises comes out of place(), with nothing written or dialled.
        `before_post`: (quiet calls) heard right before each POST leaves, once Evo Voice's request
        budget lets it go (after a 429's pause, or the wait before a try again after a "not now");
        what it raises (CalledOff: the escalation went on without this step) comes out of place(),
        the call not dialled.
        `unanswered`: when the database fails on the writes before the POST (nothing dialled),
        hears how to give back what they may have written all the same (their answer lost); not
        after SQLite's "database is locked", which wrote nothing.
        """
        with self._dials_first.on_its_way():
            return await self._place(call, retry_for, on_dialling, quiet, slot, before_post,
                                     unanswered)

    async def _place(
        self,
        call: CheckedCall,
        retry_for: TimeLeft | None,
        on_dialling: Callable[[int], Awaitable[None]] | None,
        quiet: bool,
        slot: SlotFirst[Any] | None,
        before_post: Callable[[], Awaitable[None]] | None = None,
        unanswered: Callable[[GiveBack], None] | None = None,
    ) -> CallResult:
        # The attempt's audit record, so that even a crash mid-call leaves a trace in the audit
        # trail, and the call's row with its lease, so that a bot stopped before the POST's answer
        # is recorded finds the call again: one write, committed before dialling.
        started = time.time()
        try:
            dialling = await self._follower.note_dialling(
                call, started, attempt=self._audit.allowed_row(call), slot=slot
            )
        except DATABASE_FAULTS as exc:
            if wrote_nothing(exc):  # SQLite's "locked": nothing to give back, nor to wait for
                raise
            give_back = partial(self._give_back, call, started)
            if unanswered is not None:
                unanswered(give_back)
            else:
                # A caller with nothing of its own to give back (an escalation step, tried again
                # once the database answers): the row must not stay "being dialled" for a
                # restart to take for a call that may have rung.
                await give_back(None, _nothing)
            raise
        try:
            return await self._place_noted(call, dialling, retry_for, on_dialling, quiet,
                                           before_post)
        except asyncio.CancelledError:
            # Cut short before the call was followed here (an escalation's chain let go, another
            # replica having taken it over while this one stalled): the row, "being dialled" or
            # filled in, is left to a take-over round, which looks for the call or follows it.
            # Its lease kept, this replica would renew it, and nobody follow a call that rings.
            try:
                await self._follower.let_go(dialling.id)
            except Exception:
                logger.warning("call %s: its lease could not be let go", dialling.id,
                               exc_info=True, extra={"call_id": dialling.id})
            raise

    async def _place_noted(
        self, call: CheckedCall, dialling: TrackedCall, retry_for: TimeLeft | None,
        on_dialling: Callable[[int], Awaitable[None]] | None, quiet: bool,
        before_post: Callable[[], Awaitable[None]] | None,
    ) -> CallResult:
        """`_place` once the call's row (and its lease) is written."""
        request = call.request
        attempt_id = dialling.attempt_id
        assert attempt_id is not None
        if on_dialling is not None:
            try:
                await on_dialling(dialling.id)
            except Exception as exc:
                # Nothing is dialled: the row and the attempt say so, so that no start takes the
                # row for a call that may have rung (reconcile_dialling) and the audit trail has
                # the attempt's end. What on_dialling raised comes out of place().
                await self._not_dialled(call, attempt_id, dialling, exc)
                raise
        parent = views.call_parent(
            request.user_id, call.number.masked, call.flow_name, request.reason
        )
        if quiet:
            return await self._place_quietly(call, retry_for, attempt_id, dialling, parent,
                                             before_post)
        opening = asyncio.create_task(self._open_thread_after_dials(
            request, parent, dialling.id
        ), name=f"confirmation thread for {request.user_id}")
        try:
            result, message = await self._dial(call, retry_for)
        finally:
            # Dialled or not (unreachable, refused), this call is no longer on its way to Evo Voice:
            # its parent post, waiting for the calls on their way, goes now (not after the cap).
            self._dials_first.dialled()
            # Even when dialling broke, the parent post finishes (and is never left unawaited).
            thread = await opening
        # The thread reply becomes the call's status message, edited as the call goes on.
        tracked = await self._follower.track(call, result, thread, dialling)
        if tracked is TAKEN_OVER:  # told and followed by the replica that took it: nothing here
            await self._record_result(attempt_id, result)
            return self._finished(CallResult(result.outcome, result.session_id, thread,
                                             result.error, call_id=dialling.id))
        if tracked is not None:
            message = self._follower.status_message(tracked, buttons=thread.ts is not None)
            if tracked.session_id != result.session_id:
                # The session found after an ambiguous attempt belongs to another call.
                result = dataclasses.replace(result, session_id=None, session=None)
        await self._record_result(attempt_id, result)
        posted = await self._notifier.post_reply(
            thread, message, kept=status_post(tracked.id) if tracked is not None else None
        )
        if not posted.delivered:  # an error when nothing will send it again
            lost = posted.gone or tracked is None
            later = " yet: kept, and sent again" if thread.ts else " yet: tried again as it goes on"
            logger.log(logging.ERROR if lost else logging.WARNING, "call %s outcome could not be "
                       "posted for %s%s", result.outcome, request.user_id,
                       "" if lost else later, extra=_fields(request, result))
        if tracked is not None:
            await self._follower.begin(tracked, posted.ts, thread, delivered=posted.delivered)
        return self._finished(CallResult(
            result.outcome, result.session_id, thread, result.error,
            call_id=tracked.id if tracked is not None else None,
        ))

    async def _open_thread_after_dials(
        self, request: CallRequest, parent: views.Message, call_id: int
    ) -> Thread:
        # Right after this call's POST has left, and those of the calls dialled with it.
        await self._dials_first.idle()
        thread = await self._notifier.open_thread(
            request.channel_id,
            parent,
            user_id=request.user_id,
            response_url=request.response_url,
            response_url_used=request.response_url_used,
            thread_ts=request.thread_ts,
        )
        if thread is None:  # the phone rings all the same: told once Slack answers again
            return untold(request.channel_id, parent, request.user_id, request.response_url,
                          uses=request.response_url_used + bool(request.response_url),
                          opened=self._notifier.clock())
        await self._follower.note_parent(call_id, thread)  # kept while its POST may be answered
        return thread

    async def _place_quietly(
        self, call: CheckedCall, retry_for: TimeLeft | None, attempt_id: int,
        dialling: TrackedCall, parent: views.Message,
        before_post: Callable[[], Awaitable[None]] | None = None,
    ) -> CallResult:
        try:
            result, _ = await self._dial(call, retry_for, before_post)
        except CalledOff as exc:  # from before_post: nothing dialled, or only "not now"s
            await self._not_dialled(call, attempt_id, dialling, exc)
            raise
        # A thread with nowhere to post: the call is followed, and no message is kept current.
        silent = Thread(channel=call.request.channel_id, ts=None, response_url=None, parent=parent)
        tracked = await self._follower.track(call, result, silent, dialling)
        if tracked is TAKEN_OVER:  # followed by the replica that took it, and its chain with it:
            await self._record_result(attempt_id, result)  # this run goes no further (its page)
            self._finished(CallResult(result.outcome, result.session_id, None, result.error,
                                      call_id=dialling.id))
            raise StepTakenOver()
        if tracked is not None and tracked.session_id != result.session_id:
            result = dataclasses.replace(result, session_id=None, session=None)
        await self._record_result(attempt_id, result)
        if tracked is not None:
            await self._follower.begin(tracked, None)
        return self._finished(CallResult(
            result.outcome, result.session_id, None, result.error,
            call_id=tracked.id if tracked is not None else dialling.id,
        ))

    async def _not_dialled(
        self, call: CheckedCall, attempt_id: int, dialling: TrackedCall, exc: Exception
    ) -> None:
        # Called off (the chain went on without this step) is no call that failed.
        outcome = Outcome.CALLED_OFF if isinstance(exc, CalledOff) else Outcome.FAILED
        result = CallResult(outcome, error=exc if isinstance(exc, CallbotError) else None)
        await self._follower.track(call, result, None, dialling)  # its caller tells the story
        await self._record_result(attempt_id, result)
        self._finished(result)

    async def _give_back(self, call: CheckedCall, started: float, error: Expected | None,
                         slot: Callable[[], Awaitable[None]]) -> None:
        """The writes before the POST, should they have committed and lost their answer: the
        rate-limit slot is given back (the try the refusal asks for is neither asked "call
        again?" nor refused by a limit for a call never made); the call's row, left "being
        dialled" (until a restart said it may have rung), is filled in as not dialled, its lease
        given back; its attempt's record gets its end."""
        self._dials_first.ended()  # no POST: the wait for the database holds no other call back
        user_id = call.request.user_id
        fields = {"user_id": user_id}
        row = await until_database_answers(
            lambda: self._follower.store.unanswered(user_id, started),
            f"looking for the row of a call by {user_id} not dialled", extra=fields)
        if row is None:
            return  # nothing was written
        await until_database_answers(slot, f"giving back the slot of a call by {user_id}",
                                     extra=fields)
        result = CallResult(Outcome.FAILED, error=error)
        await self._follower.track(call, result, None, row)
        if row.attempt_id is not None:
            await self._record_result(row.attempt_id, result)

    def _finished(self, result: CallResult) -> CallResult:
        self._on_result(result)
        return result

    async def _record_result(self, attempt_id: int, result: CallResult) -> None:
        try:
            await self._audit.result(attempt_id, result)
        except Exception:
            # The call is placed (or not) either way; the requester must still hear about it.
            logger.exception("recording the result of attempt %s failed", attempt_id)

    async def _dial(
        self, call: CheckedCall, retry_for: TimeLeft | None = None,
        before_post: Callable[[], Awaitable[None]] | None = None,
    ) -> tuple[CallResult, views.Message]:
        started = dt.datetime.now(dt.UTC)
        log_args = (call.request.user_id, call.number.masked, call.flow_id)
        try:
            placed = await self._post_call(call, retry_for, before_post)
        except OutcomeUnknown as exc:
            logger.warning("call by %s to %s (flow %s): outcome unknown", *log_args,
                           extra={"user_id": call.request.user_id, "outcome": "unknown"})
            session = await self._find_session_after(call.number.e164, started)
            session_id = session.id if session else None
            return (
                CallResult(Outcome.UNKNOWN, session_id=session_id, error=exc, session=session),
                views.call_unknown(describe(exc), session_id),
            )
        except EvoVoiceError as exc:
            logger.warning("call by %s to %s (flow %s) failed: %s", *log_args, type(exc).__name__,
                           extra={"user_id": call.request.user_id, "outcome": "failed"})
            return CallResult(Outcome.FAILED, error=exc), views.call_failed(describe(exc))
        placed = _only_if_this_call(placed, call.number.e164)
        logger.info("call by %s to %s (flow %s) placed: session %s", *log_args, placed.session_id,
                    extra={"user_id": call.request.user_id, "session_id": placed.session_id,
                           "outcome": "placed"})
        return (
            CallResult(Outcome.PLACED, session_id=placed.session_id, session=placed.session),
            views.call_placed(placed.session_id, call.caller_id),
        )

    async def _post_call(
        self, call: CheckedCall, retry_for: TimeLeft | None,
        before_post: Callable[[], Awaitable[None]] | None = None,
    ) -> CallPlaced:
        """POST /sessions/outgoing, again after a "not now" while `retry_for` leaves time (and
        `before_post` raises nothing). The waits before a POST may be long (a Retry-After, the
        budget's pause after any 429): whoever asked for the call may no longer want it then (an
        escalation stopped or acknowledged meanwhile), so it is asked right before each."""
        attempt = 0
        while True:
            heard = REQUEST_SENT.set(self._dials_first.dialled)
            try:
                return await self._evo.create_outgoing_session(
                    call.flow_id, call.number.e164, call.caller_id, before_send=before_post
                )
            except (RateLimited, EvoVoiceUnreachable) as exc:
                attempt += 1
                if not await wait_to_retry(exc, attempt, retry_for, self.sleep):
                    raise
                logger.info("call by %s to %s: %s, trying again", call.request.user_id,
                            call.number.masked, type(exc).__name__,
                            extra={"user_id": call.request.user_id})
            finally:
                REQUEST_SENT.reset(heard)

    async def _find_session_after(self, e164: str, started: dt.datetime) -> Session | None:
        """One look for the session an ambiguous attempt may have created; never a second POST."""
        try:
            sessions = await self._evo.find_sessions(
                self._account_ids, to=e164, since=started - AMBIGUOUS_LOOKUP_SLACK
            )
        except EvoVoiceError as exc:
            logger.warning("session lookup after ambiguous call failed: %s", type(exc).__name__)
            return None
        # Not the newest: a later call to the number, placed while this answer was lost, may be.
        return next(iter(closest_first(self._evo, sessions, started)), None)


async def _nothing() -> None:
    """No rate-limit slot to give back."""


def _only_if_this_call(placed: CallPlaced, e164: str) -> CallPlaced:
    """The answer's session when it is a session dialling ``e164``; else none, to be looked up.

    The answer's type is undeclared ("do not rely on an id in it", docs/evovoice-api.md): an
    ``id`` alone may name anything (a call SID, a job), and followed as the session it found
    nothing, so the call was shown as calling until given up on as lost."""
    if placed.session is not None and is_address_of(placed.session.to_address, e164):
        return placed
    return CallPlaced()


def _fields(request: CallRequest, result: CallResult) -> dict[str, object]:
    """Structured log fields for a call's result (LOG_FORMAT=json)."""
    return {"user_id": request.user_id, "session_id": result.session_id,
            "outcome": str(result.outcome)}
