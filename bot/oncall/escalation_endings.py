"""How an escalation ends, and the hang-ups on the way.

    answered()          `ack = "answer"`: the call connecting ends it
    acknowledged()      somebody acknowledged (I'm on it, or the call's outcome): a call still
                        ringing is hung up, nobody else is called
    exhausted()         everybody was tried: the final broadcast, the only loud post
    late_by_call()      then, a call left on reporting an acknowledging outcome: a late
                        acknowledgement, as loud as a late I'm on it (acknowledged_late)
    stopped()           Stop escalation: a call still ringing is hung up
    fail()              it can't go on (the requester lost the right to escalate, a bug)

Each end is a compare-and-set of the escalation's state (bot.oncall.escalation_store), made
before anything is said: the end that wins it is the only one said (an I'm on it or a Stop that
lands while "nobody acknowledged" is being decided is never told "nobody"; one after it is too
late for Stop and is a late acknowledgement). Each post or audit record is made under a claim, so
a restart in between never repeats one; a post's claim is written with the post's row in the
outbox, so a crash in between never loses one either. The card then shows the end, tried again
while Slack refuses it (EscalationCard.refresh_until_shown).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bot.audit.trail import AuditLog, EventKind
from bot.calls.follow import CallFollower, wait_or_wake
from bot.calls.store import FINAL_STATES, CallStore, TrackedCall
from bot.errors import describe_hang_up
from bot.evovoice.client import AlreadyEnded, EvoVoiceClient, EvoVoiceError, NotFound
from bot.oncall import escalation_views as views
from bot.oncall.escalation_card import EscalationCard
from bot.oncall.escalation_store import (
    AckVia, Escalation, EscalationState, EscalationStore, Step, StepOutcome, Target)
from bot.oncall.step_reads import hang_up_and_check, seen_now, step_call_now
from bot.runner import RowRunner
from bot.slack.threads import Once
from bot.storage.claims import Claims

logger = logging.getLogger(__name__)
_MAY_BE_ON = (str(StepOutcome.NOT_ACKNOWLEDGED), str(StepOutcome.NO_ANSWER))


def ended(escalation: Escalation, state: EscalationState) -> dict[str, object]:
    """The structured fields of the line saying how `escalation` ended (`state`)."""
    return {"escalation_id": escalation.id, "outcome": str(state)}


def _call_fields(escalation: Escalation, call: TrackedCall) -> dict[str, object]:
    """The structured fields of a line about one of `escalation`'s calls."""
    return {"escalation_id": escalation.id, "call_id": call.id, "session_id": call.session_id}


