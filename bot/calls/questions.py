"""Asking "are you sure?" and taking the answer: a number outside the home regions, or a repeat of
the same call within the repeat window (CallService decides when; confirmations.py keeps the
question, confirm_views.py draws it).

A click on "Call" is a new request, checked again from the start (`CallService.handle`), once:
the click is claimed in the transaction that takes the question, with the note that tells its
requester the call was not placed should the bot die before dialling it (calls/untold.py). Refused
for a while (a limit filled since it was asked, the database failing before the dial), it dialled
nothing: the question is put back and asked again, and the claim given back with it, in one
transaction (`Confirmations.put_back`), so that the next click is a new request too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from bot.audit.trail import AuditLog
from bot.calls import confirm_views
from bot.calls import messages as views
from bot.calls.confirmations import Confirmations, Pending, Reason, TakeStatus, confirm_claim
from bot.calls.dials_first import DialsFirst
from bot.calls.limits import LimitReached
from bot.calls.models import CallRequest, CallResult, CheckedCall, Outcome
from bot.calls.untold import Kind, UntoldRequests
from bot.errors import DatabaseUnavailable, describe
from bot.phone import describe_region
from bot.slack.notify import Notifier
from bot.storage.claims import Untold
from bot.storage.faults import refused_when_database_fails, until_database_answers

# The name operators filter on for these lines, kept from before the split.
logger = logging.getLogger("bot.calls.service")


class ConfirmationNeeded(Exception):
    def __init__(
        self, call: CheckedCall, reasons: frozenset[Reason], seconds_ago: float | None
    ) -> None:
        super().__init__(", ".join(sorted(reasons)))
        self.call = call
        self.reasons = reasons
        self.seconds_ago = seconds_ago


class Questions:
    def __init__(
        self,
        *,
        confirmations: Confirmations,
        audit: AuditLog,
        notifier: Notifier,
        untold: UntoldRequests,
        confirm_outside: frozenset[str] | None,
        handle: Callable[[CallRequest], Awaitable[CallResult]],
        finished: Callable[[CallResult], CallResult],
    ) -> None:
        self._confirmations = confirmations
        self._audit = audit
        self._notifier = notifier
        self._untold = untold
        self._confirm_outside = confirm_outside
        # CallService's: a confirmed request is handled as any, and its end counted as any.
        self._handle = handle
        self._finished = finished

    async def ask(self, needed: ConfirmationNeeded) -> None:
        call, request = needed.call, needed.call.request
        fields = dataclasses.asdict(request)
        view = confirm_views.Asked(
            masked_number=call.number.masked, flow_name=call.flow_name,
            region=describe_region(call.number.region) if Reason.REGION in needed.reasons else None,
            home_regions=", ".join(sorted(self._confirm_outside or ())),
            seconds_ago=needed.seconds_ago)
        # The click brings a fresh response_url; the stored request needs none.
        fields.update(response_url=None, response_url_used=0, idempotency_key=None,
                      confirmed=sorted(request.confirmed), untold=None,
                      number_masked=call.number.masked,  # for the note of a take (untold.py)
                      asked=dataclasses.asdict(view))  # asked again as it was (_ask_again)
        confirmation_id = await self._confirmations.create(
            request.user_id, needed.reasons | {Reason(r) for r in request.confirmed}, fields,
            asked=self._audit.asked_row(call, needed.reasons),  # in the audit trail with it
        )
        message = confirm_views.confirm_call(
            confirmation_id, view, expires_minutes=round(self._confirmations.lifetime / 60))
        logger.info("call by %s to %s: asked to confirm (%s)", request.user_id, call.number.masked,
                    ", ".join(sorted(needed.reasons)),
                    extra={"user_id": request.user_id, "outcome": str(Outcome.CONFIRMING)})
        await self._notifier.tell(
            user_id=request.user_id,
            channel_id=request.channel_id,
            response_url=request.response_url,
            message=message,
        )

    async def confirm(
        self, confirmation_id: str, *, user_id: str, channel_id: str | None,
        response_url: str | None,
    ) -> CallResult:
        """A click on "Call" under a question: a new request, checked again from the start."""
        claim = confirm_claim(confirmation_id, user_id)

        def note(asked: dict[str, Any]) -> str:  # its question's message is where it was told
            number = asked.get("number_masked")
            return self._untold.note(claim, user_id=user_id, response_url=response_url,
                                     number=number if isinstance(number, str) else None,
                                     kind=Kind.QUESTION, team_id=asked.get("team_id"),
                                     channel_id=asked.get("channel_id"),
                                     origin=asked.get("origin"),
                                     question=asked.get("confirmed_question")).note

        try:
            with refused_when_database_fails("nothing was dialled"):
                # A double click or a redelivered click dials at most once. The click is claimed
                # in the transaction that takes the question: a database failing there leaves
                # neither done, so the click the refusal asks for is not dropped as a duplicate.
                taken = await self._confirmations.take(confirmation_id, user_id, claim=claim,
                                                       note=note)
        except DatabaseUnavailable as exc:  # the question stays: "Call" may be clicked again
            # Nothing is dialled: the other calls' posts need not wait while Slack is told.
            DialsFirst.ended()
            await self._notifier.tell(user_id=user_id, channel_id=channel_id,
                                      response_url=response_url,
                                      message=views.refusal(describe(exc)))
            return self._finished(CallResult(Outcome.REFUSED, error=exc))
        if taken.status is TakeStatus.DUPLICATE:
            logger.info("duplicate confirmation click by %s ignored", user_id,
                        extra={"user_id": user_id, "outcome": str(Outcome.DUPLICATE)})
            # Counted like every request's end; not audited: the question it answered is gone
            # (taken by the first click), so there is no number to record.
            return self._finished(CallResult(Outcome.DUPLICATE))
        if taken.status is not TakeStatus.TAKEN or taken.pending is None:
            DialsFirst.ended()  # as above
            await self._answer_question(
                user_id, channel_id, response_url, _UNUSABLE_CONFIRMATION[taken.status]
            )
            # Refused like any request (expired, someone else's, already answered); not audited,
            # as a duplicate click isn't.
            return self._finished(CallResult(Outcome.REFUSED))
        known = {f.name for f in dataclasses.fields(CallRequest)}
        fields = {k: v for k, v in taken.pending.request.items() if k in known}
        fields["confirmed"] = frozenset(fields.get("confirmed") or ()) | taken.pending.reasons
        request = dataclasses.replace(
            CallRequest(**fields), response_url=response_url, idempotency_key=None,
            # One of its posts goes to the answer below, taken or not: counted either way.
            response_url_used=1 if response_url is not None else 0,
            untold=Untold(claim, taken.pending.note) if taken.pending.note else None,
            # Its attempt names the question it confirms, whatever becomes of it (the audit trail).
            confirmed_question=taken.pending.attempt_id,
        )
        # The question's answer goes alongside the call, never before it: a Slack slow to take
        # it (an incident's Slack) must not hold the dial. Started first, it is sent before
        # anything the call itself says through the same response_url.
        _, result = await asyncio.gather(
            self._answer_question(user_id, channel_id, response_url,
                                  "📞 Confirmed: checking again, then calling."),
            self._handle(request),
        )
        if result.outcome is Outcome.REFUSED and isinstance(result.error, _FOR_A_WHILE):
            await self._ask_again(taken.pending, claim, channel_id, response_url)
        return result

    async def _ask_again(self, pending: Pending, claim: str, channel_id: str | None,
                         response_url: str | None) -> None:
        """The question whose Call was just refused for a while (told with when, or to try again
        in a minute), nothing dialled, put back with its buttons: the person clicks Call again
        rather than type the /call once more. That click is a new request, checked again."""
        asked = confirm_views.Asked.read(pending.request.get("asked"))
        if asked is None:
            return  # asked before what it says was kept with it
        user_id = pending.user_id
        if not await until_database_answers(
                partial(self._confirmations.put_back, pending, claim),
                f"putting back the question of {user_id}", extra={"user_id": user_id}):
            return  # expired meanwhile: its Call would only say so
        logger.info("question of %s asked again: its Call was refused for a while", user_id,
                    extra={"user_id": user_id})
        now = self._confirmations.clock()
        if asked.seconds_ago is not None:  # "You called this number … ago", as it is now
            asked = dataclasses.replace(
                asked, seconds_ago=asked.seconds_ago + max(0.0, now - pending.created_at))
        left = pending.created_at + self._confirmations.lifetime - now
        message = confirm_views.confirm_call(
            pending.id, asked, expires_minutes=max(1, math.ceil(left / 60)), refused=True)
        if response_url is None or not await self._notifier.replace(response_url, message):
            await self._notifier.tell(user_id=user_id, channel_id=channel_id, response_url=None,
                                      message=message)

    async def cancel(
        self, confirmation_id: str, *, user_id: str, channel_id: str | None,
        response_url: str | None,
    ) -> None:
        try:
            with refused_when_database_fails("the call was not cancelled"):
                cancelled = await self._confirmations.cancel(confirmation_id, user_id)
        except DatabaseUnavailable as exc:  # the question stays, its buttons with it
            await self._notifier.tell(user_id=user_id, channel_id=channel_id,
                                      response_url=response_url,
                                      message=views.refusal(describe(exc)))
            return
        line = ("Cancelled: nothing was dialled." if cancelled is TakeStatus.TAKEN
                else _UNUSABLE_CONFIRMATION[cancelled])
        await self._answer_question(user_id, channel_id, response_url, line)

    async def _answer_question(
        self, user_id: str, channel_id: str | None, response_url: str | None, line: str
    ) -> bool:
        """Replace the question (and its buttons) with `line`; else tell the clicker. True if
        `response_url` carried it (one of its posts is used)."""
        message = confirm_views.confirmation_answered(line)
        if response_url is not None and await self._notifier.replace(response_url, message):
            return True
        await self._notifier.tell(
            user_id=user_id, channel_id=channel_id, response_url=None, message=message
        )
        return False


# Refusals of a question's Call that hold only for a while: the question is asked again.
_FOR_A_WHILE = (LimitReached, DatabaseUnavailable)

_UNUSABLE_CONFIRMATION = {
    TakeStatus.GONE: "This question was already answered or cancelled; nothing more was dialled. "
                     "Use /call to call again.",
    TakeStatus.EXPIRED: "This question expired, so nothing was dialled. Use /call to call again.",
    TakeStatus.NOT_YOURS: "Only the person who asked for this call can confirm it.",
    TakeStatus.CONFIRMED: "Too late to cancel: Call was clicked first, so this call went ahead "
                          "(unless you were told it was refused). To end it, use Hang up on its "
                          "status message.",
}
