"""On-call escalation: page the people on call one after another until somebody acknowledges.

    start()         a checked request becomes a chain: the order of people is frozen
                    (`OnCall.chain(now)`: who is on call, the rest of the rotation, `escalate_to`),
                    so is what ends a step (`[oncall] ack`), the escalation's message is posted in
                    its thread, and the chain runs
    resume()        at start-up, chains that were running go on where they were
    ack_clicked()   I'm on it, on a page (the person's DM) or on the escalation's message
    take_over()     every few seconds: chains whose replica died go on here (bot/storage/leases.py)
    stop_clicked()  the Stop escalation button
    stop()          at shutdown: the chains pause and their leases are released, so another
                    replica (or the next start) goes on from the rows

What ends a step. With `ack = "acknowledge"` (the default) only an acknowledgement does: I'm on it,
clicked by a paged person or anyone allowed to escalate, or the call's session `outcome` being one
of `[oncall] ack_outcomes` (set by the team's Evo Voice flow, e.g. after "press 1"). A call that
connects and ends without one (voicemail, a pocket answer) moves the chain on at once; one still
connected at the deadline is left alone (the person may still be listening) and the chain moves
on. With `ack = "answer"` the call connecting ends the chain, as before acknowledgements existed;
I'm on it works in both modes. The mode is frozen in the escalation's row when it starts.

Each chain is one task driving one row of the database (bot.escalation_store), in the one replica
holding its lease (bot/runner.py). A step:

    1. begin: the step and its deadline (now + answer_timeout, an absolute time; set again from
       the moment the call is placed) are written, and the step's claim
       `escalation:{id}:step:{n}` is taken. Only then is anything dialled, so however often the
       bot restarts, a step is dialled at most once.
    2. the person's number is read again (`phones.lookup`): none usable → "⏭ Skipping @x: reason",
       next step. Else the call goes through `CallService` (checks, audit trail, the follower)
       into the escalation's thread.
    3. the person gets a direct message (the page: reason, who asked, a link to the thread,
       I'm on it), after the call is placed: nothing on Slack's side delays a dial
    4. wait, reading the call's row (the follower keeps it up to date), until the step is
       acknowledged (or, `ack = "answer"`, the call connects), the call ends without that, or the
       deadline passes; the escalation's message shows how the step went, and the next begins.

A call still ringing when its deadline passes is hung up (`DELETE /sessions/{id}`) before the next
person is called, so one page never rings two phones at once; just before, the session is read
fresh, so a call answered at the last moment counts as answered. If the hang-up fails, the thread
says so and the chain goes on. Stop escalation hangs up a call still ringing, too.

After a restart mid-step the call is followed again (its row is the follower's) and the deadline
is the one written at the start. A step begun but whose call was not recorded (the bot stopped
while dialling) is not dialled again: the chain waits out its deadline and says it can't tell
whether that phone rang.

An acknowledgement is a compare-and-set on the row (`acknowledge`: the first one wins and is
kept, with who, when and how); the chain then winds down like Stop: a call still ringing is hung
up, nobody else is called. A click that lands while the bot is restarting is still written, and
the next start finishes the job (the row is in an active state).

The thread stays calm: the escalation's own message is drawn from the rows and edited in place
(each person, how their step went, who acknowledged), like a call's status message; the only post
is the final broadcast when nobody acknowledged (made under a claim, so a restart never repeats it).
The pages are edited too once the escalation is over.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum

from bot.access import AccessControl, Responders
from bot.audit.trail import AuditLog, EventKind
from bot.calls import messages as common_views
from bot.calls.controls import ButtonClick, ButtonExpired
from bot.calls.follow import CallFollower, classify, digest, wait_or_wake
from bot.calls.models import CallRequest, CheckedCall, Outcome
from bot.calls.service import CallService
from bot.calls.store import CallState, CallStore, TrackedCall
from bot.config import KNOWN_ROLES
from bot.errors import (
    CallbotError,
    NotAResponder,
    RoleDenied,
    describe,
    describe_any,
    log_unexpected,
)
from bot.evovoice.client import EvoVoiceClient, EvoVoiceError, NotFound, Session
from bot.oncall import escalation_views as views
from bot.oncall.escalation_form import seconds
from bot.oncall.escalation_store import (
    ACTIVE_STATES,
    AckMode,
    AckVia,
    Escalation,
    EscalationState,
    EscalationStore,
    Page,
    StepOutcome,
    Target,
)
from bot.oncall.roster import OnCall
from bot.runner import RowRunner, Work
from bot.slack.notify import NotDelivered, Notifier, Thread
from bot.storage.claims import Claims
from bot.storage.leases import Leases

logger = logging.getLogger(__name__)

ORIGIN = "escalation"  # in the audit trail
LEASE_KIND = "escalation"  # a running chain's lease (bot/storage/leases.py)


class NotAllowedToStop(CallbotError):
    user_message = (
        "You are not allowed to stop this escalation: only the person who started it, or someone "
        "with the Manager or SystemAdministrator role, may."
    )


class EscalationOver(CallbotError):
    user_message = "This escalation is already over; there is nothing to stop."

# A post in an escalation's thread that Slack refused is tried again after 1 s, 2 s, 4 s… (at most
# a minute apart) for up to ten minutes.
POST_RETRY_FIRST_SECONDS = 1.0
POST_RETRY_MAX_PAUSE = 60.0
POST_RETRY_FOR_SECONDS = 600.0


class NotAllowedToAcknowledge(CallbotError):
    user_message = (
        "You can't acknowledge this page: only the people it pages, and those allowed to "
        "escalate to on-call, may."
    )


class AlreadyAcknowledged(CallbotError):
    def __init__(self, by: str, at: float, *, you: bool) -> None:
        when = views.slack_time(at)
        who = "You" if you else f"<@{by}>"
        super().__init__(
            f"{who} acknowledged this page first, at {when}. Nobody else is being called."
        )


class AcknowledgedTooLate(CallbotError):
    user_message = (
        "This escalation is already over (it was stopped, or could not go on), so there is "
        "nothing to acknowledge. Escalate again if someone still needs to come."
    )


@dataclass(frozen=True)
class EscalationRequest:
    """A checked request to escalate (the form validated it): where, by whom, with which flow."""

    request_key: str  # one escalation per key: a repeated submission starts no second chain
    team_id: str
    requester_id: str
    channel_id: str
    thread_ts: str | None  # the message's thread; None: a new thread in the channel
    flow_id: str
    flow_name: str
    reason: str | None
    origin: str  # message_shortcut or global_shortcut
    response_url: str | None = None  # to tell the requester if nothing can be posted


class _Verdict(Enum):
    ANSWERED = "answered"  # `ack = "answer"`: the call connected
    ACK_OUTCOME = "ack_outcome"  # the session's outcome is one of ack_outcomes
    ENDED = "ended"  # the call ended (or failed) unanswered
    TIMED_OUT = "timed_out"
    STATE_CHANGED = "state_changed"  # stopped, or no longer at this step
    CLOSING = "closing"  # the bot is stopping


class EscalationService:
    def __init__(
        self,
        *,
        store: EscalationStore,
        oncall: OnCall,
        calls: CallService,
        callstore: CallStore,
        follower: CallFollower,
        evo: EvoVoiceClient,
        notifier: Notifier,
        claims: Claims,
        access: AccessControl,
        responders: Responders,
        audit: AuditLog | None,
        check_every: float = 1.0,
        clock: Callable[[], float] = time.time,
        pause: Callable[[asyncio.Event, float], Awaitable[None]] = wait_or_wake,
        on_finished: Callable[[str], None] | None = None,
        on_paged: Callable[[], None] | None = None,
        on_acknowledged: Callable[[str, float], None] | None = None,
        leases: Leases | None = None,
    ) -> None:
        self.store = store
        self._oncall = oncall
        self._calls = calls
        self._callstore = callstore
        self._follower = follower
        self._evo = evo
        self._notifier = notifier
        self._claims = claims
        self._access = access
        self._responders = responders
        self._audit = audit
        # How often a chain looks at its call's row (the database, not the network).
        self._check_every = check_every
        # Public, like OnCall.clock: deadlines are absolute times on this clock, and tests move it.
        self.clock = clock
        self._pause = pause
        self._on_finished = on_finished
        # Metrics: a person paged; an acknowledgement (how, seconds since the escalation began).
        self._on_paged = on_paged
        self._on_acknowledged = on_acknowledged
        self._runner = RowRunner(LEASE_KIND, leases, on_error=self._report_failure)
        self._locks: dict[int, asyncio.Lock] = {}
        # Posts in a thread that Slack refused, being tried again (see _post).
        self._deliveries: set[asyncio.Task[None]] = set()

    @property
    def running(self) -> int:
        """How many chains this process is driving now."""
        return self._runner.running

    @property
    def _closed(self) -> bool:
        return self._runner.closed

    # ----------------------------------------------------------------------------- starting

    async def start(self, request: EscalationRequest, now: dt.datetime) -> Escalation | None:
        """Freeze the order, post the escalation's message, run the chain. None for a repeat (or
        when nothing could be posted: the requester is told, nobody is called)."""
        policy = self._oncall.policy
        people = [Target(p.user_id, str(p.source)) for p in await self._oncall.chain(now)]
        escalation = await self.store.create(
            people=people,
            request_key=request.request_key,
            created_at=self.clock(),
            team_id=request.team_id,
            requester_id=request.requester_id,
            channel_id=request.channel_id,
            origin=request.origin,
            flow_id=request.flow_id,
            flow_name=request.flow_name,
            reason=request.reason,
            answer_timeout=float(policy.answer_timeout),
            ack_mode=str(AckMode(policy.ack)),
        )
        if escalation is None:
            logger.info("repeated escalation request %s ignored", request.request_key)
            return None
        # Ours from now: no other replica takes it over while its message is being posted.
        await self._runner.reserve(escalation.id)
        message = views.escalation_message(escalation, [])
        try:
            thread = await self._notifier.start_thread(
                request.channel_id, message, response_url=None, thread_ts=request.thread_ts
            )
        except NotDelivered:
            logger.warning("escalation %s: could not post in %s", escalation.id, request.channel_id)
            await self.store.set_state(escalation.id, ACTIVE_STATES, EscalationState.FAILED,
                                       finished_at=self.clock())
            self._finished(EscalationState.FAILED)
            # Not ephemerally in a channel the bot can't post in: the response_url, else a DM.
            await self._notifier.tell(
                user_id=request.requester_id, channel_id=None,
                response_url=request.response_url,
                message=views.could_not_start(request.channel_id),
            )
            return None
        await self.store.update(
            escalation.id, thread_ts=thread.ts, message_ts=thread.parent_ts,
            shown_digest=digest(message),
        )
        logger.info(
            "escalation %s by %s started: %s", escalation.id, request.requester_id,
            ", ".join(t.user_id for t in people),
        )
        await self._runner.start(escalation.id, lambda: self._drive(escalation.id))
        return await self.store.get(escalation.id)

    # ---------------------------------------------------------------------------- lifecycle

    async def resume(self) -> int:
        """Drive again every chain that was running when the bot last stopped."""
        count = len(await self._runner.adopt(await self._active(), self._work))
        if count:
            logger.info("resuming %d escalation(s) after a restart", count)
        return count

    async def take_over(self) -> None:
        """A lease keeper's round: drive the chains whose replica stopped or died."""
        await self._runner.take_over(self._active, self._work)

    async def _active(self) -> list[int]:
        return [escalation.id for escalation in await self.store.active()]

    def _work(self, escalation_id: int) -> Work:
        return lambda: self._adopt(escalation_id)

    async def _adopt(self, escalation_id: int) -> None:
        escalation = await self.store.get(escalation_id)
        if escalation is None:
            return
        if escalation.message_ts is None or escalation.thread_ts is None:
            # Stopped before its message was posted: nothing was dialled, nobody can be told.
            await self.store.set_state(escalation.id, ACTIVE_STATES, EscalationState.FAILED,
                                       finished_at=self.clock())
            return
        await self._drive(escalation_id)

    async def stop(self, grace: float = 5.0) -> None:
        """Pause every chain at its next safe point (never in the middle of dialling, unless that
        takes longer than `grace`) and let go of them: another replica, or the next start, goes
        on from the rows."""
        for delivery in list(self._deliveries):
            delivery.cancel()
        await self._runner.stop(grace)

    def poke(self, escalation_id: int) -> None:
        self._runner.poke(escalation_id)

    async def _report_failure(self, escalation_id: int, exc: Exception) -> None:
        # A bug, not a phone problem. The row stays active, and this replica keeps its lease, so
        # the chain is tried again when it restarts; meanwhile the thread must not fall silent on
        # a page nobody is answering.
        try:
            escalation = await self.store.get(escalation_id)
            if escalation is not None and escalation.thread_ts is not None:
                await self._post(escalation, views.failed(
                    escalation, f"{describe_any(exc)} Nobody more will be called until callbot "
                                "restarts: reach the people on call another way."))
            else:
                log_unexpected(exc, f"escalation {escalation_id} failed")
        except Exception:
            logger.exception("escalation %s failed, and saying so failed too", escalation_id)

    # ------------------------------------------------------------------------------ the chain

    async def _drive(self, escalation_id: int) -> None:
        while not self._closed:
            escalation = await self.store.get(escalation_id)
            if escalation is None or escalation.thread_ts is None:
                return
            if escalation.state == EscalationState.STOPPING:
                await self._finish_stopped(escalation)
                return
            if escalation.state == EscalationState.ACKNOWLEDGING:
                await self._finish_acknowledged(escalation)
                return
            if escalation.state != EscalationState.RUNNING:
                return
            target = escalation.target
            if target is None:
                await self._finish_exhausted(escalation)
                return
            if escalation.step_started_at is None:
                started = self.clock()
                await self.store.begin_step(escalation.id, escalation.step, started,
                                            started + escalation.answer_timeout)
                continue  # read the row again: stopped or moved on meanwhile, or begun
            if escalation.step_call_id is None and await self._claims.claim(
                f"escalation:{escalation.id}:step:{escalation.step}"
            ):
                # The claim is the gate: whoever takes it dials, and a step is claimed only once.
                # (A step begun but never claimed, by a bot that stopped in between, dials now.)
                await self._place_step(escalation, target)
                continue
            verdict, call = await self._watch(escalation)
            if verdict == _Verdict.ANSWERED:
                await self._finish_answered(escalation, target)
                return
            if verdict == _Verdict.ACK_OUTCOME:
                await self._acknowledged_by_call(escalation, target, call)
            elif verdict in (_Verdict.ENDED, _Verdict.TIMED_OUT):
                await self._end_step(escalation, target, verdict, call)
            # ACK_OUTCOME, STATE_CHANGED: look again; CLOSING: the loop ends.
        logger.info("escalation %s paused: the bot is stopping", escalation_id)

    async def _place_step(self, escalation: Escalation, target: Target) -> None:
        n = escalation.step
        lookup = await self._oncall.phones.lookup(target.user_id)
        if lookup.number is None:
            logger.info("escalation %s: skipping %s (no usable number)", escalation.id,
                        target.user_id)
            await self._conclude_step(escalation, target, StepOutcome.SKIPPED,
                                      detail=lookup.problem)
            return
        total = len(escalation.people)
        request = CallRequest(
            team_id=escalation.team_id,
            user_id=escalation.requester_id,
            channel_id=escalation.channel_id,
            number_text=lookup.number.e164,
            flow_text=escalation.flow_id,
            reason=f"on-call escalation, step {n + 1} of {total}",
            thread_ts=escalation.thread_ts,
            origin=ORIGIN,
        )
        try:
            # Any responder may escalate: the chain dials the roster's own numbers, so the
            # requester's right is theirs to escalate, checked afresh at every step.
            await self._responders.require(escalation.requester_id)
            checked = await self._calls.check(request, authorised=True)
        except (RoleDenied, NotAResponder) as exc:
            if self._audit is not None:
                await self._audit.refused(request, exc)
            await self._fail(escalation, f"<@{escalation.requester_id}> is no longer allowed to "
                                         "escalate to on-call.")
            return
        except (CallbotError, EvoVoiceError) as exc:
            if self._audit is not None:
                await self._audit.refused(request, exc)
            await self._conclude_step(escalation, target, StepOutcome.FAILED, detail=describe(exc))
            return
        await self._dial(escalation, target, checked)

    async def _dial(self, escalation: Escalation, target: Target, checked: CheckedCall) -> None:
        n = escalation.step
        deadline = escalation.step_deadline
        # A 429 or an unreachable Evo Voice is tried again until the step's deadline: ten seconds
        # of 429s must not run through the whole chain. Refusals that won't change move on.
        async def keep_step_call(call_id: int) -> None:
            # Before the POST: a bot stopped mid-dial finds this step's call again, follows it
            # and ends it at the deadline before dialling the next person.
            await self.store.set_step_call(escalation.id, n, call_id,
                                           self.clock() + escalation.answer_timeout)

        result = await self._calls.place(
            checked,
            retry_for=(lambda: deadline - self.clock()) if deadline is not None else None,
            on_dialling=keep_step_call,
        )
        masked = checked.number.masked
        if result.call_id is not None:
            # The phone rings from now: a slow Evo Voice must not eat into the answer time.
            await self.store.set_step_call(escalation.id, n, result.call_id,
                                           self.clock() + escalation.answer_timeout)
        if result.outcome in (Outcome.PLACED, Outcome.UNKNOWN):
            # Without a call id its status can't be followed: nothing to wait on but the clock.
            await self.store.record_step(escalation.id, n, target.user_id, StepOutcome.CALLING,
                                         number_masked=masked, call_id=result.call_id)
            await self.refresh(escalation.id)
            await self._page(escalation, target)
            return
        detail = describe(result.error) if result.error is not None else "the call was not placed"
        await self._conclude_step(escalation, target, StepOutcome.FAILED, detail=detail,
                                  number_masked=masked, call_id=result.call_id)

    async def _watch(self, escalation: Escalation) -> tuple[_Verdict, TrackedCall | None]:
        """Wait for this step's call to be answered or end, or for its deadline."""
        wake = self._runner.wake(escalation.id)
        n = escalation.step
        while not self._closed:
            current = await self.store.get(escalation.id)
            if current is None or current.state != EscalationState.RUNNING or current.step != n:
                return _Verdict.STATE_CHANGED, None
            call = (await self._callstore.get(current.step_call_id)
                    if current.step_call_id is not None else None)
            if call is not None and self._is_ack_outcome(call.outcome):
                return _Verdict.ACK_OUTCOME, call
            if call is not None and call.answered and not current.acknowledges:
                return _Verdict.ANSWERED, call
            if call is not None and call.is_final:
                return _Verdict.ENDED, call
            deadline = current.step_deadline or current.created_at
            remaining = deadline - self.clock()
            if remaining <= 0:
                return _Verdict.TIMED_OUT, call
            await self._pause(wake, min(self._check_every, remaining))
            wake.clear()
        return _Verdict.CLOSING, None

    async def _end_step(
        self, escalation: Escalation, target: Target, verdict: _Verdict, call: TrackedCall | None
    ) -> None:
        note = None
        answered = call is not None and call.answered
        if verdict == _Verdict.TIMED_OUT:
            fresh = await self._session_now(call) if call is not None else None
            if fresh is not None and self._is_ack_outcome(fresh.outcome):
                await self._acknowledged_by_call(escalation, target, call, fresh.outcome)
                return
            answered = answered or (
                fresh is not None and classify(fresh, call.state if call else None)
                == CallState.CONNECTED)
            if answered and not escalation.acknowledges:
                await self._finish_answered(escalation, target)
                return
            if not answered:
                why = f"no answer in {seconds(escalation.answer_timeout)}"
                note = await self._hang_up_unanswered(call, why)
            # A call connected but not acknowledged is left on: the person may still be listening.
        if escalation.step_call_id is None and not await self._step_recorded(escalation):
            # Claimed by a bot that stopped before recording the call: it may have rung.
            outcome = StepOutcome.UNKNOWN
        elif answered:
            outcome = StepOutcome.NOT_ACKNOWLEDGED
        elif verdict == _Verdict.TIMED_OUT:
            outcome = StepOutcome.NO_ANSWER
        elif call is not None and call.state == CallState.FAILED:
            outcome = StepOutcome.FAILED
        else:
            outcome = StepOutcome.ENDED
        detail = call.note if call is not None and outcome == StepOutcome.FAILED else None
        await self._conclude_step(escalation, target, outcome, detail=note or detail)

    async def _conclude_step(
        self,
        escalation: Escalation,
        target: Target,
        outcome: StepOutcome,
        *,
        detail: str | None = None,
        number_masked: str | None = None,
        call_id: int | None = None,
    ) -> None:
        """Record the step's outcome and move on to the next person; the escalation's message
        shows it (no post in the thread: one message edited in place keeps the thread calm)."""
        n = escalation.step
        await self.store.record_step(escalation.id, n, target.user_id, outcome, detail=detail,
                                     number_masked=number_masked, call_id=call_id)
        logger.info("escalation %s: step %d (%s) %s", escalation.id, n + 1, target.user_id,
                    outcome)
        await self.store.advance(escalation.id, n)
        await self.refresh(escalation.id)

    async def _step_recorded(self, escalation: Escalation) -> bool:
        return any(step.step == escalation.step for step in await self.store.steps(escalation.id))

    async def _session_now(self, call: TrackedCall) -> Session | None:
        """Read the session fresh at the deadline: the follower may not have seen an answer, or
        an acknowledging outcome, yet."""
        if call.session_id is None or call.is_final:
            return None
        try:
            return await self._evo.get_session(call.session_id)
        except EvoVoiceError:
            return None

    def _is_ack_outcome(self, outcome: str | None) -> bool:
        if not outcome or not self._oncall.configured:
            return False
        return self._oncall.policy.is_ack_outcome(outcome)

    async def _hang_up_unanswered(self, call: TrackedCall | None, why: str) -> str | None:
        """Hang up a call that is still ringing; a note for the thread when that didn't work."""
        if call is None or call.is_final or call.answered:
            return None
        if call.session_id is None:
            return "(Its call could not be found in Evo Voice to hang it up; it may still ring.)"
        try:
            await self._evo.hang_up(call.session_id)
        except NotFound:
            pass  # it ended on its own
        except EvoVoiceError as exc:
            logger.warning("escalation: hanging up call %s failed: %s", call.id, type(exc).__name__)
            await self._record_call_event(call, EventKind.HANG_UP_FAILED, f"escalation: {why}")
            return f"(Hanging up that call failed: {describe(exc)} It may still ring.)"
        else:
            logger.info("escalation: call %s hung up (%s)", call.id, why)
            await self._record_call_event(call, EventKind.HANG_UP, f"escalation: {why}")
        self._follower.poke(call.id)
        return None

    async def _record_call_event(
        self, call: TrackedCall, kind: EventKind, reason: str, *, actor_id: str | None = None
    ) -> None:
        if self._audit is None or call.attempt_id is None:
            return
        try:
            await self._audit.event(call.attempt_id, kind, reason=reason,
                                    session_id=call.session_id, actor_id=actor_id)
        except Exception:
            logger.exception("recording %s of call %s failed", kind, call.id)

    # ---------------------------------------------------------------------------- the end

    async def _finish_answered(self, escalation: Escalation, target: Target) -> None:
        """`ack = "answer"`: the call connecting is the acknowledgement."""
        await self.store.record_step(escalation.id, escalation.step, target.user_id,
                                     StepOutcome.ANSWERED)
        now = self.clock()
        if await self.store.set_state(escalation.id, {EscalationState.RUNNING},
                                      EscalationState.ANSWERED, answered_by=target.user_id,
                                      finished_at=now):
            logger.info("escalation %s: %s answered", escalation.id, target.user_id)
            self._finished(EscalationState.ANSWERED)
            if self._on_acknowledged is not None:
                self._on_acknowledged(str(AckVia.ANSWER), now - escalation.created_at)
        await self.refresh(escalation.id)

    async def _acknowledged_by_call(
        self, escalation: Escalation, target: Target, call: TrackedCall | None,
        outcome: str | None = None,
    ) -> None:
        """The step's call reports an outcome listed in ack_outcomes: its person acknowledged."""
        if await self.store.acknowledge(escalation.id, by=target.user_id, at=self.clock(),
                                        via=AckVia.OUTCOME):
            logger.info("escalation %s: %s acknowledged through the call (outcome %r)",
                        escalation.id, target.user_id, outcome or (call.outcome if call else None))

    async def _finish_acknowledged(self, escalation: Escalation) -> None:
        """Somebody acknowledged: nobody else is called; a call still ringing is hung up."""
        by = escalation.acknowledged_by or ""
        target = escalation.target
        if target is not None and escalation.step_started_at is not None:
            call = (await self._callstore.get(escalation.step_call_id)
                    if escalation.step_call_id is not None else None)
            note = None
            if call is not None and not call.answered and not call.is_final:
                note = await self._hang_up_unanswered(call, f"acknowledged by {by}")
            outcome = (StepOutcome.ACKNOWLEDGED if target.user_id == by
                       else StepOutcome.CALLED_OFF)
            await self.store.record_step(escalation.id, escalation.step, target.user_id, outcome,
                                         detail=note)
        await self._record_acknowledgement(escalation)
        if await self.store.set_state(escalation.id, {EscalationState.ACKNOWLEDGING},
                                      EscalationState.ACKNOWLEDGED, finished_at=self.clock()):
            logger.info("escalation %s acknowledged by %s (%s)", escalation.id, by,
                        escalation.acknowledged_via)
            self._finished(EscalationState.ACKNOWLEDGED)
        await self.refresh(escalation.id)

    async def _record_acknowledgement(self, escalation: Escalation) -> None:
        """The audit trail (on the acknowledging person's call, else the current step's) and
        the metrics; once, whatever restarts in between."""
        if not await self._claims.claim(f"escalation:{escalation.id}:acknowledged"):
            return
        by, at = escalation.acknowledged_by or "", escalation.acknowledged_at or self.clock()
        if self._on_acknowledged is not None:
            self._on_acknowledged(str(escalation.acknowledged_via or AckVia.BUTTON),
                                  max(0.0, at - escalation.created_at))
        steps = await self.store.steps(escalation.id)
        call_ids = [s.call_id for s in steps if s.user_id == by and s.call_id is not None]
        call_ids += [escalation.step_call_id] if escalation.step_call_id is not None else []
        if not call_ids:
            return
        call = await self._callstore.get(call_ids[0])
        if call is not None:
            how = ("I'm on it" if escalation.acknowledged_via == AckVia.BUTTON
                   else f"call outcome {call.outcome!r}")
            await self._record_call_event(
                call, EventKind.ACKNOWLEDGED,
                f"escalation {escalation.id} acknowledged by {by} ({how})", actor_id=by,
            )

    async def _finish_exhausted(self, escalation: Escalation) -> None:
        if await self._claims.claim(f"escalation:{escalation.id}:end"):
            await self._post(escalation, views.exhausted(escalation), broadcast=True)
        if await self.store.set_state(escalation.id, {EscalationState.RUNNING},
                                      EscalationState.EXHAUSTED, finished_at=self.clock()):
            logger.warning("escalation %s: nobody answered", escalation.id)
            self._finished(EscalationState.EXHAUSTED)
        await self.refresh(escalation.id)

    async def _finish_stopped(self, escalation: Escalation) -> None:
        target = escalation.target
        if target is not None and escalation.step_started_at is not None:
            call = (await self._callstore.get(escalation.step_call_id)
                    if escalation.step_call_id is not None else None)
            if call is not None and not call.answered and not call.is_final:
                note = await self._hang_up_unanswered(call, "escalation stopped")
                await self.store.record_step(escalation.id, escalation.step, target.user_id,
                                             StepOutcome.STOPPED, detail=note)
        if await self.store.set_state(escalation.id, {EscalationState.STOPPING},
                                      EscalationState.STOPPED, finished_at=self.clock()):
            logger.info("escalation %s stopped by %s", escalation.id, escalation.stopped_by)
            self._finished(EscalationState.STOPPED)
        await self.refresh(escalation.id)

    async def _fail(self, escalation: Escalation, why: str) -> None:
        if await self._claims.claim(f"escalation:{escalation.id}:end"):
            await self._post(escalation, views.failed(escalation, why))
        if await self.store.set_state(escalation.id, {EscalationState.RUNNING},
                                      EscalationState.FAILED, finished_at=self.clock()):
            self._finished(EscalationState.FAILED)
        await self.refresh(escalation.id)

    def _finished(self, state: EscalationState) -> None:
        if self._on_finished is not None:
            self._on_finished(str(state))

    # ------------------------------------------------------------------------------ the page

    async def _page(self, escalation: Escalation, target: Target) -> None:
        """The person's direct message: once per step, however often the bot restarts."""
        n = escalation.step
        if not await self._claims.claim(f"escalation:{escalation.id}:step:{n}:page"):
            return
        if self._on_paged is not None:
            self._on_paged()
        link = (await self._notifier.permalink(escalation.channel_id, escalation.message_ts)
                if escalation.message_ts is not None else None)
        current = await self.store.get(escalation.id) or escalation
        message = views.page_message(current, target.user_id, n, link)
        posted = await self._notifier.direct_message(target.user_id, message)
        if posted is None:
            logger.warning("escalation %s: the page to %s could not be sent", escalation.id,
                           target.user_id)
            return
        channel, ts = posted
        await self.store.add_page(Page(escalation.id, n, target.user_id, channel, ts, link,
                                       digest(message)))

    # --------------------------------------------------------------------------- the buttons

    async def ack_clicked(self, click: ButtonClick) -> None:
        """I'm on it: by a person the escalation pages, or anyone allowed to escalate. The first
        acknowledgement wins; a later click hears whose it was."""
        try:
            escalation = await self._load(click, pages=True)
            if click.user_id not in {t.user_id for t in escalation.people} and not (
                await self._responders.allows(click.user_id)
            ):
                logger.info("acknowledgement of escalation %s refused to %s", escalation.id,
                            click.user_id)
                raise NotAllowedToAcknowledge()
            now = self.clock()
            if await self.store.acknowledge(escalation.id, by=click.user_id, at=now,
                                            via=AckVia.BUTTON):
                logger.info("escalation %s: acknowledged by %s", escalation.id, click.user_id)
                await self._nudge(escalation.id)
                return
            if await self.store.acknowledge(
                escalation.id, by=click.user_id, at=now, via=AckVia.BUTTON,
                before={EscalationState.EXHAUSTED}, after=EscalationState.ACKNOWLEDGED,
            ):
                await self._acknowledged_after_exhausted(escalation.id)
                return
            current = await self.store.get(escalation.id)
            if current is not None and current.acknowledged_by is not None:
                raise AlreadyAcknowledged(current.acknowledged_by,
                                          current.acknowledged_at or now,
                                          you=current.acknowledged_by == click.user_id)
            if current is not None and current.state == EscalationState.ANSWERED:
                raise AlreadyAcknowledged(current.answered_by or "",
                                          current.finished_at or now, you=False)
            raise AcknowledgedTooLate()
        except CallbotError as exc:
            await self._notifier.tell(
                user_id=click.user_id, channel_id=click.channel_id,
                response_url=click.response_url,
                message=common_views.refusal(describe(exc)),
            )

    async def _acknowledged_after_exhausted(self, escalation_id: int) -> None:
        """Everybody was tried and the channel was told nobody came; now somebody has."""
        escalation = await self.store.get(escalation_id)
        if escalation is None:
            return
        logger.info("escalation %s: acknowledged by %s after everybody was tried",
                    escalation.id, escalation.acknowledged_by)
        await self._record_acknowledgement(escalation)
        if await self._claims.claim(f"escalation:{escalation.id}:late-ack"):
            await self._post(escalation, views.acknowledged_late(escalation), broadcast=True)
        await self.refresh(escalation.id)

    async def stop_clicked(self, click: ButtonClick) -> None:
        """Stop escalation: the requester, or a Manager/SystemAdministrator."""
        try:
            escalation = await self._load(click)
            if click.user_id != escalation.requester_id:
                roles = await self._access.roles_of(click.user_id)
                if roles.isdisjoint(KNOWN_ROLES):
                    logger.info("stop of escalation %s refused to %s", escalation.id,
                                click.user_id)
                    raise NotAllowedToStop()
            if not await self.store.set_state(escalation.id, {EscalationState.RUNNING},
                                              EscalationState.STOPPING, stopped_by=click.user_id):
                raise EscalationOver()
        except CallbotError as exc:
            await self._notifier.tell(
                user_id=click.user_id, channel_id=click.channel_id,
                response_url=click.response_url,
                message=common_views.refusal(describe(exc)),
            )
            return
        logger.info("escalation %s: stop clicked by %s", escalation.id, click.user_id)
        await self.refresh(escalation.id)
        await self._nudge(escalation.id)

    async def _nudge(self, escalation_id: int) -> None:
        """The chain sees a change of its row now: woken here, or run here when it is ours and
        stopped (a failed chain) or nobody's. A chain another replica drives sees the change at
        its next check."""
        if escalation_id in self._runner:
            self.poke(escalation_id)
        else:
            await self._runner.start(escalation_id, lambda: self._drive(escalation_id))

    async def _load(self, click: ButtonClick, *, pages: bool = False) -> Escalation:
        """The escalation a button names, if the click came from its message (or, `pages`,
        from one of its pages); ButtonExpired otherwise."""
        escalation = await self.store.get(click.row_id())
        if escalation is None:
            raise ButtonExpired()
        if click.came_from(escalation.team_id, escalation.channel_id, escalation.message_ts):
            return escalation
        if pages and any(
            click.came_from(escalation.team_id, page.channel_id, page.message_ts)
            for page in await self.store.pages(escalation.id)
        ):
            return escalation
        raise ButtonExpired()

    # -------------------------------------------------------------------------- the message

    async def refresh(self, escalation_id: int) -> None:
        """Make the escalation's message match its rows (edited only when the drawing changed)."""
        lock = self._locks.setdefault(escalation_id, asyncio.Lock())
        async with lock:
            escalation = await self.store.get(escalation_id)
            if escalation is None or escalation.message_ts is None:
                return
            steps = await self.store.steps(escalation_id)
            message = views.escalation_message(escalation, steps)
            drawn = digest(message)
            if drawn != escalation.shown_digest and await self._notifier.update(
                escalation.channel_id, escalation.message_ts, message
            ):
                await self.store.update(escalation_id, shown_digest=drawn)
            if escalation.state != EscalationState.RUNNING:
                await self._refresh_pages(escalation)
        if not escalation.active and not lock.locked():
            self._locks.pop(escalation_id, None)

    async def _refresh_pages(self, escalation: Escalation) -> None:
        """Once the escalation is over (or winding down), each page says so, without a button."""
        for page in await self.store.pages(escalation.id):
            message = views.page_message(escalation, page.user_id, page.step, page.link)
            drawn = digest(message)
            if drawn != page.shown_digest and await self._notifier.update(
                page.channel_id, page.message_ts, message
            ):
                await self.store.set_page_digest(escalation.id, page.step, drawn)

    async def _post(self, escalation: Escalation, message: common_views.Message,
                    *, broadcast: bool = False) -> None:
        thread = Thread(channel=escalation.channel_id, ts=escalation.thread_ts, response_url=None,
                        parent=message)
        if (await self._notifier.post_reply(thread, message, broadcast=broadcast)).delivered:
            return
        # Claimed already, so nobody else will post it: delivered later rather than never, and
        # in the background, so a failing Slack delays nobody's call.
        task = asyncio.create_task(
            self._deliver_later(escalation.id, thread, message, broadcast),
            name=f"escalation {escalation.id}: a post to deliver",
        )
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def _deliver_later(self, escalation_id: int, thread: Thread,
                             message: common_views.Message, broadcast: bool) -> None:
        pause, waited = POST_RETRY_FIRST_SECONDS, 0.0
        while waited < POST_RETRY_FOR_SECONDS:
            await asyncio.sleep(pause)
            waited += pause
            if (await self._notifier.post_reply(thread, message, broadcast=broadcast)).delivered:
                logger.info("escalation %s: a post delivered after %.0f s", escalation_id, waited)
                return
            pause = min(pause * 2, POST_RETRY_MAX_PAUSE)
        logger.error("escalation %s: a post in its thread was lost", escalation_id)