class Endings:
    def __init__(
        self,
        *,
        store: EscalationStore,
        callstore: CallStore,
        follower: CallFollower,
        evo: EvoVoiceClient,
        claims: Claims,
        audit: AuditLog | None,
        card: EscalationCard,
        clock: Callable[[], float],
        on_finished: Callable[[str], None] | None = None,
        on_acknowledged: Callable[[str, float], None] | None = None,
        runner: RowRunner | None = None,
        check_every: float = 1.0,
        pause: Callable[[asyncio.Event, float], Awaitable[None]] = wait_or_wake,
    ) -> None:
        self._store = store
        self._callstore = callstore
        self._follower = follower
        self._evo = evo
        self._claims = claims
        self._audit = audit
        self._card = card
        self._clock = clock
        self._on_finished = on_finished
        # Metrics: an acknowledgement (how, seconds since the escalation began).
        self._on_acknowledged = on_acknowledged
        # Per escalation: "nobody acknowledged" and a late I'm on it are broadcast in that order.
        self._broadcasting: dict[int, asyncio.Lock] = {}
        # The chain's task (its wake-ups, whether the bot stops) and how often it looks at its
        # calls' rows, for the calls left on once nobody acknowledged (late_by_call).
        self._runner = runner
        self._check_every = check_every
        self._pause = pause

    async def answered(self, escalation: Escalation, target: Target) -> None:
        """`ack = "answer"`: the call connecting is the acknowledgement (audit trail too)."""
        await self._store.record_step(escalation.id, escalation.step, target.user_id,
                                      StepOutcome.ANSWERED)
        now = self._clock()
        if await self._store.set_state(escalation.id, {EscalationState.RUNNING},
                                       EscalationState.ANSWERED, answered_by=target.user_id,
                                       finished_at=now):
            logger.info("escalation %s: %s answered", escalation.id, target.user_id,
                        extra={**ended(escalation, EscalationState.ANSWERED),
                               "user_id": target.user_id})
            self._finished(EscalationState.ANSWERED)
            if self._on_acknowledged is not None:
                self._on_acknowledged(str(AckVia.ANSWER), now - escalation.created_at)
            await self.record_call_event(await self._step_call(escalation), EventKind.ACKNOWLEDGED,
                                         f"escalation {escalation.id} acknowledged by "
                                         f"{target.user_id} (answered)", actor_id=target.user_id)
        await self._card.refresh_until_shown(escalation.id)

    async def acknowledged_by_call(
        self, escalation: Escalation, target: Target, call: TrackedCall | None,
        outcome: str | None = None,
    ) -> None:
        """The step's call reports an outcome listed in ack_outcomes: its person acknowledged.
        One only a fresh read saw goes on the call's row first, where the audit trail's record
        of it reads it (`record_acknowledgement`, maybe in another run)."""
        if call is not None and outcome is not None and call.outcome != outcome:
            await self._callstore.update(call.id, outcome=outcome)
        if await self._store.acknowledge(escalation.id, by=target.user_id, at=self._clock(),
                                         via=AckVia.OUTCOME):
            logger.info("escalation %s: %s acknowledged through the call (outcome %r)",
                        escalation.id, target.user_id, outcome or (call.outcome if call else None),
                        extra={"escalation_id": escalation.id, "user_id": target.user_id,
                               "call_id": call.id if call else None})

    async def acknowledged_earlier(
        self, escalation: Escalation, acknowledges: Callable[[str | None], bool]
    ) -> bool:
        """Whether an earlier step's call, answered but not acknowledged by its deadline and so
        left on (the person may still be listening), now has an outcome that `acknowledges`:
        they pressed 1 after all, and that is their acknowledgement, as a click on their page
        would be. Recorded (acknowledged_by_call); True then: read the row again."""
        for step, call in await self._left_on(escalation):
            if acknowledges(call.outcome):
                await self.acknowledged_by_call(escalation, escalation.people[step.step], call)
                return True
        return False

    async def late_by_call(
        self, escalation: Escalation, acknowledges: Callable[[str | None], bool]
    ) -> None:
        """Once nobody acknowledged (EXHAUSTED), in the chain's task: a call left on may report
        an acknowledging outcome (as loud as a late I'm on it), and a late I'm on it whose replica
        may stop first is shown here. Watched by the next run after a restart or a takeover."""
        runner, watched = self._runner, escalation.state == EscalationState.EXHAUSTED
        while escalation.state == EscalationState.EXHAUSTED and not (runner and runner.closed):
            on = False
            for step, call in await self._left_on(escalation):
                if acknowledges(call.outcome):
                    if await self._store.acknowledge(
                            escalation.id, by=step.user_id, at=self._clock(), via=AckVia.OUTCOME,
                            before={EscalationState.EXHAUSTED}, after=EscalationState.ACKNOWLEDGED):
                        await self.show(escalation.id)  # told as loudly, and shown
                    return
                on = on or not call.is_final
            if not on:
                return
            wake = runner.wake(escalation.id) if runner is not None else asyncio.Event()
            await self._pause(wake, self._check_every)
            wake.clear()
            escalation = await self._store.get(escalation.id) or escalation
        if watched and escalation.state == EscalationState.ACKNOWLEDGED:  # once (claims, digest)
            await self.show(escalation.id)

    async def acknowledged_late(self, escalation_id: int) -> None:
        """The channel was told nobody came; now somebody has: recorded, and told as loudly."""
        escalation = await self._store.get(escalation_id)
        if escalation is None:
            return
        logger.info("escalation %s: acknowledged by %s after everybody was tried",
                    escalation.id, escalation.acknowledged_by,
                    extra={"escalation_id": escalation.id, "user_id": escalation.acknowledged_by})
        await self.record_acknowledgement(escalation)
        await self.nobody_came(escalation, late=True)

    async def left_on_when_exhausted(self, finished_after: float) -> list[int]:
        """The escalations nobody acknowledged (since `finished_after`) with a call left on
        that is not over: watched by a run of their own (late_by_call), as a running chain is."""
        final = sorted(str(state) for state in FINAL_STATES)
        rows = await self._store.db.fetchall(
            "SELECT DISTINCT e.id FROM escalations e"
            " JOIN escalation_steps s ON s.escalation_id = e.id JOIN calls c ON c.id = s.call_id"
            f" WHERE e.state = ? AND e.finished_at >= ? AND s.outcome IN (?, ?)"
            f" AND c.state NOT IN ({','.join('?' * len(final))}) ORDER BY e.id",
            (str(EscalationState.EXHAUSTED), finished_after, *_MAY_BE_ON, *final))
        return [int(row["id"]) for row in rows]

    async def _left_on(self, escalation: Escalation) -> list[tuple[Step, TrackedCall]]:
        """The calls of the steps before the current one answered but not acknowledged (left on
        at their deadline, or ended so), or not hung up at it (it failed), with their steps."""
        found = []
        for step in await self._store.steps(escalation.id):
            if (step.step < escalation.step and step.call_id is not None
                    and step.outcome in _MAY_BE_ON):
                call = await self._callstore.get(step.call_id)
                if call is not None:
                    found.append((step, call))
        return found

    async def acknowledged(self, escalation: Escalation) -> None:
        """Somebody acknowledged: nobody else is called; a call still ringing is hung up."""
        by = escalation.acknowledged_by or ""
        target = escalation.target
        if target is not None and escalation.step_started_at is not None:
            call = await seen_now(self._evo, await self._step_call(escalation))
            note = None
            # Acknowledged through this very call: it was answered, whatever its row says (the
            # deadline's fresh read of the session can be ahead of the follower's poll).
            through_it = escalation.acknowledged_via == AckVia.OUTCOME and target.user_id == by
            if call is not None and not call.answered and not call.known_over and not through_it:
                note = await self.hang_up_unanswered(escalation, call, f"acknowledged by {by}")
            if target.user_id == by:
                outcome = StepOutcome.ACKNOWLEDGED
            elif call is not None and call.answered:
                outcome = StepOutcome.NOT_ACKNOWLEDGED  # left on: "call ended" would be untrue
            else:
                outcome = StepOutcome.CALLED_OFF
            if call is not None or outcome == StepOutcome.ACKNOWLEDGED:  # else: never rung
                await self._store.record_step(escalation.id, escalation.step, target.user_id,
                                              outcome, detail=note)
        await self.record_acknowledgement(escalation)
        if await self._store.set_state(escalation.id, {EscalationState.ACKNOWLEDGING},
                                       EscalationState.ACKNOWLEDGED, finished_at=self._clock()):
            logger.info("escalation %s acknowledged by %s (%s)", escalation.id, by,
                        escalation.acknowledged_via,
                        extra=ended(escalation, EscalationState.ACKNOWLEDGED))
            self._finished(EscalationState.ACKNOWLEDGED)
        await self._card.refresh_until_shown(escalation.id)

    async def record_acknowledgement(self, escalation: Escalation) -> None:
        """The audit trail (on the acknowledging person's call, else the current step's) and
        the metrics; once, whatever restarts in between."""
        if not await self._claims.claim_when_answered(
                f"escalation:{escalation.id}:acknowledged",
                f"escalation {escalation.id}: recording its acknowledgement",
                extra={"escalation_id": escalation.id}):
            return
        by, at = escalation.acknowledged_by or "", escalation.acknowledged_at or self._clock()
        if self._on_acknowledged is not None:
            self._on_acknowledged(str(escalation.acknowledged_via or AckVia.BUTTON),
                                  max(0.0, at - escalation.created_at))
        steps = await self._store.steps(escalation.id)
        call_ids = [s.call_id for s in steps if s.user_id == by and s.call_id is not None]
        call_ids += [escalation.step_call_id] if escalation.step_call_id is not None else []
        if not call_ids:
            return
        call = await self._callstore.get(call_ids[0])
        if call is not None:
            how = ("I'm on it" if escalation.acknowledged_via == AckVia.BUTTON
                   else f"call outcome {call.outcome!r}")
            await self.record_call_event(
                call, EventKind.ACKNOWLEDGED,
                f"escalation {escalation.id} acknowledged by {by} ({how})", actor_id=by,
            )

    async def exhausted(self, escalation: Escalation) -> None:
        """Everybody was tried. Unless an acknowledgement or Stop got there first (the chain then
        winds that end down): the channel is told nobody came."""
        if not await self._store.set_state(escalation.id, {EscalationState.RUNNING},
                                           EscalationState.EXHAUSTED, finished_at=self._clock()):
            return
        logger.warning("escalation %s: nobody answered", escalation.id,
                       extra=ended(escalation, EscalationState.EXHAUSTED))
        self._finished(EscalationState.EXHAUSTED)
        await self.nobody_came(escalation)
        await self._card.refresh_until_shown(escalation.id)

    async def nobody_came(self, escalation: Escalation, *, late: bool = False) -> None:
        """The broadcast that nobody came, for an escalation EXHAUSTED; `late`: then the one
        that somebody did after all (acknowledged since). Each once, whatever restarts in
        between, and never the late one first (it waits while the first is being posted)."""
        lock = self._broadcasting.setdefault(escalation.id, asyncio.Lock())
        async with lock:
            loud = views.exhausted(escalation, await self._store.steps(escalation.id))
            await self._card.post(escalation, loud, broadcast=True,
                                  once=self._end_claim(escalation))
            if late:
                await self._card.post(escalation, views.acknowledged_late(escalation),
                                      broadcast=True, once=self._claim(
                                          escalation, "late-ack", "telling a late acknowledgement"))
        if not lock.locked():
            self._broadcasting.pop(escalation.id, None)

    async def show(self, escalation_id: int) -> None:
        """The end of an escalation whose replica stopped or died while showing it, or whose run
        lost the answer to the write that ended it: the broadcast if nobody came, why it failed,
        or that somebody came after "nobody" was said (each unless said already), then the card."""
        escalation = await self._store.get(escalation_id)
        if escalation is not None and escalation.state == EscalationState.EXHAUSTED:
            await self.nobody_came(escalation)
        elif escalation is not None and escalation.state == EscalationState.FAILED:
            await self._tell_failure(escalation)
        elif escalation is not None and escalation.state == EscalationState.ACKNOWLEDGED and (
                await self._claims.holder(f"escalation:{escalation_id}:end")):  # "nobody" said
            await self.acknowledged_late(escalation_id)
        await self._card.refresh_until_shown(escalation_id)

    async def stopped(self, escalation: Escalation) -> None:
        target = escalation.target
        if target is not None and escalation.step_started_at is not None:
            call = await seen_now(self._evo, await self._step_call(escalation))
            if call is not None and not call.answered and not call.known_over:
                note = await self.hang_up_unanswered(escalation, call, "escalation stopped")
                await self._store.record_step(escalation.id, escalation.step, target.user_id,
                                              StepOutcome.STOPPED, detail=note)
            elif call is not None and call.answered:
                # Left on (the person may be listening); the card says they answered, not that
                # their step was "no longer followed".
                await self._store.record_step(escalation.id, escalation.step, target.user_id,
                                              StepOutcome.NOT_ACKNOWLEDGED)
        if await self._store.set_state(escalation.id, {EscalationState.STOPPING},
                                       EscalationState.STOPPED, finished_at=self._clock()):
            logger.info("escalation %s stopped by %s", escalation.id, escalation.stopped_by,
                        extra=ended(escalation, EscalationState.STOPPED))
            self._finished(EscalationState.STOPPED)
        await self._card.refresh_until_shown(escalation.id)

    async def fail(self, escalation: Escalation) -> None:
        """The requester may no longer escalate, so it can't go on, unless an acknowledgement or
        Stop got there first (the chain then winds that end down): the thread says why (the
        requester, privately, without a card)."""
        if not await self._store.set_state(escalation.id, {EscalationState.RUNNING},
                                           EscalationState.FAILED, finished_at=self._clock()):
            return
        logger.warning("escalation %s failed: its requester %s may no longer escalate",
                       escalation.id, escalation.requester_id,
                       extra=ended(escalation, EscalationState.FAILED))
        self._finished(EscalationState.FAILED)
        await self._tell_failure(escalation)
        await self._card.refresh_until_shown(escalation.id)

    async def _tell_failure(self, escalation: Escalation) -> None:
        await self._card.post(escalation, views.failed(
            escalation, views.requester_not_allowed(escalation)), or_tell=True,
            once=self._end_claim(escalation))

    def _end_claim(self, escalation: Escalation) -> Once:
        """The claim on saying how the escalation ended: once, whatever restarts in between."""
        return self._claim(escalation, "end", "telling its end")

    def _claim(self, escalation: Escalation, what: str, doing: str) -> Once:
        """The claim `escalation:{id}:{what}` a post is made under, taken with the post's row in
        the outbox (bot/slack/outbox.py): claimed apart, a crash could leave it never said."""
        return lambda then: self._claims.claim_when_answered(
            f"escalation:{escalation.id}:{what}", f"escalation {escalation.id}: {doing}",
            extra={"escalation_id": escalation.id}, then=then)

    def _finished(self, state: EscalationState) -> None:
        if self._on_finished is not None:
            self._on_finished(str(state))

    async def _step_call(self, escalation: Escalation) -> TrackedCall | None:
        """The step's call, its row read now; still unfound (the bot died mid-dial, the follower's
        look not over), looked for once: else Stop or I'm on it could not hang it up."""
        return await step_call_now(self._callstore, self._follower.find_session, escalation, None)

    # ---------------------------------------------------------------------------- hang-ups
    async def hang_up_unanswered(self, escalation: Escalation, call: TrackedCall | None,
                                 why: str, *, done: str | None = None) -> str | None:
        """Hang up a call of `escalation` that is still ringing; a note for the card when that
        didn't work (`done` when it did)."""
        # A call the follower gave up on (its session never found, or lost) may still ring.
        if call is None or call.known_over or call.answered:
            return None
        if call.session_id is None:
            return "(Its call could not be found in Evo Voice to hang it up; it may still ring.)"
        try:
            await hang_up_and_check(self._evo, self._callstore, call,  # StillGoingOn: failed
                                    lambda: self._pause(asyncio.Event(), self._check_every))
        except (NotFound, AlreadyEnded):
            done = None  # it ended on its own
        except EvoVoiceError as exc:
            logger.warning("escalation %s: hanging up call %s failed: %s", escalation.id, call.id,
                           type(exc).__name__, extra=_call_fields(escalation, call))
            await self.record_call_event(call, EventKind.HANG_UP_FAILED, f"escalation: {why}")
            return f"(Hanging up that call failed: {describe_hang_up(exc)} It may still ring.)"
        else:
            logger.info("escalation %s: call %s hung up (%s)", escalation.id, call.id, why,
                        extra=_call_fields(escalation, call))
            await self.record_call_event(call, EventKind.HANG_UP, f"escalation: {why}")
        self._follower.poke(call.id)
        return done

    async def record_call_event(
        self, call: TrackedCall | None, kind: EventKind, reason: str, *, actor_id: str | None = None
    ) -> None:
        if self._audit is None or call is None or call.attempt_id is None:
            return
        try:
            # Kept until the database answers again (bot/audit/spool.py): never lost to it. Under
            # the fact's own key: the step's end, retried once the database answers, may hang the
            # call up again for the same reason, and that is still one hang-up.
            await self._audit.event(call.attempt_id, kind, reason=reason,
                                    session_id=call.session_id, actor_id=actor_id,
                                    wait_for_database=True,
                                    key=f"escalation-call:{call.id}:{kind}:{reason}")
        except Exception:
            logger.exception("recording %s of call %s failed", kind, call.id,
                             extra={"call_id": call.id})
