"""The use case: check a call request, then dial it once and tell the requester what happened.

    check()  authorise → number → flow → caller ID          (no side effects; refusals raise)
    place()  parent message → POST /sessions/outgoing → result in the thread

A call is dialled only after the parent message reached someone, so it is never placed without the
requester being told. `POST /sessions/outgoing` is sent at most once per request: an ambiguous
failure is reported as "outcome unknown", never retried (see evovoice).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from bot import views
from bot.access import AccessControl
from bot.catalog import Catalog
from bot.errors import CallbotError, CannotNotify, describe
from bot.evovoice import EvoVoiceClient, EvoVoiceError, OutcomeUnknown, Session
from bot.idempotency import Claims
from bot.notify import NotDelivered, Notifier, Thread
from bot.phone import DialableNumber, DialPolicy, NumberRejected, check_dialable, to_e164

if TYPE_CHECKING:
    from bot.audit import AuditLog
    from bot.follow import CallFollower

logger = logging.getLogger(__name__)

# How far back a session may have been created to count as the one an ambiguous attempt placed.
AMBIGUOUS_LOOKUP_SLACK = dt.timedelta(seconds=30)


@dataclass(frozen=True)
class CallRequest:
    """What someone asked for, as typed; nothing in it is trusted yet."""

    team_id: str
    user_id: str
    channel_id: str
    number_text: str
    flow_text: str
    caller_id_text: str | None = None
    reason: str | None = None
    response_url: str | None = None
    thread_ts: str | None = None
    # Same key, same request: a redelivered or double-submitted request is placed at most once.
    idempotency_key: str | None = None
    # Claim the key only once the checks pass, so a refused or failed check doesn't use it up
    # (Call again: one click dials once, but a click refused for a passing reason may be retried).
    claim_after_check: bool = False
    origin: str = "command"  # for the audit trail: command, call_again, …
    repeat_of: int | None = None  # audit id of the attempt this one repeats


@dataclass(frozen=True)
class CheckedCall:
    request: CallRequest
    number: DialableNumber
    flow_id: str
    flow_name: str
    caller_id: str | None


class Outcome(StrEnum):
    PLACED = "placed"
    FAILED = "failed"
    UNKNOWN = "unknown"
    REFUSED = "refused"
    UNTOLD = "untold"  # nobody could be told, so nothing was dialled
    DUPLICATE = "duplicate"  # the same request was already handled


@dataclass(frozen=True)
class CallResult:
    outcome: Outcome
    session_id: str | None = None
    thread: Thread | None = None
    error: BaseException | None = None
    session: Session | None = None  # the session as Evo Voice last showed it, when it did
    call_id: int | None = None  # the followed call's row (bot.callstore), when there is one


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
        audit: AuditLog | None = None,
        follower: CallFollower | None = None,
        on_result: Callable[[CallResult], None] | None = None,
    ) -> None:
        self._access = access
        self._catalog = catalog
        self._evo = evo
        self._notifier = notifier
        self._claims = claims
        self._dial_policy = dial_policy
        self._default_caller_id = default_caller_id
        self._account_ids = account_ids
        self._audit = audit
        self._follower = follower
        # Hears every request's final outcome (metrics); never sees the number.
        self._on_result = on_result

    async def check(self, request: CallRequest) -> CheckedCall:
        """Every refusal raises (RoleDenied, NumberRejected, FlowNotFound, CallerIdNotOwned, …)."""
        await self._access.require(request.user_id)
        number = check_dialable(request.number_text, self._dial_policy)
        flow = await self._catalog.resolve_flow(request.flow_text)
        caller_id = self._default_caller_id
        if request.caller_id_text:
            caller_id = to_e164(request.caller_id_text, self._dial_policy.default_region)
        if caller_id is not None:
            await self._catalog.check_caller_id(caller_id)
        return CheckedCall(request, number, flow.id, flow.name, caller_id)

    async def handle(self, request: CallRequest) -> CallResult:
        """check() then place(); refusals go to the requester alone."""
        if request.idempotency_key and not request.claim_after_check:
            if not await self._claims.claim(request.idempotency_key):
                return await self._duplicate(request)
        try:
            checked = await self.check(request)
        except (CallbotError, NumberRejected, EvoVoiceError) as exc:
            logger.info("call refused for %s: %s", request.user_id, type(exc).__name__)
            if self._audit is not None:
                await self._audit.refused(request, exc)
            await self._notifier.tell(
                user_id=request.user_id,
                channel_id=request.channel_id,
                response_url=request.response_url,
                message=views.refusal(describe(exc)),
            )
            return self._finished(CallResult(Outcome.REFUSED, error=exc))
        if request.idempotency_key and request.claim_after_check:
            if not await self._claims.claim(request.idempotency_key):
                return await self._duplicate(request)
        return await self.place(checked)

    async def _duplicate(self, request: CallRequest) -> CallResult:
        logger.info("duplicate delivery of a request by %s ignored", request.user_id)
        if self._audit is not None:
            await self._audit.duplicate(request)
        return self._finished(CallResult(Outcome.DUPLICATE))

    async def place(self, call: CheckedCall) -> CallResult:
        request = call.request
        # Recorded before dialling, so even a crash mid-call leaves a trace in the audit trail.
        attempt_id = await self._audit.allowed(call) if self._audit is not None else None
        parent = views.call_parent(request.user_id, call.number.masked, call.flow_name, request.reason)
        try:
            thread = await self._notifier.start_thread(
                request.channel_id,
                parent,
                response_url=request.response_url,
                thread_ts=request.thread_ts,
            )
        except NotDelivered:
            # No channel and no response_url: dialling now would leave the requester in the dark.
            await self._notifier.tell(
                user_id=request.user_id,
                channel_id=None,
                response_url=None,
                message=views.refusal(CannotNotify().user_message),
            )
            untold = CallResult(Outcome.UNTOLD, error=CannotNotify())
            await self._record_result(attempt_id, untold)
            return self._finished(untold)

        started = time.time()
        result, message = await self._dial(call)
        tracked = None
        if self._follower is not None:
            # The thread reply becomes the call's status message, edited as the call goes on.
            tracked = await self._follower.track(call, result, thread, attempt_id, started)
            if tracked is not None:
                message = self._follower.status_message(tracked)
                if tracked.session_id != result.session_id:
                    # The session found after an ambiguous attempt belongs to another call.
                    result = dataclasses.replace(result, session_id=None, session=None)
        await self._record_result(attempt_id, result)
        posted = await self._notifier.post_reply(thread, message)
        if not posted.delivered:
            logger.error("call %s outcome could not be posted for %s", result.outcome, request.user_id)
        if tracked is not None and self._follower is not None:
            await self._follower.begin(tracked, posted.ts)
        return self._finished(CallResult(
            result.outcome, result.session_id, thread, result.error,
            call_id=tracked.id if tracked is not None else None,
        ))

    def _finished(self, result: CallResult) -> CallResult:
        if self._on_result is not None:
            self._on_result(result)
        return result

    async def _record_result(self, attempt_id: int | None, result: CallResult) -> None:
        if self._audit is None or attempt_id is None:
            return
        try:
            await self._audit.result(attempt_id, result)
        except Exception:
            # The call is placed (or not) either way; the requester must still hear about it.
            logger.exception("recording the result of attempt %s failed", attempt_id)

    async def _dial(self, call: CheckedCall) -> tuple[CallResult, views.Message]:
        started = dt.datetime.now(dt.UTC)
        log_args = (call.request.user_id, call.number.masked, call.flow_id)
        try:
            placed = await self._evo.create_outgoing_session(
                call.flow_id, call.number.e164, call.caller_id
            )
        except OutcomeUnknown as exc:
            logger.warning("call by %s to %s (flow %s): outcome unknown", *log_args)
            session = await self._find_session_after(call.number.e164, started)
            session_id = session.id if session else None
            return (
                CallResult(Outcome.UNKNOWN, session_id=session_id, error=exc, session=session),
                views.call_unknown(describe(exc), session_id),
            )
        except EvoVoiceError as exc:
            logger.warning("call by %s to %s (flow %s) failed: %s", *log_args, type(exc).__name__)
            return CallResult(Outcome.FAILED, error=exc), views.call_failed(describe(exc))
        logger.info("call by %s to %s (flow %s) placed: session %s", *log_args, placed.session_id)
        return (
            CallResult(Outcome.PLACED, session_id=placed.session_id, session=placed.session),
            views.call_placed(placed.session_id, call.caller_id),
        )

    async def _find_session_after(self, e164: str, started: dt.datetime) -> Session | None:
        """One look for the session an ambiguous attempt may have created; never a second POST."""
        try:
            sessions = await self._evo.find_sessions(
                self._account_ids, to=e164, start_date=started.date().isoformat(), count=5
            )
        except EvoVoiceError as exc:
            logger.warning("session lookup after ambiguous call failed: %s", type(exc).__name__)
            return None
        for session in sessions:
            created = parse_timestamp(session.date_created)
            if created is not None and created >= started - AMBIGUOUS_LOOKUP_SLACK:
                return session
        return None


_MS_DATE = re.compile(r"/Date\((-?\d+)([+-]\d{4})?\)/")


def parse_timestamp(value: str | None) -> dt.datetime | None:
    """ServiceStack sends ISO 8601 or the WCF form `/Date(1700000000000-0000)/`; None if neither."""
    if not value:
        return None
    match = _MS_DATE.fullmatch(value.strip())
    if match:
        return dt.datetime.fromtimestamp(int(match.group(1)) / 1000, dt.UTC)
    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
