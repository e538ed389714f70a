"""On-call escalation: page the people on call one after another until somebody acknowledges.

    start()         a checked request becomes a chain (unless its requester, holding no role,
                    reached their own limit: counted as the row is written, so racing
                    submissions can't pass it together): the order of people is frozen
                    (`OnCall.chain(now)`: who is on call, the rest of the rotation, `escalate_to`),
                    so is what ends a step (`[oncall] ack`), and the chain runs: its first dial
                    leaves at once, the escalation's card is posted alongside (Slack never comes
                    first: a card that is slow, refused or never posted delays and stops no step;
                    without one the requester is told privately, see escalation_card)
    resume()        at start-up, chains that were running go on where they were (and those
                    nobody acknowledged with a call left on are watched again)
    ack_clicked()   I'm on it, on a page (the person's DM) or on the escalation's message
    take_over()     every few seconds: chains whose replica died go on here (bot/storage/leases.py),
                    and the ends it was still showing are shown
    stop_clicked()  the Stop escalation button
    stop()          at shutdown: the chains pause and their leases are released, so another
                    replica (or the next start) goes on from the rows

What ends a step. With `ack = "acknowledge"` (the default) only an acknowledgement does: I'm on it,
clicked by a paged person or anyone allowed to escalate, or the call's session `outcome` being one
of `[oncall] ack_outcomes` (set by the team's Evo Voice flow, e.g. after "press 1"). A call that
connects and ends without one (voicemail, a pocket answer) moves the chain on at once; one still
connected at the deadline is left alone (the person may still be listening: an acknowledging
outcome it reports while the chain goes on, or once nobody acknowledged, still counts) and the
chain moves on. With `ack = "answer"` the call connecting ends the chain, as before
acknowledgements existed; I'm on it works in both modes. The mode is frozen in the escalation's
row when it starts.

Each chain is one task driving one row of the database (bot.escalation_store), in the one replica
holding its lease (bot/runner.py). A step:

    1. begin: the step and its deadline (now + answer_timeout, an absolute time; set again from
       the moment the call is placed) are written, and the step's claim
       `escalation:{id}:step:{n}` is taken. Only then is anything dialled, so however often the
       bot restarts, a step is dialled at most once.
    2. the person's number is read again (`phones.lookup`): none usable → "⏭ Skipping @x: reason",
       next step. Else the call goes through `CallService` (checks, audit trail, the follower)
       quietly: it posts nothing, the escalation's card shows it (calling, ringing, on the phone).
    3. the person gets a direct message (the page: reason, who asked, a link to the card,
       I'm on it), sent in the background after the call is placed: nothing on Slack's side
       delays a dial; a page the dialling run could not send before it stopped is sent by the
       next run that follows the call, unless recorded as sent
    4. wait, reading the call's row (the follower keeps it up to date), until the step is
       acknowledged (or, `ack = "answer"`, the call connects), the call ends without that, or the
       deadline passes; the escalation's message shows how the step went, and the next begins.

A call still ringing when its deadline passes is hung up (`DELETE /sessions/{id}`) before the next
person is called, so one page never rings two phones at once; just before, the session is read
fresh, so a call answered at the last moment counts as answered. If the hang-up fails, the thread
says so and the chain goes on. Stop escalation hangs up a call still ringing, too.

After a restart mid-step the call is followed again (its row is the follower's) and the deadline
is the one written at the start. A step's call is recorded before its POST leaves, so a step
claimed but whose call was not recorded (the bot stopped between the two) was never dialled: the
next run takes the claim over and dials it; a stalled run that comes back to it dials nothing
(bot/oncall/step_claims.py).

An acknowledgement is a compare-and-set on the row (`acknowledge`: the first one wins and is
kept, with who, when and how); the chain then winds down like Stop: a call still ringing is hung
up, nobody else is called. A click that lands while the bot is restarting is still written, and
the next start finishes the job (the row is in an active state).

The thread stays calm: the escalation's own message, its card, is drawn from the rows (and the
current step's call) and edited in place (each person, how their step went, who acknowledged and
when), like a call's status message; a step posts nothing in the thread, and the only post is the
final broadcast when nobody acknowledged (made under a claim, so a restart never repeats it). The
pages are edited too once the escalation is over.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.access import AccessControl, Responders
from bot.audit.trail import AuditLog
from bot.calls.controls import ButtonClick
from bot.calls.follow import UNSHOWN_ENDS_WITHIN_SECONDS, CallFollower, wait_or_wake
from bot.calls.service import CallService
from bot.calls.store import CallStore
from bot.calls.rates import Rate, describe_wait
from bot.errors import (
    AlreadyEscalating,
    EscalationLimitReached,
    Expected,
    describe,
    log_unexpected,
)
from bot.evovoice.client import EvoVoiceClient
from bot.oncall import escalation_views as views
from bot.oncall.escalation_buttons import EscalationButtons
from bot.oncall.escalation_card import EscalationCard
from bot.oncall.escalation_endings import Endings
from bot.oncall.escalation_steps import Chain
from bot.oncall.escalation_limit import OwnLimit, OwnLimitReached
from bot.oncall.one_per_thread import ThreadBusy
from bot.oncall.escalation_store import (
    AckMode,
    Escalation,
    EscalationState,
    EscalationStore,
    Target,
)
from bot.oncall.escalation_unanswered import Unanswered
from bot.oncall.roster import OnCall
from bot.runner import RowRunner, Work
from bot.slack.blocks import escape
from bot.slack.notify import Notifier
from bot.storage.claims import Claims
from bot.storage.faults import DATABASE_FAULTS, wrote_nothing
from bot.storage.leases import Leases

logger = logging.getLogger(__name__)

LEASE_KIND = "escalation"  # a running chain's lease (bot/storage/leases.py)


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
    response_url: str | None = None  # to tell the requester if the card can't be posted
    # `[oncall] escalations_per_person`, for a requester without a role; None: no limit.
    limit: Rate | None = None

    def row(self) -> dict[str, str | None]:
        """What the escalation's row keeps of the request (bot.oncall.escalation_store)."""
        return {name: getattr(self, name) for name in _KEPT}


