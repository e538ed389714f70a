"""Driving an escalation's chain: one step after another, from its row, until it ends.

`Chain.drive()` is the one task per running escalation (bot/runner.py): it reads the row, begins
the step, claims it and dials (once), waits for the step to be acknowledged, answered, ended or
timed out, records how it went, and moves on; the ends are bot.oncall.escalation_endings. See
bot/oncall/escalation.py for the rules it keeps.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from enum import Enum
from functools import partial

from bot.access import Responders
from bot.audit.trail import AuditLog
from bot.calls.models import ESCALATION_ORIGIN, CallRequest, CheckedCall, Outcome
from bot.calls.service import CallService
from bot.calls.store import CallState, CallStore, TrackedCall
from bot.errors import (
    CallbotError,
    ChainNotRunning,
    GroupLookupFailed,
    MembershipUnknown,
    NotAResponder,
    RoleDenied,
    StepTakenOver,
    describe,
)
from bot.evovoice.client import EvoVoiceClient, EvoVoiceError
from bot.oncall.escalation_card import EscalationCard
from bot.oncall.escalation_endings import Endings
from bot.oncall.escalation_form import seconds
from bot.oncall.escalation_store import (
    Escalation, EscalationState, EscalationStore, StepOutcome, Target)
from bot.oncall.roster import OnCall
from bot.oncall.step_claims import StepClaims
from bot.oncall.step_reads import (
    UNREAD_AT_DEADLINE, answered_in, deadline_reads, reads_neither, step_call_now, still_ringing)
from bot.runner import RowRunner
from bot.storage.claims import Claims
from bot.storage.database import Connection
from bot.storage.faults import until_database_answers

logger = logging.getLogger(__name__)


class _Verdict(Enum):
    ANSWERED = "answered"  # `ack = "answer"`: the call connected
    ACK_OUTCOME = "ack_outcome"  # the session's outcome is one of ack_outcomes
    ENDED = "ended"  # the call ended (or failed) unanswered
    TIMED_OUT = "timed_out"
    STATE_CHANGED = "state_changed"  # stopped, or no longer at this step
    CLOSING = "closing"  # the bot is stopping


class Chain:
    def __init__(
        self,
        *,
        runner: RowRunner,
        card: EscalationCard,
        endings: Endings,
        store: EscalationStore,
        callstore: CallStore,
        oncall: OnCall,
        responders: Responders,
        calls: CallService,
        evo: EvoVoiceClient,
        claims: Claims,
        audit: AuditLog | None,
        clock: Callable[[], float],
        check_every: float,
        pause: Callable[[asyncio.Event, float], Awaitable[None]],
        find_session: Callable[[TrackedCall], Awaitable[TrackedCall]],
    ) -> None:
        self._runner = runner  # the task driving each chain, its wake-ups, whether closing
        self._card = card
        self._endings = endings
        self._store = store
        self._callstore = callstore
        self._oncall = oncall
        self._responders = responders
        self._calls = calls
        self._evo = evo
        self._find_session = find_session  # the follower's one look for an unfound call's session
        self._steps = StepClaims(store, claims)
        self._audit = audit
        self._clock = clock
        # How often a chain looks at its call's row (the database, not the network).
        self._check_every = check_every
        self._pause = pause

    async def drive(self, escalation_id: int) -> None:
        over = await self._store.get(escalation_id)
        if over is not None and not over.active:
            # Over before this run began: the run before decided the end with a write whose
            # answer was lost (tried again), or nobody came and a call is left on (watched here
            # after a restart or a replica gone, as that run watched it). Its end is shown (once:
            # claims, the card's digest): the winner's words (nobody came) would otherwise never
            # be said. A chain that ends its escalation below shows that end itself.
            await self._endings.show(escalation_id)
            return await self._endings.late_by_call(over, self._is_ack_outcome)
        watched: set[int] = set()  # the steps this run dialled, or looked after once dialled
        while not self._runner.closed:
            escalation = await self._store.get(escalation_id)
            if escalation is None:
                return
            if escalation.state == EscalationState.STOPPING:
                await self._endings.stopped(escalation)
                return
            if escalation.state == EscalationState.ACKNOWLEDGING:
                await self._endings.acknowledged(escalation)
                return
            if escalation.state != EscalationState.RUNNING:
                return await self._endings.late_by_call(escalation, self._is_ack_outcome)
            target = escalation.target
            if target is None:
                await self._endings.exhausted(escalation)
                continue  # read the row again: exhausted, or acknowledged or stopped meanwhile
            if escalation.step_started_at is None:
                started = self._clock()
                await self._store.begin_step(escalation.id, escalation.step, started,
                                             started + escalation.answer_timeout)
                continue  # read the row again: stopped or moved on meanwhile, or begun
            if escalation.step_call_id is None:
                # The claim is the gate: whoever holds it dials. A step begun but never claimed,
                # or claimed by a run that went before recording its call (so before dialling),
                # is claimed, or its claim taken over, and dialled now (bot/oncall/step_claims.py).
                holder = await self._steps.claim(escalation)
                if holder is not None:
                    if not await self._place_step(escalation, target, holder):
                        return  # taken over by another replica's run: the chain is theirs now
                    watched.add(escalation.step)  # paged with its call, if it was placed
                continue  # read the row again: the call recorded, or the chain moved on
            if escalation.step not in watched:
                # Dialled by an earlier run (a restart, a replica gone): its page, unless sent.
                if await self._runner.lost(escalation_id):
                    return  # this run stalled as another replica took the chain over: theirs
                watched.add(escalation.step)
                self._card.page(escalation, target, again=True,
                                still_ringing=partial(still_ringing, self._evo, self._callstore))
            verdict, call = await self._watch(escalation)
            if verdict != _Verdict.CLOSING and await self._runner.lost(escalation_id):
                return  # another replica took the chain over while this one stalled: theirs now
            if verdict == _Verdict.ANSWERED:
                # Ended here, or (should Stop or I'm on it have come first) read again below and
                # wound down as that said, now rather than at the next lease round.
                await self._endings.answered(escalation, target)
                continue
            if verdict == _Verdict.ACK_OUTCOME:
                await self._endings.acknowledged_by_call(escalation, target, call)
            elif verdict in (_Verdict.ENDED, _Verdict.TIMED_OUT):
                await self._end_step(escalation, target, verdict, call)
        logger.info("escalation %s paused: the bot is stopping", escalation_id,
                    extra={"escalation_id": escalation_id})

    async def _place_step(self, escalation: Escalation, target: Target, holder: str) -> bool:
        """Dial the step (`holder`: this run's claim of it); False if the claim was taken over
        by another run before anything was dialled."""
        n = escalation.step
        lookup = await self._oncall.phones.lookup(target.user_id)
        if lookup.number is None:
            logger.info("escalation %s: skipping %s (no usable number)", escalation.id,
                        target.user_id,
                        extra={"escalation_id": escalation.id, "user_id": target.user_id})
            return await self._conclude_step(escalation, target, StepOutcome.SKIPPED,
                                             detail=lookup.problem, holder=holder,
                                             page=not lookup.left)
        total = len(escalation.people)
        request = CallRequest(
            team_id=escalation.team_id,
            user_id=escalation.requester_id,
            channel_id=escalation.channel_id,
            number_text=lookup.number.e164,
            flow_text=escalation.flow_id,
            reason=f"on-call escalation, step {n + 1} of {total}",
            thread_ts=escalation.thread_ts,
            origin=ESCALATION_ORIGIN,
        )
        try:
            await self._still_allowed(escalation)
            checked = await self._calls.check(request, authorised=True)
        except (RoleDenied, NotAResponder) as exc:
            # Stopping the whole chain is no step's to decide once another run holds the step.
            if not await until_database_answers(
                lambda: self._steps.holds(escalation.id, n, holder),
                f"escalation {escalation.id}: reading step {n + 1}'s claim",
                extra={"escalation_id": escalation.id},
            ):
                self._taken_over(escalation)
                return False
            if self._audit is not None:
                await self._audit.refused(request, exc)
            self._calls.count_ending(Outcome.REFUSED, exc)
            await self._endings.fail(escalation)
            return True
        except (CallbotError, EvoVoiceError) as exc:
            if not await self._conclude_step(escalation, target, StepOutcome.FAILED,
                                             detail=describe(exc), holder=holder, page=True):
                return False
            if self._audit is not None:
                await self._audit.refused(request, exc)
            self._calls.count_ending(Outcome.REFUSED, exc)  # counted as the trail has it
            return True
        try:
            await self._dial(escalation, target, checked, holder)
        except StepTakenOver:
            self._taken_over(escalation)
            return False
        except ChainNotRunning:  # stopped or acknowledged as it was to be dialled: see the row
            pass
        return True

    async def _still_allowed(self, escalation: Escalation) -> None:
        """NotAResponder if the requester has lost the right to escalate. Any responder may: the
        chain dials the roster's own numbers, so the right checked afresh at every step is theirs
        to escalate. Slack failing to say (a user group it can't list, users.info failing) is no
        "no": the right was checked when they escalated, and Slack stops no dial."""
        try:
            await self._responders.require(escalation.requester_id)
        except (GroupLookupFailed, MembershipUnknown) as exc:
            logger.warning("escalation %s: whether %s may still escalate is unknown (%s); the "
                           "chain goes on", escalation.id, escalation.requester_id,
                           type(exc).__name__,
                           extra={"escalation_id": escalation.id,
                                  "user_id": escalation.requester_id})

    async def _dial(
        self, escalation: Escalation, target: Target, checked: CheckedCall, holder: str
    ) -> None:
        # Until the step's deadline, counted from its call (the one the step began with may have
        # passed while the bot was down), a 429 or an unreachable Evo Voice is tried again: ten
        # seconds of 429s must not run through the chain. Refusals that won't change move on.
        n, deadline = escalation.step, self._clock() + escalation.answer_timeout
        async def keep_step_call(call_id: int) -> None:
            # Before the POST: a bot stopped mid-dial finds this step's call again, follows it
            # and ends it at the deadline before dialling the next person. Only while this run
            # holds the step (else StepTakenOver) and the chain runs (else ChainNotRunning).
            if not await until_database_answers(
                lambda: self._steps.record_call(escalation.id, n, holder, call_id, deadline),
                f"escalation {escalation.id}: recording step {n + 1}'s call",
                extra={"escalation_id": escalation.id, "call_id": call_id},
            ):
                raise StepTakenOver()

        result = await self._calls.place(
            checked,
            retry_for=lambda: deadline - self._clock(),
            on_dialling=keep_step_call,
            before_post=lambda: self._steps.before_post(escalation.id, n, holder),
            quiet=True,  # the card and the page tell it: no posts per step in the thread
        )
        masked = checked.number.masked
        if result.call_id is not None:
            # The phone rings from now: a slow Evo Voice must not eat into the answer time.
            await self._store.set_step_call(escalation.id, n, result.call_id,
                                            self._clock() + escalation.answer_timeout)
        if result.outcome in (Outcome.PLACED, Outcome.UNKNOWN):
            # Without a call id its status can't be followed: nothing to wait on but the clock.
            await self._store.record_step(escalation.id, n, target.user_id, StepOutcome.CALLING,
                                          number_masked=masked, call_id=result.call_id)
            await self._card.refresh(escalation.id)
            self._card.page(escalation, target)
            return
        detail = describe(result.error) if result.error is not None else "the call was not placed"
        await self._conclude_step(escalation, target, StepOutcome.FAILED, detail=detail,
                                  number_masked=masked, call_id=result.call_id, page=True)

    async def _watch(self, escalation: Escalation) -> tuple[_Verdict, TrackedCall | None]:
        """Wait for this step's call to be answered or end, or for its deadline."""
        wake = self._runner.wake(escalation.id)
        n = escalation.step
        shown: str | None = None  # the call's state the card was last drawn with
        while not self._runner.closed:
            current = await self._store.get(escalation.id)
            if (current is None or current.state != EscalationState.RUNNING or current.step != n
                    or await self._endings.acknowledged_earlier(current, self._is_ack_outcome)):
                return _Verdict.STATE_CHANGED, None
            call = (await self._callstore.get(current.step_call_id)
                    if current.step_call_id is not None else None)
            if call is not None and self._is_ack_outcome(call.outcome):
                return _Verdict.ACK_OUTCOME, call
            if call is not None and call.answered and not current.acknowledges:
                return _Verdict.ANSWERED, call
            if call is not None and call.known_over:  # given up on, it may ring: the deadline
                return _Verdict.ENDED, call
            if call is not None and call.state != shown:
                shown = call.state
                await self._card.refresh(escalation.id)  # ringing, on the phone
            deadline = current.step_deadline or current.created_at
            remaining = deadline - self._clock()
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
            call = await step_call_now(self._callstore, self._find_session, escalation, call)
            answered = call is not None and call.answered
            try:
                reads = await deadline_reads(self._evo, call, self._is_ack_outcome, partial(
                    self._pause, asyncio.Event(), self._check_every))
                unread = reads_neither(reads, escalation)  # Passive, say: may be listening
            except EvoVoiceError as exc:  # a 429, a 5xx: it may have been answered just now
                reads, unread = [], True
                logger.warning("escalation %s: step %d's call unread at its deadline (%s); not "
                               "hung up", escalation.id, escalation.step + 1,
                               type(exc).__name__, extra={"escalation_id": escalation.id})
            # The row read again may hold an acknowledging outcome too: pressed 1 since `_watch`.
            said = [o for o in (*(r.outcome for r in reads), call.outcome if call else None)
                    if self._is_ack_outcome(o)]
            if said:
                await self._endings.acknowledged_by_call(escalation, target, call, said[0])
                return
            answered = answered or answered_in(reads, call)
            if answered and not escalation.acknowledges:
                await self._endings.answered(escalation, target)
                return
            if not answered and unread:
                note = UNREAD_AT_DEADLINE
            elif not answered and await self._runner.lost(escalation.id):
                return  # read as another replica took the chain over (and ended the step)
            elif not answered:
                why = f"no answer in {seconds(escalation.answer_timeout)}"
                note = await self._endings.hang_up_unanswered(escalation, call, why,
                                                              done="(hung up)")
            # A call connected but not acknowledged is left on: the person may still be listening.
        if answered:
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
        self, escalation: Escalation, target: Target, outcome: StepOutcome, *,
        detail: str | None = None, number_masked: str | None = None, call_id: int | None = None,
        holder: str | None = None, page: bool = False,
    ) -> bool:
        """Record the step's outcome and move on; its card shows it (no post in the thread).
        `holder`: decided before dialling, by the run holding this claim of the step, and
        written only while it still does (bot/oncall/step_claims.py); False if it no longer did.
        Nothing is written, nor paged, once the chain was stopped or acknowledged meanwhile.
        `page`: the person's phone wasn't rung; they are paged in Slack all the same."""
        n = escalation.step
        if holder is not None:
            async def conclude(conn: Connection) -> None:
                await self._store.record_step(escalation.id, n, target.user_id, outcome,
                                              detail=detail, number_masked=number_masked,
                                              call_id=call_id, on=conn)
                await self._store.advance(escalation.id, n, on=conn)

            try:
                held = await until_database_answers(
                    lambda: self._steps.conclude(escalation.id, n, holder, conclude),
                    f"escalation {escalation.id}: recording step {n + 1}",
                    extra={"escalation_id": escalation.id},
                )
            except ChainNotRunning:  # the row, read again, winds the chain down as it says
                return True
            if not held:
                self._taken_over(escalation)
                return False
        else:
            await self._store.record_step(escalation.id, n, target.user_id, outcome,
                                          detail=detail, number_masked=number_masked,
                                          call_id=call_id)
        logger.info("escalation %s: step %d (%s) %s", escalation.id, n + 1, target.user_id,
                    outcome, extra={
                        "escalation_id": escalation.id, "user_id": target.user_id,
                        "call_id": escalation.step_call_id if call_id is None else call_id,
                        "outcome": str(outcome)})
        if holder is None:
            await self._store.advance(escalation.id, n)
        await self._card.refresh(escalation.id)
        if page:  # a phone the chain couldn't ring: Slack is what is left to reach them
            self._card.page(escalation, target)
        return True

    @staticmethod
    def _taken_over(escalation: Escalation) -> None:
        logger.warning("escalation %s: step %d was taken over by another run before this one "
                       "dialled it; nothing done here", escalation.id, escalation.step + 1,
                       extra={"escalation_id": escalation.id})

    def _is_ack_outcome(self, outcome: str | None) -> bool:
        return self._oncall.configured and self._oncall.policy.is_ack_outcome(outcome)
