"""The use case: check a call request, then dial it once and tell the requester what happened.

    check()  authorise → number → flow → caller ID          (no side effects; refusals raise)
    place()  POST /sessions/outgoing, the parent message alongside → result in the thread
             (dialling.py)

Between the two, `handle()` asks the requester to confirm a number outside the home regions or a
repeat of the same call within a minute (a button; `confirm()` takes the click: questions.py),
and takes a slot from the rate limits (see limits.py), given back if the call certainly did not
happen.

Once a call passed its checks, `POST /sessions/outgoing` leaves at once: the confirmation thread is
posted alongside and told the result when it comes, so Slack (slow, rate-limited, failing) never
delays a dial. Every request has a way to the requester that needs no channel: its `response_url`
(commands, forms opened from /call, buttons), else a direct message (forms from a shortcut,
escalation steps). `POST /sessions/outgoing` is sent at most once per request: an ambiguous failure
is reported as "outcome unknown", never retried (see evovoice).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from functools import partial

from bot.access import AccessControl
from bot.audit.trail import AuditLog
from bot.calls import messages as views
from bot.calls.confirmations import Confirmations, Reason
from bot.calls.dials_first import DialsFirst
from bot.calls.dialling import Dialler, GiveBack
from bot.calls.follow import CallFollower
from bot.calls.limits import CallLimits, LimitReached, RecentlyCalled, SlotRequest
from bot.calls.models import NOT_DIALLED, CallRequest, CallResult, CheckedCall, Outcome
from bot.calls.questions import ConfirmationNeeded, Questions
from bot.calls.untold import UntoldRequests
from bot.errors import CallbotError, DatabaseUnavailable, Expected, describe, log_unexpected
from bot.errors import reference_id
from bot.evovoice.catalog import Catalog
from bot.evovoice.client import EvoVoiceClient, EvoVoiceError
from bot.phone import DialPolicy, check_dialable, to_e164
from bot.slack.notify import Notifier
from bot.storage.claims import Claims, Untold
from bot.storage.faults import DATABASE_FAULTS, until_database_answers
from bot.storage.together import AlreadyTold

logger = logging.getLogger(__name__)

# What proceed() answers for a request that a take-over round told "not placed" while this replica
# stalled (AlreadyTold). Its claim is that round's to give back (Call again's), never this one's:
# given back here, it would be a new click's by then, and that click would dial nothing, untold.
TOLD_MEANWHILE = CallResult(Outcome.REFUSED)


class CallService:
    def __init__(
        self,
        *,
        access: AccessControl,
        catalog: Catalog,
        evo: EvoVoiceClient,
        notifier: Notifier,
        claims: Claims,
        dial_policy: DialPolicy,
        default_caller_id: str | None,
        account_ids: list[str],
        audit: AuditLog,
        follower: CallFollower,
        limits: CallLimits,
        confirmations: Confirmations,
        untold: UntoldRequests,
        confirm_outside: frozenset[str] | None,
        on_result: Callable[[CallResult], None],
        on_limit: Callable[[str], None],
    ) -> None:
        self._access = access
        self._catalog = catalog
        self._notifier = notifier
        # Dial at once, the confirmation thread alongside: see Dialler.place.
        # Calls on their way to the phone go before the Slack messages of calls already dialled.
        self.dials_first = DialsFirst()
        self.dialler = Dialler(
            evo=evo, notifier=notifier, audit=audit, follower=follower, account_ids=account_ids,
            on_result=on_result, dials_first=self.dials_first,
        )
        self.place = self.dialler.place
        self._claims = claims
        self._dial_policy = dial_policy
        self._default_caller_id = default_caller_id
        self._audit = audit
        # Hears every request's final outcome (metrics); never sees the number.
        self._on_result = on_result
        self._limits = limits
        self._untold = untold
        # "Are you sure?": asked by proceed(), answered by a click (`confirm`, `cancel`).
        self.questions = Questions(
            confirmations=confirmations, audit=audit, notifier=notifier, untold=untold,
            confirm_outside=confirm_outside, handle=self.handle, finished=self._finished,
        )
        self.confirm, self.cancel = self.questions.confirm, self.questions.cancel
        # None: never ask about regions (the allowed ones are all fine).
        self._confirm_outside = confirm_outside
        # Hears which limit refused a call (metrics).
        self._on_limit = on_limit

    async def check(self, request: CallRequest, *, authorised: bool = False) -> CheckedCall:
        """Every refusal raises (RoleDenied, NumberRejected, FlowNotFound, CallerIdNotOwned, …).

        `authorised`: the caller has checked the requester's right itself (an on-call escalation
        dials the roster's numbers for any responder, not only for role holders)."""
        if not authorised:
            await self._access.require(request.user_id)
        number = check_dialable(request.number_text, self._dial_policy)
        flow = await self._catalog.resolve_flow(request.flow_text)
        caller_id = self._default_caller_id
        if request.caller_id_text:
            caller_id = to_e164(request.caller_id_text, self._dial_policy.default_region)
        if caller_id is not None:
            await self._catalog.check_caller_id(caller_id, default=not request.caller_id_text)
        return CheckedCall(request, number, flow.id, flow.name, caller_id)

    async def handle(self, request: CallRequest) -> CallResult:
        """check() then proceed(); refusals go to the requester alone, as does a bug, with its log
        line's reference (acked: no other way to hear of it); UNKNOWN then, uncounted. The note
        its claim keeps (calls/untold.py) goes once it ends told, without a call's row."""
        noted = [request.untold] if request.untold is not None else []
        try:
            result = await self._handle_request(request, noted)
        except Exception as exc:
            words = log_unexpected(exc, f"call by {request.user_id} failed",
                                   extra={"user_id": request.user_id})
            await self._notifier.tell(user_id=request.user_id, channel_id=request.channel_id,
                                      response_url=request.response_url,
                                      message=views.refusal(words))
            result = CallResult(Outcome.UNKNOWN)
        for untold in noted:
            await self._untold.settled(untold, result)
        return result

    async def proceed_noted(self, checked: CheckedCall) -> CallResult:
        """proceed() for the call form, whose claim kept the request's note (as handle())."""
        return await self._untold.settled(checked.request.untold, await self.proceed(checked))

    async def _handle_request(self, request: CallRequest, noted: list[Untold]) -> CallResult:
        claimed: list[str] = []
        try:
            with self.dials_first.on_its_way():
                result = await self._handle(request, claimed, noted)
            if result.outcome is not Outcome.REFUSED or result is TOLD_MEANWHILE:
                return result
            refused = result
            # Refused after the claim (a rate limit): nothing was dialled either, and the refusal
            # says when, or who, may call again; that click is a new request.
        except DATABASE_FAULTS as exc:
            refused = await self._database_failed(request, exc)
        for key in claimed:
            # Nothing was dialled, and the refusal says to try again: the click that does must
            # not find this one's claim and be told the call was already made. (Not "on its
            # way" meanwhile: other calls' posts would wait on it for as long as the database.)
            await until_database_answers(partial(self._claims.release, key),
                                         f"giving back the claim of a click by {request.user_id}",
                                         extra={"user_id": request.user_id})
        return refused

    async def _database_failed(self, request: CallRequest, exc: Exception) -> CallResult:
        """Everything that writes after the POST keeps its own failures to itself (place()), so a
        database fault met while handling a request came before anything was dialled."""
        reference = reference_id()
        logger.error("call by %s not placed: the database failed (%s), reference %s",
                     request.user_id, exc, reference, extra={"user_id": request.user_id})
        return await self._refuse(request, DatabaseUnavailable(reference))

    async def _handle(self, request: CallRequest, claimed: list[str], noted: list[Untold]
                      ) -> CallResult:
        """`claimed`: hears a key claimed after the checks (Call again), given back if the
        call is refused after all (a rate limit) or the database fails before the POST.
        `noted`: hears the note a claim keeps for the requester (calls/untold.py)."""
        key = request.idempotency_key
        if key and not request.claim_after_check:
            untold = self._untold.note_request(key, request)
            if not await self._untold.claim_noted(partial(self._claims.claim, key), untold, noted):
                return await self._duplicate(request)
            request = dataclasses.replace(request, untold=untold)
        try:
            checked = await self.check(request)
        except (CallbotError, EvoVoiceError) as exc:
            return await self._refuse(request, exc)
        if key and request.claim_after_check:
            untold = self._untold.note_request(key, request, checked.number.masked)
            # Given back when the database fails on it (its answer lost): the click the refusal
            # asks for is not told the call was made already.
            claim = partial(self._claims.claim_or_give_back, key)
            if not await self._untold.claim_noted(claim, untold, noted):
                return await self._duplicate(request)
            claimed.append(key)
            request = dataclasses.replace(request, untold=untold)
            checked = dataclasses.replace(checked, request=request)
        return await self.proceed(checked)

    async def proceed(self, checked: CheckedCall) -> CallResult:
        """Ask first where the policy says so, take a slot from the rate limits, then place.

        Every way a person asks for a call (command, form, buttons) goes through here; only the
        on-call escalation, which dials the roster's configured numbers, calls place() directly.
        The slot is taken in the transaction that records the attempt and writes the call's row
        (Dialler.place): one commit before the POST, not two, and a refusal writes none of them.
        A database failing before the POST is a refusal told to the requester (a form's Submit
        has closed the form by then: there is no other way to hear of it).
        """
        unanswered: list[GiveBack] = []
        try:
            slot = await self._admit(checked)
            try:
                result = await self.place(checked, slot=slot, unanswered=unanswered.append)
            except RecentlyCalled as recent:  # taking the slot: nothing was written or dialled
                raise ConfirmationNeeded(checked, frozenset({Reason.REPEAT}),
                                         recent.seconds_ago) from None
            except LimitReached as refused:  # the same; told as the window that frees last
                self.dials_first.ended()
                raise await self._limits.refused(refused, checked.request.user_id) from None
            except AlreadyTold:  # this replica stalled; the one that took over told "not placed"
                logger.warning("call by %s not placed: its requester was told so meanwhile",
                               checked.request.user_id, extra={"user_id": checked.request.user_id})
                return self._finished(TOLD_MEANWHILE)
        except ConfirmationNeeded as needed:
            self.dials_first.ended()  # nothing dialled before the answer: see _refuse
            # A Yes that a full limit would refuse: the refusal is told now, no question asked.
            if (full := await self._limits.full_now(checked)) is not None:
                self._on_limit(full.scope)
                return await self._refuse(checked.request, full)
            try:
                await self.questions.ask(needed)
            except DATABASE_FAULTS as exc:  # the question was not written: nothing asked
                return await self._database_failed(checked.request, exc)
            return self._finished(CallResult(Outcome.CONFIRMING))
        except CallbotError as exc:
            if isinstance(exc, LimitReached):
                self._on_limit(exc.scope)
            return await self._refuse(checked.request, exc)
        except DATABASE_FAULTS as exc:
            failed = await self._database_failed(checked.request, exc)
            for give_back in unanswered:  # told first; then what the writes may have kept
                await give_back(failed.error, partial(self._limits.give_back, slot))
            return failed
        if result.outcome in NOT_DIALLED and slot.taken is not None:
            await self._limits.release(slot.taken)
        return result

    async def _refuse(self, request: CallRequest, exc: Expected) -> CallResult:
        # No POST comes of it: the other calls' parent posts need not wait while the refusal is
        # recorded and told (Slack's work, as slow as Slack is: bot/calls/dials_first.py).
        self.dials_first.ended()
        logger.info("call refused for %s: %s", request.user_id, type(exc).__name__,
                    extra={"user_id": request.user_id, "outcome": str(Outcome.REFUSED)})
        await self._record_refusal(request, exc)
        await self._notifier.tell(
            user_id=request.user_id,
            channel_id=request.channel_id,
            response_url=request.response_url,
            message=views.refusal(describe(exc)),
        )
        return self._finished(CallResult(Outcome.REFUSED, error=exc))

    async def _record_refusal(self, request: CallRequest, exc: Expected) -> None:
        """The refusal goes into the audit trail now, or once the database answers again (kept
        meanwhile: bot/audit/spool.py); the requester hears of it meanwhile (and isn't kept waiting
        on a database known to fail)."""
        await self._audit.refused(
            request, exc, database_down=isinstance(exc, DatabaseUnavailable)
        )

    async def _duplicate(self, request: CallRequest) -> CallResult:
        self.dials_first.ended()  # no POST comes of it: see _refuse
        logger.info("duplicate delivery of a request by %s ignored", request.user_id,
                    extra={"user_id": request.user_id, "outcome": str(Outcome.DUPLICATE)})
        await self._audit.duplicate(request)
        return self._finished(CallResult(Outcome.DUPLICATE))

    def _finished(self, result: CallResult) -> CallResult:
        self._on_result(result)
        return result

    async def repeated(self, request: CheckedCall | CallRequest) -> None:
        """A request made again once the first was taken (a form's Submit of a view whose call
        already started, Call again clicked once the call was called again): recorded, logged
        and counted as a duplicate, as a command Slack delivers twice is."""
        await self._duplicate(request.request if isinstance(request, CheckedCall) else request)

    def count_ending(self, outcome: Outcome, error: Expected | None = None) -> None:
        """Count the end of a request taken (acked) that ended before handle() (Call again on a
        call it can't be used on, `/call test` with no number, a form's second Submit): every
        request taken ends with one count (callbot_calls_total)."""
        self._finished(CallResult(outcome, error=error))

    # ------------------------------------------------------------------ confirmations and limits

    async def _admit(self, call: CheckedCall) -> SlotRequest:
        """Questions to ask first (ConfirmationNeeded), then what takes a slot from the rate
        limits (raising RecentlyCalled or LimitReached), for the transaction before the POST."""
        confirmed = call.request.confirmed
        if (
            self._confirm_outside is not None
            and call.number.region not in self._confirm_outside
            and Reason.REGION not in confirmed
        ):
            # One question for both reasons: a repeat to a faraway number is still one click.
            seconds_ago = None
            if Reason.REPEAT not in confirmed:
                seconds_ago = await self._limits.last_call(
                    call.request.user_id, call.number.e164, call.flow_id
                )
            reasons = {Reason.REGION} | ({Reason.REPEAT} if seconds_ago is not None else set())
            raise ConfirmationNeeded(call, frozenset(reasons), seconds_ago)
        return await self._limits.slot_request(
            call.request.user_id,
            call.number.e164,
            call.flow_id,
            check_repeat=Reason.REPEAT not in confirmed,
        )