# The request's fields its row keeps (the response_url and the limit are kept in memory only).
_KEPT = ("request_key", "team_id", "requester_id", "channel_id", "thread_ts", "flow_id",
         "flow_name", "reason", "origin")


class EscalationService:
    """The escalations of this process: start, resume, take over and stop chains, and take the
    clicks on their buttons. The work is done by its parts: the chain (escalation_steps), its
    ends (escalation_endings), its card and pages (escalation_card), its buttons
    (escalation_buttons)."""

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
        # Public, like OnCall.clock: deadlines are absolute times on this clock, and tests move it.
        self.clock = clock
        self._runner = RowRunner(LEASE_KIND, leases, on_error=self._report_failure,
                                 first_pause=check_every, pause=pause)
        self._unanswered = Unanswered(store.db, self._runner,
                                      running_state=str(EscalationState.RUNNING))
        self._card = EscalationCard(store=store, callstore=callstore, notifier=notifier,
                                    claims=claims, on_paged=on_paged, runner=self._runner,
                                    first_pause=check_every, pause=pause)
        self._endings = Endings(
            store=store, callstore=callstore, follower=follower, evo=evo, claims=claims,
            audit=audit, card=self._card, clock=self._now, on_finished=on_finished,
            on_acknowledged=on_acknowledged, runner=self._runner, check_every=check_every,
            pause=pause,
        )
        self._chain = Chain(
            store=store, oncall=oncall, calls=calls, callstore=callstore, evo=evo,
            claims=claims, responders=responders, audit=audit, runner=self._runner,
            card=self._card, endings=self._endings, clock=self._now, check_every=check_every,
            pause=pause, find_session=follower.find_session,
        )
        self._buttons = EscalationButtons(
            store=store, notifier=notifier, access=access, responders=responders, card=self._card,
            endings=self._endings, clock=self._now, nudge=self._nudge, show_end=self._show_end,
        )

    def _now(self) -> float:
        return self.clock()  # the parts see a clock set after they were made (tests move it)

    @property
    def running(self) -> int:
        """How many chains this process is driving now."""
        return self._runner.running

    # ----------------------------------------------------------------------------- starting

    async def start(
        self, request: EscalationRequest, now: dt.datetime,
        written: Callable[[], None] | None = None,
    ) -> Escalation | None:
        """Freeze the order, run the chain (the first dial leaves at once), and post the card
        alongside; None for a repeat. `written()` is called once the row is (or was, a repeat).
        Raises EscalationLimitReached, having written and called nothing, when the requester's
        own limit is reached, and AlreadyEscalating when another escalation runs in the thread.
        Returns once the card's first try is over, so the request's task covers it."""
        escalation = await self._create(request, now)
        if escalation is None and await self._unanswered.give_back(request.request_key):
            # The row found was this request's own, written when the database lost the answer.
            escalation = await self._create(request, now)
        if written is not None:
            written()
        if escalation is None:
            logger.info("repeated escalation request %s ignored", request.request_key,
                        extra={"user_id": request.requester_id, "outcome": "duplicate"})
            return None
        logger.info(
            "escalation %s by %s started: %s", escalation.id, request.requester_id,
            ", ".join(t.user_id for t in escalation.people),
            extra={"escalation_id": escalation.id, "user_id": request.requester_id},
        )
        self._card.expect(escalation.id)
        await self._runner.start(escalation.id, lambda: self._chain.drive(escalation.id))
        # Slack never comes first: a card that is slow, refused or never posted delays no dial.
        await self._card.open(escalation.id, request.response_url)
        return await self.store.get(escalation.id)

    async def _create(self, request: EscalationRequest, now: dt.datetime) -> Escalation | None:
        created_at, limit = self.clock(), request.limit
        try:
            return await self.store.create(
                people=[Target(p.user_id, str(p.source)) for p in await self._oncall.chain(now)],
                created_at=created_at,
                answer_timeout=float(self._oncall.policy.answer_timeout),
                ack_mode=str(AckMode(self._oncall.policy.ack)),
                **request.row(),
                # Ours from its first moment: no replica, this one included, takes it over (and
                # posts a card of its own) before its chain starts here.
                then=self._runner.reserve_new,
                # Counted in the row's own transaction: a check made before it (the form's) lets
                # every submission racing it through.
                limit=None if limit is None else OwnLimit(limit.count, created_at - limit.seconds),
            )
        except OwnLimitReached as full:
            assert limit is not None
            raise EscalationLimitReached(
                limit.count, limit.window_words,
                describe_wait(full.oldest + limit.seconds - created_at)) from None
        except ThreadBusy as busy:
            logger.info("escalation by %s not started: escalation %s runs in its thread",
                        request.requester_id, busy.escalation_id,
                        extra={"user_id": request.requester_id, "escalation_id": busy.escalation_id,
                               "outcome": "refused"})
            raise AlreadyEscalating(busy.requester_id,
                                    yours=busy.requester_id == request.requester_id) from None
        except DATABASE_FAULTS as exc:  # it may have committed: given back, not left to run
            if not wrote_nothing(exc):
                await self._unanswered.lost(request.request_key, created_at)
            raise

    # ---------------------------------------------------------------------------- lifecycle

    async def resume(self) -> int:
        """Drive again every chain that was running when the bot last stopped."""
        count = len(await self._runner.adopt(await self._active(), self._work))
        if count:
            logger.info("resuming %d escalation(s) after a restart", count)
        return count

    async def take_over(self) -> None:
        """A lease keeper's round: drive the chains whose replica stopped or died, and show the
        ends their replica was still trying to show (Slack refused the card's last edit)."""
        active: list[int] = []

        async def chains() -> list[int]:
            active[:] = await self._active()
            return active

        await self._runner.take_over(chains, self._work)
        lapsed = await self.store.over_with_lapsed_lease(
            LEASE_KIND, self.clock(), self.clock() - UNSHOWN_ENDS_WITHIN_SECONDS)
        # Not a chain to drive (nobody came, a call left on): its lease may have lapsed just
        # after the round above looked, and shown only, it would go unwatched until the next.
        shown = await self._runner.adopt([e.id for e in lapsed if e.id not in active], self._show)
        if shown:
            logger.info("showing the end of %d escalation(s) another replica left", len(shown))

    def _show(self, escalation_id: int) -> Work:
        return lambda: self._endings.show(escalation_id)

    async def _active(self) -> list[int]:
        """The chains a replica runs: those running, and those nobody acknowledged with a call
        left on, whose person may still press 1 (Endings.late_by_call): after a restart, or
        once their replica is gone, another run watches them, under the same lease."""
        running = [escalation.id for escalation in await self.store.active()]
        left_on = await self._endings.left_on_when_exhausted(
            self.clock() - UNSHOWN_ENDS_WITHIN_SECONDS)
        return running + [i for i in left_on if i not in running]

    def _work(self, escalation_id: int) -> Work:
        return lambda: self._adopt(escalation_id)

    async def _adopt(self, escalation_id: int) -> None:
        escalation = await self.store.get(escalation_id)
        if escalation is None:
            return
        if escalation.message_ts is None and escalation.active:
            # Stopped before its card was posted (or Slack refused it): tried again, alongside.
            self._card.open_in_background(escalation_id)
        await self._chain.drive(escalation_id)

    async def stop(self, grace: float = 5.0) -> None:
        """Pause every chain at its next safe point (never in the middle of dialling, unless that
        takes longer than `grace`) and let go of them: another replica, or the next start, goes
        on from the rows."""
        began = time.monotonic()
        await self._runner.stop(grace)
        await self._card.stop(max(0.0, grace - (time.monotonic() - began)))  # pages being sent

    def poke(self, escalation_id: int) -> None:
        self._runner.poke(escalation_id)

    async def _report_failure(self, escalation_id: int, exc: Exception) -> None:
        # A bug, not a phone problem. The row stays active, and this replica keeps its lease, so
        # the chain is tried again when it restarts; meanwhile the thread must not fall silent on
        # a page nobody is answering, nor, without a card, the requester (told privately, as the
        # card-less ends are). Logged first, under the reference the words give.
        try:
            why = (describe(exc) if isinstance(exc, Expected)
                   else log_unexpected(exc, f"escalation {escalation_id} failed",
                                       extra={"escalation_id": escalation_id}))
            escalation = await self.store.get(escalation_id)
            if escalation is not None:
                await self._card.post(escalation, views.failed(
                    escalation, f"{escape(why)} Nobody more will be called until callbot "
                                "restarts: reach the people on call another way."), or_tell=True)
        except Exception:
            logger.exception("escalation %s failed, and saying so failed too", escalation_id,
                             extra={"escalation_id": escalation_id})

    # --------------------------------------------------------------------------- the buttons

    async def ack_clicked(self, click: ButtonClick) -> None:
        """I'm on it, on a page or on the escalation's message (escalation_buttons)."""
        await self._buttons.ack_clicked(click)

    async def stop_clicked(self, click: ButtonClick) -> None:
        """Stop escalation (escalation_buttons)."""
        await self._buttons.stop_clicked(click)

    async def _nudge(self, escalation_id: int) -> None:
        """The chain sees a change of its row now: woken here, or run here when it is ours and
        stopped (a failed chain) or nobody's. A chain another replica drives sees the change at
        its next check."""
        if escalation_id in self._runner:
            self.poke(escalation_id)
        else:
            await self._runner.start(escalation_id, lambda: self._chain.drive(escalation_id))

    async def _show_end(self, escalation_id: int) -> None:
        """An end Slack refused to show (or tell, without a card), shown here, tried again while
        Slack refuses it, under the escalation's lease: a replica that dies meanwhile leaves it
        to another (take_over). A task of the escalation's already here is woken to show it, and
        shows it again once its own work is done (it may have been ending as the end came).
        While the bot stops (a late I'm on it written as it restarts), it is left to the next
        start or another replica, which show the ends of escalations whose lease lapsed."""
        if (not await self._runner.start_or_after(escalation_id, self._show(escalation_id))
                and self._runner.closed):
            await self._runner.leave_lapsed(escalation_id)

    async def refresh(self, escalation_id: int) -> None:
        """Make the escalation's message match its rows (escalation_card)."""
        await self._card.refresh(escalation_id)
